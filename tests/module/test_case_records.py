"""Notes, timeline events, tasks and evidences of an IRIS case as STIX (case_records.py).

The records below carry the fields of IRIS 2.4.20's export functions (``export_case_notes_json``,
``export_case_tm_json``, ``export_case_tasks_json``, ``export_case_evidences_json`` in
``app/datamgmt/reporter/report_db.py``) on the real 2.4.20 case export of tests/data.
"""

import copy
import json

import pytest

from iris_opencti_module.core import stix_ids
from iris_opencti_module.core.convert import Converter, ConverterConfig
from tests.module.samples import load_export
from tests.module.stixcheck import assert_valid_bundle

NOTE = {"note_id": 3, "note_uuid": "9b7e1f0a-2c4d-4e5f-8a9b-0c1d2e3f4a5b", "note_title": "Initial triage",
        "note_content": "Beacon to cdn-updates.example.net seen from BUILD-07; nothing on 10.9.9.9.",
        "note_creationdate": "2026-11-28T07:10:00.000000", "note_lastupdate": "2026-11-28T08:00:00.000000",
        "comments": []}
EVENT_IOCS = {"event_id": 5, "event_title": "C2 beacon", "event_date": "2026-11-28T06:55:00.000000",
              "event_date_wtz": "2026-11-28T06:55:00.000000", "event_tz": "+00:00",
              "event_content": "EDR alert: periodic HTTPS to the C2", "event_tags": "c2,beacon",
              "category": "Command and Control", "event_in_summary": True, "event_in_graph": True,
              "assets": ["BUILD-07 (Linux - Server)", "FW-EDGE (Firewall)"],
              "iocs": [{"ioc_id": 29, "ioc_value": "192.0.2.45", "type": "ip-dst", "tlp_name": "amber"},
                       {"ioc_id": 30, "ioc_value": "cdn-updates.example.net", "type": "domain", "tlp_name": "amber"},
                       {"ioc_id": 31, "ioc_value": "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12", "type": "sha1",
                        "tlp_name": "red"}]}
EVENT_PLAIN = {"event_id": 6, "event_title": "Server isolated", "event_date": "2026-11-28T09:00:00.000000",
               "event_content": "Network isolation by the SOC", "event_tags": "", "category": None,
               "event_in_summary": False, "event_in_graph": False, "assets": [], "iocs": []}
TASK = {"id": 8, "task_title": "Reimage BUILD-07", "task_status": "In progress", "task_tags": "remediation",
        "task_open_date": "2026-11-28T09:30:00.000000", "task_last_update": "2026-11-28T10:00:00.000000",
        "task_description": "Full reimage", "task_assignees": [{"user": "jdoe", "name": "Jane Doe", "id": 2}]}
EVIDENCE = {"id": 4, "filename": "memdump-build07.raw", "file_size": 8589934592,
            "file_hash": "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
            "date_added": "2026-11-28T10:30:00.000000", "added_by": "administrator"}


def export_with_records():
    export = copy.deepcopy(load_export())
    data = export["data"]
    data.update(notes=[NOTE], timeline=[EVENT_IOCS, EVENT_PLAIN], tasks=[TASK], evidences=[EVIDENCE])
    return export


def by_type(result, kind):
    return [o for o in result.objects.values() if o["type"] == kind]


def test_each_record_becomes_what_opencti_shows_in_the_case():
    result = Converter(ConverterConfig()).convert_export(export_with_records())
    case_ref = result.case_ref
    build07 = stix_ids.identity_id("BUILD-07", "system")
    fw = stix_ids.identity_id("FW-EDGE", "system")
    domain = stix_ids.sco_id({"type": "domain-name", "value": "cdn-updates.example.net"})

    (note,) = [n for n in by_type(result, "note") if n["abstract"] == "Initial triage"]
    assert note["content"] == NOTE["note_content"] and note["created"] == "2026-11-28T07:10:00.000Z"
    assert note["object_refs"][0] == case_ref
    assert domain in note["object_refs"] and build07 in note["object_refs"], "the note names them by value"
    assert result.produced["note:3"] == [note["id"]]

    sightings = by_type(result, "sighting")
    assert {s["sighting_of_ref"] for s in sightings} == {
        stix_ids.indicator_id("[ipv4-addr:value = '192.0.2.45']"),
        stix_ids.indicator_id("[domain-name:value = 'cdn-updates.example.net']")}, "TLP:RED IOC 31 is not sighted"
    for sighting in sightings:
        assert sighting["where_sighted_refs"] == sorted([build07, fw])
        assert sighting["first_seen"] == sighting["last_seen"] == "2026-11-28T06:55:00.000Z"
        assert sighting["labels"] == ["Command and Control", "c2", "beacon"]
        assert sighting["description"].startswith("C2 beacon\n\nEDR alert")
    assert sorted(result.produced["event:5"]) == sorted(s["id"] for s in sightings)

    (dated,) = [n for n in by_type(result, "note") if n["abstract"] == "Server isolated"]
    assert dated["created"] == "2026-11-28T09:00:00.000Z" and dated["object_refs"] == [case_ref]
    assert result.produced["event:6"] == [dated["id"]]

    (task,) = by_type(result, "task")
    assert task["name"] == "Reimage BUILD-07" and task["object_refs"] == [case_ref]
    assert "status:In progress" in task["labels"] and "remediation" in task["labels"]
    assert "Jane Doe" in task["description"]

    (file_obj,) = [f for f in by_type(result, "file") if f.get("name") == "memdump-build07.raw"]
    assert file_obj["hashes"] == {"SHA-256": EVIDENCE["file_hash"].lower()} and file_obj["size"] == 8589934592
    assert result.produced["evidence:4"] == [file_obj["id"]]

    incident = result.objects[case_ref]
    assert note["id"] not in incident["object_refs"] and task["id"] not in incident["object_refs"], \
        "notes and tasks point at the case: the case does not point back (a ref cycle)"
    assert all(s["id"] in incident["object_refs"] for s in sightings) and file_obj["id"] in incident["object_refs"]
    assert "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12" not in json.dumps(list(result.objects.values()))


