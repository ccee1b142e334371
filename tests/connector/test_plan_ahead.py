"""The next step planned ahead (importer/ahead.py): used only when no one else wrote its cases meanwhile.

The ledger counts the writes of every case (``Ledger.case_versions``), on SQLite and on PostgreSQL; a step
planned while the one before is being sent is kept if the counts say the only write in between was that step's
own commit, and planned again otherwise (a reconcile or another replica wrote the case).
"""

from __future__ import annotations

from concurrent.futures import Future

from iris_opencti_connector.importer import connector as connector_module
from iris_opencti_connector.importer.ahead import Committed, Prepared, still_valid
from iris_opencti_connector.importer.connector import ImportConnector
from iris_opencti_connector.store.archive import Archive
from iris_opencti_module.core.convert import Converter, ConverterConfig, unwrap_export
from iris_opencti_module.core.envelope import encode
from tests.module.samples import case_parts, load_export, make_ioc

CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))


def test_every_write_of_a_case_is_counted(ledger):
    assert ledger.case_versions(["10", "11"]) == {"10": 0, "11": 0}
    ledger.record("10", {"ioc:1": ["ipv4-addr--a"]}, case_ref="case-incident--x", at="2026-01-01T00:00:00Z")
    assert ledger.case_versions(["10", "11"]) == {"10": 1, "11": 0}
    ledger.forget("10", ["ioc:1"], at="2026-01-02T00:00:00Z")
    ledger.record("11", {"ioc:2": ["ipv4-addr--b"]})
    assert ledger.case_versions(["10", "11"]) == {"10": 2, "11": 1}
    ledger.forget_case("10")  # the count goes on: a case deleted and written again is not "unchanged"
    assert ledger.case_versions([10]) == {"10": 3}


def _prepared(seen):
    plan = type("Plan", (), {"cases": [type("Case", (), {"case_id": c})() for c in seen]})()
    return Prepared(taken=[1], plans=[plan], upserts=[], waves=None, seen=dict(seen))


def test_a_step_planned_ahead_is_valid_only_if_the_step_before_was_the_only_writer():
    prepared = _prepared({"10": 4})
    committed = Committed(before={"10": 4}, after={"10": 5})
    assert still_valid(prepared, committed, {"10": 5})
    assert not still_valid(prepared, committed, {"10": 6}), "another writer after the commit"
    assert not still_valid(_prepared({"10": 3}), committed, {"10": 5}), "another writer before the commit"
    assert not still_valid(_prepared({"10": 5}), committed, {"10": 5}), "counts read after the commit"
    assert not still_valid(prepared, None, {"10": 5}), "nothing committed: nothing to compare with"
    other = _prepared({"11": 7})  # a case the step before did not touch: its count must not have moved
    assert still_valid(other, committed, {"11": 7})
    assert not still_valid(other, committed, {"11": 8})


def _connector(tmp_path, ledger):
    return ImportConnector({"iris": {"url": "https://iris.example"}}, helper=_Helper(), ledger=ledger,
                           archive=Archive(str(tmp_path / "archive"), 0))


class _Log:
    def __getattr__(self, _name):
        return lambda *args, **kwargs: None


class _Helper:
    connector_logger = _Log()
    connect_id = "connector-test"


def _parts():
    export = load_export()
    data = unwrap_export(export)
    iocs = [make_ioc(n, "ip-dst", "10.9.%d.%d" % (n // 256, n % 256)) for n in range(1, 241)]
    parts = case_parts(CONVERTER, data["case"], iocs, [], 65536)
    assert len(parts) >= 3
    return [(part, encode(part)) for part in parts]


def _done(value):
    future: Future = Future()
    future.set_result(value)
    return future


def test_the_step_planned_ahead_is_taken_unless_the_case_was_written_meanwhile(tmp_path, ledger, monkeypatch):
    monkeypatch.setattr(connector_module, "STEP_OBJECTS", 50)  # each part a step of its own, as big parts are
    conn = _connector(tmp_path, ledger)
    items = _parts()
    remaining = list(range(len(items)))
    taken, plans = conn._form_step(items, remaining)
    assert taken == [0]
    rest = remaining[1:]

    ahead = conn._plan_ahead(items, rest, plans)  # while the first step is being sent
    assert ahead is not None and ahead.taken == [1]
    committed = conn._commit_ledger(plans)  # the first step is in OpenCTI and written

    kept = conn._prepared(_done(ahead), committed, rest)
    assert kept is ahead, "nothing but the step before wrote the case: the plan made ahead is the plan"
    assert [p.upserts for p in kept.plans] == [p.upserts for p in conn._form_step(items, rest)[1]]

    # a reconcile (or another replica) writes the case between the commit and the next step
    ledger.record(str(items[0][0]["case"]["id"]), {"ioc:999": ["ipv4-addr--00000000-0000-5000-8000-000000000000"]})
    assert conn._prepared(_done(ahead), committed, rest) is None, "the case changed: the step is planned again"


def test_a_removal_is_never_planned_ahead(tmp_path, ledger):
    """Who owns an object is asked of OpenCTI once the step before is in it: a step with removals waits."""
    conn = _connector(tmp_path, ledger)
    items = _parts()
    taken, plans = conn._form_step(items, [0])
    conn._commit_ledger(plans)
    first = items[0][0]
    gone = dict(first, message_id="removal", bundle=dict(first["bundle"], objects=[
        o for o in first["bundle"]["objects"] if o["id"] not in first["produced"]["ioc:1"]]),
        produced={k: v for k, v in first["produced"].items() if k != "ioc:1"}, part=None, event="case.sync")
    gone.pop("part")
    items = items + [(gone, encode(gone))]
    asked = []
    conn.may_delete = lambda stix_id, case_ref: asked.append(stix_id) or True
    assert conn._plan_ahead(items, [len(items) - 1], plans) is None
    assert asked == [], "OpenCTI was asked who owns an object before the step before was in it"
    conn._form_step(items, [len(items) - 1])  # planned when it comes, it does ask
    assert asked and set(asked) <= set(first["produced"]["ioc:1"])
