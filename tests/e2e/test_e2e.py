"""The full path with real processes: IRIS module hooks → RabbitMQ → iris-opencti-import → OpenCTI (simulator)
→ enrichment request → iris-opencti-enrich → IRIS API, and back to the module (which must ship nothing)."""

import json
import time

from iris_opencti_module.core import stix_ids
from iris_opencti_module.core.markings import TLP_MARKINGS
from iris_opencti_module.hooks.iris_adapter import asset_to_dict, case_to_dict, ioc_to_dict
from tests.connector.harness import wait, wait_settled
from tests.module.iris_world import ANALYST_ID, SYNC_USER_ID

CREATED = "2026-11-28T06:40:10.969Z"


def seed_iris_api(stack, case, iocs, assets):
    """The IRIS API server holds the same case as the module's IRIS world (what IRIS's REST API would return)."""
    export = {"case": case_to_dict(case), "iocs": [ioc_to_dict(i) for i in iocs],
              "assets": [asset_to_dict(a) for a in assets]}
    if stack.variant == "2.5":
        for ioc in export["iocs"]:
            ioc["case_id"] = case.case_id
    stack.iris.seed(export)


def test_iris_to_opencti_and_back(stack):
    world, module, sim, iris = stack.world, stack.module, stack.sim, stack.iris
    stack.start_connectors()
    case = world.case(12)
    iocs = [world.ioc(101, "192.0.2.45", "ip-dst", [case], tlp="amber", tags="phishing,c2",
                      description="Cobalt Strike team server"),
            world.ioc(102, "cdn-updates.example.net", "domain", [case], tlp="green"),
            world.ioc(103, "svchost_.exe|e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                      "filename|sha256", [case]),
            world.ioc(104, "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12", "sha1", [case], tlp="red")]
    asset = world.asset(201, case, "BUILD-07", "Linux - Server", ip="10.1.2.3", domain="build.example")
    seed_iris_api(stack, case, iocs, [asset])

    assert module.run("on_postload_case_create", case).is_success()
    for ioc in iocs:
        status = module.run("on_postload_ioc_create", ioc)
        assert status.is_success(), status.get_logs()
    assert module.run("on_postload_asset_create", asset).is_success()

    case_ref = stix_ids.case_incident_id("#12 - Ransomware precursor on build server", CREATED)
    ip_id = stix_ids.sco_id({"type": "ipv4-addr", "value": "192.0.2.45"})
    domain_id = stix_ids.sco_id({"type": "domain-name", "value": "cdn-updates.example.net"})
    file_id = stix_ids.sco_id({"type": "file", "name": "svchost_.exe", "hashes": {
        "SHA-256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}})
    system_id = stix_ids.identity_id("BUILD-07", "system")
    expected = {ip_id, domain_id, file_id, system_id}
    incident = wait(lambda: (c := sim.store.get(case_ref)) and expected <= set(c.get("object_refs", [])) and c,
                    timeout=60, what="the Case-Incident holding every IOC and the asset", proc=stack.importer)
    assert incident["name"] == "#12 - Ransomware precursor on build server"
    assert incident["external_references"][0]["url"] == "https://iris.example/case?cid=12"
    ip = sim.store[ip_id]
    assert ip["object_marking_refs"] == [TLP_MARKINGS["amber"]["id"]]
    assert sim.store[domain_id]["object_marking_refs"] == [TLP_MARKINGS["green"]["id"]]
    indicator = sim.store[stix_ids.indicator_id("[ipv4-addr:value = '192.0.2.45']")]
    assert indicator["pattern_type"] == "stix"
    based_on = stix_ids.relationship_id("based-on", indicator["id"], ip_id)
    assert sim.store[based_on]["source_ref"] == indicator["id"]
    assert sim.store.get(stix_ids.sco_id({"type": "file", "hashes": {
        "SHA-1": "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"}})) is None, "TLP:RED never leaves IRIS"
    assert stix_ids.relationship_id("related-to", stix_ids.sco_id({"type": "ipv4-addr", "value": "10.1.2.3"}),
                                    system_id) in incident["object_refs"]

    # OpenCTI's verdict flows back onto the IRIS IOC as tags
    verdict = dict(sim.store[ip_id], x_opencti_score=90, x_opencti_labels=["phishing", "c2", "cobalt-strike"])
    sim.ingest_bundle([verdict])
    work_id = sim.request_enrichment(stack.enrich_id, ip_id)
    work = wait(lambda: (w := sim.work(work_id)) and w["status"] == "complete" and w, timeout=60,
                what="the enrichment", proc=stack.enricher)
    assert not work["errors"], work
    tags = iris.ioc(101)["ioc_tags"].split(",")
    assert tags[:2] == ["phishing", "c2"] and "opencti:score=90" in tags and "opencti:label=cobalt-strike" in tags

    # IRIS fires on_postload_ioc_update for that write-back: the module must ship nothing
    works_before = wait_settled(sim, stack.queue, stack.importer)
    iocs[0].ioc_tags = iris.ioc(101)["ioc_tags"]
    iocs[0].user_id = SYNC_USER_ID
    status = module.run("on_postload_ioc_update", iocs[0])
    assert status.is_success()
    assert "not sent: last written by the sync user" in json.dumps(status.get_logs())
    # the same tags seen through another user's save: nothing exported changed, nothing is shipped either
    iocs[0].user_id = ANALYST_ID
    status = module.run("on_postload_ioc_update", iocs[0])
    assert status.is_success() and "not sent" in json.dumps(status.get_logs()), status.get_logs()
    time.sleep(2)
    assert len(sim.works) == works_before, "the write-back came back as an import"
    assert not sim.errors, sim.errors
