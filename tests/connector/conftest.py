"""Fixtures for the connector tests: ledgers on SQLite and on this machine's real PostgreSQL, a fresh IRIS
queue, and the strict OpenCTI simulator (modules needing other simulator options define their own ``sim``)."""

import uuid

import pytest

from iris_opencti_connector.store.ledger import Ledger
from tests.connector.harness import throwaway_database


@pytest.fixture
def pg_url():
    """A throw-away database on the real PostgreSQL (created and dropped by the test)."""
    with throwaway_database() as url:
        yield url


@pytest.fixture
def queue():
    """A fresh IRIS queue (and its dead-letter queue) on the real RabbitMQ, deleted afterwards."""
    from tests.connector.harness import delete_queues

    name = "iris-opencti-test-" + uuid.uuid4().hex[:8]
    yield name
    delete_queues(name, name + ".dead")


@pytest.fixture
def sim(request):
    """The OpenCTI simulator with strict workers (several, out of order, retry then drop), as OpenCTI runs; a
    test module's ``SIM_OPTIONS`` replaces the default strictness (``harness.HARSH_SIM`` reorders harder)."""
    from tests.connector.harness import SIM_TOKEN
    from tests.opencti_sim import OpenCTISimulator, strict_options

    options = getattr(request.module, "SIM_OPTIONS", None) or strict_options()
    simulator = OpenCTISimulator(token=SIM_TOKEN, **options)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        led = Ledger("sqlite:///" + str(tmp_path / "ledger.sqlite"))
    else:
        led = Ledger(request.getfixturevalue("pg_url"))
    yield led
    led.close()


@pytest.fixture
def connector(sim, queue, tmp_path):
    """Starts import connector processes against `sim`; a second one shares the first's id (a replica)."""
    from tests.connector.harness import SIM_TOKEN, ConnectorProcess, import_env

    procs = []

    def start(**extra):
        env = import_env(sim.url, SIM_TOKEN, queue, str(tmp_path), **extra)
        if procs:
            env["CONNECTOR_ID"] = procs[0].env["CONNECTOR_ID"]
        proc = ConnectorProcess("iris_opencti_connector.importer.connector", str(tmp_path), env).start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()
