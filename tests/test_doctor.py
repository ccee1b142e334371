"""``iris-opencti doctor`` against the IRIS API test server, the OpenCTI simulator and the real RabbitMQ."""

import uuid

import pika
import pytest

from iris_opencti_module.tools.doctor import (
    check_confidence,
    check_iris,
    check_opencti,
    check_rabbitmq,
    check_settings,
    run,
)
from tests.connector.harness import AMQP_URL, delete_queues
from tests.iris_api import IrisApiServer
from tests.opencti_sim import OpenCTISimulator

TOKEN = "tok-" + uuid.uuid4().hex
KEY = "key-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def servers():
    iris = IrisApiServer(mode="2.4", api_keys={KEY: {"id": 7, "user_name": "sync"}})
    iris.start()
    sim = OpenCTISimulator(token=TOKEN, amqp_url=None)
    sim.start()
    yield iris, sim
    sim.stop()
    iris.stop()


def test_everything_right(servers):
    iris, sim = servers
    queue = "iris-opencti-doctor-" + uuid.uuid4().hex[:6]
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.basic_consume(queue, lambda *a: None)
    lines = []
    try:
        env = {"IRIS_URL": iris.url, "IRIS_API_KEY": KEY, "IRIS_AMQP_URL": AMQP_URL, "IRIS_QUEUE": queue,
               "OPENCTI_URL": sim.url, "OPENCTI_TOKEN": TOKEN}
        assert run(env, lines.append) == 0
    finally:
        connection.close()
        delete_queues(queue)
    text = "\n".join(lines)
    assert "ok   IRIS" in text and "IRIS v2.4.20" in text and "1 consumer(s)" in text
    assert "ok   OpenCTI" in text and "all 6 checks passed" in text
    assert "ok   Confidence" in text and "max confidence 100 covers IRIS_CONFIDENCE=75" in text
    assert KEY not in text and TOKEN not in text and "guest:***@" in text


def test_each_problem_is_one_line_with_a_fix(servers):
    iris, sim = servers
    bad = check_iris(iris.url, "wrong-key")
    assert not bad.ok and "refused the API key" in bad.detail and "IRIS_API_KEY" in bad.fix
    assert "wrong-key" not in bad.line()
    down = check_iris("http://127.0.0.1:9", KEY)
    assert not down.ok and "unreachable" in down.detail
    assert not check_opencti(sim.url, "nope").ok
    assert "refused the token" in check_opencti(sim.url, "nope").detail
    missing = check_rabbitmq(AMQP_URL, "no-such-queue-" + uuid.uuid4().hex[:6])
    assert not missing.ok and "does not exist" in missing.detail and "iris-opencti-import" in missing.fix
    creds = check_rabbitmq("amqp://guest:wrong@127.0.0.1:5672/%2F", "x")
    assert not creds.ok and "wrong" not in creds.line()
    lines = []
    assert run({"IRIS_URL": iris.url, "IRIS_API_KEY": KEY, "IRIS_VERIFY_SSL": "false",
                "IRIS_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F", "OPENCTI_URL": sim.url,
                "OPENCTI_TOKEN": TOKEN}, lines.append) == 1
    assert any(line.startswith("FAIL TLS") for line in lines)
    assert any(line.startswith("FAIL RabbitMQ") and "unreachable" in line for line in lines)
    assert lines[-1] == "2 of 6 checks failed"


def test_doctor_command_exit_status(servers, monkeypatch, capsys):
    from iris_opencti_module.tools.cli import main

    iris, sim = servers
    for name, value in {"IRIS_URL": iris.url, "IRIS_API_KEY": "bad", "IRIS_AMQP_URL": AMQP_URL,
                        "IRIS_QUEUE": "absent-" + uuid.uuid4().hex[:6], "OPENCTI_URL": sim.url,
                        "OPENCTI_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 7 and "FAIL IRIS" in out and "FAIL RabbitMQ" in out and "ok   OpenCTI" in out


@pytest.mark.parametrize("level, ok, said", [
    (90, True, "max confidence 90 covers IRIS_CONFIDENCE=75"),
    (50, False, "max confidence is 50, below IRIS_CONFIDENCE=75"),
    (None, False, "has no max confidence level"),
])
def test_confidence_of_the_connector_user(level, ok, said):
    sim = OpenCTISimulator(token=TOKEN, amqp_url=None, max_confidence=level)
    sim.start()
    try:
        check = check_confidence(sim.url, TOKEN, True, "75")
    finally:
        sim.stop()
    assert check.ok is ok and said in check.detail, check.line()
    assert ok or "Settings > Security > Groups" in check.fix


ADMIN = "admin-" + uuid.uuid4().hex


def _module(iris, **values):
    """The module registered in the IRIS test server with these parameter values (IRIS's stored list)."""
    from iris_opencti_module.IrisOpenCTIConfig import CONFIGURATION

    config = [dict(p, value=values.get(p["param_name"], p["default"])) for p in CONFIGURATION]
    iris.state.modules = [{"module_human_name": "IrisOpenCTI", "module_config": config}]


def test_settings_differing_between_the_module_and_the_connectors_are_named():
    iris = IrisApiServer(mode="2.5", api_keys={ADMIN: {"id": 1, "user_name": "admin", "administrator": True},
                                                KEY: {"id": 7, "user_name": "sync"}})
    iris.start()
    try:
        env = {"IRIS_URL": iris.url, "IRIS_MAX_TLP": "amber"}
        _module(iris, iris_url=iris.url, max_tlp="red")
        differ = check_settings(iris.url, ADMIN, True, env)
        assert not differ.ok
        assert "max_tlp (IRIS_MAX_TLP" in differ.detail and "connectors 'amber', module 'red'" in differ.detail
        _module(iris, iris_url=iris.url, max_tlp="TLP:AMBER")
        assert check_settings(iris.url, ADMIN, True, env).ok
        assert not check_settings(iris.url, ADMIN, True, dict(env, IRIS_AUTHOR="Another SOC")).ok
        unseen = check_settings(iris.url, KEY, True, env)  # not an administrator: IRIS refuses the list
        assert unseen.ok and "not compared" in unseen.detail and "IRIS_MAX_TLP" in unseen.detail
        iris.state.modules = []
        missing = check_settings(iris.url, ADMIN, True, env)
        assert not missing.ok and "no module 'IrisOpenCTI'" in missing.detail
    finally:
        iris.stop()
