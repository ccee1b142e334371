"""Audit archive: every IRIS message received and every bundle sent to OpenCTI, tamper-evident.

Content is stored gzip-compressed under its SHA-256 (so the same bundle is stored once), and an append-only
index (``index.jsonl``) records time, case, event, message, work id and hash. Each index entry carries the
hash of the previous one, so editing, removing or reordering entries breaks the chain and ``verify`` says
where. Secrets are scrubbed before anything is written: tokens never enter the archive.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import gzip
import hashlib
import json
import os
import re
import tempfile
import threading
from typing import Any, Dict, Iterator, List, Optional, Union

GENESIS = "0" * 64
_SECRET_KEY = re.compile(r"(token|api[_-]?key|apikey|password|passwd|secret|authorization)", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]+):([^@/\s]+)@", re.IGNORECASE)


def scrub(value: Any) -> Any:
    """Mask secret-looking keys anywhere in a JSON value and passwords inside URLs."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v not in (None, "") else scrub(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str) and "@" in value and "://" in value:
        return _URL_CREDENTIALS.sub(r"\1:***@", value)
    return value


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _entry_hash(entry: Dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256((entry.get("prev", "") + _canonical(body).decode("utf-8")).encode("utf-8")).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_time(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Archive:
    """``root/objects/<sha[:2]>/<sha>.json.gz`` + ``root/index.jsonl`` (+ ``root/anchor.json`` after pruning)."""

    def __init__(self, root: str, retention_days: int = 0) -> None:
        self.root = root
        self.retention_days = retention_days
        self.index_path = os.path.join(root, "index.jsonl")
        self.anchor_path = os.path.join(root, "anchor.json")
        self._lock = threading.Lock()
        os.makedirs(os.path.join(root, "objects"), exist_ok=True)

    # ------------------------------------------------------------------------------------------ write
    def _object_path(self, sha: str) -> str:
        return os.path.join(self.root, "objects", sha[:2], sha + ".json.gz")

    def _store(self, data: Any) -> "tuple[str, int]":
        if isinstance(data, (bytes, bytearray)):
            try:
                data = json.loads(data)
            except ValueError:
                data = {"unparsed": bytes(data).decode("utf-8", "replace")}
        elif isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                data = {"unparsed": data}
        raw = _canonical(scrub(data))
        sha = hashlib.sha256(raw).hexdigest()
        path = self._object_path(sha)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(gzip.compress(raw, mtime=0))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        return sha, len(raw)

    def _append(self, kind: str, data: Any, case_id: Any, event: Optional[str], message_id: Optional[str],
                work_id: Optional[str]) -> Dict[str, Any]:
        sha, size = self._store(data)
        with self._lock, open(self.index_path, "a+", encoding="utf-8") as index:
            fcntl.flock(index, fcntl.LOCK_EX)
            try:
                index.seek(0)
                last = None
                for line in index:
                    if line.strip():
                        last = line
                previous = json.loads(last) if last else None
                entry: Dict[str, Any] = {
                    "seq": previous["seq"] + 1 if previous else self._anchor().get("next_seq", 1),
                    "time": _now(), "kind": kind,
                    "case_id": None if case_id is None else str(case_id), "event": event,
                    "message_id": message_id, "work_id": work_id, "sha256": sha, "size": size,
                    "prev": previous["hash"] if previous else self._anchor().get("prev", GENESIS),
                }
                entry["hash"] = _entry_hash(entry)
                index.seek(0, os.SEEK_END)
                index.write(json.dumps(entry, sort_keys=True) + "\n")
                index.flush()
                os.fsync(index.fileno())
            finally:
                fcntl.flock(index, fcntl.LOCK_UN)
        return entry

    def record_message(self, body: Union[bytes, str, Dict[str, Any]], *, case_id: Any = None,
                       event: Optional[str] = None, message_id: Optional[str] = None,
                       work_id: Optional[str] = None) -> Dict[str, Any]:
        return self._append("message", body, case_id, event, message_id, work_id)

    def record_bundle(self, bundle: Union[str, Dict[str, Any]], *, case_id: Any = None, event: Optional[str] = None,
                      message_id: Optional[str] = None, work_id: Optional[str] = None) -> Dict[str, Any]:
        return self._append("bundle", bundle, case_id, event, message_id, work_id)

    # ------------------------------------------------------------------------------------------- read
    def _anchor(self) -> Dict[str, Any]:
        if os.path.exists(self.anchor_path):
            with open(self.anchor_path, encoding="utf-8") as handle:
                return json.load(handle)
        return {}

    def _lines(self) -> List[str]:
        if not os.path.exists(self.index_path):
            return []
        with open(self.index_path, encoding="utf-8") as handle:
            return [line for line in handle if line.strip()]

    def entries(self, case_id: Any = None, event: Optional[str] = None, kind: Optional[str] = None,
                since: Optional[str] = None) -> Iterator[Dict[str, Any]]:
        since_dt = _parse_time(since) if since else None
        for line in self._lines():
            entry = json.loads(line)
            if case_id is not None and entry.get("case_id") != str(case_id):
                continue
            if event and entry.get("event") != event:
                continue
            if kind and entry.get("kind") != kind:
                continue
            if since_dt and _parse_time(entry["time"]) < since_dt:
                continue
            yield entry

    def find(self, key: str) -> Optional[Dict[str, Any]]:
        """An entry by sequence number or by (a prefix of) its SHA-256."""
        for entry in self.entries():
            if (key.isdigit() and entry["seq"] == int(key)) or (len(key) >= 6 and entry["sha256"].startswith(key)):
                return entry
        return None

    def load(self, sha: str) -> bytes:
        """The archived content, checked against its hash."""
        with open(self._object_path(sha), "rb") as handle:
            raw = gzip.decompress(handle.read())
        if hashlib.sha256(raw).hexdigest() != sha:
            raise ValueError("archived object %s does not match its SHA-256" % sha)
        return raw

    def verify(self) -> List[str]:
        """Every problem found: broken chain, missing or altered objects. An empty list means intact."""
        problems: List[str] = []
        anchor = self._anchor()
        prev = anchor.get("prev", GENESIS)
        expected_seq = anchor.get("next_seq", 1)
        for number, line in enumerate(self._lines(), 1):
            try:
                entry = json.loads(line)
            except ValueError:
                problems.append("index line %d: not JSON" % number)
                continue
            seq = entry.get("seq")
            if seq != expected_seq:
                problems.append("entry %s: expected sequence %s (entries missing or reordered)" % (seq, expected_seq))
            if entry.get("prev") != prev:
                problems.append("entry %s: chain broken (previous hash does not match)" % seq)
            if entry.get("hash") != _entry_hash(entry):
                problems.append("entry %s: content altered (hash does not match)" % seq)
            try:
                self.load(entry.get("sha256", ""))
            except FileNotFoundError:
                problems.append("entry %s: object %s is missing" % (seq, entry.get("sha256")))
            except (OSError, ValueError) as exc:
                problems.append("entry %s: object %s is damaged: %s" % (seq, entry.get("sha256"), exc))
            prev = entry.get("hash")
            expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
        return problems

    # ---------------------------------------------------------------------------------------- retention
    def prune(self, now: Optional[_dt.datetime] = None) -> int:
        """Drop entries older than the retention; the chain continues from an anchor. Returns entries dropped."""
        if self.retention_days <= 0:
            return 0
        now = now or _dt.datetime.now(_dt.timezone.utc)
        cutoff = now - _dt.timedelta(days=self.retention_days)
        with self._lock, open(self.index_path, "a+", encoding="utf-8") as index:
            fcntl.flock(index, fcntl.LOCK_EX)
            try:
                lines = self._lines()
                entries = [json.loads(line) for line in lines]
                count = 0  # entries are appended in time order: the old ones are a prefix
                while count < len(entries) and _parse_time(entries[count]["time"]) < cutoff:
                    count += 1
                if not count:
                    return 0
                old, kept = entries[:count], entries[count:]
                anchor = {"prev": old[-1]["hash"], "next_seq": old[-1]["seq"] + 1, "pruned_at": now.isoformat()}
                fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(anchor, handle)
                os.replace(tmp, self.anchor_path)
                fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.writelines(json.dumps(e, sort_keys=True) + "\n" for e in kept)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.index_path)
                referenced = {e["sha256"] for e in kept}
                for entry in old:
                    if entry["sha256"] not in referenced:
                        try:
                            os.remove(self._object_path(entry["sha256"]))
                        except FileNotFoundError:
                            pass
                return len(old)
            finally:
                fcntl.flock(index, fcntl.LOCK_UN)


def replay(archive: Archive, send: Any, case_id: Any = None, since: Optional[str] = None) -> int:
    """Re-send archived bundles, oldest first, through ``send(bundle_json, description)``."""
    count = 0
    for entry in archive.entries(case_id=case_id, kind="bundle", since=since):
        send(archive.load(entry["sha256"]).decode("utf-8"),
             "replay of archive entry %s (case %s, %s)" % (entry["seq"], entry["case_id"], entry["event"]))
        count += 1
    return count
