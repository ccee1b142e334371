"""The audit archive and its CLI: content addressing, the hash chain and what tampering it reveals, secret
scrubbing, retention, concurrent writers, and replay."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import multiprocessing
import os
import re
import sys
import threading
import types
from pathlib import Path
from typing import Any, Callable, List

import pytest

from iris_opencti_connector.store.archive import GENESIS, Archive, ArchiveError, _entry_hash, canonical, replay, scrub
from iris_opencti_connector.store.archive_cli import main

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
ENTRY_KEYS = {"seq", "time", "kind", "case_id", "event", "message_id", "work_id", "sha256", "size", "prev", "hash"}


def bundle(value: str = "192.0.2.1") -> dict:
    return {"type": "bundle", "id": f"bundle--{hashlib.md5(value.encode()).hexdigest()}",
            "objects": [{"type": "ipv4-addr", "spec_version": "2.1", "id": "ipv4-addr--1", "value": value}]}


class Clock:
    """A settable clock, so entries can be written 'in the past' without editing the index."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def filled(root: Path, pairs: int = 4, clock: Callable[[], dt.datetime] | None = None) -> Archive:
    """``pairs`` × (message, bundle) for case 10: seqs 1..2*pairs; every bundle is the same content."""
    archive = Archive(str(root), clock=clock)
    for i in range(pairs):
        envelope = {"schema": 1, "message_id": "m%d" % i, "event": "ioc.created", "case": {"id": 10}, "n": i}
        archive.record_message(json.dumps(envelope).encode(), case_id=10, event="ioc.created",
                               message_id="m%d" % i, work_id="w%d" % i)
        archive.record_bundle(bundle(), case_id=10, event="ioc.created", message_id="m%d" % i, work_id="w%d" % i)
    return archive


def lines_of(archive: Archive) -> List[str]:
    return Path(archive.index_path).read_text().splitlines()


def write_lines(archive: Archive, lines: List[str]) -> None:
    Path(archive.index_path).write_text("".join(line + "\n" for line in lines))


def object_path(archive: Archive, sha: str) -> Path:
    return Path(archive.root) / "objects" / sha[:2] / (sha + ".json.gz")


def object_files(archive: Archive) -> List[Path]:
    return sorted((Path(archive.root) / "objects").rglob("*.json.gz"))


# -------------------------------------------------------------------------------------- storage and index
def test_content_addressed_deduplicated_and_gzipped(tmp_path):
    archive = Archive(str(tmp_path / "a"))
    first = archive.record_bundle(bundle(), case_id=1, event="ioc.created", message_id="m1", work_id="w1")
    # the same content as text, keys in another order and spaced out: canonical form, same address
    text = json.dumps(dict(reversed(list(bundle().items()))), indent=4)
    second = archive.record_bundle(text, case_id=2, event="ioc.updated", message_id="m2", work_id="w2")
    assert first["sha256"] == second["sha256"]
    assert len(object_files(archive)) == 1
    path = object_path(archive, first["sha256"])
    packed = path.read_bytes()
    assert packed[:2] == b"\x1f\x8b"  # gzip on disk
    raw = gzip.decompress(packed)
    assert raw == canonical(bundle()) and hashlib.sha256(raw).hexdigest() == first["sha256"]
    assert first["size"] == len(raw)
    assert archive.load(first["sha256"]) == raw
    other = archive.record_bundle(bundle("198.51.100.7"), case_id=1, event="ioc.created", message_id="m3",
                                  work_id="w3")
    assert other["sha256"] != first["sha256"] and len(object_files(archive)) == 2