def test_without_indicators_an_event_is_observed_data_and_the_bundle_is_valid():
    result = Converter(ConverterConfig(create_indicators=False)).convert_export(export_with_records())
    observed = by_type(result, "observed-data")
    assert not by_type(result, "sighting") and len(observed) == 2
    ip = stix_ids.sco_id({"type": "ipv4-addr", "value": "192.0.2.45"})
    assert any(o["object_refs"] == [ip] for o in observed)
    assert_valid_bundle(result.bundle("records"))


def test_content_off_keeps_titles_only_and_conversion_is_deterministic():
    export = export_with_records()
    quiet = Converter(ConverterConfig(export_content=False))
    text = json.dumps(list(quiet.convert_export(export).objects.values()))
    for secret in ("Beacon to", "EDR alert", "Network isolation"):
        assert secret not in text
    assert "Initial triage" in text and "C2 beacon" in text
    first = Converter(ConverterConfig()).convert_export(export).bundle("k")
    again = Converter(ConverterConfig()).convert_export(copy.deepcopy(export)).bundle("k")
    assert first == again


def test_records_can_be_switched_off_by_kind():
    result = Converter(ConverterConfig(records=("task",))).convert_export(export_with_records())
    assert by_type(result, "task") and not by_type(result, "note") and not by_type(result, "sighting")
    assert not any(k.startswith(("note:", "event:", "evidence:")) for k in result.produced)


REAL = ["iris-2.4.20-case-export-with-records.json", "iris-2.5-case-export-with-records.json"]


def real_export(name):
    import os

    with open(os.path.join(os.path.dirname(__file__), "..", "data", "real", name), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize("name", REAL)
def test_real_exports_with_notes_timeline_tasks_and_evidences(name):
    """Exports of cases an analyst filled on a real IRIS 2.4.20 and 2.5 (notes in directories, events with and
    without IOCs, tasks with assignees, evidences, comments): what each record becomes follows from its data."""
    from iris_opencti_module.core.timestamps import stix_time

    export = real_export(name)
    data = export["data"]
    result = Converter(ConverterConfig()).convert_export(export)
    assert_valid_bundle(result.bundle("real"))
    for note in data["notes"]:
        (made,) = [result.objects[i] for i in result.produced["note:{}".format(note["note_id"])]]
        assert made["type"] == "note" and made["abstract"] == note["note_title"]
        assert made["content"] == note["note_content"].strip() and made["object_refs"][0] == result.case_ref
    systems = {a["asset_name"]: stix_ids.identity_id(a["asset_name"], "system") for a in data["assets"]}
    for event in data["timeline"]:
        made = [result.objects[i] for i in result.produced["event:{}".format(event["event_id"])]]
        when = stix_time(event["event_date"])  # UTC; event_date_wtz is the wall time without its zone
        if event["iocs"]:
            assert len(made) == len(event["iocs"]) and {m["type"] for m in made} == {"sighting"}
            where = sorted(systems[a.rsplit(" (", 1)[0]] for a in event["assets"]) or [made[0]["created_by_ref"]]
            for sighting in made:
                assert sighting["where_sighted_refs"] == where and sighting["first_seen"] == when
                assert event["category"] in sighting["labels"]
        else:
            assert [m["type"] for m in made] == ["note"] and made[0]["created"] == when
    for task in data["tasks"]:
        (made,) = [result.objects[i] for i in result.produced["task:{}".format(task["id"])]]
        assert made["name"] == task["task_title"] and "status:{}".format(task["task_status"]) in made["labels"]
        for assignee in task["task_assignees"]:
            assert assignee["name"] in made["description"]
    for evidence in data["evidences"]:
        (made,) = [result.objects[i] for i in result.produced["evidence:{}".format(evidence["id"])]]
        assert made["name"] == evidence["filename"] and made["size"] == evidence["file_size"]


def test_export_command_on_the_real_2_5_export_holds_notes_sightings_and_tasks(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "case.json"
    path.write_text(json.dumps(real_export(REAL[1])), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "iris_opencti_module", "export", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = {o["type"] for o in json.loads(out.stdout)["objects"]}
    assert {"note", "sighting", "task", "file"} <= kinds
    quiet = subprocess.run([sys.executable, "-m", "iris_opencti_module", "export", "--no-content", "--records",
                            "note", str(path)], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    objects = json.loads(quiet.stdout)["objects"]
    assert {o["type"] for o in objects} & {"sighting", "task"} == set()
    assert "Beaconing every 60s" not in quiet.stdout and any(o["type"] == "note" for o in objects)
    bad = subprocess.run([sys.executable, "-m", "iris_opencti_module", "export", "--records", "notes", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--records" in bad.stderr and "'notes'" in bad.stderr
