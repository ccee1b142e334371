"""A case's notes, timeline, tasks and evidences through the import connector into the strict simulator:
created, then changed and removed in IRIS, with OpenCTI following."""

import copy

from iris_opencti_connector.store.ledger import Ledger
from iris_opencti_module.core.envelope import encode
from iris_opencti_module.transport.messages import case_message
from tests.connector.harness import CONVERTER, HARSH_SIM, case_sync, publish
from tests.connector.test_ordering import assert_honest_works, settle
from tests.module.test_case_records import EVENT_PLAIN, NOTE, TASK, export_with_records

SIM_OPTIONS = HARSH_SIM  # conftest.py's ``sim`` fixture


def test_records_are_created_updated_and_deleted_in_opencti(sim, queue, connector, tmp_path):
    export = export_with_records()
    ledger = Ledger("sqlite:///" + str(tmp_path / "ledger.sqlite"))
    publish(queue, [case_sync(export)])
    proc = connector()
    settle(sim, queue, proc, lambda: {"note:3", "event:5", "event:6", "task:8", "evidence:4"}
           <= set(ledger.case_map("10")))
    case_ref = ledger.case_ref("10")
    note_id = next(iter(ledger.case_map("10")["note:3"]))
    dated_note = next(iter(ledger.case_map("10")["event:6"]))
    task_id = next(iter(ledger.case_map("10")["task:8"]))
    sightings = ledger.case_map("10")["event:5"]
    note = sim.store.get(note_id)
    assert note is not None and note["content"] == NOTE["note_content"]
    assert case_ref in note["object_refs"], "the note is attached to the case"
    assert sim.store.get(task_id)["name"] == TASK["task_title"]
    assert sightings and all(sim.store.get(i) for i in sightings)
    assert {s.startswith("sighting--") for s in sightings} == {True}

    # the module's own full sync (from IRIS's database, without the records): it covers IOCs and assets only
    data = export["data"]
    module_sync = case_message(CONVERTER, data["case"], data["iocs"], data["assets"]).envelope
    assert module_sync["covers"] == ["asset", "case", "ioc"]
    works_before = len(sim.works)
    publish(queue, [encode(module_sync)])
    settle(sim, queue, proc, lambda: len(sim.works) > works_before)
    assert {"note:3", "event:6", "task:8"} <= set(ledger.case_map("10")), "records kept: the sync did not cover them"
    assert sim.store.get(note_id) is not None and sim.store.get(task_id) is not None

    # in IRIS: the note edited, the undated event deleted, the task renamed
    changed = copy.deepcopy(export)
    data = changed["data"]
    data["notes"][0]["note_content"] = "Beacon confirmed; BUILD-07 reimaged."
    data["timeline"] = [e for e in data["timeline"] if e["event_id"] != EVENT_PLAIN["event_id"]]
    data["tasks"][0]["task_title"] = "Reimage BUILD-07 and rotate keys"
    publish(queue, [case_sync(changed)])
    works = settle(sim, queue, proc, lambda: "event:6" not in ledger.case_map("10")
                   and note_id not in ledger.case_map("10").get("note:3", {note_id}))
    new_note = next(iter(ledger.case_map("10")["note:3"]))
    assert sim.store.get(new_note)["content"].startswith("Beacon confirmed")
    assert sim.store.get(note_id) is None, "the note's old version is gone (IRIS was its only author)"
    new_task = next(iter(ledger.case_map("10")["task:8"]))
    assert sim.store.get(new_task)["name"] == "Reimage BUILD-07 and rotate keys" and sim.store.get(task_id) is None
    assert all(sim.store.get(i) for i in sightings), "the event kept in IRIS stays"
    assert sim.store.get(dated_note) is None, "the event deleted in IRIS is gone"
    assert_honest_works(works)