def test_index_entries_are_chained(tmp_path):
    clock = Clock()
    archive = filled(tmp_path / "a", clock=clock)
    entries = list(archive.entries())
    assert [e["seq"] for e in entries] == list(range(1, 9))
    assert all(set(e) == ENTRY_KEYS for e in entries)
    assert entries[0]["prev"] == GENESIS
    for before, after in zip(entries, entries[1:]):
        assert after["prev"] == before["hash"]
    for entry in entries:
        body = {k: v for k, v in entry.items() if k != "hash"}
        assert entry["hash"] == hashlib.sha256((entry["prev"] + json.dumps(
            body, sort_keys=True, separators=(",", ":"))).encode()).hexdigest()
    first = entries[0]
    assert first["time"] == "2026-01-01T12:00:00.123Z"
    assert (first["kind"], first["case_id"], first["event"], first["message_id"], first["work_id"]) == (
        "message", "10", "ioc.created", "m0", "w0")
    assert [e["kind"] for e in entries[:2]] == ["message", "bundle"]
    assert archive.verify() == []
    head = json.loads(Path(archive.head_path).read_text())
    assert (head["seq"], head["hash"]) == (8, entries[-1]["hash"])


def test_entries_filters(tmp_path):
    clock = Clock()
    archive = Archive(str(tmp_path / "a"), clock=clock)
    archive.record_message(b"{}", case_id=1, event="case.sync", message_id="a")
    clock.now = T0 + dt.timedelta(hours=1)
    archive.record_bundle(bundle(), case_id=2, event="ioc.created", message_id="b", work_id="w")
    archive.record_message(b"{}", case_id=2, event="ioc.deleted", message_id="c")
    assert [e["seq"] for e in archive.entries(case_id=2)] == [2, 3]
    assert [e["seq"] for e in archive.entries(case_id="1")] == [1]
    assert [e["seq"] for e in archive.entries(event="ioc.deleted")] == [3]
    assert [e["seq"] for e in archive.entries(kind="bundle")] == [2]
    assert [e["seq"] for e in archive.entries(since="2026-01-01T12:30:00Z")] == [2, 3]
    assert [e["seq"] for e in archive.entries(since="2026-01-01T13:30:00+01:00")] == [2, 3]  # 12:30 UTC
    assert [e["seq"] for e in archive.entries(since="2026-01-02")] == []
    with pytest.raises(ArchiveError):
        list(archive.entries(since="yesterday"))


def test_non_json_bodies_are_kept_as_text(tmp_path):
    archive = Archive(str(tmp_path / "a"))
    entry = archive.record_message(b"\xffnot json amqp://u:pw@h", case_id=None, event=None, message_id=None)
    assert json.loads(archive.load(entry["sha256"])) == {"unparsed": "\ufffdnot json amqp://u:***@h"}
    assert entry["case_id"] is None and archive.verify() == []


def test_find_and_load_guard_their_input(tmp_path):
    archive = filled(tmp_path / "a", pairs=1)
    bundle_entry = list(archive.entries())[1]
    assert archive.find("2") == bundle_entry
    assert archive.find(bundle_entry["sha256"][:8]) == bundle_entry
    assert archive.find("99") is None and archive.find("zz") is None
    with pytest.raises(ArchiveError, match="not a SHA-256"):
        archive.load("../../etc/passwd")
    with pytest.raises(ArchiveError, match="missing"):
        archive.load("ab" * 32)


# ------------------------------------------------------------------------------------------- tampering
def edit_case_id(lines: List[str]) -> List[str]:
    entry = json.loads(lines[2])
    entry["case_id"] = "99"
    lines[2] = json.dumps(entry, sort_keys=True)
    return lines


def edit_and_rehash(lines: List[str]) -> List[str]:
    entry = json.loads(lines[2])
    entry["case_id"] = "99"
    entry["hash"] = _entry_hash(entry)
    lines[2] = json.dumps(entry, sort_keys=True)
    return lines


@pytest.mark.parametrize("change, expected", [
    (edit_case_id, ["entry 3: content altered (its hash does not match its fields)"]),
    (edit_and_rehash, ["entry 4: chain broken (prev does not match the hash of entry 3)"]),
    (lambda lines: lines[:3] + lines[4:], ["entry 4 missing (before entry 5)"]),
    (lambda lines: lines[1:], ["entry 1 missing (before entry 2)"]),
    (lambda lines: lines[:2] + lines[5:], ["entries 3..5 missing (before entry 6)"]),
    (lambda lines: lines[:-2],
     ["entries 7..8 missing at the end of the index (head.json records entry 8)"]),
    (lambda lines: [lines[0], lines[2], lines[1]] + lines[3:],
     ["entry 2: out of order (index line 3 comes after entry 3)"]),
    (lambda lines: lines + [lines[3]], ["entry 4: out of order (index line 9 comes after entry 8)",
                                        "entry 4: appears 2 times (index lines 4, 9)"]),
    (lambda lines: lines[:4] + ['{"seq": 5, "trunc'] + lines[5:],
     ["index line 5: not an archive entry (damaged or edited)", "entry 5 missing (before entry 6)"]),
], ids=["edit", "edit-rehash", "delete-middle", "delete-first", "delete-range", "truncate-end", "swap",
        "duplicate", "garbage"])
