"""The real enrichment connector: OpenCTI simulator → iris-opencti-enrich → IRIS API test server."""

import json
import re
import uuid

import pytest

from iris_opencti_connector.store.ledger import Ledger
from iris_opencti_module.core import stix_ids
from tests.connector.harness import (
    ConnectorProcess,
    case_sync,
    delete_queues,
    import_env,
    ioc_event,
    publish,
    wait,
)
from tests.iris_api import IrisApiServer
from tests.module.samples import load_export
from tests.opencti_sim import OpenCTISimulator

TOKEN = "sim-" + uuid.uuid4().hex
IRIS_KEY = "iris-sync-" + uuid.uuid4().hex
SYNC_USER = {"id": 7, "user_name": "opencti-sync"}
EXPORTS = {"2.4": "case_export_2_4_20.json", "2.5": "case_export_2_5.json"}


@pytest.fixture(params=["2.4", "2.5"])
def stack(request, tmp_path):
    """IRIS API server + simulator + the import connector (which builds the ledger) + the enrichment one."""
    mode = request.param
    export = load_export(EXPORTS[mode])
    iris = IrisApiServer(mode=mode, api_keys={IRIS_KEY: SYNC_USER}, seed=[export])
    iris.start()
    sim = OpenCTISimulator(token=TOKEN)
    sim.start()
    queue = "iris-opencti-test-" + uuid.uuid4().hex[:8]
    importer = ConnectorProcess("iris_opencti_connector.importer.connector", str(tmp_path),
                                import_env(sim.url, TOKEN, queue, str(tmp_path))).start()
    enrich_env = import_env(sim.url, TOKEN, queue, str(tmp_path), IRIS_URL=iris.url, IRIS_API_KEY=IRIS_KEY,
                            CONNECTOR_NAME="DFIR-IRIS enrichment", CONNECTOR_ID=str(uuid.uuid4()))
    enrich_env.pop("CONNECTOR_SCOPE")
    enricher = ConnectorProcess("iris_opencti_connector.enrichment.connector", str(tmp_path), enrich_env).start()
    case = export["data"]["case"]
    case_ref = stix_ids.case_incident_id(case["name"], "2026-11-28T{}".format(case["initial_date"][11:23]) + "Z")
    publish(queue, [case_sync(export)])
    wait(lambda: len((sim.store.get(case_ref) or {}).get("object_refs", [])) > 30, what="the import",
         proc=importer)
    wait_for_ledger(importer, case["case_id"])
    wait(lambda: sim.connectors.get(enrich_env["CONNECTOR_ID"]), what="enrichment registration", proc=enricher)
    yield {"iris": iris, "sim": sim, "export": export, "enricher": enricher, "importer": importer,
           "connector_id": enrich_env["CONNECTOR_ID"], "case_ref": case_ref, "log": tmp_path, "queue": queue}
    enricher.stop()
    importer.stop()
    sim.stop()
    iris.stop()
    delete_queues(queue, queue + ".dead")


def wait_for_ledger(importer, case_id):
    """The importer writes its ledger (which the enrichment reads) once OpenCTI completed the work, a moment
    after the objects appear in the store."""
    ledger = Ledger(importer.env["IRIS_LEDGER"])
    try:
        wait(lambda: ledger.case_map(case_id), what=f"case {case_id} in the ledger", proc=importer)
    finally:
        ledger.close()


def set_verdict(sim, stix_id, score, labels):
    obj = dict(sim.store[stix_id])
    obj["x_opencti_score"] = score
    obj["x_opencti_labels"] = labels
    sim.ingest_bundle([obj])


def enrich(stack, stix_id):
    sim = stack["sim"]
    work_id = sim.request_enrichment(stack["connector_id"], stix_id)
    return wait(lambda: (w := sim.work(work_id)) and w["status"] == "complete" and w, timeout=60,
                what="the enrichment work", proc=stack["enricher"])


