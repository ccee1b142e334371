"""The ledger (SQLite and PostgreSQL) and the resolution of updates and deletions it drives."""

import json

from iris_opencti_connector.importer.plan import plan_message
from iris_opencti_connector.store.ledger import Ledger
from iris_opencti_module.core.convert import Converter, ConverterConfig
from iris_opencti_module.core.envelope import make_envelope
from tests.module.samples import load_export, make_ioc

CONVERTER = Converter(ConverterConfig())


def sync_envelope(export, event="case.sync"):
    result = CONVERTER.convert_export(export)
    case = export["data"]["case"]
    return make_envelope(event, case["case_id"], case_name=case["name"], case_ref=result.case_ref,
                         bundle=result.bundle(event), produced=result.produced), result


def ioc_envelope(export, event, ioc):
    case = export["data"]["case"]
    result = CONVERTER.convert(case, [ioc] if event != "ioc.deleted" else [])
    return make_envelope(event, case["case_id"], case_ref=result.case_ref, bundle=result.bundle(event),
                         produced=result.produced, ioc_ids=[ioc["ioc_id"]])


def test_ledger_records_replaces_and_reports_holders(ledger):
    ledger.record(10, {"ioc:1": ["a", "b"], "ioc:2": ["b", "c"]}, case_ref="case-incident--x", name="#10 - X")
    assert ledger.ids_of(10, "ioc:1") == {"a", "b"}
    assert ledger.holders("b") == {("10", "ioc:1"), ("10", "ioc:2")}
    ledger.record(11, {"ioc:1": ["a"]})
    assert ledger.cases_holding("ioc:1") == ["10", "11"]
    ledger.record(10, {"ioc:1": ["z"]})
    assert ledger.case_map(10) == {"ioc:1": {"z"}, "ioc:2": {"b", "c"}}
    assert ledger.case_ref(10) == "case-incident--x"
    ledger.forget(10, ["ioc:2"])
    assert ledger.holders("b") == set()
    ledger.forget_case(10)
    assert ledger.case_map(10) == {} and ledger.case_ref(10) is None and ledger.known_cases() == []


def test_ledger_survives_reopen(tmp_path):
    url = "sqlite:///" + str(tmp_path / "l.sqlite")
    first = Ledger(url)
    first.record(1, {"ioc:5": ["x"]}, case_ref="case-incident--1")
    first.close()
    assert Ledger(url).ids_of(1, "ioc:5") == {"x"}


def test_deleted_ioc_is_removed_exactly_and_deleted_only_when_sole(ledger):
    export = load_export()
    env, result = sync_envelope(export)
    ledger.apply(plan_message(env, ledger, lambda *_: True))
    # IOC 29 (ip 192.0.2.45) shares its observable with domain|ip IOC 36 and the url... only the ip object
    ip_ids = set(result.produced["ioc:29"])
    ioc = export["data"]["iocs"][0]
    plan = plan_message(ioc_envelope(export, "ioc.deleted", ioc), ledger, lambda *_: True)
    case = plan.cases[0]
    assert case.forget_keys == ["ioc:29"]
    gone = set(case.deleted) | set(case.removed_from_case)
    shared = {i for i in ip_ids if any(k != "ioc:29" for _, k in ledger.holders(i))}
    assert gone == ip_ids - shared
    assert shared and not (shared & gone)  # the address is still produced by the domain|ip IOC: it stays
    ops = plan.operations()
    assert all(o["opencti_operation"] == "delete" for o in ops)
    assert {o["id"] for o in ops} == gone


def test_not_sole_author_only_leaves_the_case(ledger):
    export = load_export()
    env, result = sync_envelope(export)
    ledger.apply(plan_message(env, ledger, lambda *_: True))
    ioc = export["data"]["iocs"][4]  # the url, produced by no other IOC
    plan = plan_message(ioc_envelope(export, "ioc.deleted", ioc), ledger,
                        lambda stix_id, ref: stix_id.startswith("relationship--"))
    case = plan.cases[0]
    assert case.removed_from_case and all(not i.startswith("relationship--") for i in case.removed_from_case)
    # the case's patch (label and marking patches of objects that stay may come before it)
    patch = next(o for o in plan.operations() if o["opencti_operation"] == "patch" and o["id"] == result.case_ref)
    assert patch["opencti_field_patch"][0]["operation"] == "remove"
    assert set(patch["opencti_field_patch"][0]["value"]) == set(case.removed_from_case)