def test_index_tampering_is_detected(tmp_path, change, expected):
    archive = filled(tmp_path / "a")
    assert archive.verify() == []
    write_lines(archive, change(lines_of(archive)))
    assert archive.verify() == expected


def test_object_tampering_is_detected(tmp_path):
    archive = filled(tmp_path / "a")
    entries = list(archive.entries())
    message_sha, bundle_sha = entries[0]["sha256"], entries[1]["sha256"]
    object_path(archive, message_sha).write_bytes(gzip.compress(b'{"n":666}'))
    assert archive.verify() == [f"entry 1: object {message_sha} is damaged: content does not match its SHA-256"]
    with pytest.raises(ArchiveError, match="damaged"):
        archive.load(message_sha)
    object_path(archive, message_sha).write_bytes(b"not gzip at all")
    assert len(archive.verify()) == 1 and "entry 1: object" in archive.verify()[0] and "not gzip" in \
        archive.verify()[0]
    object_path(archive, bundle_sha).unlink()
    problems = archive.verify()
    assert ["entry %d: object %s is missing" % (seq, bundle_sha) for seq in (2, 4, 6, 8)] == problems[1:]


def test_a_torn_last_line_is_reported_and_appends_go_on(tmp_path):
    archive = filled(tmp_path / "a", pairs=1)
    with open(archive.index_path, "a") as handle:
        handle.write('{"seq": 3, "time": "2026-')  # a crash in the middle of a write
    entry = archive.record_message(b"{}", case_id=1, event="case.sync", message_id="x")
    assert entry["seq"] == 3 and entry["prev"] == list(archive.entries())[1]["hash"]
    assert archive.verify() == ["index line 3: not an archive entry (damaged or edited)"]


def test_a_deleted_anchor_or_head_is_detected(tmp_path):
    archive = filled(tmp_path / "a", pairs=1)
    os.remove(archive.head_path)
    assert archive.verify() == [
        "head.json is missing: entries cut off the end of the index would go unnoticed"]


# ----------------------------------------------------------------------------------------------- secrets
SECRETS = ("s3cr3t-token", "k3y-value", "Bearer eyJhbGciOi", "hunter2", "p@ss", "db-pw", "cl13nt")


def test_secrets_never_enter_the_archive(tmp_path):
    archive = Archive(str(tmp_path / "a"))
    message = {
        "config": {"opencti": {"url": "http://opencti:8080", "token": "s3cr3t-token"}, "IRIS_API_KEY": "k3y-value"},
        "request": {"headers": {"Authorization": "Bearer eyJhbGciOi", "Accept": "application/json"}},
        "broker": "amqp://iris:hunter2@rabbit:5672/%2F",
        "note": "retry via amqps://svc:p@ss@mq.example:5671/vhost then https://opencti.example/graphql",
        "accounts": [{"user": "x", "Password": "db-pw"}, {"client_secret": "cl13nt", "accessToken": None}],
        "bundle": bundle(),
    }
    original = json.dumps(message, sort_keys=True)
    entry = archive.record_message(json.dumps(message).encode(), case_id=1, event="case.sync", message_id="m")
    assert json.dumps(message, sort_keys=True) == original  # the caller's data is not modified
    stored = json.loads(archive.load(entry["sha256"]))
    assert stored["config"]["opencti"] == {"url": "http://opencti:8080", "token": "***"}
    assert stored["config"]["IRIS_API_KEY"] == "***"
    assert stored["request"]["headers"] == {"Authorization": "***", "Accept": "application/json"}
    assert stored["broker"] == "amqp://iris:***@rabbit:5672/%2F"
    assert stored["note"] == "retry via amqps://svc:***@mq.example:5671/vhost then https://opencti.example/graphql"
    assert stored["accounts"] == [{"user": "x", "Password": "***"}, {"client_secret": "***", "accessToken": None}]
    assert stored["bundle"] == bundle()  # STIX content is untouched
    on_disk = b"".join(gzip.decompress(p.read_bytes()) for p in object_files(archive))
    on_disk += Path(archive.index_path).read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in on_disk, secret


