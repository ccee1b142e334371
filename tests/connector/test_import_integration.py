"""The real import connector process, the OpenCTI simulator and the real RabbitMQ, end to end."""

import json

from iris_opencti_module.core import stix_ids
from tests.connector.harness import (
    SIM_TOKEN,
    case_sync,
    get_all,
    ioc_event,
    publish,
    wait,
)
from tests.module.samples import load_export, make_ioc

TOKEN = SIM_TOKEN


def case_incident(sim, case_ref):
    return sim.store.get(case_ref)


def test_registers_then_imports_a_whole_case(sim, queue, connector, tmp_path):
    proc = connector()
    connector_id = proc.env["CONNECTOR_ID"]
    registered = wait(lambda: sim.connectors.get(connector_id), what="registration", proc=proc)
    assert registered["type"] == "EXTERNAL_IMPORT" and registered["name"] == "DFIR-IRIS"
    assert registered["scope"] == ["iris"]
    wait(lambda: sim.ops_named("PingConnector"), what="a ping", proc=proc)

    export = load_export()
    result_ref = stix_ids.case_incident_id(export["data"]["case"]["name"], "2026-11-28T06:40:10.969Z")
    publish(queue, [case_sync(export)])
    incident = wait(lambda: (c := case_incident(sim, result_ref)) and len(c.get("object_refs", [])) >= 40 and c,
                    what="the Case-Incident with its objects", proc=proc)
    assert incident["name"] == "#10 - Ransomware precursor on build server"
    assert (incident.get("severity"), incident.get("priority")) == ("low", "P4"), "IRIS Low, where pycti reads it"
    for ref in incident["object_refs"]:
        assert sim.store.get(ref) is not None, ref
    types = {sim.store.get(r)["type"] for r in incident["object_refs"]}
    assert {"ipv4-addr", "domain-name", "url", "file", "indicator", "relationship", "identity",
            "vulnerability"} <= types
    works = [w for w in sim.works.values() if w.get("connector_id", connector_id) == connector_id]
    named = [w for w in works if w["name"].startswith("IRIS case #10: full sync (14 IOCs, 3 assets)")]
    assert named, [w["name"] for w in works]
    assert wait(lambda: sim.work(named[0]["id"])["status"] == "complete", what="work completion", proc=proc)
    index = (tmp_path / "archive" / "index.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in index]
    assert [e["kind"] for e in entries].count("message") == 1
    bundles = [e for e in entries if e["kind"] == "bundle"]
    # one bundle, plus one per resend round when the strict workers dropped an object for a reference that
    # another worker had not written yet: resends go into the same work, never a new one
    assert 1 <= len(bundles) <= 4 and {b["work_id"] for b in bundles} == {named[0]["id"]}, bundles
    assert TOKEN not in "".join(index) and TOKEN not in proc.log()


def test_deletion_removes_exactly_and_keeps_what_another_author_owns(sim, queue, connector):
    export = load_export()
    case_ref = stix_ids.case_incident_id(export["data"]["case"]["name"], "2026-11-28T06:40:10.969Z")
    url_ioc, email_ioc = export["data"]["iocs"][4], export["data"]["iocs"][5]
    url_id = stix_ids.sco_id({"type": "url", "value": url_ioc["ioc_value"]})
    email_id = stix_ids.sco_id({"type": "email-addr", "value": email_ioc["ioc_value"]})
    ip_id = stix_ids.sco_id({"type": "ipv4-addr", "value": "192.0.2.45"})
    proc = connector()
    publish(queue, [case_sync(export)])
    wait(lambda: sim.store.get(case_ref) and url_id in sim.store.get(case_ref).get("object_refs", []),
         what="the case", proc=proc)
    # another source's report also holds the e-mail address
    sim.ingest_bundle([
        {"type": "identity", "spec_version": "2.1", "id": stix_ids.identity_id("Other CTI", "organization"),
         "name": "Other CTI", "identity_class": "organization", "created": "2026-01-01T00:00:00.000Z",
         "modified": "2026-01-01T00:00:00.000Z"},
        {"type": "report", "spec_version": "2.1", "id": "report--6b1a4c8e-1d1b-4c7e-9e8e-2f1b7d9b0c11",
         "name": "Phishing wave", "published": "2026-01-01T00:00:00.000Z", "created": "2026-01-01T00:00:00.000Z",
         "modified": "2026-01-01T00:00:00.000Z", "object_refs": [email_id],
         "created_by_ref": stix_ids.identity_id("Other CTI", "organization")},
    ])
    publish(queue, [ioc_event(export, "ioc.deleted", url_ioc), ioc_event(export, "ioc.deleted", email_ioc)])
    wait(lambda: sim.store.get(url_id) is None, what="the url deleted", proc=proc)
    wait(lambda: email_id not in sim.store.get(case_ref).get("object_refs", []), what="e-mail out of the case",
         proc=proc)
    assert sim.store.get(email_id) is not None, "the e-mail is in another author's report: it must stay"
    assert sim.store.get(ip_id) is not None, "the ip is still produced by other IOCs of the case"
    assert ip_id in sim.store.get(case_ref)["object_refs"]
    indicator = stix_ids.indicator_id("[url:value = '{}']".format(url_ioc["ioc_value"]))
    assert sim.store.get(indicator) is None


def test_poison_message_is_dead_lettered_and_the_rest_flows(sim, queue, connector):
    export = load_export()
    case_ref = stix_ids.case_incident_id(export["data"]["case"]["name"], "2026-11-28T06:40:10.969Z")
    proc = connector()
    publish(queue, [b"{not json", json.dumps({"schema": 1, "event": "ioc.created"}).encode(), case_sync(export)])
    wait(lambda: sim.store.get(case_ref), what="the good message", proc=proc)
    dead = wait(lambda: (msgs := get_all(queue + ".dead")) and msgs, what="dead letters", proc=proc)
    reasons = [props.headers["x-iris-opencti-error"] for props, _ in dead]
    bodies = [body for _, body in dead]
    assert b"{not json" in bodies and any("not JSON" in r for r in reasons)
    assert any("case" in r for r in reasons)
    failed = [w for w in sim.works.values() if "dead-lettered" in json.dumps(w["messages"] + w["errors"])]
    assert len(failed) == 2, [(w["name"], w["messages"], w["errors"]) for w in sim.works.values()]
    assert all(w["errors"] for w in failed), "a dead-lettered message's work is in error"


def test_opencti_down_then_up_loses_nothing(sim, queue, connector):
    export = load_export()
    case_ref = stix_ids.case_incident_id(export["data"]["case"]["name"], "2026-11-28T06:40:10.969Z")
    proc = connector()
    wait(lambda: sim.ops_named("PingConnector"), what="start", proc=proc)
    sim.fail_for(6, status=500)
    publish(queue, [case_sync(export)])
    incident = wait(lambda: sim.store.get(case_ref), timeout=150, what="ingestion after the outage", proc=proc)
    assert len(incident["object_refs"]) >= 40
    assert "will retry" in proc.log()


def test_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(sim, queue, connector):
    export = load_export()
    case = export["data"]["case"]
    events = []
    for n in range(60):
        ioc = make_ioc(5000 + n, "domain", "kill-%02d.evil.example" % n)
        events.append(ioc_event(export, "ioc.created", ioc))
    publish(queue, events)
    proc = connector()
    case_ref = stix_ids.case_incident_id(case["name"], "2026-11-28T06:40:10.969Z")
    wait(lambda: (c := sim.store.get(case_ref)) and len(c.get("object_refs", [])) >= 20, what="some progress",
         proc=proc)
    proc.stop(kill=True)
    proc2 = connector()
    expected = {stix_ids.sco_id({"type": "domain-name", "value": "kill-%02d.evil.example" % n}) for n in range(60)}
    wait(lambda: expected <= set(sim.store.get(case_ref).get("object_refs", [])), timeout=90,
         what="every IOC in the case", proc=proc2)
    domains = [o for o in sim.objects_of_type("domain-name") if o["value"].startswith("kill-")]
    assert len(domains) == 60 and len({d["id"] for d in domains}) == 60
    refs = sim.store.get(case_ref)["object_refs"]
    assert len(refs) == len(set(refs))
