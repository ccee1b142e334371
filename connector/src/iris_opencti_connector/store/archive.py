"""Audit archive: every IRIS message received and every bundle sent to OpenCTI, kept tamper-evident.

Why it looks like this:

* Content is stored gzip-compressed under the SHA-256 of its canonical JSON (``objects/<sha[:2]>/<sha>.json.gz``),
  so the same bundle sent a hundred times is stored once and any change to a stored object is detectable.
* ``index.jsonl`` is append-only, one entry per message or bundle (time, case, event, message id, work id,
  SHA-256). Each entry carries the hash of the previous one and its own hash over its fields, so editing,
  deleting or reordering entries breaks the chain and :meth:`Archive.verify` names the entry.
* ``head.json`` records the last entry written, so cutting entries off the end of the index (which a hash
  chain alone cannot reveal) is reported too. Copy it somewhere else to anchor the archive externally.
* Retention drops the oldest entries and starts a new chain segment whose origin (sequence number and the
  ``prev`` of its first entry) is recorded in ``anchor.json``: the pruned archive still verifies and tampering
  with what is left is still detected.
* Secrets are scrubbed before anything is hashed or written: tokens never enter the archive.
* Appends are serialised by a thread lock and by ``flock`` on the index (the connector and the CLI may run
  at the same time), and an index entry is written only once its object file is durable.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import functools
import gzip
import hashlib
import json
import os
import re
import threading
import zlib
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from iris_opencti_module.core.files import fsync_dir, write_atomically

GENESIS = "0" * 64
MASK = "***"
KINDS = ("message", "bundle")

_SECRET_KEY = re.compile(r"token|api[_-]?key|password|passwd|secret|authori[sz]ation", re.IGNORECASE)
# scheme://user:password@ — the password runs to the last "@" of the authority, so "p@ss" is masked whole.
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/?#@]*):(?P<password>[^\s/?#]*)@",
                              re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 64 * 1024
#: zlib's default: level 9 takes twice as long on a case's bundle for 2% less space
GZIP_LEVEL = 6

Clock = Callable[[], _dt.datetime]
Entry = Dict[str, Any]


class ArchiveError(ValueError):
    """A damaged or unknown archive item (object missing, not matching its hash, ambiguous key...)."""


# ------------------------------------------------------------------------------------------------- helpers
def mask_url_credentials(text: str) -> str:
    """``amqp://user:pass@host`` → ``amqp://user:***@host`` wherever a URL appears in ``text``."""
    if "://" not in text or "@" not in text:
        return text
    return _URL_CREDENTIALS.sub(lambda m: m.group("head") + ":" + MASK + "@", text)


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """A key whose value is masked (cached: a bundle repeats a few dozen keys hundreds of thousands of times)."""
    return _SECRET_KEY.search(key) is not None


def scrub(value: Any) -> Any:
    """A copy of a JSON value with secrets masked: the archive is read by auditors, not by credential holders.

    Any key that looks like a token, API key, password, secret or authorization header has its (non-empty)
    value replaced by ``***``, at any depth; passwords inside URLs in string values are masked as well.
    """
    if isinstance(value, str):
        return mask_url_credentials(value)
    if isinstance(value, dict):
        return {key: (MASK if _secret_key(str(key)) and item not in (None, "") else scrub(item))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(item) for item in value]
    return value


def canonical(data: Any) -> bytes:
    """One byte form per JSON value (sorted keys, no spaces, UTF-8): the basis of every hash here."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _entry_hash(entry: Entry) -> str:
    """``sha256(prev + canonical entry without "hash")``: chaining ``prev`` makes each hash cover all history."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(str(entry.get("prev", "")).encode("utf-8") + canonical(body)).hexdigest()