def test_scrub_masks_keys_at_any_depth():
    assert scrub({"a": [{"b": {"api-key": 1, "apikey": "x", "API_KEY": "y", "refresh_token": {"t": 1}}}]}) == {
        "a": [{"b": {"api-key": "***", "apikey": "***", "API_KEY": "***", "refresh_token": "***"}}]}
    assert scrub({"secret": ""}) == {"secret": ""}  # nothing to hide, and the emptiness is worth seeing
    assert scrub("mailto:someone@example.com and https://user@host/path") == \
        "mailto:someone@example.com and https://user@host/path"


# --------------------------------------------------------------------------------------------- retention
def test_prune_keeps_the_chain_verifiable_and_drops_old_objects(tmp_path):
    clock = Clock()
    archive = Archive(str(tmp_path / "a"), retention_days=7, clock=clock)
    shared = bundle("203.0.113.5")
    old = [archive.record_message({"old": i}, case_id=1, event="case.sync", message_id="o%d" % i) for i in range(3)]
    old.append(archive.record_bundle(shared, case_id=1, event="case.sync", message_id="o3", work_id="w"))
    clock.now = T0 + dt.timedelta(days=30)
    recent = [archive.record_message({"new": i}, case_id=2, event="ioc.created", message_id="n%d" % i)
              for i in range(2)]
    recent.append(archive.record_bundle(shared, case_id=2, event="ioc.created", message_id="n2", work_id="w2"))
    assert len(object_files(archive)) == 6
    assert archive.prune(now=T0 + dt.timedelta(days=31)) == 4
    assert [e["seq"] for e in archive.entries()] == [5, 6, 7]
    anchor = json.loads(Path(archive.anchor_path).read_text())
    assert (anchor["seq"], anchor["prev"]) == (5, old[-1]["hash"]) == (5, recent[0]["prev"])
    for entry in old[:3]:
        assert not object_path(archive, entry["sha256"]).exists()
    assert object_path(archive, shared_sha := old[3]["sha256"]).exists()  # still cited by entry 7
    assert len(object_files(archive)) == 3 and recent[2]["sha256"] == shared_sha
    assert archive.verify() == []
    assert archive.record_message(b"{}", case_id=2, event="ioc.updated")["seq"] == 8
    assert archive.verify() == []
    assert archive.prune(now=T0 + dt.timedelta(days=31)) == 0

    lines = lines_of(archive)  # tampering after a prune is still detected
    write_lines(archive, lines[1:])
    assert archive.verify() == ["entry 5 missing (before entry 6)"]
    write_lines(archive, lines)
    os.remove(archive.anchor_path)
    assert archive.verify() == ["entries 1..4 missing (before entry 5)"]


def test_prune_everything_then_continue(tmp_path):
    clock = Clock()
    archive = filled(tmp_path / "a", pairs=2, clock=clock)
    archive.retention_days = 1
    last = list(archive.entries())[-1]
    assert archive.prune(now=T0 + dt.timedelta(days=2)) == 4
    assert list(archive.entries()) == [] and object_files(archive) == []
    assert archive.verify() == []
    entry = archive.record_message(b"{}", case_id=1)
    assert (entry["seq"], entry["prev"]) == (5, last["hash"])
    assert archive.verify() == []


def test_retention_zero_keeps_everything(tmp_path):
    archive = filled(tmp_path / "a", pairs=1, clock=Clock())
    assert archive.prune(now=T0 + dt.timedelta(days=10000)) == 0
    assert len(list(archive.entries())) == 2


