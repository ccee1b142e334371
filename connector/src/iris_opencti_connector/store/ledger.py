"""The ledger: which STIX ids each IRIS object produced, per case.

Deletions and updates must be exact, not guessed from names or values: when IRIS deletes IOC 29, the
connector removes exactly the ids IOC 29 produced in that case, and knows whether another IRIS object (in
this or another case) still produces the same observable. SQLite (a file) serves one connector; PostgreSQL
(by URL) lets several connector replicas share it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from iris_opencti_module.core.masking import mask_url

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS iris_produced (
        case_id TEXT NOT NULL,
        iris_key TEXT NOT NULL,
        stix_id TEXT NOT NULL,
        PRIMARY KEY (case_id, iris_key, stix_id))""",
    "CREATE INDEX IF NOT EXISTS iris_produced_stix ON iris_produced (stix_id)",
    """CREATE TABLE IF NOT EXISTS iris_cases (
        case_id TEXT PRIMARY KEY,
        case_ref TEXT,
        name TEXT)""",
    # the labels ("label:<value>") and markings ("marking:<id>") each IRIS object last asserted on each STIX
    # object: OpenCTI's upserts only ever add them, so a removal must be sent, and only of what no other IRIS
    # object still asserts
    """CREATE TABLE IF NOT EXISTS iris_asserted (
        case_id TEXT NOT NULL,
        iris_key TEXT NOT NULL,
        stix_id TEXT NOT NULL,
        refs TEXT NOT NULL,
        PRIMARY KEY (case_id, iris_key, stix_id))""",
    "CREATE INDEX IF NOT EXISTS iris_asserted_stix ON iris_asserted (stix_id)",
    # when IRIS last changed each key (the event time of the message that set or forgot it; kept after a
    # forget as a tombstone): a message taken before that time neither deletes nor rewrites the key. Two
    # tombstones of their own: case ANY_CASE for an object IRIS deleted without naming its case (its postload
    # delete hook knows only the id), key ANY_KEY for a deleted case (see Ledger.stamps)
    """CREATE TABLE IF NOT EXISTS iris_key_times (
        case_id TEXT NOT NULL,
        iris_key TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (case_id, iris_key))""",
    # a case sync that came in parts (chunks.py): the parts received so far and their keys; deletions are
    # computed once every part is in, then the sync is closed and its parts' keys dropped
    """CREATE TABLE IF NOT EXISTS iris_sync_parts (
        case_id TEXT NOT NULL,
        sync_id TEXT NOT NULL,
        part_index INTEGER NOT NULL,
        total INTEGER NOT NULL,
        at TEXT NOT NULL,
        keys TEXT NOT NULL,
        PRIMARY KEY (case_id, sync_id, part_index))""",
    """CREATE TABLE IF NOT EXISTS iris_syncs_closed (
        case_id TEXT NOT NULL,
        sync_id TEXT NOT NULL,
        PRIMARY KEY (case_id, sync_id))""",
    # the conversion settings of the module's last message about each case (core/conversion.py): reconcile
    # refuses a case the module converted otherwise than this connector would
    """CREATE TABLE IF NOT EXISTS iris_case_conversion (
        case_id TEXT PRIMARY KEY,
        conversion TEXT NOT NULL)""",
    # how many times what a plan reads of each case (its keys, assertions, reference, key times) was written:
    # a step planned ahead of time is sent only if no one else wrote its cases meanwhile (importer/ahead.py)
    """CREATE TABLE IF NOT EXISTS iris_case_versions (
        case_id TEXT PRIMARY KEY,
        version BIGINT NOT NULL)""",
)

#: ids per ``IN (...)`` query when reading assertions of many objects at once
_IN_CHUNK = 500

#: the case of a tombstone for an object IRIS deleted without naming its case: it holds in every case
ANY_CASE = "*"
#: the key of a deleted case's tombstone: it holds for every key of the case
ANY_KEY = "*"

#: (case id, IRIS key) -> refs asserted on one STIX object
Assertions = Dict[Tuple[str, str], Set[str]]


@dataclass
class SyncState:
    """A case sync in parts as the ledger knows it."""

    case_id: str
    sync_id: str
    total: int
    received: int
    #: the IRIS time the sync was taken at
    at: str
    #: every key its received parts produced
    keys: Set[str]
    closed: bool

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.received >= self.total

    @property
    def due(self) -> bool:
        """Every part is in and the sync was not ended yet: its end (with its deletions) is to come."""
        return self.complete and not self.closed


class LedgerUnavailable(Exception):
    """The ledger's database cannot be reached (refused, session terminated, restarted, failed over).

    ``down_for`` says for how long: the connector retries while it is short and gives up (exit non-zero, so a
    supervisor restarts it) once it exceeds ``IRIS_LEDGER_OUTAGE_TIMEOUT``.
    """

    def __init__(self, message: str, down_for: float) -> None:
        super().__init__(message)
        self.down_for = down_for


class LeadershipLost(Exception):
    """This replica no longer holds the leader lock: it must stop consuming before anything else happens."""


def advisory_key(kind: str, name: Any) -> int:
    """A stable signed 64-bit advisory lock key (PostgreSQL's ``bigint``) for a queue, a case or the ledger."""
    digest = hashlib.sha256((f"iris-opencti|{kind}|{name}").encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _connection_error(exc: BaseException) -> bool:
    import psycopg2

    return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))


