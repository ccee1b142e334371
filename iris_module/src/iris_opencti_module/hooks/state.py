"""What the module remembers between hooks, in ``<spool_dir>/state.sqlite3``.

IRIS hands each hook one object and nothing about the past, yet three decisions need memory:

- "turned on" versus "was already on": the last-known per-case switch, so a case is sent whole exactly when
  its switch flips on;
- "did this IOC really change": a fingerprint of the exported content of each IOC per case, so an update that
  only touched ``opencti:*`` tags (the enrichment connector's write-back) is not sent back to OpenCTI;
- "what did this id belong to": postload delete hooks get a bare id, after the row is gone; the cases an object
  was shipped into, and each case's Case-Incident id, let the deletion go to the right place.

SQLite rather than a JSON file: IRIS runs hooks in several worker processes (and preload hooks in the web
app) at once, and a 10,000-IOC case means 10,000 fingerprints; SQLite gives atomic, concurrent single-row
updates for a fraction of a millisecond, from the standard library. Losing the file is harmless: the module
then sends a little more than necessary, and the import connector's ledger resolves bare ids.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from typing import Dict, Iterable, List, Optional, Tuple

STATE_FILE = "state.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    enabled INTEGER,
    case_ref TEXT,
    case_name TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shipped (
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    fingerprint TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (kind, object_id, case_id)
);
CREATE TABLE IF NOT EXISTS deletions (
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (kind, object_id)
);
"""


class StateError(RuntimeError):
    """The state database cannot be opened or written (wrong spool directory, permissions, full disk)."""