def test_records_sync_and_record_deletions_from_the_module(sim, queue, connector, tmp_path):
    """What the module's note and event hooks send: all notes (or events) of the case after a change, and a
    deletion by id alone, whose case the connector finds in its ledger. A deleted event's sightings go too."""
    from iris_opencti_module.transport.messages import deletion_message, records_message
    from tests.module.test_case_records import EVENT_IOCS

    export = export_with_records()
    data = export["data"]
    case = data["case"]
    ledger = Ledger("sqlite:///" + str(tmp_path / "ledger.sqlite"))
    second = dict(NOTE, note_id=4, note_title="Scoping", note_content="Only BUILD-07 is affected.")
    linked = [i for i in data["iocs"] if i["ioc_id"] in (29, 30)]
    publish(queue, [encode(records_message(CONVERTER, case, "note", [NOTE, second], data["iocs"], data["assets"])),
                    encode(records_message(CONVERTER, case, "event", [EVENT_IOCS], linked, data["assets"]))])
    proc = connector()
    settle(sim, queue, proc, lambda: {"note:3", "note:4", "event:5"} <= set(ledger.case_map("10")))
    notes = {k: next(iter(ledger.case_map("10")[k])) for k in ("note:3", "note:4")}
    sightings = ledger.case_map("10")["event:5"]
    assert all(sim.store.get(i) for i in notes.values()) and sightings and all(sim.store.get(i) for i in sightings)
    assert {i.split("--")[0] for i in sightings} == {"sighting"}

    works_before = len(sim.works)
    publish(queue, [encode(deletion_message("note", 4)), encode(deletion_message("event", 5))])
    works = settle(sim, queue, proc, lambda: len(sim.works) > works_before
                   and not {"note:4", "event:5"} & set(ledger.case_map("10")))
    assert sim.store.get(notes["note:4"]) is None, "the deleted note is gone from OpenCTI"
    assert sim.store.get(notes["note:3"]) is not None
    assert not any(sim.store.get(i) for i in sightings), "a deleted event's sightings are deleted"
    assert_honest_works(works)


def test_a_comment_is_a_note_on_its_object_edited_and_deleted_in_opencti(sim, queue, connector, tmp_path):
    from iris_opencti_module.core import stix_ids
    from iris_opencti_module.transport.messages import comment_message, deletion_message

    export = export_with_records()
    data = export["data"]
    case = data["case"]
    ioc = next(i for i in data["iocs"] if i["ioc_id"] == 30)
    ledger = Ledger("sqlite:///" + str(tmp_path / "ledger.sqlite"))
    comment = {"comment_id": 21, "comment_text": "Also in OpenCTI's March report", "comment_case_id": 10,
               "comment_date": "2026-12-03T18:45:46.118423", "user": {"user_name": "analyst"}}
    publish(queue, [case_sync(export), encode(comment_message(CONVERTER, case, comment, "ioc", 30, [ioc]))])
    proc = connector()
    settle(sim, queue, proc, lambda: "comment:21" in ledger.case_map("10"))
    first = next(iter(ledger.case_map("10")["comment:21"]))
    note = sim.store.get(first)
    assert note["content"] == comment["comment_text"]
    assert stix_ids.sco_id({"type": "domain-name", "value": ioc["ioc_value"]}) in note["object_refs"]

    edited = dict(comment, comment_text="Not in the March report after all")
    works_before = len(sim.works)
    publish(queue, [encode(comment_message(CONVERTER, case, edited, "ioc", 30, [ioc]))])
    settle(sim, queue, proc, lambda: len(sim.works) > works_before
           and first not in ledger.case_map("10").get("comment:21", {first}))
    second = next(iter(ledger.case_map("10")["comment:21"]))
    assert sim.store.get(first) is None and sim.store.get(second)["content"].startswith("Not in")

    works_before = len(sim.works)
    publish(queue, [encode(deletion_message("comment", 21))])
    works = settle(sim, queue, proc, lambda: len(sim.works) > works_before
                   and "comment:21" not in ledger.case_map("10"))
    assert sim.store.get(second) is None
    assert_honest_works(works)