def _format_time(moment: _dt.datetime) -> str:
    moment = moment.astimezone(_dt.timezone.utc) if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def parse_time(text: str) -> _dt.datetime:
    """An ISO 8601 time (``Z`` allowed, a date alone allowed); times without a zone are taken as UTC."""
    try:
        moment = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ArchiveError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _as_entry(line: bytes) -> Optional[Entry]:
    """The index entry on a line, or None when the line is not one (torn write, hand edit)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or type(entry.get("seq")) is not int or not isinstance(entry.get("hash"), str):
        return None
    return entry


def _last_entry(handle: IO[bytes]) -> Optional[Entry]:
    """The last well-formed entry of the index, read backwards so appends stay O(1) as the archive grows."""
    handle.seek(0, os.SEEK_END)
    position = handle.tell()
    partial = b""
    while position > 0:
        step = min(_CHUNK, position)
        position -= step
        handle.seek(position)
        lines = (handle.read(step) + partial).split(b"\n")
        partial = lines.pop(0) if position > 0 else b""  # may be the tail of an earlier line: read more first
        for line in reversed(lines):
            if line.strip():
                entry = _as_entry(line)
                if entry is not None:
                    return entry
    return None


def _describe_range(first: int, last: int) -> str:
    return "entry %d" % first if first == last else "entries %d..%d" % (first, last)


# ------------------------------------------------------------------------------------------------- archive
class Archive:
    """The archive in directory ``root``; ``retention_days`` = 0 keeps everything forever.

    Layout: ``objects/<sha[:2]>/<sha>.json.gz``, ``index.jsonl``, ``head.json`` and, once pruned,
    ``anchor.json``. ``clock`` (returning an aware datetime) exists so tests can write entries in the past.
    """

    def __init__(self, root: str, retention_days: int = 0, *, clock: Optional[Clock] = None) -> None:
        self.root = root
        self.retention_days = int(retention_days or 0)
        self.objects_dir = os.path.join(root, "objects")
        self.index_path = os.path.join(root, "index.jsonl")
        self.head_path = os.path.join(root, "head.json")
        self.anchor_path = os.path.join(root, "anchor.json")
        self._clock: Clock = clock or _utcnow
        self._lock = threading.Lock()
        os.makedirs(self.objects_dir, exist_ok=True)

    # ---------------------------------------------------------------------------------------------- write
    def record_message(self, body: Union[bytes, str, Dict[str, Any]], *, case_id: Any = None,
                       event: Optional[str] = None, message_id: Optional[str] = None,
                       work_id: Optional[str] = None) -> Entry:
        """Archive a message as received from IRIS (raw body or decoded envelope); returns its index entry."""
        return self._append("message", body, case_id, event, message_id, work_id)

    def record_messages(self, messages: List[Tuple[Union[bytes, str, Dict[str, Any]], Dict[str, Any]]]) -> List[Entry]:
        """Archive a step's messages together: ``(body, fields)`` pairs, ``fields`` as :meth:`record_message`
        takes them. The same entries, in the same order, as one :meth:`record_message` per message, but with
        one index append and one sync of the index and of each objects directory, not one per message: a burst
        of 200 single events costs a few fsyncs instead of 800."""
        return self._append_many("message", [
            (body, fields.get("case_id"), fields.get("event"), fields.get("message_id"), fields.get("work_id"))
            for body, fields in messages])

    def record_bundle(self, bundle: Union[str, bytes, Dict[str, Any]], *, case_id: Any = None,
                      event: Optional[str] = None, message_id: Optional[str] = None,
                      work_id: Optional[str] = None) -> Entry:
        """Archive a STIX bundle as sent to OpenCTI within work ``work_id``; returns its index entry."""
        return self._append("bundle", bundle, case_id, event, message_id, work_id)

    def _object_path(self, sha: str) -> str:
        return os.path.join(self.objects_dir, sha[:2], sha + ".json.gz")

    @staticmethod
    def _prepare(data: Any) -> Tuple[bytes, str]:
        """Scrubbed canonical bytes and their SHA-256. Bodies that are not JSON are kept as text under ``unparsed``."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            try:
                data = json.loads(data)
            except ValueError:
                data = {"unparsed": data.decode("utf-8", "replace")}
        elif isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                data = {"unparsed": data}
        raw = canonical(scrub(data))
        return raw, hashlib.sha256(raw).hexdigest()

    def _write_object(self, sha: str, packed: bytes) -> List[str]:
        """Store an object (its file synced); returns the directories whose sync makes its name durable, for
        the caller to sync once for all the objects it writes (none when this content was stored already)."""
        path = self._object_path(sha)
        if os.path.exists(path):
            return []  # content addressing: this exact content is already stored
        directory = os.path.dirname(path)
        dirs = [directory]
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            dirs.append(self.objects_dir)
        write_atomically(path, packed, sync_dir=False)
        return dirs

    @contextlib.contextmanager
    def _locked_index(self) -> Iterator[IO[bytes]]:
        """The index, opened for appending and locked against other threads and other processes.

        ``prune`` replaces the index file; a process that was waiting for the lock on the old file would append
        to a file nobody reads, so after locking we check that we hold the file now at ``index.jsonl``.
        """
        with self._lock:
            while True:
                handle = open(self.index_path, "a+b")  # closed in finally, once the caller's block is done
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    try:
                        current = os.stat(self.index_path)
                    except FileNotFoundError:
                        continue
                    held = os.fstat(handle.fileno())
                    if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                        yield handle
                        return
                finally:
                    handle.close()  # also releases the flock

    def _append(self, kind: str, data: Any, case_id: Any, event: Optional[str], message_id: Optional[str],
                work_id: Optional[str]) -> Entry:
        return self._append_many(kind, [(data, case_id, event, message_id, work_id)])[0]

    def _append_many(self, kind: str, items: List[Tuple[Any, Any, Optional[str], Optional[str], Optional[str]]]
                     ) -> List[Entry]:
        """Objects first (durable: files and their directories synced), then their index entries, chained, in
        one write and one sync of the index."""
        prepared = []
        for data, case_id, event, message_id, work_id in items:
            raw, sha = self._prepare(data)
            prepared.append((raw, sha, gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0),
                             case_id, event, message_id, work_id))
        entries: List[Entry] = []
        with self._locked_index() as index:
            # Under the lock so that a concurrent prune cannot delete a deduplicated object we are about to cite.
            written = {d for _, sha, packed, *_ in prepared for d in self._write_object(sha, packed)}
            for directory in sorted(written, key=len, reverse=True):  # the new ones' parent last
                fsync_dir(directory)
            last = _last_entry(index)
            if last is not None:
                seq, prev = last["seq"] + 1, last["hash"]
            else:
                anchor = self._read_json(self.anchor_path) or {}
                seq, prev = int(anchor.get("seq", 1)), str(anchor.get("prev", GENESIS))
            for raw, sha, _packed, case_id, event, message_id, work_id in prepared:
                entry: Entry = {
                    "seq": seq, "time": _format_time(self._clock()), "kind": kind,
                    "case_id": None if case_id is None else str(case_id), "event": event, "message_id": message_id,
                    "work_id": work_id, "sha256": sha, "size": len(raw), "prev": prev,
                }
                entry["hash"] = _entry_hash(entry)
                entries.append(entry)
                seq, prev = seq + 1, entry["hash"]
            if not entries:
                return entries
            index.seek(0, os.SEEK_END)
            separator = b""
            if index.tell() > 0:
                index.seek(-1, os.SEEK_END)
                separator = b"" if index.read(1) == b"\n" else b"\n"  # keep a torn last line on its own line
            index.write(separator + b"".join(canonical(entry) + b"\n" for entry in entries))
            index.flush()
            os.fsync(index.fileno())
            last_entry = entries[-1]
            write_atomically(self.head_path, canonical(
                {"seq": last_entry["seq"], "hash": last_entry["hash"], "time": last_entry["time"]}),
                sync_dir=False)  # a head lost in a crash lags by one entry, which verify accepts
        return entries

    # ----------------------------------------------------------------------------------------------- read
    @staticmethod
    def _read_json(path: str) -> Optional[Dict[str, Any]]:
        try:
            with open(path, "rb") as handle:
                value = json.load(handle)
        except FileNotFoundError:
            return None
        except ValueError:
            raise ArchiveError(f"{os.path.basename(path)} is not valid JSON") from None
        if not isinstance(value, dict):
            raise ArchiveError(f"{os.path.basename(path)} is not a JSON object")
        return value

    def _raw_lines(self) -> Iterator[bytes]:
        try:
            handle = open(self.index_path, "rb")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip(b"\r\n")

    def entries(self, case_id: Any = None, event: Optional[str] = None, since: Union[str, _dt.datetime, None] = None,
                kind: Optional[str] = None) -> Iterator[Entry]:
        """Index entries in order, optionally only those of a case, an event, a kind, or at/after ``since``."""
        since_time = parse_time(since) if isinstance(since, str) else since
        if since_time is not None and since_time.tzinfo is None:
            since_time = since_time.replace(tzinfo=_dt.timezone.utc)
        for line in self._raw_lines():
            entry = _as_entry(line)
            if entry is None:
                continue  # verify reports it; listing the rest is still useful
            if case_id is not None and entry.get("case_id") != str(case_id):
                continue
            if event is not None and entry.get("event") != event:
                continue
            if kind is not None and entry.get("kind") != kind:
                continue
            if since_time is not None:
                try:
                    if parse_time(str(entry.get("time"))) < since_time:
                        continue
                except ArchiveError:
                    continue
            yield entry

    def find(self, key: str) -> Optional[Entry]:
        """The entry with sequence number ``key``, else the first whose SHA-256 starts with ``key`` (4+ hex)."""
        key = key.strip().lower()
        if key.isdigit():
            for entry in self.entries():
                if entry["seq"] == int(key):
                    return entry
        if len(key) < 4 or not all(c in "0123456789abcdef" for c in key):
            return None
        matches = [entry for entry in self.entries() if str(entry.get("sha256", "")).startswith(key)]
        if len({entry["sha256"] for entry in matches}) > 1:
            raise ArchiveError(f"{key} matches several objects: give more of the SHA-256")
        return matches[0] if matches else None

    def load(self, sha256: str) -> bytes:
        """The archived canonical JSON bytes, refused (:class:`ArchiveError`) unless they match ``sha256``."""
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise ArchiveError(f"not a SHA-256: {sha256!r}")
        try:
            with open(self._object_path(sha256), "rb") as handle:
                raw = gzip.decompress(handle.read())
        except FileNotFoundError:
            raise ArchiveError(f"object {sha256} is missing") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"object {sha256} is damaged: not gzip ({exc})") from None
        if hashlib.sha256(raw).hexdigest() != sha256:
            raise ArchiveError(f"object {sha256} is damaged: content does not match its SHA-256")
        return raw

    # --------------------------------------------------------------------------------------------- verify
    def _parsed_index(self) -> Tuple[List[Tuple[int, Entry]], List[str]]:
        entries: List[Tuple[int, Entry]] = []
        problems: List[str] = []
        for number, line in enumerate(self._raw_lines(), 1):
            entry = _as_entry(line)
            if entry is None:
                problems.append("index line %d: not an archive entry (damaged or edited)" % number)
            else:
                entries.append((number, entry))
        return entries, problems

    @staticmethod
    def _origin(entries: List[Entry], anchor: Optional[Dict[str, Any]]) -> Tuple[int, str]:
        """Where the chain in the index starts: genesis, ``anchor.json``, or (if a prune was interrupted between
        writing the anchor and rewriting the index) the anchor before it."""
        if not anchor:
            return 1, GENESIS
        seq, prev = int(anchor.get("seq", 1)), str(anchor.get("prev", GENESIS))
        if entries and entries[0]["seq"] < seq:
            before = anchor.get("previous") or {}
            return int(before.get("seq", 1)), str(before.get("prev", GENESIS))
        return seq, prev

    def verify(self) -> List[str]:
        """Every problem found, each naming the entry (seq) concerned; an empty list means the archive is intact.

        Checks each entry's own hash, the chain of ``prev`` hashes, sequence numbers (gaps, duplicates, order),
        the end of the index against ``head.json``, and every object against its SHA-256.
        """
        parsed, problems = self._parsed_index()
        entries = [entry for _, entry in parsed]
        try:
            anchor = self._read_json(self.anchor_path)
        except ArchiveError as exc:
            problems.append(str(exc))
            anchor = None
        try:
            head = self._read_json(self.head_path)
        except ArchiveError as exc:
            problems.append(str(exc))
            head = None
        origin_seq, origin_prev = self._origin(entries, anchor)

        by_seq: Dict[int, Entry] = {}
        lines_of: Dict[int, List[int]] = {}
        highest = None
        for number, entry in parsed:
            seq = entry["seq"]
            lines_of.setdefault(seq, []).append(number)
            by_seq.setdefault(seq, entry)
            if entry.get("hash") != _entry_hash(entry):
                problems.append("entry %d: content altered (its hash does not match its fields)" % seq)
            if seq < origin_seq:
                problems.append("entry %d: before the start of the chain (entry %d)" % (seq, origin_seq))
            elif highest is not None and seq < highest:
                problems.append("entry %d: out of order (index line %d comes after entry %d)" % (seq, number, highest))
            highest = seq if highest is None else max(highest, seq)
        for seq, numbers in sorted(lines_of.items()):
            if len(numbers) > 1:
                problems.append("entry %d: appears %d times (index lines %s)" % (
                    seq, len(numbers), ", ".join(map(str, numbers))))

        expected = origin_seq
        for seq in sorted(s for s in by_seq if s >= origin_seq):
            if seq > expected:
                problems.append("%s missing (before entry %d)" % (_describe_range(expected, seq - 1), seq))
            expected = seq + 1
            entry = by_seq[seq]
            if seq == origin_seq:
                if entry.get("prev") != origin_prev:
                    start = "genesis" if origin_prev == GENESIS else "anchor.json"
                    problems.append("entry %d: chain broken (prev does not match the start of the chain, %s)"
                                    % (seq, start))
            elif seq - 1 in by_seq and entry.get("prev") != by_seq[seq - 1].get("hash"):
                problems.append("entry %d: chain broken (prev does not match the hash of entry %d)" % (seq, seq - 1))
            if anchor and seq == int(anchor.get("seq", 0)) != origin_seq and entry.get("prev") != anchor.get("prev"):
                problems.append("entry %d: does not continue from anchor.json" % seq)

        if head is not None:
            head_seq = head.get("seq")
            if type(head_seq) is int and head_seq >= expected:
                problems.append("%s missing at the end of the index (head.json records entry %d)"
                                % (_describe_range(expected, head_seq), head_seq))
        elif entries:
            problems.append("head.json is missing: entries cut off the end of the index would go unnoticed")

        checked: Dict[str, Optional[str]] = {}  # each object is read once, however many entries cite it
        for _, entry in parsed:
            sha = entry.get("sha256")
            key = sha if isinstance(sha, str) else repr(sha)
            if key not in checked:
                try:
                    self.load(key)  # a non-string sha is refused as "not a SHA-256" (its repr)
                    checked[key] = None
                except ArchiveError as exc:
                    checked[key] = str(exc)
            if checked[key]:
                problems.append("entry %d: %s" % (entry["seq"], checked[key]))
        return problems

    # ------------------------------------------------------------------------------------------ retention
    def prune(self, now: Optional[_dt.datetime] = None) -> int:
        """Drop entries older than the retention and objects only they cite; returns the number dropped.

        The kept entries become a new chain segment whose origin goes to ``anchor.json`` (written before the
        index is replaced, with the previous origin kept in it, so a crash in between still verifies and the
        next prune finishes the job).
        """
        if self.retention_days <= 0:
            return 0
        now = now or self._clock()
        now = now if now.tzinfo else now.replace(tzinfo=_dt.timezone.utc)
        cutoff = now - _dt.timedelta(days=self.retention_days)
        with self._locked_index() as index:
            index.seek(0)
            lines = [line.rstrip(b"\r\n") for line in index if line.strip()]
            anchor = self._read_json(self.anchor_path)
            entries = [entry for entry in map(_as_entry, lines) if entry is not None]
            origin_seq, origin_prev = self._origin(entries, anchor)
            already_pruned = int(anchor.get("seq", 1)) if anchor else 1
            old: List[Entry] = []  # entries are appended in time order, so the old ones are a prefix of the index
            for line in lines:
                entry = _as_entry(line)
                if entry is None:
                    break  # keep damaged lines (and all after them) for verify to report
                if entry["seq"] >= already_pruned:  # older ones are left over from an interrupted prune
                    try:
                        if parse_time(str(entry.get("time"))) >= cutoff:
                            break
                    except ArchiveError:
                        break
                old.append(entry)
            if not old:
                return 0
            kept = lines[len(old):]
            last = old[-1]
            new_anchor = {"seq": last["seq"] + 1, "prev": last["hash"], "pruned_at": _format_time(now),
                          "retention_days": self.retention_days,
                          "previous": {"seq": origin_seq, "prev": origin_prev}}
            write_atomically(self.anchor_path, canonical(new_anchor))
            write_atomically(self.index_path, b"".join(line + b"\n" for line in kept))
            cited = {entry.get("sha256") for entry in map(_as_entry, kept) if entry is not None}
            for entry in old:
                sha = entry.get("sha256")
                if isinstance(sha, str) and _SHA256.match(sha) and sha not in cited:
                    cited.add(sha)  # delete once
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self._object_path(sha))
            return len(old)


# --------------------------------------------------------------------------------------------------- replay
def replay(archive: Archive, send: Callable[[str, str], None], case_id: Any = None,
           since: Union[str, _dt.datetime, None] = None) -> int:
    """Re-send archived bundles, oldest first, through ``send(bundle_json, description)``; returns how many.

    Each bundle is read through :meth:`Archive.load`, so a damaged object stops the replay instead of sending
    something that is not what was archived.
    """
    count = 0
    for entry in archive.entries(case_id=case_id, since=since, kind="bundle"):
        bundle = archive.load(entry["sha256"]).decode("utf-8")
        send(bundle, "archive entry %d (case %s, %s, %s, work %s)" % (
            entry["seq"], entry.get("case_id"), entry.get("event"), entry.get("time"), entry.get("work_id") or "-"))
        count += 1
    return count