class State:
    """One process's handle on the state database; use :func:`open_state` to share it between hooks."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, STATE_FILE)
        self._lock = threading.Lock()
        try:
            os.makedirs(directory, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._initialise()
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open the module's state {self.path}: {exc}") from None

    def _initialise(self) -> None:
        """Set up the file; several worker processes starting at once may race for it, so retry while locked.

        Switching to WAL takes an exclusive lock that SQLite does not wait for, hence the loop; WAL persists in
        the file, so later opens only read the mode.
        """
        deadline = time.monotonic() + 15.0
        while True:
            try:
                self._db.execute("PRAGMA busy_timeout = 10000")
                # WAL: the web app and the workers read while one writes; NORMAL: durable across process crashes
                if str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
                self._db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01 + random.random() * 0.04)

    def _run(self, sql: str, args: Tuple = ()) -> List[Tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"state {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------------------------------ cases
    def case_switch(self, case_id: object) -> Optional[bool]:
        """Last-known switch of a case: True/False, or None if the module has never seen it."""
        rows = self._run("SELECT enabled FROM cases WHERE case_id = ?", (str(case_id),))
        if not rows or rows[0][0] is None:
            return None
        return bool(rows[0][0])

    def set_case_switch(self, case_id: object, enabled: bool) -> None:
        self._run("INSERT INTO cases (case_id, enabled, updated) VALUES (?, ?, ?) "
                  "ON CONFLICT (case_id) DO UPDATE SET enabled = excluded.enabled, updated = excluded.updated",
                  (str(case_id), int(bool(enabled)), time.time()))

    def case_ref(self, case_id: object) -> Tuple[Optional[str], Optional[str]]:
        """(Case-Incident id, case name) recorded when the case was last shipped."""
        rows = self._run("SELECT case_ref, case_name FROM cases WHERE case_id = ?", (str(case_id),))
        return (rows[0][0], rows[0][1]) if rows else (None, None)

    def set_case_ref(self, case_id: object, case_ref: Optional[str], case_name: Optional[str]) -> None:
        self._run("INSERT INTO cases (case_id, case_ref, case_name, updated) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (case_id) DO UPDATE SET case_ref = excluded.case_ref, "
                  "case_name = excluded.case_name, updated = excluded.updated",
                  (str(case_id), case_ref, case_name, time.time()))

    def forget_case(self, case_id: object) -> None:
        with self._lock:
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute("DELETE FROM cases WHERE case_id = ?", (str(case_id),))
                    self._db.execute("DELETE FROM shipped WHERE case_id = ?", (str(case_id),))
            except sqlite3.Error as exc:
                raise StateError(f"state {self.path}: {exc}") from None

    # ------------------------------------------------------------------------------- shipped objects
    def fingerprint(self, kind: str, object_id: object, case_id: object) -> Optional[str]:
        rows = self._run("SELECT fingerprint FROM shipped WHERE kind = ? AND object_id = ? AND case_id = ?",
                         (kind, str(object_id), str(case_id)))
        return rows[0][0] if rows else None

    def was_shipped(self, kind: str, object_id: object, case_id: object) -> bool:
        rows = self._run("SELECT 1 FROM shipped WHERE kind = ? AND object_id = ? AND case_id = ?",
                         (kind, str(object_id), str(case_id)))
        return bool(rows)

    def record_shipped(self, kind: str, case_id: object, fingerprints: Iterable[Tuple[object, str]]) -> None:
        """Remember objects sent into a case, with the fingerprint of what was sent (one transaction)."""
        now = time.time()
        rows = [(kind, str(oid), str(case_id), fp, now) for oid, fp in fingerprints]
        if not rows:
            return
        with self._lock:
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany(
                        "INSERT INTO shipped (kind, object_id, case_id, fingerprint, updated) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (kind, object_id, case_id) DO UPDATE SET fingerprint = excluded.fingerprint, "
                        "updated = excluded.updated", rows)
                    self._db.executemany("DELETE FROM deletions WHERE kind = ? AND object_id = ?",
                                         [(kind, r[1]) for r in rows])
            except sqlite3.Error as exc:
                raise StateError(f"state {self.path}: {exc}") from None

    def replace_shipped(self, case_id: object, iocs: Iterable[Tuple[object, str]],
                        assets: Iterable[Tuple[object, str]]) -> None:
        """After a whole-case message: exactly these IOCs and assets are in the case now."""
        now = time.time()
        case = str(case_id)
        rows = [("ioc", str(oid), case, fp, now) for oid, fp in iocs]
        rows += [("asset", str(oid), case, fp, now) for oid, fp in assets]
        with self._lock:
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute("DELETE FROM shipped WHERE case_id = ?", (case,))
                    self._db.executemany("INSERT INTO shipped (kind, object_id, case_id, fingerprint, updated) "
                                         "VALUES (?, ?, ?, ?, ?)", rows)
                    self._db.executemany("DELETE FROM deletions WHERE kind = ? AND object_id = ?",
                                         [(r[0], r[1]) for r in rows])
            except sqlite3.Error as exc:
                raise StateError(f"state {self.path}: {exc}") from None

    def cases_of(self, kind: str, object_id: object) -> List[str]:
        """Cases an object was shipped into (in the order of their ids)."""
        rows = self._run("SELECT case_id FROM shipped WHERE kind = ? AND object_id = ? ORDER BY case_id",
                         (kind, str(object_id)))
        return [r[0] for r in rows]

    def forget_shipped(self, kind: str, object_id: object, case_id: Optional[object] = None) -> None:
        if case_id is None:
            self._run("DELETE FROM shipped WHERE kind = ? AND object_id = ?", (kind, str(object_id)))
        else:
            self._run("DELETE FROM shipped WHERE kind = ? AND object_id = ? AND case_id = ?",
                      (kind, str(object_id), str(case_id)))

    # ------------------------------------------------------------------------------------- deletions
    def mark_deletion_sent(self, kind: str, object_id: object) -> None:
        """A preload delete hook shipped this deletion: the postload hook that follows need not repeat it."""
        self._run("INSERT OR REPLACE INTO deletions (kind, object_id, updated) VALUES (?, ?, ?)",
                  (kind, str(object_id), time.time()))

    def take_deletion_sent(self, kind: str, object_id: object) -> bool:
        """True (once) if a preload hook already shipped this deletion."""
        with self._lock:
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    found = self._db.execute("SELECT 1 FROM deletions WHERE kind = ? AND object_id = ?",
                                             (kind, str(object_id))).fetchall()
                    self._db.execute("DELETE FROM deletions WHERE kind = ? AND object_id = ?", (kind, str(object_id)))
            except sqlite3.Error as exc:
                raise StateError(f"state {self.path}: {exc}") from None
        return bool(found)


_STATES: Dict[Tuple[int, str], State] = {}
_STATES_LOCK = threading.Lock()


def open_state(directory: str) -> State:
    """The process's shared :class:`State` for a directory (reopened after a fork: SQLite handles must not cross)."""
    key = (os.getpid(), os.path.abspath(directory))
    with _STATES_LOCK:
        state = _STATES.get(key)
        if state is None:
            for old in [k for k in _STATES if k[0] != key[0]]:
                del _STATES[old]  # inherited from the parent process: drop without touching its handle
            state = _STATES[key] = State(directory)
        return state


def close_states() -> None:
    """Close every handle of this process (tests, and a spool directory change)."""
    with _STATES_LOCK:
        for key, state in list(_STATES.items()):
            if key[0] == os.getpid():
                state.close()
        _STATES.clear()
