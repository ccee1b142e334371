"""Order across messages: the real import connector against a simulator whose workers take messages out of
order (strict mode, :mod:`tests.opencti_sim.strict`), with OpenCTI's retry-then-error on missing references.

Each test publishes a backlog before the connector starts, so that it is read in one go, lets everything
settle, then checks that OpenCTI holds exactly what the ledger says and that every work's expectations are
what the workers reported.
"""

import json
import os

import pytest

from bench.convert import synthetic_case
from iris_opencti_connector.store.archive import Archive
from iris_opencti_connector.store.ledger import Ledger
from iris_opencti_module.core import stix_ids
from tests.connector.harness import (
    CONVERTER,
    HARSH_SIM,
    case_sync,
    ioc_event,
    other_case,
    publish,
    queue_depth,
    wait,
)
from tests.module.samples import load_export, make_ioc

CREATED = "2026-11-28T06:40:10.969Z"
OTHER = stix_ids.identity_id("Other CTI", "organization")


SIM_OPTIONS = HARSH_SIM  # conftest.py's ``sim`` fixture


@pytest.fixture
def run(queue, connector):
    """The import connector started on a queue that already holds ``bodies`` (a backlog)."""
    def start(bodies, **extra):
        publish(queue, bodies)
        return connector(**extra)

    return start


def ledger_of(tmp_path):
    return Ledger("sqlite:///" + str(tmp_path / "ledger.sqlite"))


def settle(sim, queue, proc, ledger_done, timeout=90.0):
    """The backlog consumed, the ledger in its final state, every work complete, the push queue empty."""
    connector_id = proc.env["CONNECTOR_ID"]

    def settled():
        works = [w for w in sim.works.values() if w["connector_id"] == connector_id]
        push = sim.amqp.queue_size("push_" + connector_id)
        return (queue_depth(queue) == 0 and ledger_done() and works and push == 0
                and all(w["status"] == "complete" or (w["processed_time"] and w["errors"]) for w in works))

    wait(settled, timeout=timeout, what="the backlog to settle", proc=proc)
    sim.pool.wait_idle(connector_id)
    return [w for w in sim.works.values() if w["connector_id"] == connector_id]


def created_by_connector(sim, connector_id):
    """Ids of what the connector brought into OpenCTI (first source), but the TLP markings and the author."""
    author = CONVERTER.author["id"]
    out = set()
    for stix_id in sim.store:
        meta = sim.meta(stix_id)
        if meta["sources"][0].get("connector_id") == connector_id and stix_id != author \
                and not stix_id.startswith("marking-definition--"):
            out.add(stix_id)
    return out


def assert_store_matches_ledger(sim, proc, ledger, case_ids):
    ids = set()
    for case_id in case_ids:
        case_map = ledger.case_map(case_id)
        ids |= {i for values in case_map.values() for i in values}
        case_ref = ledger.case_ref(case_id)
        held = set(sim.store[case_ref].get("object_refs", []))
        in_ledger = {i for values in case_map.values() for i in values} - {case_ref}
        assert held - {CONVERTER.author["id"]} == in_ledger, (sorted(held - in_ledger), sorted(in_ledger - held))
    assert created_by_connector(sim, proc.env["CONNECTOR_ID"]) == ids


def assert_honest_works(works):
    for work in works:
        assert work["expectations_added"] == work["import_processed_number"], (
            work["name"], work["expectations_added"], work["import_processed_number"])
        # the only refusals allowed are the workers' missing-reference drops, which the connector sends again
        # (the store matching the ledger, asserted beside, shows they arrived)
        others = [e for e in work["errors"] if "MISSING_REFERENCE_ERROR" not in str(e.get("message"))]
        assert not others, (work["name"], others[:3])
        if work["errors"]:
            assert any("sent again" in str(m.get("message")) for m in work["messages"]), work["messages"]


def domain_ids(value):
    """Observable, indicator, based-on relationship of a domain IOC."""
    observable = stix_ids.sco_id({"type": "domain-name", "value": value})
    indicator = stix_ids.indicator_id(f"[domain-name:value = '{value}']")
    return observable, indicator


