"""The import connector as a new user starts it: only the required settings, from an empty directory."""

import os
import uuid

import pytest

from iris_opencti_module.core.convert import Converter, ConverterConfig
from iris_opencti_module.core.envelope import encode
from iris_opencti_module.transport.messages import ioc_message
from tests.connector.harness import AMQP_URL, ConnectorProcess, delete_queues, publish, wait
from tests.connector.harness import SIM_TOKEN as TOKEN
from tests.module.samples import load_export, make_ioc

CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))
MODULE = "iris_opencti_connector.importer.connector"


def required_only(sim_url, queue):
    """OpenCTI URL and token, connector id, IRIS AMQP URL and queue: nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "CONNECTOR_", "OPENCTI_"))}
    env.update({"OPENCTI_URL": sim_url, "OPENCTI_TOKEN": TOKEN, "CONNECTOR_ID": str(uuid.uuid4()),
                "IRIS_AMQP_URL": AMQP_URL, "IRIS_QUEUE": queue})
    return env


def start(workdir, env):
    proc = ConnectorProcess(MODULE, str(workdir), {})
    proc.env = dict(env, PYTHONPATH=proc.env["PYTHONPATH"])
    return proc.start()


def test_only_the_required_settings_from_an_empty_directory_consume_at_once(sim, tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    queue = "iris-opencti-start-" + uuid.uuid4().hex[:8]
    case = load_export()["data"]["case"]
    envelope = ioc_message(CONVERTER, case, make_ioc(4242, "domain", "first-start.evil.example"), "ioc.created")[0]
    publish(queue, [encode(envelope)])
    proc = start(workdir, required_only(sim.url, queue))
    try:
        domain = [o for o in envelope["bundle"]["objects"] if o["type"] == "domain-name"][0]["id"]
        wait(lambda: sim.store.get(domain), timeout=60, what="the first message consumed", proc=proc)
        assert (workdir / "data" / "iris-opencti-ledger.sqlite").is_file(), "the default ledger lives in ./data"
        assert (workdir / "data" / "archive" / "index.jsonl").is_file(), "the default archive lives in ./data"
    finally:
        proc.stop()
        delete_queues(queue, queue + ".dead")


@pytest.mark.parametrize("setting", ["IRIS_LEDGER", "IRIS_ARCHIVE_DIR"])
def test_a_store_that_cannot_work_stops_the_connector_with_one_line_naming_it(sim, tmp_path, setting):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bad = str(blocker / "sub" / ("ledger.sqlite" if setting == "IRIS_LEDGER" else "archive"))
    env = required_only(sim.url, "iris-opencti-unused")
    env[setting] = bad
    proc = start(tmp_path, env)
    proc.proc.wait(120)
    assert proc.proc.returncode == 2
    lines = [line for line in proc.log().splitlines() if line.startswith("iris-opencti-import:")]
    assert len(lines) == 1 and setting in lines[0] and bad in lines[0], proc.log()[-2000:]
    assert not sim.connectors, "nothing may register with OpenCTI before the stores are known to work"