def test_scores_and_labels_reach_iris_tags_and_replace_old_ones(stack):
    iris, sim = stack["iris"], stack["sim"]
    ioc = stack["export"]["data"]["iocs"][4]  # the url, from IRIS IOC with tags "phishing"
    url_id = stix_ids.sco_id({"type": "url", "value": ioc["ioc_value"]})
    set_verdict(sim, url_id, 85, ["phishing", "apt28", "c2"])
    work = enrich(stack, url_id)
    tags = iris.ioc(ioc["ioc_id"])["ioc_tags"].split(",")
    assert tags[0] == "phishing"  # the analyst's tag stays first and untouched
    assert "opencti:score=85" in tags and "opencti:label=apt28" in tags and "opencti:label=c2" in tags
    message = json.dumps(work["messages"])
    assert "IOC {} in case #{}: opencti:score=85".format(ioc["ioc_id"], stack["export"]["data"]["case"]["case_id"]) \
        in message
    assert iris.ioc(ioc["ioc_id"])["user_id"] == SYNC_USER["id"]
    # a new verdict replaces the previous write-back tags instead of adding to them
    set_verdict(sim, url_id, 40, ["apt28"])
    enrich(stack, url_id)
    tags = iris.ioc(ioc["ioc_id"])["ioc_tags"].split(",")
    assert "opencti:score=40" in tags and "opencti:score=85" not in tags
    assert sum(t.startswith("opencti:score=") for t in tags) == 1
    assert tags.count("phishing") == 1
    assert IRIS_KEY not in stack["enricher"].log()


def test_observable_not_from_iris_is_a_clear_message_not_an_error(stack):
    sim = stack["sim"]
    other = {"type": "domain-name", "spec_version": "2.1", "value": "unrelated.example"}
    other["id"] = stix_ids.sco_id(other)
    sim.ingest_bundle([other])
    work = enrich(stack, other["id"])
    assert "not from IRIS" in json.dumps(work["messages"])
    assert not work["errors"]


def test_iris_down_then_up_still_writes_back(stack):
    iris, sim = stack["iris"], stack["sim"]
    ioc = stack["export"]["data"]["iocs"][5]  # the e-mail address
    email_id = stix_ids.sco_id({"type": "email-addr", "value": ioc["ioc_value"]})
    set_verdict(sim, email_id, 70, ["bec"])
    iris.down(seconds=3)
    work = enrich(stack, email_id)
    assert not work["errors"], work
    assert "opencti:score=70" in iris.ioc(ioc["ioc_id"])["ioc_tags"]
    assert "retry" in stack["enricher"].log()


def test_bad_key_is_named_in_the_work_error(stack):
    iris, sim = stack["iris"], stack["sim"]
    iris.remove_api_key(IRIS_KEY)
    ioc = stack["export"]["data"]["iocs"][0]
    ip_id = stix_ids.sco_id({"type": "ipv4-addr", "value": ioc["ioc_value"]})
    work_id = sim.request_enrichment(stack["connector_id"], ip_id)
    work = wait(lambda: (w := sim.work(work_id)) and w["errors"] and w, timeout=60, what="the failed work",
                proc=stack["enricher"])
    assert "IRIS_API_KEY" in json.dumps(work["errors"]) and IRIS_KEY not in json.dumps(work)


def test_labels_from_iris_tags_are_not_written_back(stack):
    """An IOC tagged ``analyst:keep`` in IRIS is exported with that label; it must not come back as
    ``opencti:label=analyst:keep``, while OpenCTI's own labels do."""
    iris, sim, export = stack["iris"], stack["sim"], stack["export"]
    ioc = dict(export["data"]["iocs"][1], ioc_tags="phishing,analyst:keep")  # the domain
    iris.edit_ioc(ioc["ioc_id"], ioc_tags=ioc["ioc_tags"])
    domain_id = stix_ids.sco_id({"type": "domain-name", "value": ioc["ioc_value"]})
    publish(stack["queue"], [ioc_event(export, "ioc.updated", ioc)])
    wait(lambda: "analyst:keep" in (sim.store.get(domain_id) or {}).get("x_opencti_labels", []),
         what="the IRIS tag as an OpenCTI label", proc=stack["importer"])
    set_verdict(sim, domain_id, 60, ["apt28"])  # OpenCTI's analysts add one; labels merge
    enrich(stack, domain_id)
    tags = iris.ioc(ioc["ioc_id"])["ioc_tags"].split(",")
    assert tags == ["phishing", "analyst:keep", "opencti:score=60", "opencti:indicator", "opencti:label=apt28"]


