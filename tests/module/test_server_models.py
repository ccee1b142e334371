"""Publishing where IRIS's web app really runs the preload hooks, and spooling on failures of any type.

IRIS 2.4.20's web app is ``gunicorn app:app --worker-class eventlet`` with ``eventlet==0.30.2`` (iris-web
v2.4.20, ``docker/webApp/iris-entrypoint.sh`` and ``source/requirements.txt``), on Python 3.9. IRIS 2.5
(the develop branch) dropped eventlet and runs ``gunicorn app:app --threads 100 -w 1``: gunicorn's threaded
worker, on Python 3.12. Each model runs in a subprocess of its own (:mod:`.server_model`), with the
interpreter IRIS uses; ``setup.sh`` builds them (``.venv39`` with eventlet 0.30.2, ``.venv312``), and a
missing one fails these tests rather than skipping them, so ``run-tests.sh`` always runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from iris_opencti_module.transport import publisher as publisher_mod
from iris_opencti_module.transport.publisher import Publisher, PublishError
from iris_opencti_module.transport.spool import Spool

from .test_module_hooks import fake_flask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "module", "server_model.py")
#: what each model needs of its interpreter, checked by running it
PROBES = {
    "eventlet": ("3.9", "import eventlet, sys; assert eventlet.__version__ == '0.30.2', eventlet.__version__",
                 os.path.join(ROOT, ".venv39", "bin", "python")),
    "gthread": ("3.12", "import iris_opencti_module, iris_interface", os.path.join(ROOT, ".venv312", "bin", "python")),
}


def interpreter(model: str) -> str:
    """This interpreter if it fits the model, else the venv setup.sh builds for it; fails if neither does."""
    version, probe, venv_python = PROBES[model]
    wanted = tuple(int(p) for p in version.split("."))
    code = f"import sys; assert sys.version_info[:2] == {wanted!r}; {probe}"
    tried = []
    for candidate in dict.fromkeys([sys.executable, venv_python]):
        if os.path.exists(candidate) and subprocess.run([candidate, "-c", code], capture_output=True,
                                                        timeout=60).returncode == 0:
            return candidate
        tried.append(candidate)
    pytest.fail(f"no Python {version} for IRIS's {model} web worker among {tried}: run ./setup.sh")


def run_model(model: str, url: str, queue: str, spool_dir: str) -> Dict[str, Any]:
    proc = subprocess.run([interpreter(model), SCRIPT, model, url, queue, spool_dir], capture_output=True,
                          text=True, timeout=180, cwd=ROOT)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, json.dumps(report["results"], indent=1)[-4000:]
    return report


def sent_lines(results: List[Dict[str, Any]]) -> List[str]:
    return [line for r in results for line in r["logs"] if "ioc.deleted" in line]


def test_iris24_eventlet_web_worker_publishes_preload_deletions(rabbit, tmp_path):
    """The defect: under eventlet 0.30.2 pika's getaddrinfo(type=...) raised TypeError; nothing sent or spooled."""
    queue = rabbit.new_queue()
    spool_dir = str(tmp_path / "spool")
    # a host name, as in IRIS's compose file (iris-rabbitmq): resolving it is what failed
    report = run_model("eventlet", rabbit.url.replace("127.0.0.1", "localhost"), queue, spool_dir)
    facts = report["facts"]
    assert facts["python"] == "3.9" and facts["eventlet"] == "0.30.2" and facts["socket_patched"]
    assert facts["getaddrinfo_module"] == "eventlet.support.greendns"  # eventlet's resolver, as with dnspython
    assert "unexpected keyword argument 'type'" in facts["keyword_getaddrinfo"]  # the conditions of the defect
    lines = sent_lines(report["results"])
    assert len(lines) == 13 and all("sent to queue" in line for line in lines), lines
    envelopes = rabbit.envelopes(queue)
    unlink = envelopes[0]  # the IOC shared by cases 5 and 6, unlinked from 6: only the preload hook fires
    assert unlink["event"] == "ioc.deleted" and unlink["case"]["id"] == 6
    assert unlink["deleted"] == [{"kind": "ioc", "id": 12, "value": "evil.example", "type": "domain"}]
    concurrent = sorted(e["iris"]["ioc_ids"][0] for e in envelopes[1:])
    assert concurrent == list(range(100, 112))  # twelve simultaneous green requests, each message once
    assert Spool(spool_dir).pending() == []


def test_iris25_threaded_web_worker_publishes_preload_deletions(rabbit, tmp_path):
    """IRIS 2.5: no eventlet; concurrent request threads share one publisher and lose nothing."""
    queue = rabbit.new_queue()
    spool_dir = str(tmp_path / "spool")
    report = run_model("gthread", rabbit.url.replace("127.0.0.1", "localhost"), queue, spool_dir)
    facts = report["facts"]
    assert facts["python"] == "3.12" and not facts["eventlet_loaded"] and facts["getaddrinfo_module"] == "socket"
    lines = sent_lines(report["results"])
    assert len(lines) == 12 and all("sent to queue" in line for line in lines), lines
    envelopes = rabbit.envelopes(queue)
    assert sorted(e["iris"]["ioc_ids"][0] for e in envelopes) == list(range(100, 112))
    assert all(e["event"] == "ioc.deleted" and e["case"]["id"] == 9 for e in envelopes)
    assert Spool(spool_dir).pending() == []