class _Pool:
    """A few PostgreSQL connections shared by the connector's threads, replaced when they break.

    psycopg2's own pools hand back dead connections after a ``pg_terminate_backend`` or a restart (a
    connection only learns it is dead when next used) and cannot drop just the idle ones; here a connection
    found broken discards every idle one too, since they died of the same event.
    """

    def __init__(self, url: str, connect_timeout: int = 5) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._idle: List[Any] = []
        self._lock = threading.Lock()

    def connect(self, autocommit: bool = False) -> Any:
        import psycopg2
        import psycopg2.extensions

        options: Dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
                                   "keepalives_count": 3}
        if psycopg2.extensions.libpq_version() >= 120000:
            # a database that vanishes without a reset (network cut) fails a query in seconds, not minutes
            options["tcp_user_timeout"] = 15000
        conn = psycopg2.connect(self.url, connect_timeout=self.connect_timeout, application_name="iris-opencti",
                                **options)
        conn.autocommit = autocommit
        return conn

    def get(self) -> Any:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return self.connect()

    def put(self, conn: Any, broken: bool = False) -> None:
        if broken or conn.closed:
            self.discard_idle()
            _close(conn)
            return
        with self._lock:
            if len(self._idle) < 4:
                self._idle.append(conn)
                return
        _close(conn)

    def discard_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
        pass


