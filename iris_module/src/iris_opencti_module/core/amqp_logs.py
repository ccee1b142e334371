"""pika's loggers silenced around an operation that is known to fail noisily for nothing.

Shared by the module's publisher and the import connector's push queue. It only touches :mod:`logging`, so
``core`` needs no broker library.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def pika_quiet() -> Iterator[None]:
    """pika's own loggers silenced for a moment. Closing a connection the broker already dropped makes pika log
    tracebacks (ConnectionResetError, StreamLostError) for nothing: seen in IRIS's web and worker logs and in
    the import connector's, each time an idle connection outlived the broker's heartbeat timeout."""
    logger = logging.getLogger("pika")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)