def test_label_text_is_normalised_in_what_iris_shows(stack):
    iris, sim = stack["iris"], stack["sim"]
    ioc = stack["export"]["data"]["iocs"][0]  # the IPv4 address
    ip_id = stix_ids.sco_id({"type": "ipv4-addr", "value": ioc["ioc_value"]})
    set_verdict(sim, ip_id, 90, ["two\nlines", "nul\x00byte", "<script>alert(1)</script>", "x" * 500, "a,b,c"])
    enrich(stack, ip_id)
    stored = iris.ioc(ioc["ioc_id"])["ioc_tags"]
    shown = iris.shown_tags(ioc["ioc_id"])
    assert len(stored) <= 512
    assert shown == ["phishing", "opencti:score=90", "opencti:indicator", "opencti:label=two lines",
                     "opencti:label=nul byte", "opencti:label=alert(1)",
                     "opencti:label=" + "x" * 63 + "\u2026", "opencti:label=a b c"]
    for badge in shown:
        assert badge.isprintable() and "<" not in badge and badge == badge.strip()


def test_seen_does_not_count_other_iris_cases(stack):
    """The IOC's value is in a second IRIS case (IRIS 2.4: the same IOC, linked; 2.5: an IOC of its own) and
    in one report from elsewhere: ``opencti:seen`` counts the report only."""
    iris, sim, export = stack["iris"], stack["sim"], stack["export"]
    ioc = export["data"]["iocs"][4]  # the url
    url_id = stix_ids.sco_id({"type": "url", "value": ioc["ioc_value"]})
    second = iris.add_case(name="Second case holding the same URL")
    second_ioc = iris.add_ioc(second["case_id"], ioc["ioc_value"], "url")
    assert (second_ioc == ioc["ioc_id"]) is (iris.mode == "2.4")  # 2.4 reuses the IOC
    publish(stack["queue"], [case_sync(iris.export(second["case_id"]))])
    wait(lambda: sum(url_id in (o.get("object_refs") or []) for o in sim.store.values()
                     if o.get("type") == "case-incident") == 2, what="the second case", proc=stack["importer"])
    wait_for_ledger(stack["importer"], second["case_id"])
    author = {"type": "identity", "spec_version": "2.1", "id": "identity--" + str(uuid.uuid4()), "name": "CERT-X",
              "identity_class": "organization", "created": "2026-01-01T00:00:00.000Z",
              "modified": "2026-01-01T00:00:00.000Z"}
    report = {"type": "report", "spec_version": "2.1", "id": "report--" + str(uuid.uuid4()), "name": "bulletin",
              "published": "2026-01-01T00:00:00.000Z", "created": "2026-01-01T00:00:00.000Z",
              "modified": "2026-01-01T00:00:00.000Z", "created_by_ref": author["id"], "object_refs": [url_id]}
    sim.ingest_bundle([author, report])
    set_verdict(sim, url_id, 50, [])
    work = enrich(stack, url_id)
    assert "opencti:seen=1" in iris.ioc(ioc["ioc_id"])["ioc_tags"].split(","), work["messages"]
    assert "opencti:seen=1" in iris.ioc(second_ioc)["ioc_tags"].split(",")
    if iris.mode == "2.4":  # one IOC: what the write-back set shows in both cases
        assert [i["ioc_tags"] for i in iris.iocs(second["case_id"]) if i["ioc_id"] == ioc["ioc_id"]] == \
            [iris.ioc(ioc["ioc_id"])["ioc_tags"]]


