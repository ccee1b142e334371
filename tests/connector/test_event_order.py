"""IRIS's order per object, whatever order the messages are consumed in (replicas side by side, or IRIS's web
and worker processes publishing at once): the latest event time wins, deletions leave tombstones, with or
without their case, and a deleted case stays deleted. On SQLite and on PostgreSQL (the ``ledger`` fixture)."""

from __future__ import annotations

import threading
import time

import pytest

from iris_opencti_connector.importer.plan import plan_message
from iris_opencti_connector.store.ledger import Ledger, LedgerOverlay
from iris_opencti_module.core.envelope import make_envelope
from tests.connector.test_ledger_resolve import ioc_envelope, sync_envelope
from tests.module.samples import load_export, make_ioc

T1, T2, T3 = "2026-01-01T10:00:01Z", "2026-01-01T10:00:02Z", "2026-01-01T10:00:03Z"


def small_export(*iocs):
    export = load_export()
    export["data"]["iocs"] = list(iocs)
    export["data"]["assets"] = []
    return export


def at(envelope, when):
    envelope["time"] = when
    return envelope


def ingest(ledger, envelope):
    """What the connector does with a message once OpenCTI took it: its plan, written to the ledger."""
    plan = plan_message(envelope, ledger, lambda *_: True)
    ledger.apply(plan)
    return plan


def upserted_ids(plan):
    return {o["id"] for o in plan.upserts}


IOC = make_ioc(1, "domain", "late.evil.example")
EXPORT = small_export(IOC)
CASE_ID = EXPORT["data"]["case"]["case_id"]


def test_a_creation_consumed_after_its_deletion_changes_nothing(ledger):
    """The pair of issue 13.3, consumed the wrong way round (two replicas): the deletion leaves a tombstone,
    and the older creation, when it comes, neither upserts nor records anything."""
    created = at(ioc_envelope(EXPORT, "ioc.created", IOC), T1)
    deleted = at(ioc_envelope(EXPORT, "ioc.deleted", IOC), T2)
    ingest(ledger, deleted)
    plan = ingest(ledger, created)
    assert plan.upserts == [] and plan.cases == []
    assert ledger.ids_of(CASE_ID, "ioc:1") == set()
    # in IRIS's order the same two messages create, then delete
    fresh = small_export(make_ioc(2, "domain", "ordered.evil.example"))
    first = ingest(ledger, at(ioc_envelope(fresh, "ioc.created", fresh["data"]["iocs"][0]), T1))
    assert first.upserts and ledger.ids_of(CASE_ID, "ioc:2")
    ingest(ledger, at(ioc_envelope(fresh, "ioc.deleted", fresh["data"]["iocs"][0]), T2))
    assert ledger.ids_of(CASE_ID, "ioc:2") == set()


def test_an_older_update_never_overwrites_a_newer_one(ledger):
    old = dict(IOC, ioc_description="first words")
    new = dict(IOC, ioc_description="second words")
    ingest(ledger, at(ioc_envelope(EXPORT, "ioc.updated", new), T2))
    stale = plan_message(at(ioc_envelope(EXPORT, "ioc.updated", old), T1), ledger, lambda *_: True)
    assert stale.upserts == [] and stale.cases == [], "the older picture is superseded"
    newer = plan_message(at(ioc_envelope(EXPORT, "ioc.updated", old), T3), ledger, lambda *_: True)
    assert newer.upserts and newer.cases[0].set_keys.get("ioc:1")
    replayed = plan_message(at(ioc_envelope(EXPORT, "ioc.updated", new), T2), ledger, lambda *_: True)
    assert replayed.upserts, "a replay (same time) is applied again: upserts are idempotent"


def test_a_deletion_older_than_a_relink_of_the_same_ioc_is_ignored(ledger):
    """IRIS 2.4 hands out the same IOC id when an IOC of the same value is added again: deleted at T1, added
    again at T2, and the two messages consumed the other way round, the IOC stays."""
    ingest(ledger, at(ioc_envelope(EXPORT, "ioc.created", IOC), T2))
    plan = ingest(ledger, at(ioc_envelope(EXPORT, "ioc.deleted", IOC), T1))
    assert not any(c.forget_keys or c.deleted or c.removed_from_case for c in plan.cases)
    assert ledger.ids_of(CASE_ID, "ioc:1")


