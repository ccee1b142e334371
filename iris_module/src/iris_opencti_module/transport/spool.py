"""Messages waiting for RabbitMQ, as files: ``<spool_dir>/outbox/<sequence>.msg``.

A hook must not fail, nor lose its message, because the broker is down: the message body is written to the
outbox atomically (temporary file, fsync, ``os.replace``, fsync of the directory), so a crash leaves either
the whole message or nothing. File names are zero-padded, strictly increasing sequence numbers allocated under
the spool lock, so sorting the names gives the order the hooks produced them, across every IRIS process that
shares the directory. Messages the broker refuses for good (too large) are moved to ``rejected/`` instead of
blocking everything behind them.

The lock is an exclusive ``flock`` on ``<spool_dir>/spool.lock`` (plus a thread lock): whoever holds it may
send the outbox, so two processes never send the same file or overtake each other.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Dict, Iterator, List, Tuple

from iris_opencti_module.core.files import write_atomically

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: only the thread lock (IRIS runs on Linux)
    fcntl = None  # type: ignore[assignment]

OUTBOX = "outbox"
REJECTED = "rejected"
SUFFIX = ".msg"
LOCK_FILE = "spool.lock"


class SpoolError(RuntimeError):
    """The spool directory cannot be used; the message names the path."""


class Spool:
    """A directory of messages waiting to be published, oldest first."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        self.outbox = os.path.join(self.directory, OUTBOX)
        self.rejected_dir = os.path.join(self.directory, REJECTED)
        try:
            os.makedirs(self.outbox, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool directory {self.outbox}: {exc.strerror or exc}") from None
        self._thread_lock = threading.RLock()
        self._lock_fd = -1
        self._lock_pid = -1
        self._depth = 0

    # -------------------------------------------------------------------------------------- locking
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the outbox across threads and processes (re-entrant within a thread)."""
        with self._thread_lock:
            if self._depth == 0 and fcntl is not None:
                if self._lock_pid != os.getpid():  # a forked child must not share its parent's lock
                    self._lock_fd = os.open(os.path.join(self.directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
                    self._lock_pid = os.getpid()
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and fcntl is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # ------------------------------------------------------------------------------------- messages
    def pending(self) -> List[str]:
        """Names of the waiting messages, oldest first."""
        try:
            names = [n for n in os.listdir(self.outbox) if n.endswith(SUFFIX) and n[: -len(SUFFIX)].isdigit()]
        except FileNotFoundError:
            return []
        names.sort()
        return names

    def add(self, body: bytes) -> str:
        """Append a message after every waiting one; returns its file name. Call with the lock held."""
        with self.locked():
            sequence = time.time_ns()
            pending = self.pending()
            if pending:
                last = int(pending[-1][: -len(SUFFIX)])
                sequence = max(sequence, last + 1)
            name = "%020d%s" % (sequence, SUFFIX)
            try:
                write_atomically(os.path.join(self.outbox, name), body)
            except OSError as exc:
                raise SpoolError(f"cannot write to the spool {self.outbox}: {exc.strerror or exc}") from None
            return name

    def read(self, name: str) -> bytes:
        with open(os.path.join(self.outbox, name), "rb") as handle:
            return handle.read()

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.outbox, name))

    def reject(self, name: str, reason: str) -> str:
        """Move a message the broker will never accept aside, with the reason beside it."""
        os.makedirs(self.rejected_dir, exist_ok=True)
        target = os.path.join(self.rejected_dir, name)
        os.replace(os.path.join(self.outbox, name), target)
        write_atomically(target + ".reason.txt", reason.encode("utf-8"))
        return target

    def save_rejected(self, body: bytes, reason: str) -> str:
        """Keep a refused message that never reached the outbox."""
        os.makedirs(self.rejected_dir, exist_ok=True)
        name = "%020d%s" % (time.time_ns(), SUFFIX)
        target = os.path.join(self.rejected_dir, name)
        write_atomically(target, body)
        write_atomically(target + ".reason.txt", reason.encode("utf-8"))
        return target


_SPOOLS: Dict[Tuple[int, str], Spool] = {}
_SPOOLS_LOCK = threading.Lock()


def open_spool(directory: str) -> Spool:
    """The process's shared :class:`Spool` for a directory."""
    key = (os.getpid(), os.path.abspath(directory))
    with _SPOOLS_LOCK:
        spool = _SPOOLS.get(key)
        if spool is None:
            spool = _SPOOLS[key] = Spool(directory)
        return spool