def test_updated_value_removes_the_old_objects(ledger):
    export = load_export()
    env, _ = sync_envelope(export)
    ledger.apply(plan_message(env, ledger, lambda *_: True))
    ioc = dict(export["data"]["iocs"][4], ioc_value="http://new.example/x")
    old = ledger.ids_of(10, "ioc:33")
    env = ioc_envelope(export, "ioc.updated", ioc)
    plan = plan_message(env, ledger, lambda *_: True)
    case = plan.cases[0]
    assert set(case.set_keys["ioc:33"]) == set(env["produced"]["ioc:33"])
    assert set(case.deleted) | set(case.removed_from_case) <= old
    assert set(case.deleted) == old  # the old url, its indicator and based-on all go
    ledger.apply(plan)
    assert ledger.ids_of(10, "ioc:33") == set(env["produced"]["ioc:33"])


def test_full_sync_deletes_iocs_gone_from_iris_and_replay_changes_nothing(ledger):
    export = load_export()
    env, _ = sync_envelope(export)
    ledger.apply(plan_message(env, ledger, lambda *_: True))
    replay = plan_message(env, ledger, lambda *_: True)
    assert all(not c.deleted and not c.removed_from_case for c in replay.cases)
    export["data"]["iocs"] = export["data"]["iocs"][5:]
    env2, _ = sync_envelope(export)
    plan = plan_message(env2, ledger, lambda *_: True)
    assert set(plan.cases[0].forget_keys) == {"ioc:29", "ioc:30", "ioc:32", "ioc:33"}


def test_postload_delete_without_case_finds_every_case(ledger):
    ledger.record(5, {"ioc:7": ["domain-name--a"]}, case_ref="case-incident--5")
    ledger.record(6, {"ioc:7": ["domain-name--a"]}, case_ref="case-incident--6")
    env = make_envelope("ioc.deleted", None, ioc_ids=[7])
    plan = plan_message(env, ledger, lambda *_: True)
    assert [c.case_id for c in plan.cases] == ["5", "6"]
    assert plan.operations() == [o for o in plan.operations() if o["id"] == "domain-name--a"]


def test_case_deleted_deletes_the_case_incident_by_id(ledger):
    ledger.record(5, {"case:5": ["case-incident--5"], "ioc:1": ["x--1"]}, case_ref="case-incident--5")
    plan = plan_message(make_envelope("case.deleted", 5), ledger, lambda *_: True)
    assert [o["id"] for o in plan.operations()] == ["case-incident--5"]
    ledger.apply(plan)
    assert ledger.case_map(5) == {}


def test_two_iocs_of_one_value_in_one_case():
    led = Ledger(":memory:")
    export = load_export()
    export["data"]["iocs"] = [make_ioc(1, "domain", "same.example"), make_ioc(2, "domain", "same.example")]
    env, _ = sync_envelope(export)
    led.apply(plan_message(env, led, lambda *_: True))
    plan = plan_message(ioc_envelope(export, "ioc.deleted", export["data"]["iocs"][0]), led, lambda *_: True)
    assert plan.operations() == []  # IOC 2 still holds the same domain and indicator
    assert json.dumps(plan.cases[0].forget_keys) == '["ioc:1"]'


def test_overlay_sees_pending_plans_and_leaves_the_ledger_alone(ledger):
    from iris_opencti_connector.store.ledger import LedgerOverlay

    ledger.record(1, {"ioc:1": ["x--1"], "ioc:2": ["x--2"]}, case_ref="case-incident--1")
    overlay = LedgerOverlay(ledger)
    first = plan_message(make_envelope("ioc.deleted", 1, ioc_ids=[1]), overlay, lambda *_: True)
    overlay.apply(first)
    assert overlay.ids_of(1, "ioc:1") == set() and overlay.holders("x--1") == set()
    assert overlay.cases_holding("ioc:1") == [] and overlay.case_map(1) == {"ioc:2": {"x--2"}}
    assert ledger.ids_of(1, "ioc:1") == {"x--1"}, "nothing is written before OpenCTI accepted the batch"
    second = plan_message(make_envelope("case.deleted", 1), overlay, lambda *_: True)
    overlay.apply(second)
    assert overlay.case_ref(1) is None and overlay.ids_of(1, "ioc:2") == set()
    assert [o["id"] for o in second.operations()] == ["case-incident--1"]