def test_a_deletion_without_its_case_leaves_a_tombstone_in_every_case(ledger):
    """A postload delete hook knows the id alone; consumed before the creation (another replica holds it),
    no case holds the IOC yet: the tombstone keeps the older creation, and an older sync, from bringing it
    back, in whichever case they come."""
    caseless = at(make_envelope("ioc.deleted", None, ioc_ids=[1]), T2)
    plan = ingest(ledger, caseless)
    assert plan.cases == [] and plan.tombstones == ["ioc:1"]
    assert ingest(ledger, at(ioc_envelope(EXPORT, "ioc.created", IOC), T1)).cases == []
    other = small_export(IOC, make_ioc(5, "domain", "other.evil.example"))
    other["data"]["case"] = dict(other["data"]["case"], case_id=77, name="#77 - another case")
    sync, _ = sync_envelope(other)
    plan = ingest(ledger, at(sync, T1))
    assert plan.cases[0].stale == ["ioc:1"] and "ioc:1" not in plan.cases[0].set_keys
    assert ledger.ids_of(77, "ioc:1") == set() and ledger.ids_of(77, "ioc:5")
    # an IOC created after the deletion (a new IRIS object would have a new id; the time decides alone)
    assert ingest(ledger, at(ioc_envelope(EXPORT, "ioc.created", IOC), T3)).cases[0].set_keys["ioc:1"]


def test_a_deleted_case_stays_deleted(ledger):
    """case.deleted consumed before a creation, an update of the case or a sync taken before it."""
    ingest(ledger, at(ioc_envelope(EXPORT, "ioc.created", IOC), T1))
    gone = ingest(ledger, at(make_envelope("case.deleted", CASE_ID), T2))
    assert gone.cases[0].delete_case and ledger.deleted_at(CASE_ID) == "2026-01-01T10:00:02.000000Z"
    late = small_export(make_ioc(9, "domain", "after.evil.example"))
    for envelope in (ioc_envelope(late, "ioc.created", late["data"]["iocs"][0]), sync_envelope(late)[0]):
        plan = ingest(ledger, at(envelope, T1))
        assert plan.upserts == [] and plan.cases == [], envelope["event"]
    assert ledger.case_map(CASE_ID) == {} and ledger.case_ref(CASE_ID) is None


def test_an_ioc_older_than_the_case_edit_still_joins_the_case(ledger):
    """Only the IOC's own key decides: a case edited after the IOC was created (its key stamped later) must
    not keep the IOC out of its Case-Incident."""
    export = small_export()
    ingest(ledger, at(sync_envelope(export)[0], T3))  # the case, stamped T3
    event = at(ioc_envelope(EXPORT, "ioc.created", IOC), T2)
    sent = next(o for o in event["bundle"]["objects"] if o["type"] == "case-incident")
    assert {"description", "severity", "modified"} <= set(sent), "the sample case has fields to keep or not"
    plan = ingest(ledger, event)
    incident = next(o for o in plan.upserts if o["type"] == "case-incident")
    assert set(plan.cases[0].set_keys["ioc:1"]) <= set(incident["object_refs"])
    assert ledger.ids_of(CASE_ID, "ioc:1")
    # its older fields stay out: OpenCTI keeps the newer ones (an upsert leaves unfilled fields alone)
    assert not {"description", "severity", "priority", "modified"} & set(incident)
    assert incident["name"] == sent["name"] and incident["id"] == sent["id"]
    newer = plan_message(at(ioc_envelope(EXPORT, "ioc.updated", IOC), T3), ledger, lambda *_: True)
    assert next(o for o in newer.upserts if o["type"] == "case-incident") == next(
        o for o in at(ioc_envelope(EXPORT, "ioc.updated", IOC), T3)["bundle"]["objects"]
        if o["type"] == "case-incident"), "a message as new as the case sends the case whole"


def test_in_one_step_the_overlay_keeps_the_same_order():
    """A deletion without its case and the older creation in one group: the creation, planned against the
    overlay of the deletion not yet written, is superseded too."""
    ledger = Ledger(":memory:")
    overlay = LedgerOverlay(ledger)
    overlay.apply(plan_message(at(make_envelope("ioc.deleted", None, ioc_ids=[1]), T2), overlay, lambda *_: True))
    assert plan_message(at(ioc_envelope(EXPORT, "ioc.created", IOC), T1), overlay, lambda *_: True).cases == []
    overlay.apply(plan_message(at(make_envelope("case.deleted", 300), T2), overlay, lambda *_: True))
    assert overlay.deleted_at(300) == "2026-01-01T10:00:02.000000Z"
    assert ledger.deleted_at(300) is None and ledger.stamps(CASE_ID, ["ioc:1"]) == {}, "nothing written yet"


