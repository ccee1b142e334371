"""Notes, timeline events, tasks and evidences through the module's hooks, on IRIS 2.4 and 2.5 (issue 11).

The rows are those IRIS's export functions return (fields as in tests/data/real/*-with-records.json); the
hook items are the models IRIS hands the postload hooks (seen on real IRIS: the model on create/update, the
id alone on delete).
"""

from __future__ import annotations

from iris_opencti_module.core import stix_ids

from .stixcheck import assert_valid_bundle


def note_row(note_id, title, content):
    return {"note_id": note_id, "note_uuid": "00c1e66b-3442-4e78-a207-0ad24cf31ed%d" % note_id,
            "note_title": title, "note_content": content, "note_creationdate": "2026-12-03T18:45:27.465682",
            "note_lastupdate": "2026-12-03T18:45:27.465691", "directory": {"id": 2, "name": "Network"},
            "comments": []}


def event_row(event_id, title, iocs, assets):
    return {"event_id": event_id, "event_title": title, "event_date": "2026-12-01T07:15:30",
            "event_date_wtz": "2026-12-01T08:15:30", "event_tz": "+01:00", "event_content": "EDR telemetry",
            "event_tags": "c2", "category": "Command and Control", "event_in_summary": True,
            "event_in_graph": True, "assets": [f"{a} (Windows - Computer)" for a in assets],
            "iocs": [{"ioc_id": i.ioc_id, "ioc_value": i.ioc_value, "type": "ip-dst", "tlp_name": "amber"}
                     for i in iocs]}


def test_a_note_goes_with_the_case_s_other_notes_and_names_its_iocs(module, iris):
    case = iris.case(4)
    iris.ioc(29, "198.51.100.23", cases=[case])
    iris.asset(3, case, "WKS-D-07")
    iris.record("note", case, note_row(1, "Network", "older note"))
    note = iris.record("note", case, note_row(2, "C2 traffic", "Beaconing to 198.51.100.23 from WKS-D-07."))
    status = module.run("on_postload_note_create", note)
    assert status.is_success() and "note 2" in status.logs[0], status.logs
    (message,) = module.messages()
    assert message["event"] == "records.sync" and message["covers"] == ["note"]
    assert message["iris"]["note_ids"] == [1, 2] and set(message["produced"]) >= {"note:1", "note:2"}
    notes = {o["abstract"]: o for o in message["bundle"]["objects"] if o["type"] == "note"}
    refs = notes["C2 traffic"]["object_refs"]
    assert refs[0] == message["case"]["ref"]
    assert stix_ids.sco_id({"type": "ipv4-addr", "value": "198.51.100.23"}) in refs
    assert stix_ids.identity_id("WKS-D-07", "system") in refs
    assert_valid_bundle(message["bundle"])


def test_an_event_becomes_sightings_of_its_iocs_where_its_assets_are(module, iris):
    case = iris.case(4)
    ioc = iris.ioc(36, "198.51.100.23", cases=[case])
    red = iris.ioc(37, "203.0.113.9", cases=[case], tlp="red")
    iris.asset(11, case, "WKS-D-07")
    event = iris.record("event", case, event_row(3, "Beacon from WKS-D-07", [ioc, red], ["WKS-D-07"]))
    module.run("on_postload_event_update", event)
    (message,) = module.messages()
    sightings = [o for o in message["bundle"]["objects"] if o["type"] == "sighting"]
    assert [s["sighting_of_ref"] for s in sightings] == [stix_ids.indicator_id("[ipv4-addr:value = '198.51.100.23']")]
    assert sightings[0]["where_sighted_refs"] == [stix_ids.identity_id("WKS-D-07", "system")]
    assert sightings[0]["first_seen"] == "2026-12-01T07:15:30.000Z", "IRIS's event_date is UTC"
    assert "203.0.113.9" not in str(message["bundle"]), "the TLP:RED IOC stays in IRIS"
    assert message["produced"]["event:3"] == [sightings[0]["id"]]
    assert_valid_bundle(message["bundle"])


