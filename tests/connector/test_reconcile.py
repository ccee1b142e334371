"""Reconcile: IRIS's REST API compared with the ledger ships what is missing and deletes what is gone."""

import contextlib
import subprocess
import sys
import uuid

from iris_opencti_module.core import stix_ids
from tests.connector.harness import ROOT, import_env, wait
from tests.iris_api import IrisApiServer
from tests.module.samples import load_export
from tests.opencti_sim import OpenCTISimulator

TOKEN = "sim-" + uuid.uuid4().hex
KEY = "key-" + uuid.uuid4().hex


def reconcile(env, workdir):
    return subprocess.run([sys.executable, "-m", "iris_opencti_connector.importer.connector", "reconcile"],
                          cwd=workdir, env=dict(env, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=120)


@contextlib.contextmanager
def api_stack(mode, export, tmp_path):
    """IRIS's API (seeded with ``export``) and a simulator taking bundles over its API: (iris, sim, env)."""
    iris = IrisApiServer(mode=mode, api_keys={KEY: {"id": 7, "user_name": "sync"}}, seed=[export])
    iris.start()
    sim = OpenCTISimulator(token=TOKEN, amqp_url=None)
    sim.start()
    try:
        yield iris, sim, import_env(sim.url, TOKEN, "unused-" + uuid.uuid4().hex[:6], str(tmp_path),
                                    IRIS_URL=iris.url, IRIS_API_KEY=KEY, CONNECTOR_QUEUE_PROTOCOL="api")
    finally:
        sim.stop()
        iris.stop()


def test_reconcile_ships_missing_cases_and_deletes_what_iris_lost(tmp_path):
    export = load_export()
    with api_stack("2.4", export, tmp_path) as (iris, sim, env):
        case = export["data"]["case"]
        case_ref = stix_ids.case_incident_id(case["name"], "2026-11-28T06:40:10.969Z")
        # a case that existed before the module: reconcile ships it whole
        first = reconcile(env, str(tmp_path))
        assert first.returncode == 0, first.stderr[-3000:]
        assert "reconciled 1 cases, 1 changed" in first.stdout
        url_ioc = export["data"]["iocs"][4]
        url_id = stix_ids.sco_id({"type": "url", "value": url_ioc["ioc_value"]})
        incident = wait(lambda: sim.store.get(case_ref), what="the case in OpenCTI")
        assert url_id in incident["object_refs"] and len(incident["object_refs"]) > 30
        # nothing changed in IRIS: nothing is sent
        works = len(sim.works)
        again = reconcile(env, str(tmp_path))
        assert "reconciled 1 cases, 0 changed" in again.stdout, again.stdout + again.stderr[-2000:]
        assert len(sim.works) == works
        # an IOC deleted while the module was down, another created by alert escalation (no IOC hook)
        iris.delete_ioc(url_ioc["ioc_id"], case["case_id"])
        iris.add_ioc(case["case_id"], "escalated.evil.example", "domain")
        third = reconcile(env, str(tmp_path))
        assert "1 changed" in third.stdout, third.stdout + third.stderr[-2000:]
        escalated = stix_ids.sco_id({"type": "domain-name", "value": "escalated.evil.example"})
        wait(lambda: escalated in sim.store.get(case_ref)["object_refs"], what="the escalated IOC")
        wait(lambda: sim.store.get(url_id) is None, what="the deleted IOC gone")
        assert KEY not in third.stdout + third.stderr and TOKEN not in third.stdout + third.stderr


def test_scheduled_reconcile_runs_in_the_connector(tmp_path):
    from tests.connector.harness import ConnectorProcess, delete_queues

    export = load_export("case_export_2_5.json")
    iris = IrisApiServer(mode="2.5", api_keys={KEY: {"id": 7, "user_name": "sync"}}, seed=[export])
    iris.start()
    sim = OpenCTISimulator(token=TOKEN)
    sim.start()
    queue = "iris-opencti-test-" + uuid.uuid4().hex[:8]
    proc = ConnectorProcess("iris_opencti_connector.importer.connector", str(tmp_path), import_env(
        sim.url, TOKEN, queue, str(tmp_path), IRIS_URL=iris.url, IRIS_API_KEY=KEY,
        CONNECTOR_DURATION_PERIOD="PT2S")).start()
    try:
        case = export["data"]["case"]
        case_ref = stix_ids.case_incident_id(case["name"], "2026-11-28T{}Z".format(case["initial_date"][11:23]))
        wait(lambda: sim.store.get(case_ref), timeout=60, what="the scheduled reconcile", proc=proc)
        iris.add_ioc(case["case_id"], "later.evil.example", "domain")
        later = stix_ids.sco_id({"type": "domain-name", "value": "later.evil.example"})
        wait(lambda: later in sim.store.get(case_ref).get("object_refs", []), timeout=60,
             what="the next period catching a new IOC", proc=proc)
    finally:
        proc.stop()
        sim.stop()
        iris.stop()
        delete_queues(queue, queue + ".dead")


def test_reconcile_keeps_an_asset_the_2_5_export_leaves_out(tmp_path):
    """IRIS 2.5's /case/export leaves out assets without an analysis status (every asset created through
    the v2 API, seen on a real 2.5); reconcile reads them from the v2 asset list, ships them and never
    deletes them."""
    export = load_export("case_export_2_5.json")
    with api_stack("2.5", export, tmp_path) as (iris, sim, env):
        case_id = export["data"]["case"]["case_id"]
        for n in range(12):  # more than one page of the v2 list
            iris.add_asset_v2(case_id, "SRV-DC-%02d" % n, asset_type="Windows - DC", asset_type_id=11,
                              asset_ip="10.1.0.%d" % (10 + n), asset_description="DC via API v2")
        assert not any(a["asset_name"].startswith("SRV-DC-") for a in iris.export(case_id)["assets"])
        first = reconcile(env, str(tmp_path))
        assert first.returncode == 0, first.stderr[-3000:]
        dcs = [stix_ids.identity_id("SRV-DC-%02d" % n, "system") for n in range(12)]
        wait(lambda: all(sim.store.get(i) for i in dcs), what="the v2 assets in OpenCTI")
        again = reconcile(env, str(tmp_path))
        assert "0 changed" in again.stdout, again.stdout + again.stderr[-2000:]
        assert all(sim.store.get(i) for i in dcs), "reconcile deleted assets IRIS still has"


def test_a_reconcile_run_beside_the_running_connector_leaves_it_registered(tmp_path):
    """pycti's helper.stop() unregisters the connector: run as `iris-opencti-import reconcile` with the
    running connector's id, it deleted the registration the running one uses (seen on a real IRIS 2.4.20
    drill: every work then failed with "No connector found"). And when OpenCTI lost the registration anyway
    (an administrator deleted the connector), the connector registers again and goes on."""
    import requests

    from tests.connector.harness import ConnectorProcess, delete_queues, ioc_event, publish
    from tests.module.samples import make_ioc

    export = load_export("case_export_2_5.json")
    iris = IrisApiServer(mode="2.5", api_keys={KEY: {"id": 7, "user_name": "sync"}}, seed=[export])
    iris.start()
    sim = OpenCTISimulator(token=TOKEN)
    sim.start()
    queue = "iris-opencti-test-" + uuid.uuid4().hex[:8]
    env = import_env(sim.url, TOKEN, queue, str(tmp_path), IRIS_URL=iris.url, IRIS_API_KEY=KEY)
    proc = ConnectorProcess("iris_opencti_connector.importer.connector", str(tmp_path), env).start()
    connector_id = env["CONNECTOR_ID"]
    try:
        wait(lambda: sim.connectors.get(connector_id), timeout=60, what="registration", proc=proc)
        run = reconcile(env, str(tmp_path))
        assert run.returncode == 0, run.stderr[-3000:]
        assert not sim.connectors[connector_id].get("deleted"), "the reconcile run unregistered the running connector"

        def ingested(n):
            ioc = make_ioc(7600 + n, "domain", "after-reconcile-%d.evil.example" % n)
            publish(queue, [ioc_event(export, "ioc.created", ioc)])
            observable = stix_ids.sco_id({"type": "domain-name", "value": ioc["ioc_value"]})
            wait(lambda: sim.store.get(observable), timeout=60, what="event %d in OpenCTI" % n, proc=proc)

        ingested(1)
        answer = requests.post(sim.url + "/graphql", timeout=10, headers={"Authorization": "Bearer " + TOKEN},
                               json={"query": f'mutation {{ deleteConnector(id: "{connector_id}") }}'}).json()
        assert answer.get("data", {}).get("deleteConnector") == connector_id, answer
        assert sim.connectors[connector_id].get("deleted")
        ingested(2)
        assert not sim.connectors[connector_id].get("deleted"), "registered again"
    finally:
        proc.stop()
        sim.stop()
        iris.stop()
        delete_queues(queue, queue + ".dead")
