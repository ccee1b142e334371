"""Failure and latency injection for the GraphQL endpoint.

Connectors must survive a platform that answers 500s, is unreachable for a while or is slow; these rules
let a test provoke exactly that.  A rule matches every GraphQL request, or only those whose operation
name or root field is in ``match`` (e.g. ``"workEdit"``, ``"healthCheck"``, ``"StixBundlePush"``).
``status=0`` drops the connection without an answer (the client sees a connection error, as when the
platform is down).  Control endpoints (``/_sim/...``) are never affected.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

Match = Union[None, str, Sequence[str]]


def _normalise(match: Match) -> Optional[Tuple[str, ...]]:
    if match is None:
        return None
    if isinstance(match, str):
        return (match,)
    return tuple(match)


@dataclass
class _Rule:
    status: int
    match: Optional[Tuple[str, ...]]
    remaining: Optional[int] = None  # fail_next
    until: Optional[float] = None  # fail_for
    message: str = "Simulated OpenCTI failure"

    def applies(self, names: Iterable[str]) -> bool:
        return self.match is None or any(n in self.match for n in names)

    def expired(self) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return True
        return self.until is not None and time.monotonic() >= self.until


@dataclass
class Injected:
    """What the server must answer instead of executing the request."""

    status: int
    message: str


class Faults:
    """Thread-safe set of failure and delay rules."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: List[_Rule] = []
        self._delays: List[Tuple[float, Optional[Tuple[str, ...]]]] = []

    def fail_next(self, n: int = 1, status: int = 500, match: Match = None,
                  message: str = "Simulated OpenCTI failure") -> None:
        """The next ``n`` matching requests get HTTP ``status``."""
        with self._lock:
            self._rules.append(_Rule(status, _normalise(match), remaining=int(n), message=message))

    def fail_for(self, seconds: float, status: int = 500, match: Match = None,
                 message: str = "Simulated OpenCTI outage") -> None:
        """Every matching request for ``seconds`` gets HTTP ``status``."""
        with self._lock:
            self._rules.append(_Rule(status, _normalise(match), until=time.monotonic() + float(seconds),
                                     message=message))

    def delay(self, seconds: float, match: Match = None) -> None:
        """Add ``seconds`` of latency to every matching request (0 removes the delays)."""
        with self._lock:
            if seconds <= 0:
                self._delays.clear()
            else:
                self._delays.append((float(seconds), _normalise(match)))

    def reset(self) -> None:
        """Remove every rule and delay."""
        with self._lock:
            self._rules.clear()
            self._delays.clear()

    def latency(self, names: Iterable[str]) -> float:
        """Total delay for a request."""
        names = list(names)
        with self._lock:
            return sum(seconds for seconds, match in self._delays if match is None or any(n in match for n in names))

    def check(self, names: Iterable[str]) -> Optional[Injected]:
        """Consume the first rule that applies, if any."""
        names = list(names)
        with self._lock:
            self._rules = [r for r in self._rules if not r.expired()]
            for rule in self._rules:
                if rule.applies(names):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return Injected(rule.status, rule.message)
        return None

    def describe(self) -> dict:
        """Active rules (for the control API)."""
        with self._lock:
            now = time.monotonic()
            return {
                "rules": [{"status": r.status, "match": list(r.match) if r.match else None,
                           "remaining": r.remaining,
                           "seconds_left": None if r.until is None else max(0.0, r.until - now)}
                          for r in self._rules if not r.expired()],
                "delays": [{"seconds": s, "match": list(m) if m else None} for s, m in self._delays],
            }
