"""End-to-end fixtures: the IRIS module (IRIS-shaped objects through the stub of IRIS's ``app``), the real
RabbitMQ, the import and enrichment connector processes, the OpenCTI simulator and the IRIS API test server."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

STUB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module", "iris_stub")
if STUB not in sys.path:
    sys.path.insert(0, STUB)

from tests.connector.harness import ConnectorProcess, import_env, wait  # noqa: E402
from tests.iris_api import IrisApiServer  # noqa: E402
from tests.module.broker import AMQP_URL, Rabbit, broker_problem  # noqa: E402
from tests.module.iris_world import SYNC_LOGIN, SYNC_USER_ID, TLP_IDS, IrisWorld, ModuleHarness  # noqa: E402
from tests.opencti_sim import OpenCTISimulator, strict_options  # noqa: E402

TOKEN = "sim-" + uuid.uuid4().hex
IRIS_KEY = "iris-sync-" + uuid.uuid4().hex


class Stack:
    """Everything running; the module publishes to the queue the import connector consumes."""

    def __init__(self, variant: str, workdir: str) -> None:
        problem = broker_problem(AMQP_URL)
        assert not problem, f"RabbitMQ is required: {problem}"
        self.variant = variant
        self.workdir = workdir
        self.world = IrisWorld(variant)
        self.rabbit = Rabbit(AMQP_URL)
        self.module = ModuleHarness(self.rabbit, os.path.join(workdir, "spool"))
        self.queue = self.module.queue
        self.sim = OpenCTISimulator(token=TOKEN, **strict_options())
        self.sim.start()
        # the same TLP ids as the module's IRIS world (they differ between real installs too)
        tlps = tuple((tlp_id, name, "warning") for name, tlp_id in TLP_IDS.items())
        self.iris = IrisApiServer(mode=variant, api_keys={IRIS_KEY: {"id": SYNC_USER_ID, "user_name": SYNC_LOGIN}},
                                  tlps=tlps)
        self.iris.start()
        self.import_env = import_env(self.sim.url, TOKEN, self.queue, workdir)
        self.importer = ConnectorProcess("iris_opencti_connector.importer.connector", workdir, self.import_env)
        enrich_env = import_env(self.sim.url, TOKEN, self.queue, workdir, IRIS_URL=self.iris.url,
                                IRIS_API_KEY=IRIS_KEY, CONNECTOR_NAME="DFIR-IRIS enrichment",
                                CONNECTOR_ID=str(uuid.uuid4()))
        enrich_env.pop("CONNECTOR_SCOPE")
        self.enrich_id = enrich_env["CONNECTOR_ID"]
        self.enricher = ConnectorProcess("iris_opencti_connector.enrichment.connector", workdir, enrich_env)

    def start_connectors(self, enrich: bool = True) -> None:
        self.importer.start()
        wait(lambda: self.sim.connectors.get(self.import_env["CONNECTOR_ID"]), what="import registration",
             proc=self.importer)
        if enrich:
            self.enricher.start()
            wait(lambda: self.sim.connectors.get(self.enrich_id), what="enrichment registration",
                 proc=self.enricher)

    def restart_importer(self, kill: bool = False) -> None:
        self.importer.stop(kill=kill)
        self.importer = ConnectorProcess("iris_opencti_connector.importer.connector", self.workdir, self.import_env)
        self.importer.start()

    def close(self) -> None:
        for proc in (self.enricher, self.importer):
            proc.stop()
        self.module.close()
        self.sim.stop()
        self.iris.stop()
        self.rabbit.queues.append(self.queue + ".dead")
        self.rabbit.cleanup()


@pytest.fixture(params=["2.4", "2.5"])
def stack(request, tmp_path):
    running = Stack(request.param, str(tmp_path))
    yield running
    running.close()


@pytest.fixture
def stack25(tmp_path):
    running = Stack("2.5", str(tmp_path))
    yield running
    running.close()