def test_ledger_tracks_sync_parts_and_key_times(ledger):
    ledger.record(10, {"ioc:1": ["a"]}, at="2026-01-01T00:00:02.000000Z")
    ledger.record(10, {"ioc:1": ["a"]}, at="2026-01-01T00:00:01.000000Z")  # older, processed late
    ledger.forget(10, ["ioc:2"], at="2026-01-01T00:00:03.000000Z")  # a tombstone
    assert ledger.stamps(10, ["ioc:1", "ioc:2", "ioc:3"]) == {"ioc:1": "2026-01-01T00:00:02.000000Z",
                                                              "ioc:2": "2026-01-01T00:00:03.000000Z"}
    assert ledger.sync_state(10, "s1") is None
    ledger.record_part(10, "s1", 1, 3, ["ioc:5", "ioc:6"], "2026-01-01T00:00:00.000000Z")
    ledger.record_part(10, "s1", 1, 3, ["ioc:5", "ioc:6"], "2026-01-01T00:00:00.000000Z")  # replayed
    ledger.record_part(10, "s1", 0, 3, ["ioc:4"], "2026-01-01T00:00:00.000000Z")
    state = ledger.sync_state(10, "s1")
    assert (state.total, state.received, state.complete, state.closed) == (3, 2, False, False)
    ledger.record_part(10, "s1", 2, 3, [], "2026-01-01T00:00:00.000000Z")
    state = ledger.sync_state(10, "s1")
    assert state.complete and state.keys == {"ioc:4", "ioc:5", "ioc:6"} and state.at == "2026-01-01T00:00:00.000000Z"
    ledger.close_sync(10, "s1")
    ledger.record_part(10, "s1", 0, 3, ["ioc:4"], "2026-01-01T00:00:00.000000Z")  # replayed after the end
    state = ledger.sync_state(10, "s1")
    assert state.closed and state.received == 0
    ledger.forget_case(10)
    assert ledger.sync_state(10, "s1") is None and ledger.stamps(10, ["ioc:1", "ioc:2"]) == {}


def test_a_full_sync_leaves_alone_what_iris_changed_after_it_was_taken(ledger):
    export = load_export()
    export["data"]["iocs"] = [make_ioc(1, "ip-dst", "198.51.100.1"), make_ioc(2, "ip-dst", "198.51.100.2")]
    export["data"]["assets"] = []
    sync, _ = sync_envelope(export)
    sync["time"] = "2026-01-01T10:00:00Z"
    old_sync, _ = sync_envelope(export)
    old_sync["time"] = "2026-01-01T09:00:00Z"  # an earlier sync, ingested with its own time
    plan = plan_message(old_sync, ledger, lambda *_: True)
    ledger.apply(plan)
    ledger.record(10, {"ioc:1": sorted(ledger.ids_of(10, "ioc:1"))}, at="2026-01-01T09:00:00.000000Z")
    # IOC 2 deleted and IOC 3 created in IRIS after the sync was taken (their events came first)
    ledger.forget(10, ["ioc:2"], at="2026-01-01T10:00:01.000000Z")
    created = ioc_envelope(export, "ioc.created", make_ioc(3, "ip-dst", "198.51.100.3"))
    ledger.record(10, {"ioc:3": created["produced"]["ioc:3"]}, at="2026-01-01T10:00:02.000000Z")
    plan = plan_message(sync, ledger, lambda *_: True)
    case = plan.cases[0]
    assert sorted(case.stale) == ["ioc:2", "ioc:3"]
    assert "ioc:2" not in case.set_keys and "ioc:3" not in case.forget_keys and "ioc:3" not in case.set_keys
    upserted = {o["id"] for o in plan.upserts}
    assert not upserted & set(ledger.ids_of(10, "ioc:3") | set(old_sync["produced"]["ioc:2"]))
    assert set(sync["produced"]["ioc:1"]) <= upserted and not case.deleted
    incident = next(o for o in plan.upserts if o["type"] == "case-incident")
    assert not set(incident["object_refs"]) & set(old_sync["produced"]["ioc:2"])