def test_created_then_deleted_and_changed_value_in_one_backlog(sim, queue, run, tmp_path):
    export = load_export()
    flip = make_ioc(7001, "domain", "flip.evil.example")
    old = make_ioc(7002, "domain", "old.evil.example")
    new = dict(old, ioc_value="new.evil.example")
    proc = run([case_sync(export), ioc_event(export, "ioc.created", flip), ioc_event(export, "ioc.deleted", flip),
                ioc_event(export, "ioc.created", old), ioc_event(export, "ioc.updated", new)])
    ledger = ledger_of(tmp_path)
    new_ids = set(domain_ids("new.evil.example"))

    def done():
        case_map = ledger.case_map("10")
        return "ioc:7001" not in case_map and new_ids <= case_map.get("ioc:7002", set())

    works = settle(sim, queue, proc, done)
    for value in ("flip.evil.example", "old.evil.example"):
        for stix_id in domain_ids(value):
            assert stix_id not in sim.store, f"{stix_id} of {value} is still in OpenCTI"
    for stix_id in new_ids:
        assert stix_id in sim.store
    assert_store_matches_ledger(sim, proc, ledger, ["10"])
    assert_honest_works(works)


def test_case_patch_waits_for_the_upserts_of_the_previous_group(sim, queue, run, tmp_path):
    """IOCs also in another author's report only leave the case (a patch): the patch must run after the
    upsert that put them there, which belongs to the previous group."""
    export = load_export()
    values = ["shared-%d.evil.example" % n for n in range(5)]
    shared = [make_ioc(7100 + n, "domain", value) for n, value in enumerate(values)]
    observables = [stix_ids.sco_id({"type": "domain-name", "value": v}) for v in values]
    sim.ingest_bundle([
        {"type": "identity", "spec_version": "2.1", "id": OTHER, "name": "Other CTI", "identity_class": "organization",
         "created": CREATED, "modified": CREATED},
        *({"type": "domain-name", "spec_version": "2.1", "id": i, "value": v} for i, v in zip(observables, values)),
        {"type": "report", "spec_version": "2.1", "id": "report--6b1a4c8e-1d1b-4c7e-9e8e-2f1b7d9b0c11",
         "name": "Phishing wave", "published": CREATED, "created": CREATED, "modified": CREATED,
         "object_refs": observables, "created_by_ref": OTHER},
    ])
    url_ioc = export["data"]["iocs"][4]
    backlog = [case_sync(export)] + [ioc_event(export, "ioc.created", ioc) for ioc in shared]
    backlog.append(ioc_event(export, "ioc.deleted", url_ioc))  # operations: the first group ends here
    backlog += [ioc_event(export, "ioc.deleted", ioc) for ioc in shared]
    proc = run(backlog)
    ledger = ledger_of(tmp_path)
    works = settle(sim, queue, proc, lambda: not any(k.startswith("ioc:71") for k in ledger.case_map("10")))
    case_ref = ledger.case_ref("10")
    held = set(sim.store[case_ref]["object_refs"])
    for observable in observables:
        assert observable in sim.store, "another author's report holds it: it stays in OpenCTI"
        assert observable not in held, "the patch ran before the upsert that added it to the case"
    assert stix_ids.sco_id({"type": "url", "value": url_ioc["ioc_value"]}) not in sim.store
    assert_store_matches_ledger(sim, proc, ledger, ["10"])
    assert_honest_works(works)


def test_many_removals_go_in_ordered_chunks_below_the_limit(sim, queue, run, tmp_path):
    export = synthetic_case(120, 0)
    kept = dict(export, data=dict(export["data"], iocs=export["data"]["iocs"][:20]))
    limit = 8192
    proc = run([case_sync(export), case_sync(kept)], IRIS_OPERATIONS_MAX_BYTES=str(limit))
    ledger = ledger_of(tmp_path)
    removed = CONVERTER.convert_export(export).produced
    kept_keys = set(CONVERTER.convert_export(kept).produced)
    gone = {i for k, ids in removed.items() if k not in kept_keys for i in ids}
    works = settle(sim, queue, proc, lambda: set(ledger.case_map(str(export["data"]["case"]["case_id"]))) == kept_keys,
                   timeout=120)
    assert len(gone) >= 250
    assert not gone & set(sim.store), "removed IOCs still in OpenCTI"
    archive = Archive(str(tmp_path / "archive"))
    index = [json.loads(line) for line in (tmp_path / "archive" / "index.jsonl").read_text().splitlines()]
    op_bundles = []
    for entry in index:
        if entry["kind"] == "bundle":
            bundle = json.loads(archive.load(entry["sha256"]))
            if any("opencti_operation" in o for o in bundle["objects"]):
                op_bundles.append(bundle)
    assert len(op_bundles) >= 10
    sent = [o["id"] for b in op_bundles for o in b["objects"]]
    assert set(sent) == gone
    for bundle in op_bundles:
        assert len(json.dumps(bundle)) <= limit
    order = {"relationship": 0, "indicator": 1}
    ranks = [order.get(i.split("--")[0], 2) for i in sent]
    assert ranks == sorted(ranks), "relationships, then indicators, then what they pointed at, across chunks"
    assert_store_matches_ledger(sim, proc, ledger, [str(export["data"]["case"]["case_id"])])
    assert_honest_works(works)  # no "cannot be found": no chunk overtook the one before