def test_a_connection_error_of_an_unexpected_type_spools(module, iris24, monkeypatch):
    """Whatever the connection raises, the hook succeeds and the message waits in the spool, type logged."""
    one, two = iris24.case(5), iris24.case(6)
    ioc = iris24.ioc(12, "evil.example", "domain", cases=[one, two])
    good_url = module.values["amqp_url"]
    module.configure(amqp_url=good_url.replace("guest:guest@", "guest:Pa55word-xyz@"))
    real = publisher_mod.open_blocking_connection

    def broken(params):
        raise TypeError("getaddrinfo() got an unexpected keyword argument 'type' (Pa55word-xyz)")

    monkeypatch.setattr(publisher_mod, "open_blocking_connection", broken)
    monkeypatch.setattr(Publisher, "retry_interval", 0.0)
    fake_flask(monkeypatch, args={"cid": "6"})
    status = module.run("on_preload_ioc_delete", 12)
    assert status.is_success() and status.get_data() == [12], status.logs
    text = " ".join(status.logs)
    assert "ioc.deleted spooled" in text and "TypeError: getaddrinfo() got an unexpected keyword" in text, text
    assert "Pa55word-xyz" not in text and "guest:***@" in text
    spool = Spool(module.spool_dir)
    assert len(spool.pending()) == 1
    iris24.unlink(ioc, two)
    monkeypatch.setattr(publisher_mod, "open_blocking_connection", real)
    module.configure(amqp_url=good_url)
    after = module.run("on_postload_ioc_create", iris24.ioc(30, "192.0.2.30", cases=[one]))
    assert "1 spooled message(s) were sent before it" in after.logs[0], after.logs
    deleted, created = module.messages()
    assert deleted["event"] == "ioc.deleted" and deleted["case"]["id"] == 6
    assert deleted["deleted"][0]["value"] == "evil.example" and created["event"] == "ioc.created"
    assert spool.pending() == []


class _ExplodingChannel:
    """A channel whose publish fails with a type pika never documents."""

    is_open = True

    def basic_publish(self, **kwargs: Any) -> None:
        raise AssertionError("green thread switched inside pika")


def test_a_publish_error_of_an_unexpected_type_spools(tmp_path, monkeypatch):
    spool = Spool(str(tmp_path))
    publisher = Publisher("amqp://guest:Pa55word-xyz@127.0.0.1:1/%2F", "q", spool)
    drops = []
    monkeypatch.setattr(publisher, "_ready_channel", lambda: (_ExplodingChannel(), True))
    monkeypatch.setattr(publisher, "_drop", lambda: drops.append(1))
    outcome = publisher.publish(b"m1")
    assert outcome.status == "spooled" and outcome.waiting == 1
    assert "AssertionError: green thread switched inside pika" in outcome.detail
    assert drops  # the connection is not reused after an unknown failure
    assert [spool.read(n) for n in spool.pending()] == [b"m1"]
    # and a spooled message whose resend fails that way stays first, with the new one behind it
    assert publisher.publish(b"m2").status == "spooled"
    assert [spool.read(n) for n in spool.pending()] == [b"m1", b"m2"]


def test_an_unexpected_failure_outside_send_still_spools(tmp_path, monkeypatch):
    """The safety net in publish(): even if send() itself let something through, the message is kept."""
    spool = Spool(str(tmp_path))
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/%2F", "q", spool)

    def send(body):
        raise KeyError("surprise")

    monkeypatch.setattr(publisher, "send", send)
    outcome = publisher.publish(b"m1")
    assert outcome.status == "spooled" and "KeyError" in outcome.detail
    assert [spool.read(n) for n in spool.pending()] == [b"m1"]


def test_an_interrupted_publish_spools_then_propagates(tmp_path, monkeypatch):
    """A green thread killed mid-publish (eventlet.Timeout is a BaseException) keeps its message."""
    spool = Spool(str(tmp_path))
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/%2F", "q", spool)

    class Killed(BaseException):
        pass

    def send(body):
        raise Killed()

    monkeypatch.setattr(publisher, "send", send)
    with pytest.raises(Killed):
        publisher.publish(b"m1")
    assert [spool.read(n) for n in spool.pending()] == [b"m1"]


def test_without_a_spool_an_unexpected_failure_is_a_publish_error(monkeypatch):
    """``iris-opencti push`` publishes without a spool and reports PublishError: nothing else may escape."""
    publisher = Publisher("amqp://guest:Pa55word-xyz@127.0.0.1:1/%2F", "q")

    def broken(params):
        raise TypeError("getaddrinfo() got an unexpected keyword argument 'type'")

    monkeypatch.setattr(publisher_mod, "open_blocking_connection", broken)
    with pytest.raises(PublishError) as err:
        publisher.publish(b"m1")
    assert "TypeError" in str(err.value) and "Pa55word-xyz" not in str(err.value)
