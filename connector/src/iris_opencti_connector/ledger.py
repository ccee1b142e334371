"""The ledger: which STIX ids each IRIS object produced, per case.

Deletions and updates must be exact, not guessed from names or values: when IRIS deletes IOC 29, the
connector removes exactly the ids IOC 29 produced in that case, and knows whether another IRIS object (in
this or another case) still produces the same observable. SQLite (a file) serves one connector; PostgreSQL
(by URL) lets several connector replicas share it.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

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
)


class Ledger:
    """IRIS object → STIX ids, backed by SQLite (``sqlite:///path`` or a plain path) or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._depth = 0
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg2  # optional dependency: only for shared ledgers

            self._conn: Any = psycopg2.connect(url)
            self._param = "%s"
            self._pg = True
        else:
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=10000")
            self._param = "?"
            self._pg = False
        with self.transaction() as cur:
            for statement in _SCHEMA:
                cur.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One atomic unit: a batch's ledger changes land together or not at all (nested calls join it)."""
        with self._lock:
            cur = self._conn.cursor()
            outer = self._depth == 0
            self._depth += 1
            try:
                if outer and not self._pg:
                    cur.execute("BEGIN IMMEDIATE")
                yield cur
                if outer:
                    if self._pg:
                        self._conn.commit()
                    else:
                        cur.execute("COMMIT")
            except BaseException:
                if outer:
                    if self._pg:
                        self._conn.rollback()
                    else:
                        cur.execute("ROLLBACK")
                raise
            finally:
                self._depth -= 1
                cur.close()

    def _q(self, sql: str) -> str:
        return sql.replace("?", self._param)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------------------------------- reads
    def ids_of(self, case_id: Any, iris_key: str) -> Set[str]:
        with self.transaction() as cur:
            cur.execute(self._q("SELECT stix_id FROM iris_produced WHERE case_id = ? AND iris_key = ?"),
                        (str(case_id), iris_key))
            return {row[0] for row in cur.fetchall()}

    def case_map(self, case_id: Any) -> Dict[str, Set[str]]:
        """Every IRIS key of a case and the ids it produced."""
        with self.transaction() as cur:
            cur.execute(self._q("SELECT iris_key, stix_id FROM iris_produced WHERE case_id = ?"), (str(case_id),))
            out: Dict[str, Set[str]] = {}
            for key, stix_id in cur.fetchall():
                out.setdefault(key, set()).add(stix_id)
            return out

    def cases_holding(self, iris_key: str) -> List[str]:
        """Cases in which an IRIS object produced something (IRIS 2.4 IOCs may sit in several)."""
        with self.transaction() as cur:
            cur.execute(self._q("SELECT DISTINCT case_id FROM iris_produced WHERE iris_key = ?"), (iris_key,))
            return sorted(row[0] for row in cur.fetchall())

    def holders(self, stix_id: str) -> Set[Tuple[str, str]]:
        """(case, IRIS key) pairs that produce this STIX id."""
        with self.transaction() as cur:
            cur.execute(self._q("SELECT case_id, iris_key FROM iris_produced WHERE stix_id = ?"), (stix_id,))
            return {(row[0], row[1]) for row in cur.fetchall()}

    def case_ref(self, case_id: Any) -> Optional[str]:
        with self.transaction() as cur:
            cur.execute(self._q("SELECT case_ref FROM iris_cases WHERE case_id = ?"), (str(case_id),))
            row = cur.fetchone()
            return row[0] if row else None

    def known_cases(self) -> List[str]:
        with self.transaction() as cur:
            cur.execute("SELECT case_id FROM iris_cases")
            return sorted(row[0] for row in cur.fetchall())

    # ------------------------------------------------------------------------------------------ writes
    def record(self, case_id: Any, produced: Dict[str, List[str]], case_ref: Optional[str] = None,
               name: Optional[str] = None, replace: bool = True) -> None:
        """Store what each key produced; with ``replace`` the key's previous ids are forgotten."""
        case = str(case_id)
        with self.transaction() as cur:
            if case_ref:
                if self._pg:
                    cur.execute("INSERT INTO iris_cases (case_id, case_ref, name) VALUES (%s, %s, %s) "
                                "ON CONFLICT (case_id) DO UPDATE SET case_ref = EXCLUDED.case_ref, "
                                "name = EXCLUDED.name", (case, case_ref, name))
                else:
                    cur.execute("INSERT OR REPLACE INTO iris_cases (case_id, case_ref, name) VALUES (?, ?, ?)",
                                (case, case_ref, name))
            for key, ids in produced.items():
                if replace:
                    cur.execute(self._q("DELETE FROM iris_produced WHERE case_id = ? AND iris_key = ?"), (case, key))
                rows = [(case, key, stix_id) for stix_id in dict.fromkeys(ids)]
                if not rows:
                    continue
                if self._pg:
                    cur.executemany("INSERT INTO iris_produced (case_id, iris_key, stix_id) VALUES (%s, %s, %s) "
                                    "ON CONFLICT DO NOTHING", rows)
                else:
                    cur.executemany("INSERT OR IGNORE INTO iris_produced (case_id, iris_key, stix_id) "
                                    "VALUES (?, ?, ?)", rows)

    def forget(self, case_id: Any, iris_keys: List[str]) -> None:
        with self.transaction() as cur:
            for key in iris_keys:
                cur.execute(self._q("DELETE FROM iris_produced WHERE case_id = ? AND iris_key = ?"),
                            (str(case_id), key))

    def forget_case(self, case_id: Any) -> None:
        with self.transaction() as cur:
            cur.execute(self._q("DELETE FROM iris_produced WHERE case_id = ?"), (str(case_id),))
            cur.execute(self._q("DELETE FROM iris_cases WHERE case_id = ?"), (str(case_id),))


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
        self._dropped_cases: Set[str] = set()
        self.pending: List[Any] = []

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
        return None if case_id in self._dropped_cases else self.ledger.case_ref(case_id)

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

    def apply(self, plan: Any) -> None:
        """Record one message's plan (``resolve.MessagePlan``) as pending."""
        self.pending.append(plan)
        for case in plan.cases:
            if case.delete_case:
                self._dropped_cases.add(case.case_id)
                self._keys = {pair: ids for pair, ids in self._keys.items() if pair[0] != case.case_id}
                self._refs[case.case_id] = None
                continue
            if case.case_ref:
                self._refs[case.case_id] = case.case_ref
            for key, ids in case.set_keys.items():
                self._keys[(case.case_id, key)] = set(ids)
            for key in case.forget_keys:
                self._keys[(case.case_id, key)] = set()