def test_an_interrupted_prune_still_verifies_and_the_next_prune_finishes_it(tmp_path):
    clock = Clock()
    archive = filled(tmp_path / "a", pairs=2, clock=clock)
    clock.now = T0 + dt.timedelta(days=10)
    archive.record_message(b"{}", case_id=1)
    archive.retention_days = 5
    before = {path: path.read_bytes() for path in [Path(archive.index_path)] + object_files(archive)}
    assert archive.prune() == 4
    for path, content in before.items():  # as if the crash came after anchor.json, before the index
        path.write_bytes(content)
    assert archive.verify() == []
    archive.retention_days = 365
    assert archive.prune() == 4  # entries already behind the anchor go, whatever the retention
    assert [e["seq"] for e in archive.entries()] == [5] and archive.verify() == []


# -------------------------------------------------------------------------------------------- concurrency
def test_concurrent_appends_from_threads_keep_one_valid_chain(tmp_path):
    archive = Archive(str(tmp_path / "a"))

    def work(thread: int) -> None:
        for n in range(25):
            archive.record_message({"thread": thread, "n": n}, case_id=thread, event="ioc.created")
            archive.record_bundle(bundle(), case_id=thread, event="ioc.created", work_id="w")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [e["seq"] for e in archive.entries()] == list(range(1, 301))
    assert archive.verify() == []


def _append_from_another_process(root: str, worker: int, count: int) -> None:
    archive = Archive(root)
    for n in range(count):
        archive.record_message({"worker": worker, "n": n}, case_id=worker, event="ioc.created")


def test_appends_from_processes_while_pruning_keep_one_valid_chain(tmp_path):
    """Two connectors (or the connector and the CLI's prune) on one archive: flock, and the index swap."""
    root = str(tmp_path / "a")
    archive = Archive(root, retention_days=1)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_from_another_process, args=(root, w, 30)) for w in range(3)]
    for worker in workers:
        worker.start()
    pruned = 0
    while any(worker.is_alive() for worker in workers):
        pruned += archive.prune(now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2))
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    kept = list(archive.entries())
    assert pruned + len(kept) == 90
    assert archive.verify() == []
    assert len(object_files(archive)) == len(kept)


# --------------------------------------------------------------------------------------------------- replay
def test_replay_sends_archived_bundles_in_order(tmp_path):
    clock = Clock()
    archive = Archive(str(tmp_path / "a"), clock=clock)
    archive.record_message(b"{}", case_id=1, event="case.sync")
    archive.record_bundle(bundle("192.0.2.1"), case_id=1, event="case.sync", work_id="w1")
    clock.now = T0 + dt.timedelta(days=1)
    archive.record_bundle(bundle("192.0.2.2"), case_id=2, event="ioc.created", work_id="w2")
    archive.record_bundle(bundle("192.0.2.1"), case_id=1, event="ioc.updated", work_id="w3")
    sent: List[Any] = []
    assert replay(archive, lambda text, why: sent.append((json.loads(text), why))) == 3
    assert [b["objects"][0]["value"] for b, _ in sent] == ["192.0.2.1", "192.0.2.2", "192.0.2.1"]
    assert [b for b, _ in sent] == [bundle("192.0.2.1"), bundle("192.0.2.2"), bundle("192.0.2.1")]
    assert "archive entry 2 (case 1, case.sync" in sent[0][1] and "work w1" in sent[0][1]
    sent.clear()
    assert replay(archive, lambda text, why: sent.append(why), case_id=1) == 2
    sent.clear()
    assert replay(archive, lambda text, why: sent.append(why), since="2026-01-02T00:00:00Z") == 2
    assert replay(archive, lambda text, why: None, case_id=1, since="2026-01-02") == 1

    object_path(archive, list(archive.entries())[2]["sha256"]).write_bytes(gzip.compress(b"{}"))
    sent.clear()
    with pytest.raises(ArchiveError, match="damaged"):
        replay(archive, lambda text, why: sent.append(why))
    assert len(sent) == 1  # the damaged bundle is never sent