def test_a_step_that_removes_waits_for_every_step_under_way_and_holds_off_the_next(pg_url):
    """PostgreSQL, three replicas' steps lock: steps of upserts share it; a removal holds it alone, so it
    starts once the step under way (its containers included) is done, and the step after it waits for it.
    A replica's own holds never block it, and a hold of a session that died is simply gone."""
    from iris_opencti_connector.store.ledger import StepsLock

    ledgers = [Ledger(pg_url) for _ in range(3)]
    a, b, c = (StepsLock(led) for led in ledgers)
    order = []
    slices = []

    def removal():
        held = b.hold(True, between=lambda: slices.append(1))
        order.append("removal")
        time.sleep(0.3)
        order.append("removal done")
        b.release(held)

    def next_step():
        time.sleep(0.2)  # comes after the removal asked
        held = c.hold(False)
        order.append("next step")
        c.release(held)

    try:
        first, second = a.hold(False), c.hold(False)  # two steps under way side by side
        c.release(second)
        threads = [threading.Thread(target=removal), threading.Thread(target=next_step)]
        for thread in threads:
            thread.start()
        time.sleep(0.6)
        order.append("step under way done")
        a.release(first)
        for thread in threads:
            thread.join(10)
        assert order == ["step under way done", "removal", "removal done", "next step"]
        assert len(slices) >= 5, "the wait let the caller breathe (the AMQP heartbeat runs meanwhile)"
        mine = a.hold(False)
        alone = a.hold(True)  # its own step under way does not block it
        a.release(alone)
        a.release(mine)
        held = a.hold(True)
        a.close()  # the session dies: its hold with it
        a.release(held)
        c.release(c.hold(True))
    finally:
        for lock in (a, b, c):
            lock.close()
        for led in ledgers:
            led.close()


def test_locks_per_iris_object_under_a_shared_case_lock(pg_url):
    """Two replicas' steps: different IOCs of one case go at once, the same IOC never, nor an IOC beside a
    sync (or any whole-case message) of its case; what one step took it takes again for free."""
    first, second = Ledger(pg_url), Ledger(pg_url)
    ioc_1 = [("case", "10", False), ("key", "ioc:1", True)]
    ioc_2 = [("case", "10", False), ("key", "ioc:2", True)]
    whole = [("case", "10", True)]
    try:
        with first.step_locks() as a:
            assert a.take(ioc_1) and a.take(ioc_1) and a.cases() == {"10"}
            with second.step_locks() as b:
                assert b.take(ioc_2), "another IOC of the same case"
                assert not b.take(ioc_1), "the same IOC"
                assert not b.take(whole), "a whole-case message beside single events of its case"
                assert b.take([("case", "11", True)]), "another case"
            with second.step_locks() as b:  # the same, tried in one round trip per mode
                b.prefetch([*ioc_1, *ioc_2, *whole])
                assert b.take(ioc_2) and not b.take(ioc_1) and not b.take(whole)
                assert ("key", "ioc:1", True) in b.refused and b.held == {("case", "10"): False, ("key", "ioc:2"): True}
        with first.step_locks() as a:  # the commit released everything
            assert a.take(whole) and a.take(ioc_1), "a step holding its case alone also takes its IOCs"
            with second.step_locks() as b:
                assert not b.take(ioc_2)
    finally:
        first.close()
        second.close()


def test_a_stop_while_waiting_for_the_steps_lock_cancels_the_wait(pg_url):
    from iris_opencti_connector.store.ledger import StepsLock

    ledgers = [Ledger(pg_url) for _ in range(3)]
    a, b, c = (StepsLock(led) for led in ledgers)
    calls = []

    def stopping():
        calls.append(1)
        if len(calls) >= 3:
            raise RuntimeError("stop")

    try:
        held = a.hold(False)
        with pytest.raises(RuntimeError, match="stop"):
            b.hold(True, between=stopping)
        a.release(held)
        done = threading.Event()
        threading.Thread(target=lambda: (c.release(c.hold(True)), done.set()), daemon=True).start()
        assert done.wait(5), "the cancelled request holds nothing"
    finally:
        for lock in (a, b, c):
            lock.close()
        for led in ledgers:
            led.close()


@pytest.mark.parametrize("value", ["standby", " Active ", ""])
def test_replica_mode_setting(value):
    from iris_opencti_connector.settings import IrisSettings

    assert IrisSettings.from_config({"iris": {"replica_mode": value}}).replica_mode == (value.strip().lower()
                                                                                      or "active")


