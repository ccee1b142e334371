"""``iris-opencti push``: whole exported cases to the import connector's queue, as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .samples import DATA, load_export
from .stixcheck import assert_valid_bundle

EXAMPLE = os.path.join(os.path.dirname(DATA), "..", "examples", "case-export-2.4.20.json")


def push(*args, env=None, stdin=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "iris_opencti_module", "push", *args], capture_output=True,
                          text=True, timeout=120, env=full_env, input=stdin)


def test_push_sends_a_case_sync_like_the_manual_trigger(rabbit):
    queue = rabbit.new_queue()
    proc = push(EXAMPLE, os.path.join(DATA, "case_export_2_5.json"), "--iris-url", "https://iris.example",
                env={"IRIS_AMQP_URL": rabbit.url, "IRIS_QUEUE": queue})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"case #10: sent case.sync to queue {queue!r} at amqp://guest:***@127.0.0.1:5672/")
    assert "15 IOCs, 3 assets ->" in lines[0] and "1 above the TLP ceiling stay in IRIS" in lines[0]
    assert lines[1].startswith("case #4: sent case.sync")
    assert "skipped IOC 31 (sha1): TLP:RED is above the export ceiling TLP:AMBER" in proc.stderr
    bodies = rabbit.bodies(queue)
    assert len(bodies) == 2
    assert b"2fd4e1c67a2d28fced849ee1bb76e7391b93eb12" not in bodies[0]  # the TLP:RED IOC's value stays home
    env = json.loads(bodies[0])
    assert env["event"] == "case.sync" and env["case"]["id"] == 10 and env["user"] == "iris-opencti push"
    assert_valid_bundle(env["bundle"])
    export = load_export()["data"]
    assert env["iris"]["ioc_ids"] == [i["ioc_id"] for i in export["iocs"]]
    incident = [o for o in env["bundle"]["objects"] if o["type"] == "case-incident"][0]
    assert incident["external_references"][0]["url"] == "https://iris.example/case?cid=10"


def test_push_takes_options_over_nothing_and_honours_the_switch(rabbit, tmp_path):
    queue = rabbit.new_queue()
    export = load_export()
    export["data"]["case"]["tags"] = [{"tag_title": "opencti:off", "id": 1}]
    path = tmp_path / "off.json"
    path.write_text(json.dumps(export))
    args = ("--amqp-url", rabbit.url, "--queue", queue)
    proc = push(str(path), *args)
    assert proc.returncode == 0 and "not sent: the case is tagged opencti:off" in proc.stdout
    assert rabbit.bodies(queue) == []
    proc = push(str(path), "--force", *args)
    assert proc.returncode == 0 and "sent case.sync" in proc.stdout
    proc = push("-", "--sync-mode", "opt-in", *args, stdin=json.dumps(load_export()))
    assert "not sent: per-case mode 'opt-in'" in proc.stdout
    assert len(rabbit.bodies(queue)) == 1


def test_push_errors_never_show_the_password(rabbit, tmp_path):
    secret = "S3cr3t-Pa55"
    refused = push(EXAMPLE, "--amqp-url", f"amqp://guest:{secret}@127.0.0.1:5672/%2F", "--queue", "q")
    assert refused.returncode == 2 and "refused the login" in refused.stderr
    closed = push(EXAMPLE, env={"IRIS_AMQP_URL": f"amqp://guest:{secret}@127.0.0.1:1/%2F"})
    assert closed.returncode == 2 and "cannot connect to amqp://guest:***@127.0.0.1:1/%2F" in closed.stderr
    for proc in (refused, closed):
        assert secret not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
        assert [line for line in proc.stderr.splitlines() if not line.startswith("skipped ")] == [
            proc.stderr.splitlines()[-1]] and proc.stderr.splitlines()[-1].startswith("iris-opencti: error: ")
    nothing = push()
    assert nothing.returncode == 2 and "give case export file(s), --spool DIR, or both" in nothing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    proc = push(str(bad), "--amqp-url", rabbit.url)
    assert proc.returncode == 2 and "not an IRIS case export" in proc.stderr
    proc = push("--spool", str(tmp_path / "missing"), "--amqp-url", rabbit.url)
    assert proc.returncode == 2 and "not a directory" in proc.stderr


def test_push_sends_a_big_case_in_parts_under_the_ceiling(rabbit, tmp_path):
    queue = rabbit.new_queue()
    export = load_export()
    template = export["data"]["iocs"][0]
    export["data"]["iocs"] = [dict(template, ioc_id=1000 + i, ioc_value="10.1.%d.%d" % (i // 256, i % 256),
                                   ioc_type={"type_name": "ip-dst"}, ioc_type_id=76, ioc_tlp_id=2)
                              for i in range(1200)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(export))
    proc = push(str(path), "--amqp-url", rabbit.url, "--queue", queue, "--max-message-bytes", "131072")
    assert proc.returncode == 0, proc.stderr
    bodies = rabbit.bodies(queue)
    assert len(bodies) > 2 and max(len(b) for b in bodies) <= 131072
    assert "in %d parts of at most 131072 bytes" % len(bodies) in proc.stdout
    parts = [json.loads(b)["part"] for b in bodies]
    assert [p["index"] for p in parts] == list(range(len(bodies)))
    assert [p.get("total") for p in parts] == [None] * (len(bodies) - 1) + [len(bodies)]
    ioc_ids = sorted(i for b in bodies for i in json.loads(b)["iris"]["ioc_ids"])
    assert ioc_ids == list(range(1000, 2200))
    proc = push(str(path), "--amqp-url", rabbit.url, "--queue", queue, "--max-message-bytes", "100")
    assert proc.returncode != 0 and "--max-message-bytes 100 is below the minimum 65536" in proc.stderr


def test_push_shows_progress_on_a_terminal_only(rabbit, tmp_path):
    import pty

    queue = rabbit.new_queue()
    paths = []
    for n in range(3):
        export = load_export()
        export["data"]["case"]["case_id"] = 500 + n
        path = tmp_path / ("case-%d.json" % n)
        path.write_text(json.dumps(export))
        paths.append(str(path))
    args = [sys.executable, "-m", "iris_opencti_module", "push", *paths, "--amqp-url", rabbit.url, "--queue", queue]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=slave, env=env, timeout=120, text=True)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    text = seen.decode("utf-8", "replace")
    assert "\r\x1b[Kcases 1/3, " in text and "cases 3/3, 45 IOCs, " in text and "IOCs/s" in text
    quiet = subprocess.run(args, capture_output=True, env=env, timeout=120, text=True)
    assert quiet.returncode == 0 and "cases 1/3" not in quiet.stderr + quiet.stdout
    assert quiet.stdout.count("sent case.sync") == 3
