"""Removed tags and changed TLP in IRIS leave OpenCTI too (issue 9, point 3).

OpenCTI's upserts only ever add labels and markings (pycti's ``import_from_stix2`` → platform upsert), so an
IOC whose tag was removed or whose TLP went from AMBER to GREEN kept the old one in OpenCTI for ever. The
connector now records, per IRIS object, what it asserted on each STIX object, and patches off what no IRIS
object asserts any more, naming only labels and markings OpenCTI really holds (the strict simulator refuses a
patch naming anything else, as the platform does).
"""

import copy

from iris_opencti_module.core import stix_ids
from iris_opencti_module.core.markings import TLP_MARKINGS
from tests.connector.harness import (
    SIM_TOKEN,
    ConnectorProcess,
    case_sync,
    import_env,
    ioc_event,
    publish,
    wait,
    wait_settled,
)
from tests.module.samples import load_export, make_ioc

TOKEN = SIM_TOKEN
VALUE = "198.51.100.77"
AMBER, GREEN = 2, 3  # IRIS's default TLP ids


def labels_and_markings(sim, stix_id):
    obj = sim.store.get(stix_id) or {}
    return sorted(obj.get("labels") or []), sorted(obj.get("object_marking_refs") or [])


def test_removed_tags_and_lowered_tlp_leave_opencti(sim, queue, tmp_path):
    export = load_export()
    data = export["data"]
    first = make_ioc(500, "ip-dst", VALUE, tlp_id=AMBER, tags="phishing,c2")
    second = make_ioc(501, "ip-src", VALUE, tlp_id=GREEN, tags="keepme")
    data["iocs"], data["assets"] = [first, second], []
    ip_id = stix_ids.sco_id({"type": "ipv4-addr", "value": VALUE})
    amber, green = TLP_MARKINGS["amber"]["id"], TLP_MARKINGS["green"]["id"]

    publish(queue, [case_sync(export)])
    proc = ConnectorProcess("iris_opencti_connector.importer.connector", str(tmp_path),
                            import_env(sim.url, TOKEN, queue, str(tmp_path))).start()
    try:
        indicator_id = stix_ids.indicator_id(f"[ipv4-addr:value = '{VALUE}']")
        both = (["c2", "keepme", "phishing"], sorted([amber, green]))
        wait(lambda: labels_and_markings(sim, indicator_id) == both, timeout=60,
             what="both IOCs' tags and TLPs on the indicator", proc=proc)
        wait_settled(sim, queue, proc)
        assert labels_and_markings(sim, ip_id)[1] == sorted([amber, green])
        # an OpenCTI analyst's own label on the same indicator is not IRIS's to remove
        sim.ingest_bundle([dict(copy.deepcopy(sim.store[indicator_id]), labels=["analyst-verdict"])])
        assert "analyst-verdict" in sim.store[indicator_id]["labels"]

        # IOC 500 loses "phishing" and goes AMBER -> GREEN; then IOC 501 is deleted from the case
        changed = dict(first, ioc_tags="c2", ioc_tlp_id=GREEN)
        publish(queue, [ioc_event(export, "ioc.updated", changed), ioc_event(export, "ioc.deleted", second)])
        expected = (["analyst-verdict", "c2"], [green])
        wait(lambda: labels_and_markings(sim, indicator_id) == expected, timeout=60,
             what="the indicator with only what IRIS and the analyst still assert", proc=proc)
        wait_settled(sim, queue, proc)
        assert labels_and_markings(sim, indicator_id) == expected
        assert labels_and_markings(sim, ip_id)[1] == [green], "AMBER left the observable too"
        relationship = sim.store[stix_ids.relationship_id("based-on", indicator_id, ip_id)]
        assert relationship["object_marking_refs"] == [green]
        assert not sim.errors, sim.errors
    finally:
        proc.stop()


def test_case_patch_names_only_what_opencti_holds(sim, queue, tmp_path):
    """Point 6: a removal naming an object OpenCTI never stored (a worker dropped it) is refused whole by the
    platform, which would keep every other removed object in the case; the connector names only what OpenCTI
    holds."""
    export = load_export()
    data = export["data"]
    kept_ioc = make_ioc(600, "ip-dst", "203.0.113.66", tags="c2")
    moved = make_ioc(601, "url", "http://203.0.113.9/a", tags="c2")
    dropped = make_ioc(602, "email-dst", "ops@victim.example", tags="c2")
    data["iocs"], data["assets"] = [kept_ioc, moved, dropped], []
    case_ref = stix_ids.case_incident_id(data["case"]["name"], "2026-11-28T06:40:10.969Z")
    url_id = stix_ids.sco_id({"type": "url", "value": moved["ioc_value"]})
    email_id = stix_ids.sco_id({"type": "email-addr", "value": dropped["ioc_value"]})
    other = stix_ids.identity_id("Other CTI", "organization")

    publish(queue, [case_sync(export)])
    proc = ConnectorProcess("iris_opencti_connector.importer.connector", str(tmp_path),
                            import_env(sim.url, TOKEN, queue, str(tmp_path))).start()
    try:
        wait(lambda: {url_id, email_id} <= set((sim.store.get(case_ref) or {}).get("object_refs") or []),
             timeout=60, what="the case with its IOCs", proc=proc)
        wait_settled(sim, queue, proc)
        # the url is also in another source's report (so it leaves the case but stays); the e-mail address is
        # gone from OpenCTI, as if a worker had dropped it
        sim.ingest_bundle([
            {"type": "identity", "spec_version": "2.1", "id": other, "name": "Other CTI",
             "identity_class": "organization", "created": "2026-01-01T00:00:00.000Z",
             "modified": "2026-01-01T00:00:00.000Z"},
            {"type": "report", "spec_version": "2.1", "id": "report--0c0e8f0e-7a53-4b2a-9d51-6f5f3b7e2a10",
             "name": "Other wave", "published": "2026-01-01T00:00:00.000Z", "created": "2026-01-01T00:00:00.000Z",
             "modified": "2026-01-01T00:00:00.000Z", "object_refs": [url_id], "created_by_ref": other}])
        sim.delete(email_id)
        errors_before = len(sim.errors)

        data["iocs"] = [kept_ioc]  # both removed in IRIS: one full sync removes them together
        publish(queue, [case_sync(export)])
        wait(lambda: url_id not in (sim.store.get(case_ref) or {}).get("object_refs", []), timeout=60,
             what="the url out of the case", proc=proc)
        wait_settled(sim, queue, proc)
        assert sim.store.get(url_id) is not None, "it is in another author's report: it stays"
        assert sim.errors[errors_before:] == [], sim.errors[errors_before:]
    finally:
        proc.stop()
