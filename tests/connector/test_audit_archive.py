"""The audit archive: content-addressed, compressed, hash-chained, scrubbed of secrets."""

import datetime as dt
import gzip
import json
import os
import threading

from iris_opencti_connector.archive import Archive, replay
from iris_opencti_connector.archive_cli import main

BUNDLE = {"type": "bundle", "id": "bundle--1", "objects": [{"type": "ipv4-addr", "id": "ipv4-addr--1",
                                                             "value": "192.0.2.1"}]}


def filled(tmp_path, n=4):
    archive = Archive(str(tmp_path / "a"))
    for i in range(n):
        archive.record_message(json.dumps({"n": i}).encode(), case_id=10, event="ioc.created",
                               message_id="m%d" % i, work_id="w%d" % i)
        archive.record_bundle(BUNDLE, case_id=10, event="ioc.created", message_id="m%d" % i, work_id="w%d" % i)
    return archive


def test_content_addressed_compressed_and_chained(tmp_path):
    archive = filled(tmp_path)
    entries = list(archive.entries())
    assert [e["seq"] for e in entries] == list(range(1, 9))
    bundle_shas = {e["sha256"] for e in entries if e["kind"] == "bundle"}
    assert len(bundle_shas) == 1  # the same bundle is stored once
    path = os.path.join(archive.root, "objects", entries[1]["sha256"][:2], entries[1]["sha256"] + ".json.gz")
    assert json.loads(gzip.decompress(open(path, "rb").read())) == BUNDLE
    assert entries[1]["prev"] == entries[0]["hash"]
    assert archive.verify() == []
    assert [e["work_id"] for e in archive.entries(kind="message")] == ["w0", "w1", "w2", "w3"]


def rewrite(archive, change):
    lines = open(archive.index_path).read().splitlines()
    lines = change(lines)
    open(archive.index_path, "w").write("\n".join(lines) + "\n")


def test_tampering_is_detected(tmp_path):
    archive = filled(tmp_path)

    def edit(lines):
        entry = json.loads(lines[2])
        entry["case_id"] = "99"
        lines[2] = json.dumps(entry, sort_keys=True)
        return lines

    rewrite(archive, edit)
    assert any("entry 3: content altered" in p for p in archive.verify())
    archive = filled(tmp_path / "b")
    rewrite(archive, lambda lines: lines[:3] + lines[4:])
    assert any("entry 5" in p and ("missing" in p or "chain" in p) for p in archive.verify())
    archive = filled(tmp_path / "c")
    rewrite(archive, lambda lines: [lines[1], lines[0]] + lines[2:])
    assert archive.verify()
    archive = filled(tmp_path / "d")
    sha = list(archive.entries())[0]["sha256"]
    path = os.path.join(archive.root, "objects", sha[:2], sha + ".json.gz")
    open(path, "wb").write(gzip.compress(b'{"n": 666}'))
    assert any("entry 1: object" in p and "damaged" in p for p in archive.verify())
    os.remove(path)
    assert any("entry 1: object" in p and "missing" in p for p in archive.verify())


def test_secrets_never_enter_the_archive(tmp_path):
    archive = Archive(str(tmp_path / "a"))
    entry = archive.record_message({"config": {"opencti": {"token": "s3cr3t-token"}, "IRIS_API_KEY": "k3y"},
                                    "headers": {"Authorization": "Bearer abc"},
                                    "url": "amqp://iris:hunter2@rabbit:5672/%2F"}, case_id=1, event="case.sync")
    text = archive.load(entry["sha256"]).decode()
    for secret in ("s3cr3t-token", "k3y", "Bearer abc", "hunter2"):
        assert secret not in text
    assert "amqp://iris:***@rabbit:5672/%2F" in text


def test_retention_prunes_old_entries_and_the_chain_still_verifies(tmp_path):
    archive = filled(tmp_path)
    archive.retention_days = 7
    lines = open(archive.index_path).read().splitlines()
    old = []
    for line in lines[:4]:  # make the first four entries ten days old, re-chaining them honestly
        old.append(json.loads(line))
    # rebuild the chain with old timestamps
    from iris_opencti_connector.archive import GENESIS, _entry_hash

    prev = GENESIS
    rebuilt = []
    for n, line in enumerate(lines):
        entry = json.loads(line)
        if n < 4:
            entry["time"] = "2020-01-01T00:00:00.000Z"
        entry["prev"] = prev
        entry["hash"] = _entry_hash(entry)
        prev = entry["hash"]
        rebuilt.append(json.dumps(entry, sort_keys=True))
    open(archive.index_path, "w").write("\n".join(rebuilt) + "\n")
    assert archive.verify() == []
    assert archive.prune(now=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)) == 4
    assert [e["seq"] for e in archive.entries()] == [5, 6, 7, 8]
    assert archive.verify() == []
    archive.record_message(b"{}", case_id=1, event="case.sync")
    assert archive.verify() == [] and list(archive.entries())[-1]["seq"] == 9


def test_concurrent_appends_keep_one_valid_chain(tmp_path):
    archive = Archive(str(tmp_path / "a"))
    threads = [threading.Thread(target=lambda i=i: [archive.record_message({"t": i, "n": n}, case_id=i)
                                                    for n in range(20)]) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(list(archive.entries())) == 100 and archive.verify() == []


def test_cli_list_show_verify_replay(tmp_path, capsys):
    archive = filled(tmp_path, n=2)
    assert main(["--dir", archive.root, "list", "--kind", "bundle"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "ioc.created" in out[0] and "w0" in out[0]
    assert main(["--dir", archive.root, "show", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["content"] == BUNDLE
    assert main(["--dir", archive.root, "verify"]) == 0
    assert "OK: 4 entries" in capsys.readouterr().out
    assert main(["--dir", archive.root, "replay", "--dry-run"]) == 0
    assert "2 bundles replayed" in capsys.readouterr().out
    sent = []
    assert replay(archive, lambda bundle, why: sent.append((json.loads(bundle), why))) == 2
    assert sent[0][0] == BUNDLE and "entry 2" in sent[0][1]
    rewrite(archive, lambda lines: lines[1:])
    assert main(["--dir", archive.root, "verify"]) == 1
    assert main(["--dir", str(tmp_path / "nowhere"), "verify"]) == 2
    assert "no archive at" in capsys.readouterr().err