# ------------------------------------------------------------------------------------------------------ CLI
def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_list_show_verify(tmp_path, capsys):
    archive = filled(tmp_path / "a", pairs=2, clock=Clock())
    root = archive.root
    assert main(["--dir", root, "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    sha = list(archive.entries())[1]["sha256"]
    assert re.match(r"\s+2  2026-01-01T12:00:00\.123Z  bundle \s+case 10\s+ioc\.created\s+work "
                    rf"w0\s+{sha[:16]}$", out[1]), out[1]
    assert main(["--dir", root, "list", "--kind", "bundle", "--case", "10", "--event", "ioc.created"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["2", "4"]
    assert main(["--dir", root, "list", "--case", "11"]) == 0 and capsys.readouterr().out == ""

    assert main(["--dir", root, "show", "2"]) == 0
    out = capsys.readouterr().out
    assert '\n  "entry": {' in out  # pretty
    shown = json.loads(out)
    assert shown["content"] == bundle() and shown["entry"]["seq"] == 2
    assert main(["--dir", root, "show", sha[:10]]) == 0
    assert json.loads(capsys.readouterr().out)["entry"]["seq"] == 2  # the first entry citing it
    assert main(["--dir", root, "show", "42"]) == 2
    assert "no entry 42" in one_error_line(capsys.readouterr().err)

    assert main(["--dir", root, "verify"]) == 0
    assert capsys.readouterr().out == "OK: 4 entries, chain intact, every object matches its SHA-256\n"
    write_lines(archive, edit_case_id(lines_of(archive)))
    assert main(["--dir", root, "verify"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "entry 3: content altered (its hash does not match its fields)", "FAILED: 1 problem"]


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["--dir", str(tmp_path / "nowhere"), "verify"]) == 2
    assert "no archive at" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "nowhere").exists()  # reading never creates an archive
    monkeypatch.setenv("IRIS_ARCHIVE_DIR", str(filled(tmp_path / "env", pairs=1).root))
    assert main(["list", "--since", "last week"]) == 2
    assert "not an ISO 8601 time" in one_error_line(capsys.readouterr().err)
    assert main(["list"]) == 0 and len(capsys.readouterr().out.splitlines()) == 2


def test_cli_prune(tmp_path, capsys, monkeypatch):
    clock = Clock(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40))
    archive = filled(tmp_path / "a", pairs=2, clock=clock)
    clock.now = dt.datetime.now(dt.timezone.utc)
    archive.record_message(b"{}", case_id=1)
    monkeypatch.delenv("IRIS_ARCHIVE_RETENTION_DAYS", raising=False)
    assert main(["--dir", archive.root, "prune"]) == 0
    assert "nothing pruned" in capsys.readouterr().out
    monkeypatch.setenv("IRIS_ARCHIVE_RETENTION_DAYS", "90")
    assert main(["--dir", archive.root, "prune"]) == 0
    assert capsys.readouterr().out == "pruned 0 entries older than 90 days\n"
    assert main(["--dir", archive.root, "prune", "--retention-days", "30"]) == 0
    assert capsys.readouterr().out == "pruned 4 entries older than 30 days\n"
    assert main(["--dir", archive.root, "verify"]) == 0
    assert "OK: 1 entries" in capsys.readouterr().out


def test_cli_replay_dry_run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENCTI_TOKEN", raising=False)
    archive = filled(tmp_path / "a", pairs=3, clock=Clock())
    assert main(["--dir", archive.root, "replay", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[4] for line in out[:3]] == ["2", "4", "6"]
    assert all(line.startswith("would send archive entry") and line.endswith(": 1 objects") for line in out[:3])
    assert out[3] == "3 bundles replayed (dry run: nothing sent)"
    assert main(["--dir", archive.root, "replay", "--dry-run", "--case", "7"]) == 0
    assert capsys.readouterr().out == "0 bundles replayed (dry run: nothing sent)\n"
    monkeypatch.delenv("OPENCTI_URL", raising=False)
    assert main(["--dir", archive.root, "replay"]) == 2
    assert "OPENCTI_URL and OPENCTI_TOKEN" in one_error_line(capsys.readouterr().err)


class FakeOpenCTIApiClient:
    """Stands in for ``pycti.OpenCTIApiClient``: records calls; rejects bundles holding 'reject me'."""

    calls: List[Any] = []

    def __init__(self, url: str, token: str, **kwargs: Any) -> None:
        FakeOpenCTIApiClient.calls.append(("init", url, token, kwargs))
        self.stix2 = types.SimpleNamespace(import_bundle_from_json=self.import_bundle_from_json)

    def import_bundle_from_json(self, json_data: str, update: bool = False, **kwargs: Any) -> Any:
        FakeOpenCTIApiClient.calls.append(("import", json.loads(json_data), update))
        objects = json.loads(json_data)["objects"]
        if "reject me" in json_data:
            import logging

            logging.getLogger("worker").error("Unrecognized error during bundle import",
                                              extra={"attributes": {"error": "bad\n  value"}})
            return objects[:0], []
        return [{"id": o["id"], "type": o["type"]} for o in objects], []


def test_cli_replay_sends_through_pycti_and_never_prints_the_token(tmp_path, capsys, monkeypatch):
    token = "tok-" + "9" * 32
    monkeypatch.setitem(sys.modules, "pycti", types.SimpleNamespace(OpenCTIApiClient=FakeOpenCTIApiClient))
    monkeypatch.setenv("OPENCTI_URL", "http://opencti.test:8080")
    monkeypatch.setenv("OPENCTI_TOKEN", token)
    monkeypatch.setattr(FakeOpenCTIApiClient, "calls", [])
    archive = filled(tmp_path / "a", pairs=2, clock=Clock())
    assert main(["--dir", archive.root, "replay"]) == 0
    calls = FakeOpenCTIApiClient.calls
    assert calls[0][:3] == ("init", "http://opencti.test:8080", token)
    assert calls[1:] == [("import", bundle(), True), ("import", bundle(), True)]
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "2 bundles replayed"
    assert "sent archive entry 2 (case 10" in captured.out
    assert token not in captured.out + captured.err

    archive.record_bundle({"type": "bundle", "id": "bundle--x", "objects": [
        {"type": "note", "id": "note--1", "content": "reject me"}]}, case_id=11, event="ioc.created", work_id="w")
    assert main(["--dir", archive.root, "replay", "--case", "11"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "1 bundles replayed, 1 objects rejected by OpenCTI"
    assert one_error_line(captured.err) == \
        "iris-opencti-archive: error: Unrecognized error during bundle import: bad value"
    assert token not in captured.out + captured.err


def test_a_steps_messages_archived_together_are_the_same_entries_with_far_fewer_syncs(tmp_path, monkeypatch):
    """``record_messages`` (a step's messages) writes what one ``record_message`` per message writes (same
    chain, same objects, a message repeated in the step stored once), with one sync of the index instead of
    one per message: a burst of single events was bound by the archive's fsyncs."""
    bodies = [json.dumps({"message_id": "m%d" % i, "secret_token": "t%d" % i}).encode() for i in range(40)]
    bodies.append(bodies[0])  # redelivered within the same step
    fields = [{"case_id": 10, "event": "ioc.created", "message_id": "m%d" % i, "work_id": "w"} for i in range(41)]
    syncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (syncs.append(fd), real_fsync(fd))[1])

    one_by_one = Archive(str(tmp_path / "single"), clock=Clock())
    singles = [one_by_one.record_message(b, **f) for b, f in zip(bodies, fields)]
    single_syncs, syncs[:] = len(syncs), []
    together = Archive(str(tmp_path / "batch"), clock=Clock())
    batch = together.record_messages(list(zip(bodies, fields)))
    batch_syncs = len(syncs)

    assert batch == singles, "the same entries, chained the same way"
    assert together.verify() == [] and [e["seq"] for e in together.entries()] == list(range(1, 42))
    assert b"t3" not in together.load(batch[3]["sha256"]), "scrubbed as ever"
    assert batch_syncs * 2 < single_syncs, (batch_syncs, single_syncs)
    assert together.record_messages([]) == []