def _switch_to_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while another process holds the file: SQLite may refuse the
    switch at once ("database is locked") without waiting its busy timeout, as when the import and enrichment
    connectors open a new ledger at the same moment (seen in CI)."""
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2)


def sqlite_path(url: str) -> Optional[str]:
    """The file of an SQLite ledger URL (``sqlite:///data/x.sqlite`` or a plain path); None for PostgreSQL."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else url


class Ledger:
    """IRIS object → STIX ids, backed by SQLite (``sqlite:///path`` or a plain path) or PostgreSQL.

    On PostgreSQL every thread runs its transactions on its own connection from a small pool; a broken
    connection (terminated session, restart, failover) is replaced, a one-statement operation is retried once
    on a fresh connection, and a failure inside a larger transaction raises :class:`LedgerUnavailable` so the
    caller retries the whole unit (nothing half-written is ever committed, nothing is acknowledged).
    """

    def __init__(self, url: str, outage_timeout: float = 0.0) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._depth = 0
        self._local = threading.local()
        self._down_since: Optional[float] = None
        self._down_lock = threading.Lock()
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg2  # noqa: F401 - optional dependency: only for shared ledgers

            self._pool: Optional[_Pool] = _Pool(url)
            self._param = "%s"
            self._pg = True
        else:
            path = sqlite_path(url) or url  # not PostgreSQL here: always a path
            self._pool = None
            # busy timeout first: switching to WAL needs the file to itself for a moment, and the import and
            # enrichment connectors open the same ledger when they start together
            self._conn: Any = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._conn.execute("PRAGMA busy_timeout=10000")
            _switch_to_wal(self._conn)
            self._param = "?"
            self._pg = False
        self.wait_available(outage_timeout, self._create_schema)

    @property
    def shared(self) -> bool:
        """True for PostgreSQL: several replicas may use this ledger at once."""
        return self._pg

    def masked_url(self) -> str:
        """The URL as logs may show it (no password)."""
        return mask_url(self.url)

    def _create_schema(self) -> None:
        with self.transaction() as cur:
            if self._pg:  # replicas starting together: CREATE ... IF NOT EXISTS is not safe concurrently
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("schema", "iris-opencti-ledger"),))
            for statement in _SCHEMA:
                cur.execute(statement)

    def wait_available(self, timeout: float, action: Optional[Callable[[], Any]] = None) -> Any:
        """Run ``action`` (default: a round trip), retrying with backoff while the database is unreachable
        for up to ``timeout`` seconds; then raise :class:`LedgerUnavailable`."""
        action = action or self.ping
        delay = 0.5
        while True:
            try:
                return action()
            except LedgerUnavailable as exc:
                if exc.down_for >= timeout:
                    raise
                logging.getLogger(__name__).warning("ledger unreachable (%s), retrying in %.1f s: %s",
                                                    self.masked_url(), delay, exc)
                time.sleep(min(delay, max(0.1, timeout - exc.down_for)))
                delay = min(delay * 2, 10.0)

    def ping(self) -> None:
        self._run(lambda cur: cur.execute("SELECT 1"))

    def down_for(self) -> float:
        """Seconds since the database was last found unreachable and not reached since (0 when it is up)."""
        with self._down_lock:
            return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def _mark(self, up: bool) -> float:
        with self._down_lock:
            if up:
                self._down_since = None
                return 0.0
            if self._down_since is None:
                self._down_since = time.monotonic()
            return time.monotonic() - self._down_since

    def _unavailable(self, exc: BaseException) -> LedgerUnavailable:
        down_for = self._mark(False)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return LedgerUnavailable(f"ledger {self.masked_url()}: {message}", down_for)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One atomic unit: a batch's ledger changes land together or not at all (nested calls join it)."""
        if self._pg:
            with self._pg_transaction() as cur:
                yield cur
            return
        with self._lock:
            cur = self._conn.cursor()
            outer = self._depth == 0
            self._depth += 1
            try:
                if outer:
                    cur.execute("BEGIN IMMEDIATE")
                yield cur
                if outer:
                    cur.execute("COMMIT")
            except BaseException:
                if outer:
                    cur.execute("ROLLBACK")
                raise
            finally:
                self._depth -= 1
                cur.close()

    @contextmanager
    def _pg_transaction(self) -> Iterator[Any]:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None:  # nested: join the thread's open transaction
            cur = conn.cursor()
            try:
                yield cur
            finally:
                if not conn.closed:
                    cur.close()
            return
        assert self._pool is not None
        try:
            conn = self._pool.get()
        except Exception as exc:
            if _connection_error(exc):
                raise self._unavailable(exc) from exc
            raise
        local.conn = conn
        broken = False
        try:
            cur = conn.cursor()
            yield cur
            conn.commit()
            self._mark(True)
        except BaseException as exc:
            broken = bool(conn.closed) or isinstance(exc, LedgerUnavailable)
            if not broken:
                try:
                    conn.rollback()
                except Exception:  # noqa: BLE001 - the connection died under us
                    broken = True
            if broken and not isinstance(exc, LedgerUnavailable) and _connection_error(exc):
                raise self._unavailable(exc) from exc
            raise
        finally:
            local.conn = None
            self._pool.put(conn, broken=broken)

    def _run(self, action: Callable[[Any], Any]) -> Any:
        """One self-contained operation; retried once on a fresh connection when its connection was dead
        (the usual case after a terminated session), unless it is part of a larger transaction."""
        nested = self._pg and getattr(self._local, "conn", None) is not None
        for attempt in (0, 1):
            try:
                with self.transaction() as cur:
                    return action(cur)
            except LedgerUnavailable:
                if nested or attempt:
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def step_locks(self, leader: Optional["LeaderLock"] = None) -> Iterator[Optional["StepLocks"]]:
        """Plan → send → commit of a step as one transaction, in which the step takes the advisory locks of
        what its messages write (:class:`StepLocks`), released by its commit. With ``leader``, refuse
        (:class:`LeadershipLost`) unless this replica still holds the leader lock: a replica whose lock session
        died must not write after a standby took over. Yields None on SQLite (one replica, no locks)."""
        if not self._pg:  # one replica: its writes stay short transactions, as SQLite wants them
            yield None
            return
        with self.transaction() as cur:
            if leader is not None and not leader.held_by_me(cur):
                raise LeadershipLost("the leader lock is no longer held by this replica")
            yield StepLocks(cur)

    def commit(self) -> None:
        """Commit the thread's open transaction now (releasing the cases' locks): once the ledger holds a
        group's result nothing else of the group needs it. A no-op outside a PostgreSQL transaction."""
        conn = getattr(self._local, "conn", None) if self._pg else None
        if conn is None:
            return
        try:
            conn.commit()
        except Exception as exc:
            if _connection_error(exc):
                raise self._unavailable(exc) from exc
            raise
        self._mark(True)

    def close(self) -> None:
        if self._pg:
            assert self._pool is not None
            self._pool.discard_idle()
            return
        with self._lock:
            self._conn.close()

    def _q(self, sql: str) -> str:
        return sql.replace("?", self._param)

    def _many(self, cur: Any, sql: str, rows: List[Tuple[Any, ...]]) -> None:
        """One statement over many rows. psycopg2's ``executemany`` is a round trip per row (a step of 200
        events wrote its ledger in some 1,200 of them); ``execute_batch`` sends them a few hundred at a time."""
        if self._pg:
            import psycopg2.extras

            psycopg2.extras.execute_batch(cur, sql, rows, page_size=500)
        else:
            cur.executemany(sql, rows)

    # ------------------------------------------------------------------------------------------- reads
    def _rows(self, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
        def action(cur: Any) -> List[Tuple[Any, ...]]:
            cur.execute(self._q(sql), params)
            return list(cur.fetchall())
        return self._run(action)

    def ids_of(self, case_id: Any, iris_key: str) -> Set[str]:
        rows = self._rows("SELECT stix_id FROM iris_produced WHERE case_id = ? AND iris_key = ?",
                          (str(case_id), iris_key))
        return {row[0] for row in rows}

    def case_map(self, case_id: Any) -> Dict[str, Set[str]]:
        """Every IRIS key of a case and the ids it produced."""
        out: Dict[str, Set[str]] = {}
        for key, stix_id in self._rows("SELECT iris_key, stix_id FROM iris_produced WHERE case_id = ?",
                                       (str(case_id),)):
            out.setdefault(key, set()).add(stix_id)
        return out

    def cases_holding(self, iris_key: str) -> List[str]:
        """Cases in which an IRIS object produced something (IRIS 2.4 IOCs may sit in several)."""
        rows = self._rows("SELECT DISTINCT case_id FROM iris_produced WHERE iris_key = ?", (iris_key,))
        return sorted(row[0] for row in rows)

    def holders(self, stix_id: str) -> Set[Tuple[str, str]]:
        """(case, IRIS key) pairs that produce this STIX id."""
        rows = self._rows("SELECT case_id, iris_key FROM iris_produced WHERE stix_id = ?", (stix_id,))
        return {(row[0], row[1]) for row in rows}

    def case_ref(self, case_id: Any) -> Optional[str]:
        rows = self._rows("SELECT case_ref FROM iris_cases WHERE case_id = ?", (str(case_id),))
        return rows[0][0] if rows else None

    def asserted_many(self, stix_ids: Iterable[str]) -> Dict[str, Assertions]:
        """For each STIX id, what every (case, IRIS key) asserted on it (labels, markings); one query per
        few hundred ids, so a 10,000-IOC sync stays a few dozen queries."""
        ids = sorted(set(stix_ids))
        out: Dict[str, Assertions] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start:start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for case, key, stix_id, refs in self._rows(
                    f"SELECT case_id, iris_key, stix_id, refs FROM iris_asserted WHERE stix_id IN ({marks})",
                    tuple(chunk)):
                out.setdefault(stix_id, {})[(case, key)] = set(json.loads(refs))
        return out

    def stamps(self, case_id: Any, iris_keys: Iterable[str], case_deleted: Any = ...) -> Dict[str, str]:
        """When IRIS last changed each of these keys in this case (``iris_key_times``): the latest of the key's
        own time, of its deletion without a case (:data:`ANY_CASE`) and of the case's deletion
        (:data:`ANY_KEY`: read here unless the caller knows it, ``case_deleted``); keys never stamped are
        absent."""
        case = str(case_id)
        keys = sorted(set(iris_keys))
        out: Dict[str, str] = {}
        gone = (self.deleted_at(case) if case_deleted is ... else case_deleted) if keys else None
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start:start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for key, at in self._rows("SELECT iris_key, at FROM iris_key_times WHERE case_id IN (?, ?) AND iris_key "
                                      f"IN ({marks})", (case, ANY_CASE, *chunk)):
                if at > out.get(key, ""):
                    out[key] = at
        if gone:
            out.update({key: gone for key in keys if gone > out.get(key, "")})
        return out

    def deleted_at(self, case_id: Any) -> Optional[str]:
        """When IRIS deleted the case (None: never): a message about it taken before that is superseded."""
        rows = self._rows("SELECT at FROM iris_key_times WHERE case_id = ? AND iris_key = ?", (str(case_id), ANY_KEY))
        return rows[0][0] if rows else None

    def sync_state(self, case_id: Any, sync_id: str) -> Optional[SyncState]:
        """How far a sync in parts has come; None when none of its parts was recorded (or it was closed
        and its parts dropped: see ``closed``)."""
        case = str(case_id)
        closed = bool(self._rows("SELECT 1 FROM iris_syncs_closed WHERE case_id = ? AND sync_id = ?", (case, sync_id)))
        rows = self._rows("SELECT part_index, total, at, keys FROM iris_sync_parts WHERE case_id = ? AND sync_id = ?",
                          (case, sync_id))
        if not rows and not closed:
            return None
        keys: Set[str] = set()
        for _index, _total, _at, part_keys in rows:
            keys.update(json.loads(part_keys))
        return SyncState(case_id=case, sync_id=sync_id, total=max((r[1] for r in rows), default=0),
                         received=len({r[0] for r in rows}), at=min((r[2] for r in rows), default=""), keys=keys,
                         closed=closed)

    def case_versions(self, case_ids: Iterable[Any]) -> Dict[str, int]:
        """Each case's write count (0 when never written): what changes between two reads was written by
        someone in between (see :meth:`_bump`)."""
        cases = sorted({str(c) for c in case_ids})
        found: Dict[str, int] = dict.fromkeys(cases, 0)
        for start in range(0, len(cases), _IN_CHUNK):
            chunk = cases[start:start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for case, version in self._rows(f"SELECT case_id, version FROM iris_case_versions WHERE case_id IN "
                                            f"({marks})", tuple(chunk)):
                found[str(case)] = int(version)
        return found

    def known_cases(self) -> List[str]:
        return sorted(row[0] for row in self._rows("SELECT case_id FROM iris_cases"))

    # ------------------------------------------------------------------------------------------ writes
    def record(self, case_id: Any, produced: Dict[str, List[str]], case_ref: Optional[str] = None,
               name: Optional[str] = None, replace: bool = True,
               asserted: Optional[Dict[str, Dict[str, List[str]]]] = None, at: Optional[str] = None,
               counted: bool = False) -> None:
        """Store what each key produced (and, with ``asserted``, the labels and markings it put on each id;
        with ``at``, the time of the IRIS event); with ``replace`` the key's previous ids and assertions are
        forgotten. ``counted``: the caller counts the write itself (:meth:`apply`, once per case)."""
        case = str(case_id)

        def action(cur: Any) -> None:
            if not counted:
                self._bump(cur, case)
            if at:
                self._stamp(cur, case, produced, at)
            if case_ref:
                if self._pg:
                    cur.execute("INSERT INTO iris_cases (case_id, case_ref, name) VALUES (%s, %s, %s) "
                                "ON CONFLICT (case_id) DO UPDATE SET case_ref = EXCLUDED.case_ref, "
                                "name = EXCLUDED.name", (case, case_ref, name))
                else:
                    cur.execute("INSERT OR REPLACE INTO iris_cases (case_id, case_ref, name) VALUES (?, ?, ?)",
                                (case, case_ref, name))
            # one statement per table for every key (a case part holds thousands of keys)
            pairs = [(case, key) for key in produced]
            if replace and pairs:
                self._many(cur, self._q("DELETE FROM iris_produced WHERE case_id = ? AND iris_key = ?"), pairs)
            if asserted is not None and pairs:
                self._many(cur, self._q("DELETE FROM iris_asserted WHERE case_id = ? AND iris_key = ?"), pairs)
                claims = [(case, key, stix_id, json.dumps(sorted(refs))) for key in produced
                          for stix_id, refs in sorted((asserted.get(key) or {}).items()) if refs]
                if claims:
                    self._many(cur, self._q("INSERT INTO iris_asserted (case_id, iris_key, stix_id, refs) "
                                            "VALUES (?, ?, ?, ?)"), claims)
            rows = [(case, key, stix_id) for key, ids in produced.items() for stix_id in dict.fromkeys(ids)]
            if rows:
                if self._pg:
                    self._many(cur, "INSERT INTO iris_produced (case_id, iris_key, stix_id) VALUES (%s, %s, %s) "
                                    "ON CONFLICT DO NOTHING", rows)
                else:
                    self._many(cur, "INSERT OR IGNORE INTO iris_produced (case_id, iris_key, stix_id) "
                                    "VALUES (?, ?, ?)", rows)
        self._run(action)

    def forget(self, case_id: Any, iris_keys: List[str], at: Optional[str] = None, counted: bool = False) -> None:
        """Drop the keys; with ``at`` (the event's time) remember when IRIS deleted them (``counted``: see
        :meth:`record`)."""
        def action(cur: Any) -> None:
            if not counted:
                self._bump(cur, str(case_id))
            pairs = [(str(case_id), key) for key in iris_keys]  # one statement per table, as in record()
            if pairs:
                for table in ("iris_produced", "iris_asserted"):
                    self._many(cur, self._q(f"DELETE FROM {table} WHERE case_id = ? AND iris_key = ?"), pairs)
            if at:
                self._stamp(cur, str(case_id), iris_keys, at)
        self._run(action)

    def _stamp(self, cur: Any, case: str, iris_keys: Iterable[str], at: str) -> None:
        """Keep the latest time per key: a message processed late (from another IRIS process) never moves a
        key's time backwards."""
        rows = [(case, key, at) for key in dict.fromkeys(iris_keys)]
        if not rows:
            return
        newest = "GREATEST(iris_key_times.at, EXCLUDED.at)" if self._pg else "max(iris_key_times.at, excluded.at)"
        self._many(cur, self._q("INSERT INTO iris_key_times (case_id, iris_key, at) VALUES (?, ?, ?) "
                                f"ON CONFLICT (case_id, iris_key) DO UPDATE SET at = {newest}"), rows)

    def _bump(self, cur: Any, case: str) -> None:
        """Count a write of what plans read of ``case``: every writer of keys, assertions, references or key
        times calls it in its own transaction, so a write can never go unseen by :meth:`case_versions`."""
        cur.execute(self._q("INSERT INTO iris_case_versions (case_id, version) VALUES (?, 1) ON CONFLICT (case_id) "
                            "DO UPDATE SET version = iris_case_versions.version + 1"), (case,))

    def record_part(self, case_id: Any, sync_id: str, index: int, total: int, keys: Iterable[str], at: str) -> None:
        """A part of a sync was ingested (idempotent: a replayed part changes nothing, also once the sync
        was closed)."""
        conflict = " ON CONFLICT DO NOTHING" if self._pg else ""
        verb = "INSERT" if self._pg else "INSERT OR IGNORE"
        case = str(case_id)
        self._run(lambda cur: cur.execute(self._q(
            f"{verb} INTO iris_sync_parts (case_id, sync_id, part_index, total, at, keys) SELECT ?, ?, ?, ?, ?, ? "
            f"WHERE NOT EXISTS (SELECT 1 FROM iris_syncs_closed WHERE case_id = ? AND sync_id = ?){conflict}"),
            (case, sync_id, int(index), int(total), at, json.dumps(sorted(set(keys))), case, sync_id)))

    def close_sync(self, case_id: Any, sync_id: str) -> None:
        """Every part was in and the deletions it implies are done: keep only the fact that it closed."""
        case = str(case_id)

        def action(cur: Any) -> None:
            cur.execute(self._q("DELETE FROM iris_sync_parts WHERE case_id = ? AND sync_id = ?"), (case, sync_id))
            verb, conflict = ("INSERT", " ON CONFLICT DO NOTHING") if self._pg else ("INSERT OR IGNORE", "")
            cur.execute(self._q(f"{verb} INTO iris_syncs_closed (case_id, sync_id) VALUES (?, ?){conflict}"),
                        (case, sync_id))
        self._run(action)

    def record_conversion(self, case_id: Any, conversion: Dict[str, Any]) -> None:
        """The settings the module converted its latest message about the case with."""
        verb, conflict = ("INSERT", " ON CONFLICT (case_id) DO UPDATE SET conversion = EXCLUDED.conversion") \
            if self._pg else ("INSERT OR REPLACE", "")
        self._run(lambda cur: cur.execute(self._q(
            f"{verb} INTO iris_case_conversion (case_id, conversion) VALUES (?, ?){conflict}"),
            (str(case_id), json.dumps(conversion, sort_keys=True))))

    def conversion_of(self, case_id: Any) -> Optional[Dict[str, Any]]:
        rows = self._rows("SELECT conversion FROM iris_case_conversion WHERE case_id = ?", (str(case_id),))
        return json.loads(rows[0][0]) if rows else None

    def count_writes(self, case_ids: Iterable[Any]) -> None:
        """Count one write of each case (:meth:`case_versions`), for writes made with ``counted=True``."""
        def action(cur: Any) -> None:
            for case in sorted({str(c) for c in case_ids}):
                self._bump(cur, case)
        self._run(action)

    def apply(self, plan: Any, counted: bool = False) -> None:
        """Write what one message's plan (``importer.plan.MessagePlan``) did to OpenCTI: the one way the
        import connector (inside :meth:`transaction`) and the tests change the ledger from a plan. ``counted``:
        the caller counted the writes of the plan's cases already (:meth:`count_writes`, once per step)."""
        if plan.tombstones:  # deleted without a case: older messages of any case leave these keys alone
            self._run(lambda cur: self._stamp(cur, ANY_CASE, plan.tombstones, plan.tombstones_at))
        for case in plan.cases:
            if case.delete_case:
                self.forget_case(case.case_id, at=case.at)
                continue
            if not counted:
                self.count_writes([case.case_id])  # once for the writes below
            self.record(case.case_id, case.set_keys, case_ref=case.case_ref, name=case.case_name,
                        asserted=case.asserted, at=case.at, counted=True)
            if case.forget_keys:
                self.forget(case.case_id, case.forget_keys, at=case.at, counted=True)
            if case.sync_part:
                sync_id, index, total, keys = case.sync_part
                self.record_part(case.case_id, sync_id, index, total, keys, case.at or "")
            if case.closes_sync:
                self.close_sync(case.case_id, case.closes_sync)
        if plan.conversion and plan.case_id is not None:
            self.record_conversion(plan.case_id, plan.conversion)

    def forget_case(self, case_id: Any, at: Optional[str] = None) -> None:
        """Drop everything of the case; with ``at`` (when IRIS deleted it) keep only its tombstone, so that a
        message about it taken before (still on its way, or on another replica) does not bring it back."""
        def action(cur: Any) -> None:
            self._bump(cur, str(case_id))  # the count goes on: a case deleted and re-created is not "unchanged"
            for table in ("iris_produced", "iris_asserted", "iris_cases", "iris_key_times", "iris_sync_parts",
                          "iris_syncs_closed", "iris_case_conversion"):
                cur.execute(self._q(f"DELETE FROM {table} WHERE case_id = ?"), (str(case_id),))
            if at:
                self._stamp(cur, str(case_id), [ANY_KEY], at)
        self._run(action)


class _SessionLock:
    """Session-level advisory locks on a PostgreSQL connection of their own (not the pool's): they outlive any
    transaction, and end with the session."""

    def __init__(self, ledger: Ledger) -> None:
        assert ledger.shared and ledger._pool is not None
        self.ledger = ledger
        self._conn: Any = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """End the session, and with it every lock it holds."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            _close(self._conn)
        self._conn = None


class LeaderLock(_SessionLock):
    """Leader election among replicas sharing a PostgreSQL ledger: a session-level advisory lock, keyed by
    the queue name, held on a dedicated connection.

    Only the holder consumes, so messages are handled one at a time in IRIS's order; the other replicas are
    hot standbys polling :meth:`try_acquire`. PostgreSQL releases the lock as soon as the holder's session
    ends (process killed, session terminated, database restarted), and a standby takes over.
    """

    def __init__(self, ledger: Ledger, name: str) -> None:
        super().__init__(ledger)
        self.key = advisory_key("leader", name)

    @property
    def pid(self) -> Optional[int]:
        return None if self._conn is None else self._conn.get_backend_pid()

    def try_acquire(self) -> bool:
        """True when this replica now holds the lock; raises :class:`LedgerUnavailable` when the database
        cannot be reached."""
        assert self.ledger._pool is not None
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self.ledger._pool.connect(autocommit=True)
                cur = self._conn.cursor()
                cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                held = bool(cur.fetchone()[0])
                self.ledger._mark(True)
            except Exception as exc:
                if not _connection_error(exc):
                    raise
                self._drop()
                raise self.ledger._unavailable(exc) from exc
            if not held:  # keep no idle session per standby between attempts
                self._drop()
            return held

    def alive(self) -> bool:
        """A round trip on the lock's session: False once the session (and so the lock) is gone."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                return False
            try:
                self._conn.cursor().execute("SELECT 1")
                return True
            except Exception as exc:  # noqa: BLE001 - any failure means the session cannot be trusted
                self._drop()
                if _connection_error(exc):
                    self.ledger._unavailable(exc)
                return False

    def held_by_me(self, cur: Any) -> bool:
        """Asked inside another session's transaction: does the lock session still hold the lock?"""
        pid = self.pid
        if pid is None:
            return False
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        cur.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %s "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1",
                    (pid, unsigned >> 32, unsigned & 0xFFFFFFFF))
        return cur.fetchone() is not None

    def release(self) -> None:
        self.close()


#: an advisory lock a message needs: ("case", case id) or ("key", IRIS key), and whether alone (exclusive)
LockTarget = Tuple[str, str, bool]


class StepLocks:
    """The advisory locks one step holds, taken message by message inside its ledger transaction, so that
    replicas consuming side by side (and reconcile) never plan what another is about to change.

    Two levels, as a database locks a table and its rows: a message about a whole case (a sync, a case edit)
    holds the case alone; a single event holds the case shared and each IRIS object it writes alone. So two
    replicas ingest different IOCs of one case at once, never the same IOC, and never an IOC beside a sync of
    its case. Locks are tried (``pg_try_advisory_xact_lock``): a message whose locks another replica holds
    waits for a later step, with every later message of its case, as ``SKIP LOCKED`` leaves rows; only a step
    that could take nothing waits, for its first message's locks alone, holding nothing else, so no two
    replicas ever wait on each other.
    """

    def __init__(self, cur: Any) -> None:
        self.cur = cur
        self.held: Dict[Tuple[str, str], bool] = {}  # -> held alone
        self.refused: Set[LockTarget] = set()  # tried by :meth:`prefetch` and held elsewhere

    def prefetch(self, targets: Iterable[LockTarget]) -> None:
        """Try many locks in one round trip per mode (a step's messages: 200 single events would otherwise
        cost 200 round trips); :meth:`take` then answers from what this found."""
        wanted = {t for t in targets if self._lacks(t)}
        for alone in (False, True):
            by_key = {advisory_key(kind, name): (kind, name, mode) for kind, name, mode in wanted if mode == alone}
            if not by_key:
                continue
            suffix = "" if alone else "_shared"
            self.cur.execute(f"SELECT k, pg_try_advisory_xact_lock{suffix}(k) FROM unnest(%s::bigint[]) AS k",
                             (sorted(by_key),))
            for key, granted in self.cur.fetchall():
                target = by_key[int(key)]
                if granted:
                    self._got(target)
                else:
                    self.refused.add(target)

    def take(self, targets: Iterable[LockTarget], wait: bool = False) -> bool:
        """Take every lock of one message (all, or False: what was taken stays held until the commit)."""
        for kind, name, alone in sorted(set(targets), key=lambda t: advisory_key(t[0], t[1])):
            if not self._lacks((kind, name, alone)):
                continue
            if not wait and (kind, name, alone) in self.refused:
                return False
            mode = "" if alone else "_shared"
            verb = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
            self.cur.execute(f"SELECT {verb}{mode}(%s)", (advisory_key(kind, name),))
            if not wait and not self.cur.fetchone()[0]:
                return False
            self._got((kind, name, alone))
        return True

    def _lacks(self, target: LockTarget) -> bool:
        """Not held, or held shared where it must be held alone."""
        have = self.held.get((target[0], target[1]))
        return have is None or (target[2] and not have)

    def _got(self, target: LockTarget) -> None:
        self.held[(target[0], target[1])] = bool(self.held.get((target[0], target[1]))) or target[2]

    def cases(self) -> Set[str]:
        return {name for kind, name in self.held if kind == "case"}


class StepsLock(_SessionLock):
    """Replicas side by side on a PostgreSQL ledger: every step of messages holds this lock from its planning
    until OpenCTI reported its last wave; shared by steps of upserts alone, alone (exclusive) by a step that
    removes anything or deletes an object without its case.

    A step's own locks (:class:`StepLocks`) cover its planning, sending and ledger commit, not the containers a
    pipelined step sends after its commit, nor the objects several cases share. A removal planned on one
    replica while another still has such upserts under way would be undone by them (a Case-Incident upsert
    merges its refs back, an object deleted while another case creates it). Holding this lock alone, the
    removal waits until no replica has a step under way, and no step starts until it is done: what a single
    consumer gets from its order ("a removal waits until nothing else is under way"), across replicas.

    Session-level advisory locks on a connection of their own: a step's hold outlives its ledger transaction.
    A session's own holds never block it (PostgreSQL: a backend does not conflict with itself), so a replica's
    removal does not wait for its own pipelined step, which its order already puts before it. PostgreSQL queues
    the requests fairly (a step asking after a removal waits behind it, even while the lock is only shared), so
    a removal is never starved by a stream of steps. A wait runs on a thread of its own, ``between`` being
    called every few hundredths of a second meanwhile (the AMQP heartbeat goes on; an exception from it, such
    as a stop, cancels the wait).
    """

    KEY = advisory_key("ledger", "steps")

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger)
        self._session = 0  # a new session drops every hold of the one before

    def hold(self, alone: bool, between: Callable[[], None] = lambda: None) -> Tuple[int, bool]:
        """Wait for the lock (shared, or ``alone``); returns the hold to :meth:`release`."""
        suffix = "" if alone else "_shared"
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self.ledger._pool.connect(autocommit=True)  # type: ignore[union-attr]
                    self._session += 1
                cur = self._conn.cursor()
                cur.execute(f"SELECT pg_try_advisory_lock{suffix}(%s)", (self.KEY,))
                if not cur.fetchone()[0]:
                    self._wait(f"SELECT pg_advisory_lock{suffix}(%s)", between)
                self.ledger._mark(True)
                return self._session, alone
            except Exception as exc:
                if not _connection_error(exc):
                    raise
                self._drop()
                raise self.ledger._unavailable(exc) from exc

    def _wait(self, query: str, between: Callable[[], None]) -> None:
        """The blocking request, on a thread, while ``between`` runs here."""
        failure: List[BaseException] = []

        def request() -> None:
            try:
                self._conn.cursor().execute(query, (self.KEY,))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                failure.append(exc)

        waiter = threading.Thread(target=request, name="iris-opencti-steps-lock", daemon=True)
        waiter.start()
        try:
            while waiter.is_alive():
                waiter.join(0.05)
                if waiter.is_alive():
                    between()
        except BaseException:
            self._conn.cancel()  # the request ends (cancelled) or was granted: either way the session goes
            waiter.join()
            self._drop()
            raise
        if failure:
            raise failure[0]

    def release(self, held: Tuple[int, bool]) -> None:
        """End a hold (a hold of a session that died is gone already)."""
        session, alone = held
        with self._lock:
            if session != self._session or self._conn is None or self._conn.closed:
                return
            function = "pg_advisory_unlock" if alone else "pg_advisory_unlock_shared"
            try:
                self._conn.cursor().execute(f"SELECT {function}(%s)", (self.KEY,))
            except Exception as exc:  # a dead session released everything it held
                if not _connection_error(exc):
                    raise
                self._drop()