def test_a_deleted_record_is_sent_by_id_and_switches_and_content_are_followed(module, iris):
    case = iris.case(4)
    task = iris.record("task", case, {"id": 8, "task_title": "Reimage", "task_status": "To do", "task_tags": "",
                                      "task_open_date": "2026-12-03T18:45:38.328206", "task_assignees": []})
    module.run("on_postload_task_create", task)
    module.run("on_postload_task_delete", 8)
    created, deleted = module.messages()
    assert [o["type"] for o in created["bundle"]["objects"] if o["type"] == "task"] == ["task"]
    assert deleted["event"] == "task.deleted" and deleted["iris"]["task_ids"] == [8]
    assert deleted["case"]["id"] is None, "the connector finds the task's case in its ledger"

    module.configure(trigger_task=False, export_content=False)
    status = module.run("on_postload_task_update", task)
    assert "trigger is off" in status.logs[0] and not module.messages()
    note = iris.record("note", case, note_row(5, "Interview", "the user clicked the invoice"))
    module.run("on_postload_note_update", note)
    (message,) = module.messages()
    assert "clicked" not in str(message["bundle"]) and "Interview" in str(message["bundle"])


def test_a_case_sync_carries_the_records_and_says_it_covers_them(module, iris):
    case = iris.case(4)
    iris.ioc(29, "198.51.100.23", cases=[case])
    iris.record("note", case, note_row(1, "Triage", "seen 198.51.100.23"))
    iris.record("evidence", case, {"id": 2, "filename": "mem.raw", "file_size": 42,
                                   "file_hash": "d41d8cd98f00b204e9800998ecf8427e"})
    module.run("on_manual_trigger_case", case, ui="Sync case to OpenCTI")
    (message,) = module.messages()
    assert message["covers"] == ["asset", "case", "event", "evidence", "ioc", "note", "task"]
    assert {"note:1", "evidence:2", "ioc:29"} <= set(message["produced"])
    module.configure(trigger_note=False, trigger_event=False, trigger_task=False, trigger_evidence=False)
    module.run("on_manual_trigger_case", case, ui="Sync case to OpenCTI")
    (without,) = module.messages()
    assert without["covers"] == ["asset", "case", "ioc"] and "note:1" not in without["produced"]


def test_the_sync_user_s_write_back_renders_the_opencti_tab_in_place(module, iris):
    """The enrichment connector leaves OpenCTI's context in ioc_enrichment (IRIS's REST API cannot write custom
    attributes); the IOC update hook it fires renders the tab on the IOC, escaped, replaced each time, and the
    write-back itself is not shipped."""
    from iris_opencti_module.hooks.opencti_tab import FIELD, TAB

    from .iris_world import SYNC_USER_ID

    case = iris.case(4)
    ioc = iris.ioc(29, "198.51.100.23", cases=[case])
    module.run("on_postload_ioc_create", ioc)
    module.messages()
    ioc.ioc_enrichment = {"vt": {"kept": True}, "opencti": {
        "score": 85, "labels": ["apt28"], "tlp": "amber", "related": {"Malware": ["<img src=x onerror=alert(1)>"]},
        "containers": [{"type": "Report", "name": "Wave \"2\"", "date": "2026-11-21T00:00:00.000Z"}],
        "url": "https://opencti.example/dashboard/observations/observables/abc"}}
    ioc.custom_attributes = {"Triage": {"Owner": {"type": "input_string", "value": "jdoe", "mandatory": False}}}
    ioc.user_id = SYNC_USER_ID
    status = module.run("on_postload_ioc_update", ioc)
    assert any("OpenCTI tab updated" in line for line in status.logs), status.logs
    assert not module.messages(), "the write-back is not shipped back"
    tab = ioc.custom_attributes[TAB][FIELD]
    assert tab["type"] == "html" and "Score</th><td>85" in tab["value"]
    assert "<img" not in tab["value"] and "&lt;img src=x onerror=alert(1)&gt;" in tab["value"]
    assert "Wave &quot;2&quot;" in tab["value"] and "(2026-11-21)" in tab["value"]
    assert ioc.custom_attributes["Triage"]["Owner"]["value"] == "jdoe", "the analyst's own attributes stay"
    ioc.ioc_enrichment = {"opencti": {"score": 40, "labels": [], "related": {}, "containers": []}}
    module.run("on_postload_ioc_update", ioc)
    tab = ioc.custom_attributes[TAB][FIELD]["value"]
    assert "40" in tab and "85" not in tab and "Wave" not in tab, "replaced, never appended"
    status = module.run("on_postload_ioc_update", ioc)
    assert not any("OpenCTI tab updated" in line for line in status.logs), "unchanged: left as it is"