def test_replica_mode_refuses_anything_else():
    from iris_opencti_connector.settings import IrisSettings

    with pytest.raises(ValueError, match="IRIS_REPLICA_MODE: 'leader' is neither"):
        IrisSettings.from_config({"iris": {"replica_mode": "leader"}})


def test_switching_a_new_sqlite_ledger_to_wal_waits_for_the_other_connector(monkeypatch):
    """The import and enrichment connectors opening one new SQLite ledger at the same moment: SQLite refused
    the WAL switch at once ("database is locked"), and the connector exited (seen in CI)."""
    import sqlite3

    from iris_opencti_connector.store import ledger as ledger_module

    calls = []

    class Busy:
        def execute(self, sql):
            calls.append(sql)
            if len(calls) < 3:
                raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(ledger_module.time, "sleep", lambda _s: None)
    ledger_module._switch_to_wal(Busy())
    assert calls == ["PRAGMA journal_mode=WAL"] * 3

    class Broken:
        def execute(self, sql):
            raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        ledger_module._switch_to_wal(Broken())


def test_a_case_edit_consumed_before_an_older_ioc_event_keeps_its_fields_in_opencti(sim, queue, connector):
    """Through a real connector and the simulator's upsert: the case's description edited at T3 arrives first,
    the IOC created at T2 (its Case-Incident still holding the older description) second. OpenCTI ends with
    the newer description and the IOC in the case."""
    from iris_opencti_module.core.convert import unwrap_export
    from iris_opencti_module.core.envelope import encode
    from iris_opencti_module.transport.messages import case_update_message
    from tests.connector.harness import CONVERTER, publish, wait, wait_settled

    case = unwrap_export(EXPORT)["case"]
    edited = dict(case, description="Edited in IRIS after the IOC was added.")
    update, result = case_update_message(CONVERTER, edited)
    older = at(ioc_envelope(EXPORT, "ioc.created", IOC), T2)
    assert next(o for o in older["bundle"]["objects"] if o["type"] == "case-incident")["description"] != \
        "Edited in IRIS after the IOC was added."
    proc = connector()
    publish(queue, [encode(at(update, T3))])
    wait(lambda: (sim.store.get(result.case_ref) or {}).get("description", "").startswith("Edited"),
         what="the case edit", proc=proc)
    publish(queue, [encode(older)])
    ioc_ids = older["produced"]["ioc:1"]
    wait(lambda: set(ioc_ids) <= set((sim.store.get(result.case_ref) or {}).get("object_refs", [])),
         what="the IOC in the case", proc=proc)
    wait_settled(sim, queue, proc)
    assert sim.store.get(result.case_ref)["description"] == "Edited in IRIS after the IOC was added."


def test_a_long_wait_for_the_other_replicas_is_logged_once_and_a_stop_ends_it(pg_url, tmp_path, monkeypatch):
    """A replica stuck in a step (OpenCTI not answering) holds back every removal: the waiting replica says so
    in its log, once, and a stop (SIGTERM) ends its wait instead of hanging on the lock."""
    from iris_opencti_connector.importer import connector as connector_module
    from iris_opencti_connector.importer.errors import Transient
    from iris_opencti_connector.store.archive import Archive
    from iris_opencti_connector.store.ledger import StepsLock

    warnings = []

    class Log:
        def warning(self, message, fields=None):
            warnings.append((message, fields))

        def __getattr__(self, _name):
            return lambda *args, **kwargs: None

    helper = type("Helper", (), {"connector_logger": Log(), "connect_id": "connector-test"})()
    monkeypatch.setattr(connector_module, "STEPS_WAIT_WARNING", 0.2)
    ledger, other = Ledger(pg_url), Ledger(pg_url)
    stuck = StepsLock(other)
    conn = connector_module.ImportConnector({"iris": {"url": "https://iris.example"}}, helper=helper,
                                            ledger=ledger, archive=Archive(str(tmp_path / "archive"), 0))
    try:
        held = stuck.hold(False)  # another replica's step under way
        threading.Timer(0.6, stuck.release, args=(held,)).start()
        mine = conn._hold(True)  # a removal: alone
        assert len(warnings) == 1 and warnings[0][1]["removal"] is True and warnings[0][1]["seconds"] >= 0.2
        conn._release(mine)
        held = stuck.hold(False)
        threading.Timer(0.3, conn.stop).start()
        started = time.monotonic()
        with pytest.raises(Transient, match="stopping"):
            conn._hold(True)
        assert time.monotonic() - started < 5
    finally:
        stuck.close()
        conn._steps.close()
        ledger.close()
        other.close()
