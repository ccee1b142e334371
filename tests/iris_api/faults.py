"""Failure and latency injection, so clients can be tested against an IRIS that errors, stalls or crashes.

A rule applies to every IRIS request, or only to those whose ``"METHOD /path"`` contains ``match`` (e.g.
``"POST /case/ioc/update"``, ``"/api/v2/"``, ``"GET "``).  ``status=0`` closes the connection without an
answer (the client sees a connection error).  ``/_test/`` control requests are never affected.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple


@dataclass
class _Rule:
    status: int
    match: Optional[str]
    remaining: Optional[int] = None  # fail_next
    until: Optional[float] = None  # fail_for

    def applies(self, target: str) -> bool:
        return self.match is None or self.match in target

    def expired(self) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return True
        return self.until is not None and time.monotonic() >= self.until

    def describe(self) -> Dict[str, Any]:
        left = None if self.until is None else max(0.0, round(self.until - time.monotonic(), 3))
        return {"status": self.status, "match": self.match, "remaining": self.remaining, "seconds_left": left}


class Faults:
    """Thread-safe failure and delay rules; the oldest matching failure rule wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: List[_Rule] = []
        self._delays: List[Tuple[Optional[str], float]] = []  # (match, seconds)

    def fail_next(self, n: int = 1, status: int = 500, match: Optional[str] = None) -> None:
        """The next ``n`` matching requests fail with ``status``."""
        with self._lock:
            self._rules.append(_Rule(status, match, remaining=n))

    def fail_for(self, seconds: float, status: int = 500, match: Optional[str] = None) -> None:
        """Matching requests fail with ``status`` for ``seconds`` from now."""
        with self._lock:
            self._rules.append(_Rule(status, match, until=time.monotonic() + seconds))

    def delay(self, seconds: float, match: Optional[str] = None) -> None:
        """Matching requests are answered ``seconds`` late (0 removes the delays for ``match``)."""
        with self._lock:
            self._delays = [(m, s) for m, s in self._delays if m != match]
            if seconds > 0:
                self._delays.append((match, seconds))

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()
            self._delays.clear()

    def delay_for(self, method: str, path: str) -> float:
        """Total delay to apply to a request."""
        target = f"{method} {path}"
        with self._lock:
            return sum(s for m, s in self._delays if m is None or m in target)

    def take(self, method: str, path: str) -> Optional[int]:
        """The status to fail this request with (consuming one ``fail_next`` use), or ``None``."""
        target = f"{method} {path}"
        with self._lock:
            self._rules = [r for r in self._rules if not r.expired()]
            for rule in self._rules:
                if rule.applies(target):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule.status
            return None

    def describe(self) -> Dict[str, Any]:
        """Active rules (control API)."""
        with self._lock:
            return {"failures": [r.describe() for r in self._rules if not r.expired()],
                    "delays": [{"seconds": s, "match": m} for m, s in self._delays]}