class LedgerOverlay:
    """The ledger as it will be once pending messages are applied, without touching it yet.

    The connector resolves a batch of messages one after the other, each seeing the effect of the previous
    ones, but writes the ledger only after OpenCTI accepted the whole batch: a batch that fails leaves the
    ledger as it was, so its redelivered messages resolve exactly as the first time.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._keys: Dict[Tuple[str, str], Set[str]] = {}
        self._refs: Dict[str, Optional[str]] = {}
        self._asserted: Dict[Tuple[str, str], Dict[str, Set[str]]] = {}
        self._dropped_cases: Set[str] = set()
        self._stamps: Dict[Tuple[str, str], str] = {}
        # read once per step: only a whole-case message changes them, and it holds its case alone (StepLocks)
        self._read_refs: Dict[str, Optional[str]] = {}
        self._read_deleted: Dict[str, Optional[str]] = {}

    def _case_keys(self, case_id: str) -> Dict[str, Set[str]]:
        base = {} if case_id in self._dropped_cases else self.ledger.case_map(case_id)
        for (case, key), ids in self._keys.items():
            if case == case_id:
                if ids:
                    base[key] = set(ids)
                else:
                    base.pop(key, None)
        return base

    def case_map(self, case_id: Any) -> Dict[str, Set[str]]:
        return self._case_keys(str(case_id))

    def ids_of(self, case_id: Any, iris_key: str) -> Set[str]:
        """One key, without reading the whole case (a one-IOC event in a 10,000-IOC case stays cheap)."""
        pair = (str(case_id), iris_key)
        if pair in self._keys:
            return set(self._keys[pair])
        if pair[0] in self._dropped_cases:
            return set()
        return self.ledger.ids_of(*pair)

    def case_ref(self, case_id: Any) -> Optional[str]:
        case_id = str(case_id)
        if case_id in self._refs:
            return self._refs[case_id]
        if case_id in self._dropped_cases:
            return None
        if case_id not in self._read_refs:
            self._read_refs[case_id] = self.ledger.case_ref(case_id)
        return self._read_refs[case_id]

    def holders(self, stix_id: str) -> Set[Tuple[str, str]]:
        found = {(c, k) for c, k in self.ledger.holders(stix_id)
                 if c not in self._dropped_cases and (c, k) not in self._keys}
        found |= {pair for pair, ids in self._keys.items() if stix_id in ids}
        return found

    def cases_holding(self, iris_key: str) -> List[str]:
        cases = {c for c in self.ledger.cases_holding(iris_key)
                 if c not in self._dropped_cases and self._keys.get((c, iris_key), True)}
        cases |= {c for (c, k), ids in self._keys.items() if k == iris_key and ids}
        return sorted(cases)

    def stamps(self, case_id: Any, iris_keys: Iterable[str]) -> Dict[str, str]:
        case = str(case_id)
        keys = list(iris_keys)
        out = {} if case in self._dropped_cases else self.ledger.stamps(case, keys, self._ledger_deleted_at(case))
        gone = self._stamps.get((case, ANY_KEY))
        for key in keys:
            pending = max(self._stamps.get((case, key), ""), self._stamps.get((ANY_CASE, key), ""), gone or "")
            if pending and pending > out.get(key, ""):
                out[key] = pending
        return out

    def deleted_at(self, case_id: Any) -> Optional[str]:
        case = str(case_id)
        return self._stamps.get((case, ANY_KEY)) or self._ledger_deleted_at(case)

    def _ledger_deleted_at(self, case: str) -> Optional[str]:
        if case not in self._read_deleted:
            self._read_deleted[case] = self.ledger.deleted_at(case)
        return self._read_deleted[case]

    def asserted_many(self, stix_ids: Iterable[str]) -> Dict[str, Assertions]:
        ids = set(stix_ids)
        out: Dict[str, Assertions] = {}
        for stix_id, claims in self.ledger.asserted_many(ids).items():
            kept = {pair: refs for pair, refs in claims.items()
                    if pair[0] not in self._dropped_cases and pair not in self._keys}
            if kept:
                out[stix_id] = kept
        for pair, by_id in self._asserted.items():
            for stix_id, refs in by_id.items():
                if stix_id in ids and refs:
                    out.setdefault(stix_id, {})[pair] = set(refs)
        return out

    def apply(self, plan: Any) -> None:
        """Record one message's plan (``resolve.MessagePlan``) as pending."""
        for key in plan.tombstones:
            if plan.tombstones_at > self._stamps.get((ANY_CASE, key), ""):
                self._stamps[(ANY_CASE, key)] = plan.tombstones_at
        for case in plan.cases:
            if case.delete_case:
                self._dropped_cases.add(case.case_id)
                self._keys = {pair: ids for pair, ids in self._keys.items() if pair[0] != case.case_id}
                self._asserted = {pair: c for pair, c in self._asserted.items() if pair[0] != case.case_id}
                self._refs[case.case_id] = None
                self._stamps = {pair: at for pair, at in self._stamps.items() if pair[0] != case.case_id}
                if case.at:
                    self._stamps[(case.case_id, ANY_KEY)] = case.at
                continue
            if case.at:
                for key in [*case.set_keys, *case.forget_keys]:
                    if case.at > self._stamps.get((case.case_id, key), ""):
                        self._stamps[(case.case_id, key)] = case.at
            if case.case_ref:
                self._refs[case.case_id] = case.case_ref
            for key, ids in case.set_keys.items():
                self._keys[(case.case_id, key)] = set(ids)
                self._asserted[(case.case_id, key)] = {
                    i: set(refs) for i, refs in (case.asserted.get(key) or {}).items()}
            for key in case.forget_keys:
                self._keys[(case.case_id, key)] = set()
                self._asserted[(case.case_id, key)] = {}
