"""The push queue sender: what pycti's ``send_stix2_bundle`` sends, over one kept connection (issue 14)."""

from __future__ import annotations

import json
import sys
import uuid

import pika
import pytest
from pycti import OpenCTIConnectorHelper

from iris_opencti_connector.importer.push_queue import PushQueue, pycti_only
from iris_opencti_module.core.convert import Converter, ConverterConfig
from tests.connector.harness import SIM_TOKEN, wait
from tests.module.samples import load_export, make_ioc

CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))


@pytest.fixture
def helper(sim):
    hook = sys.excepthook
    connector_id = str(uuid.uuid4())
    helper = OpenCTIConnectorHelper({"opencti": {"url": sim.url, "token": SIM_TOKEN}, "connector": {
        "id": connector_id, "type": "EXTERNAL_IMPORT", "name": "push queue test", "scope": "iris",
        "log_level": "error", "queue_protocol": "amqp", "duration_period": "PT5M"}})
    sys.excepthook = hook  # pycti's hook would SIGTERM the test run on a failure
    yield helper
    helper.stop()
    sys.excepthook = hook
    connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F"))
    connection.channel().queue_delete(f"push_{connector_id}")
    connection.close()


def objects_of(bundle: str) -> int:
    return len(json.loads(bundle)["objects"])


def chunk_of(ioc_id: int) -> list:
    """One IOC's bundle as ``send_chunks`` takes it."""
    bundle = bundle_of(ioc_id)
    return [(bundle, objects_of(bundle))]


def bundle_of(ioc_id: int) -> str:
    export = load_export()
    result = CONVERTER.convert(export["data"]["case"], [make_ioc(ioc_id, "ip-dst", "192.0.2.%d" % ioc_id)])
    return json.dumps(result.bundle("push %d" % ioc_id))


class Recorder:
    """A connection whose channel records what would be published (and what pycti's own send records)."""

    def __init__(self) -> None:
        self.published = []
        self.commits = 0
        self.is_open = True

    def channel(self):
        return self

    def process_data_events(self, _timeout=0):
        return None

    def tx_select(self):
        return None

    def tx_commit(self):
        self.commits += 1

    def basic_publish(self, exchange, routing_key, body, properties=None):
        self.published.append((exchange, routing_key, json.loads(body), properties.delivery_mode,
                               properties.content_encoding))

    def close(self):
        self.is_open = False


def test_messages_have_pycti_s_shape_and_exchange(helper):
    assert pycti_only(helper) is None
    bundles = [bundle_of(1), bundle_of(2)]
    ours = Recorder()
    PushQueue(helper, connect=lambda: ours).send_chunks([(b, objects_of(b)) for b in bundles], work_id=None)
    theirs = Recorder()
    for bundle in bundles:  # what send_stix2_bundle(bundle, no_split=True) sends, one call per bundle
        helper._send_bundle(theirs, bundle, work_id=None, sequence=1, entities_types=[], update=False,
                            draft_id=None, no_split=True)
    assert len(ours.published) == 2
    assert ours.published == theirs.published
    assert ours.commits == 1


def test_one_connection_for_many_bundles_and_the_workers_ingest_them(sim, helper):
    queue = PushQueue(helper)
    work_id = helper.api.work.initiate_work(helper.connect_id, "push queue test", is_multipart=True)
    try:
        for n in range(1, 6):
            queue.send_chunks(chunk_of(n), work_id=work_id)
        assert queue.connections_opened == 1
        stix_ids = [o["id"] for n in range(1, 6) for o in json.loads(bundle_of(n))["objects"]]
        wait(lambda: (t := helper.api.work.get_work(work_id)["tracking"])["import_processed_number"]
             >= t["import_expected_number"], timeout=30, what="the work's count")
        work = helper.api.work.get_work(work_id)
        # one per object of each bundle, which the worker imports element by element, in dependency order
        assert work["tracking"]["import_expected_number"] == len(stix_ids)
        assert not work.get("errors"), work.get("errors")
        assert all(sim.store.get(i) for i in stix_ids)
        # the broker closed the connection meanwhile: the next send opens a new one and still arrives
        queue._connection.close()
        queue.send_chunks(chunk_of(9), work_id=work_id)
        assert queue.connections_opened == 2
        observable = next(o["id"] for o in json.loads(bundle_of(9))["objects"] if o["type"] == "ipv4-addr")
        wait(lambda: sim.store.get(observable), timeout=60, what="the bundle after a reconnection")
    finally:
        queue.close()


def test_special_modes_stay_with_pycti(helper):
    helper.connect_validate_before_import = True
    assert pycti_only(helper) == "imports wait for validation"
    helper.connect_validate_before_import = False
    helper.queue_protocol = "api"
    assert pycti_only(helper) == "queue protocol is not amqp"


def test_an_idle_connection_is_replaced_quietly_before_the_broker_drops_it(sim, helper, monkeypatch, caplog):
    """Seen in a real drill: after two idle minutes the broker had dropped the kept connection, and the next
    send logged pika's ConnectionResetError/StreamLostError tracebacks before reconnecting."""
    import logging
    import time

    from iris_opencti_connector.importer import push_queue

    caplog.set_level(logging.DEBUG, logger="pika")
    monkeypatch.setattr(push_queue, "HEARTBEAT", 1)  # the broker drops it after ~2 missed heartbeats
    queue = PushQueue(helper)
    work_id = helper.api.work.initiate_work(helper.connect_id, "idle test", is_multipart=True)
    try:
        queue.send_chunks(chunk_of(21), work_id=work_id)
        time.sleep(3.5)
        queue.send_chunks(chunk_of(22), work_id=work_id)
        assert queue.connections_opened == 2
        observable = next(o["id"] for o in json.loads(bundle_of(22))["objects"] if o["type"] == "ipv4-addr")
        wait(lambda: sim.store.get(observable), timeout=60, what="the bundle sent after the idle time")
    finally:
        queue.close()
    noisy = [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]