def test_a_work_that_never_completes_is_retried_not_acknowledged(sim, queue, run, tmp_path):
    export = load_export()
    body = case_sync(export)
    sim.drop_next_push(1)  # one of the split messages vanishes, as when a worker crashes on it
    proc = run([body], IRIS_WORK_TIMEOUT="1.5")
    ledger = ledger_of(tmp_path)
    works = settle(sim, queue, proc, lambda: ledger.case_map("10"), timeout=60)
    for obj in json.loads(body)["bundle"]["objects"]:
        assert obj["id"] in sim.store or obj["type"] == "marking-definition", obj["id"]
    failed = [w for w in works if w["errors"]]
    # (the dropped object's dependants may also be in error on that work, after their retries)
    stalled = [w for w in failed if any("no progress" in e["message"] for e in w["errors"])]
    assert len(stalled) == 1 and len(works) == 2, works
    # the retry may only have met strict workers' missing references, which it sent again in the same work
    retry = [w for w in works if w not in stalled][0]
    assert all("MISSING_REFERENCE" in e["message"] for e in retry["errors"]), retry["errors"]
    assert "will retry" in proc.log()
    assert os.path.exists(tmp_path / "ledger.sqlite")


def test_removals_in_several_cases_go_together_not_one_case_after_another(sim, queue, run, tmp_path):
    """Order matters within a case only: each case's delete waits for its own create, not for the other
    cases' deletes, so three cases' create-then-delete take two steps (works), not six."""
    exports = [load_export()] + [other_case(load_export(), n, "Parallel %d" % n) for n in (21, 22)]
    iocs = [make_ioc(7300 + n, "domain", "parallel-%d.evil.example" % n) for n in range(3)]
    proc = run([ioc_event(e, "ioc.created", ioc) for e, ioc in zip(exports, iocs)]
               + [ioc_event(e, "ioc.deleted", ioc) for e, ioc in zip(exports, iocs)]
               + [ioc_event(exports[0], "ioc.created", make_ioc(7310, "domain", "after.evil.example"))])
    ledger = ledger_of(tmp_path)

    def done():
        return all("ioc:%d" % ioc["ioc_id"] not in ledger.case_map(str(e["data"]["case"]["case_id"]))
                   for e, ioc in zip(exports, iocs)) and "ioc:7310" in ledger.case_map("10")

    works = settle(sim, queue, proc, done)
    assert len(works) == 3, "creates of every case, then every case's delete, then case 10's next create: " \
                            "%s" % [w["name"] for w in works]
    for ioc in iocs:
        for stix_id in domain_ids(ioc["ioc_value"]):
            assert stix_id not in sim.store
    assert set(domain_ids("after.evil.example")) <= set(sim.store)
    assert_store_matches_ledger(sim, proc, ledger, ["10", "21", "22"])
    assert_honest_works(works)


def test_an_ioc_deleted_in_one_case_and_created_in_another_is_deleted_first(sim, queue, connector, tmp_path):
    """Case 10 deletes the only IOC of a value while case 21 adds an IOC of the same value, in one backlog.
    The deletion may not share a step with the creation (upserts go out first, then the deletion would take
    the observable case 21 now holds): the creation waits for it and brings the observable back."""
    first, second = load_export(), other_case(load_export(), 21, "Same value")
    ioc = make_ioc(7400, "domain", "shared-value.evil.example")
    publish(queue, [case_sync(second), ioc_event(first, "ioc.created", ioc)])
    proc = connector()
    ledger = ledger_of(tmp_path)
    settle(sim, queue, proc, lambda: "ioc:7400" in ledger.case_map("10"))
    proc.stop()
    again = dict(ioc, ioc_id=7401)
    publish(queue, [ioc_event(first, "ioc.deleted", ioc), ioc_event(second, "ioc.created", again)])
    proc = connector()
    works = settle(sim, queue, proc, lambda: "ioc:7400" not in ledger.case_map("10")
                   and "ioc:7401" in ledger.case_map("21"))
    for stix_id in domain_ids("shared-value.evil.example"):
        assert stix_id in sim.store, "case 21 holds it: it must be in OpenCTI"
    assert_store_matches_ledger(sim, proc, ledger, ["10", "21"])
    assert_honest_works(works)
