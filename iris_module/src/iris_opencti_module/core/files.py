"""Atomic, durable file writes: the spool's messages, the module's state and the connector's archive.

A crash must leave the old file or the whole new one, never a part; the directory is fsynced too, because the
file's own fsync does not cover its name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def fsync_dir(path: str) -> None:
    """Make a rename or a new file in ``path`` durable (the file's own fsync does not cover its name)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; nothing better can be done there
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old file, or the complete new one, never a part."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")  # unique: threads may race
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)