def test_opencti_context_for_the_iocs_tab_is_written_and_replaced(stack):
    """Threat actors and malware linked to the observable's indicator, the reports holding it: written to the
    IOC's ioc_enrichment (IRIS's REST API cannot write custom attributes; the module renders the tab), replaced
    by the next enrichment. What came from OpenCTI is data here, escaped by the module."""
    from iris_opencti_module.hooks.opencti_tab import FIELD, TAB, with_tab

    iris, sim = stack["iris"], stack["sim"]
    ioc = stack["export"]["data"]["iocs"][4]
    url_id = stix_ids.sco_id({"type": "url", "value": ioc["ioc_value"]})
    indicator = stix_ids.indicator_id("[url:value = '{}']".format(ioc["ioc_value"].replace("'", "\\'")))
    assert indicator in sim.store, "the import side made the url's indicator"
    actor = stix_ids.threat_actor_id("<script>alert(1)</script> Bear")
    other = stix_ids.identity_id("Other CTI", "organization")
    created = "2026-11-20T10:00:00.000Z"
    sim.ingest_bundle([
        {"type": "identity", "spec_version": "2.1", "id": other, "name": "Other CTI",
         "identity_class": "organization", "created": created, "modified": created},
        {"type": "threat-actor", "spec_version": "2.1", "id": actor, "name": "<script>alert(1)</script> Bear",
         "created": created, "modified": created, "created_by_ref": other},
        {"type": "relationship", "spec_version": "2.1", "relationship_type": "indicates", "source_ref": indicator,
         "target_ref": actor, "id": stix_ids.relationship_id("indicates", indicator, actor), "created": created,
         "modified": created, "created_by_ref": other},
        {"type": "report", "spec_version": "2.1", "id": "report--5f0e4b1a-9d7c-4e2b-8a61-3c2d1e0f9a8b",
         "name": "Phishing wave & friends", "published": "2026-11-21T00:00:00.000Z", "created": created,
         "modified": created, "object_refs": [url_id], "created_by_ref": other},
    ])
    set_verdict(sim, url_id, 85, ["apt28"])
    enrich(stack, url_id)
    context = (iris.ioc(ioc["ioc_id"])["ioc_enrichment"] or {})["opencti"]
    assert context["score"] == 85 and "apt28" in context["labels"]
    assert context["related"] == {"Threat-Actor-Group": ["<script>alert(1)</script> Bear"]}
    assert [c["name"] for c in context["containers"]] == ["Phishing wave & friends"], "IRIS's own case left out"
    assert context["url"].startswith(sim.url.rstrip("/") + "/dashboard/observations/observables/")
    tab = with_tab(None, {"opencti": context})[TAB][FIELD]["value"]
    assert "<script>" not in tab and "&lt;script&gt;alert(1)&lt;/script&gt; Bear" in tab
    assert "Phishing wave &amp; friends" in tab

    set_verdict(sim, url_id, 40, ["apt28"])
    enrich(stack, url_id)
    again = iris.ioc(ioc["ioc_id"])["ioc_enrichment"]
    assert again["opencti"]["score"] == 40 and list(again) == ["opencti"], "replaced, not added to"


def test_an_opencti_analyst_s_note_becomes_an_iris_comment_once(stack):
    """The back-sync OpenCTI users asked for: a note written in OpenCTI on the observable shows in IRIS as a
    comment on the IOC, marked as coming from OpenCTI, once however often the IOC is enriched; the IRIS
    module's own notes (authored by IRIS) are not echoed."""
    iris, sim = stack["iris"], stack["sim"]
    ioc = stack["export"]["data"]["iocs"][4]
    case_id = stack["export"]["data"]["case"]["case_id"]
    url_id = stix_ids.sco_id({"type": "url", "value": ioc["ioc_value"]})
    analyst = stix_ids.identity_id("CTI team", "organization")
    created = "2026-11-22T09:00:00.000Z"
    note_id = stix_ids.note_id("Same infrastructure as the March wave.", created, "Seen before")
    sim.ingest_bundle([
        {"type": "identity", "spec_version": "2.1", "id": analyst, "name": "CTI team",
         "identity_class": "organization", "created": created, "modified": created},
        {"type": "note", "spec_version": "2.1", "id": note_id, "abstract": "Seen before",
         "content": "Same infrastructure as the March wave.", "created": created, "modified": created,
         "object_refs": [url_id], "created_by_ref": analyst},
        {"type": "note", "spec_version": "2.1", "id": stix_ids.note_id("from IRIS", created), "content": "from IRIS",
         "created": created, "modified": created, "object_refs": [url_id],
         "created_by_ref": stix_ids.identity_id("DFIR-IRIS", "organization")},
    ])
    set_verdict(sim, url_id, 70, [])
    work = enrich(stack, url_id)
    comments = iris.state.comments_of(ioc["ioc_id"])
    assert len(comments) == 1 and re.fullmatch(
        r"\[OpenCTI note note--[0-9a-f-]{36}\] Seen before\n\nSame infrastructure as the March wave\.",
        comments[0]["comment_text"]), [c["comment_text"] for c in comments]
    assert comments[0]["comment_user_id"] == SYNC_USER["id"] and comments[0]["comment_case_id"] == case_id
    assert "1 OpenCTI note as IRIS comments" in json.dumps(work["messages"])
    enrich(stack, url_id)
    assert len(iris.state.comments_of(ioc["ioc_id"])) == 1, "posted once"
