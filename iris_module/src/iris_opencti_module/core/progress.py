"""Progress of a long backfill (``iris-opencti push`` of many cases, ``iris-opencti-import reconcile``).

Shown on a terminal only, as one line rewritten in place ("cases 3/40, 12,000 IOCs, 850 IOCs/s"); when the
output is a file or a log collector nothing is written, so logs keep one line per case and no noise.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


class Progress:
    """Cases done out of a total, and IOCs per second since the start."""

    def __init__(self, total: int, stream: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic,
                 what: str = "cases") -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.what = what
        self.done = 0
        self.iocs = 0
        self.started = clock()
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-6)
        return "%s %d/%d, %s IOCs, %s IOCs/s" % (self.what, self.done, self.total, format(self.iocs, ","),
                                                  format(int(self.iocs / elapsed), ","))

    def step(self, iocs: int = 0) -> None:
        self.done += 1
        self.iocs += iocs
        if self.enabled:
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()

    def finish(self) -> None:
        """Leave the last figures on their own line (a terminal only)."""
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()