def test_comments_become_notes_on_what_they_comment(module, iris):
    """IRIS's comment hooks: on_postload_<kind>_commented hands {"comment": ..., "<kind>": ...} dumps, the update
    hook the Comments row, the delete hook its id (all seen on real 2.4.20 and 2.5)."""
    case = iris.case(4)
    ioc = iris.ioc(36, "198.51.100.23", cases=[case])
    iris.ioc(37, "203.0.113.9", cases=[case], tlp="red")
    iris.record("note", case, note_row(1, "C2 traffic", "beacons"))
    added, row = iris.comment("ioc", 36, case, 11, "Seen in OpenCTI as C2 too")
    module.run("on_postload_ioc_commented", added)
    (message,) = module.messages()
    assert message["event"] == "comment.updated" and message["iris"]["comment_ids"] == [11]
    (note,) = [o for o in message["bundle"]["objects"] if o["type"] == "note"]
    assert note["content"] == "Seen in OpenCTI as C2 too" and note["abstract"] == "Comment by analyst on an IRIS IOC"
    observable = stix_ids.sco_id({"type": "ipv4-addr", "value": ioc.ioc_value})
    assert note["object_refs"][0] == message["case"]["ref"] and observable in note["object_refs"]
    assert message["produced"]["comment:11"] == [note["id"]]
    assert_valid_bundle(message["bundle"])

    row.comment_text = "Edited: also in the March wave"
    module.run("on_postload_ioc_comment_update", row)  # the row alone: its IOC comes from IocComments
    (edited,) = module.messages()
    assert edited["iris"]["comment_ids"] == [11] and "March wave" in str(edited["bundle"])

    on_note, _ = iris.comment("note", 1, case, 12, "agreed")
    module.run("on_postload_note_commented", on_note)
    (about_note,) = module.messages()
    made = [o for o in about_note["bundle"]["objects"] if o["type"] == "note"]
    commented = next(o["id"] for o in made if o.get("abstract") == "C2 traffic")
    assert any(commented in o["object_refs"] for o in made if o["abstract"].startswith("Comment by"))

    red, _ = iris.comment("ioc", 37, case, 13, "do not share")
    status = module.run("on_postload_ioc_commented", red)
    assert "does not leave IRIS" in status.logs[0] and not module.messages()

    module.run("on_postload_ioc_comment_delete", 11)
    (deleted,) = module.messages()
    assert deleted["event"] == "comment.deleted" and deleted["iris"]["comment_ids"] == [11]
    module.configure(trigger_comment=False)
    assert "trigger is off" in module.run("on_postload_asset_commented", added).logs[0]


def test_a_note_brings_only_the_iocs_it_names_and_comments_follow_their_kind_s_switch(module, iris):
    case = iris.case(4)
    for n in range(30):
        iris.ioc(100 + n, "10.0.0.%d" % (100 + n), cases=[case])
    iris.ioc(200, "evil.example|44d88612fea8a8f36de82e1278abb02f", "filename|md5", cases=[case])
    note = iris.record("note", case, note_row(1, "Triage", "Seen 10.0.0.105 and the file evil.example."))
    module.run("on_postload_note_create", note)
    (message,) = module.messages()
    assert message["iris"]["ioc_ids"] == [105, 200], "a note edit does not resend the whole case"
    (stix_note,) = [o for o in message["bundle"]["objects"] if o["type"] == "note"]
    assert stix_ids.sco_id({"type": "ipv4-addr", "value": "10.0.0.105"}) in stix_note["object_refs"]
    module.configure(trigger_note=False)
    on_note, _ = iris.comment("note", 1, case, 31, "agreed")
    status = module.run("on_postload_note_commented", on_note)
    assert "notes are switched off" in status.logs[0] and not module.messages()
