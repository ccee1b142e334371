"""Every hook, driven with IRIS 2.4 and 2.5 model objects, and the messages read back from the real RabbitMQ."""

from __future__ import annotations

import sys
import types

import pytest

from iris_opencti_module.core.convert import Converter, ConverterConfig

from .iris_world import ANALYST_ID
from .stixcheck import assert_valid_bundle

CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))


def objects_of(envelope, key):
    by_id = {o["id"]: o for o in envelope["bundle"]["objects"]}
    return [by_id[i] for i in envelope["produced"][key]]


def test_ioc_create_and_update(module, iris):
    case = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[case], description="Cobalt Strike team server")
    status = module.run("on_postload_ioc_create", ioc)
    assert status.is_success(), status.logs
    assert status.get_data() == [ioc]
    assert "IOC 29 (ip-dst '192.0.2.45') in case #4: ioc.created sent to queue" in status.logs[0]
    ioc.ioc_description = "C2, confirmed"
    status = module.run("on_postload_ioc_update", ioc)
    assert "ioc.updated sent" in status.logs[0], status.logs
    created, updated = module.messages()
    for env in (created, updated):
        assert_valid_bundle(env["bundle"])
        assert env["case"] == {"id": 4, "name": "#4 - Ransomware precursor on build server",
                               "ref": CONVERTER.case_incident_ref({"case_id": 4, "name": case.name,
                                                                   "initial_date": "2026-11-28T06:40:10.969816"})}
        assert env["iris"] == {"ioc_ids": [29], "asset_ids": []}
        assert env["user"] == "alice"
        assert set(env["produced"]) == {"ioc:29", "case:4"}
    assert created["event"] == "ioc.created" and updated["event"] == "ioc.updated"
    observable = objects_of(updated, "ioc:29")[0]
    assert observable == {**observable, "type": "ipv4-addr", "value": "192.0.2.45",
                          "x_opencti_description": "C2, confirmed", "x_opencti_labels": ["phishing"]}
    incident = [o for o in updated["bundle"]["objects"] if o["type"] == "case-incident"][0]
    assert incident["external_references"][0]["url"] == "https://iris.example/case?cid=4"
    assert created["message_id"] != updated["message_id"]


def test_properties_are_persistent_json(module, iris):
    case = iris.case(4)
    module.run("on_postload_ioc_create", iris.ioc(29, "192.0.2.45", cases=[case]))
    (env, props), = module.rabbit.read(module.queue)
    assert props.delivery_mode == 2 and props.content_type == "application/json"


def test_iris24_shared_ioc_goes_into_each_synced_case(module, iris24):
    one, two, off = iris24.case(5), iris24.case(6), iris24.case(7, tags=["opencti:off"])
    ioc = iris24.ioc(12, "evil.example", "domain", cases=[two, one, off])
    status = module.run("on_postload_ioc_create", ioc)
    assert status.is_success()
    assert any("case #7: not sent: case #7 is not synced (the case is tagged opencti:off)" in line
               for line in status.logs), status.logs
    envelopes = module.messages()
    assert [e["case"]["id"] for e in envelopes] == [5, 6]
    assert all(e["iris"]["ioc_ids"] == [12] for e in envelopes)


def test_iris24_an_edit_of_a_shared_ioc_reaches_every_synced_case(module, iris24):
    """IRIS 2.4 keeps one IOC for the same type and value in several cases: an edit made from one case is the
    IOC's own, so every synced case it is linked to gets it (README, "IOCs shared between cases")."""
    one, two = iris24.case(5), iris24.case(6)
    ioc = iris24.ioc(14, "shared.evil.example", "domain", cases=[one, two], description="seen in #5")
    assert module.run("on_postload_ioc_create", ioc).is_success()
    ioc.ioc_description = "C2 for both intrusions"
    status = module.run("on_postload_ioc_update", ioc)
    assert status.is_success(), status.logs
    updates = [e for e in module.messages() if e["event"] == "ioc.updated"]
    assert sorted(e["case"]["id"] for e in updates) == [5, 6]
    for envelope in updates:
        observable = objects_of(envelope, "ioc:14")[0]
        assert observable["value"] == "shared.evil.example"
        assert observable["x_opencti_description"] == "C2 for both intrusions"


def test_iris25_has_no_ioclink():
    from .iris_world import IrisWorld

    IrisWorld("2.5")
    with pytest.raises(ImportError):
        from app.models import IocLink
    IrisWorld("2.4")
    from app.models import IocLink  # noqa: F401


def test_asset_create_update_delete(module, iris):
    case = iris.case(4)
    asset = iris.asset(3, case, "WS-042", ip="10.0.0.42", domain="corp.example")
    assert module.run("on_postload_asset_create", asset).is_success()
    asset.asset_description = "patient zero"
    module.run("on_postload_asset_update", asset)
    status = module.run("on_postload_asset_delete", 3)
    assert "asset 3 deleted from case #4: asset.deleted sent" in status.logs[0], status.logs
    created, updated, deleted = module.messages()
    assert created["event"] == "asset.created" and updated["event"] == "asset.updated"
    assert created["iris"]["asset_ids"] == [3]
    identity = objects_of(updated, "asset:3")[0]
    assert identity["type"] == "identity" and identity["identity_class"] == "system"
    assert identity["description"] == "patient zero"
    assert {o["type"] for o in objects_of(created, "asset:3")} >= {"ipv4-addr", "domain-name", "relationship"}
    assert deleted["event"] == "asset.deleted" and deleted["case"]["id"] == 4
    assert deleted["deleted"] == [{"kind": "asset", "id": 3}]
    assert deleted["case"]["ref"] == created["case"]["ref"]
    # a second delete of an id the module never shipped goes by id alone: the connector's ledger knows
    status = module.run("on_postload_asset_delete", 99)
    unknown = module.messages()[0]
    assert unknown["case"]["id"] is None and unknown["iris"]["asset_ids"] == [99]


def test_preload_delete_carries_value_and_case_postload_does_not_repeat(module, iris):
    case = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[case])
    module.run("on_postload_ioc_create", ioc)
    status = module.run("on_preload_ioc_delete", 29)
    assert status.is_success() and status.get_data() == [29]  # IRIS uses data[0] as the request payload
    iris.delete(ioc)
    after = module.run("on_postload_ioc_delete", 29)
    assert "already sent by the preload hook" in after.logs[0]
    _, deleted = module.messages()
    assert deleted["event"] == "ioc.deleted" and deleted["case"]["id"] == 4
    assert deleted["case"]["ref"] and deleted["case"]["name"] == "#4 - Ransomware precursor on build server"
    assert deleted["deleted"] == [{"kind": "ioc", "id": 29, "value": "192.0.2.45", "type": "ip-dst"}]
    assert deleted["iris"]["ioc_ids"] == [29] and deleted["bundle"] is None


def test_postload_delete_alone(module, iris):
    case = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[case])
    module.run("on_postload_ioc_create", ioc)
    iris.delete(ioc)
    module.run("on_postload_ioc_delete", 29)  # the state knows which case it was shipped into
    module.run("on_postload_ioc_delete", 30)  # never seen: by id only
    _, known, unknown = module.messages()
    assert known["event"] == "ioc.deleted" and known["case"]["id"] == 4 and known["deleted"][0]["id"] == 29
    assert unknown["case"] == {"id": None, "name": None, "ref": None}
    assert unknown["deleted"] == [{"kind": "ioc", "id": 30}] and unknown["iris"]["ioc_ids"] == [30]


def fake_flask(monkeypatch, args=None, view_args=None):
    request = types.SimpleNamespace(args=dict(args or {}), view_args=dict(view_args or {}))
    flask = types.ModuleType("flask")
    flask.has_request_context = lambda: True
    flask.request = request
    monkeypatch.setitem(sys.modules, "flask", flask)


def test_iris24_unlink_from_one_of_two_cases(module, iris24, monkeypatch):
    one, two, three = iris24.case(5), iris24.case(6), iris24.case(9)
    ioc = iris24.ioc(12, "evil.example", "domain", cases=[one, two, three])
    module.run("on_postload_ioc_create", ioc)
    module.messages()
    # outside a request the module cannot know which case the IOC leaves: it sends nothing rather than guess
    status = module.run("on_preload_ioc_delete", 12)
    assert "does not say which" in status.logs[0] and module.messages() == []
    fake_flask(monkeypatch, args={"cid": "6"})
    module.run("on_preload_ioc_delete", 12)
    iris24.unlink(ioc, two)
    (deleted,) = module.messages()
    assert deleted["case"]["id"] == 6 and deleted["deleted"][0]["value"] == "evil.example"
    # IRIS 2.5's API names the case in the route
    fake_flask(monkeypatch, view_args={"case_identifier": 5})
    status = module.run("on_preload_ioc_delete", 12)
    assert [e["case"]["id"] for e in module.messages()] == [5], status.logs


def test_case_created_with_everything_alerts_brought(module, iris):
    case = iris.case(10, tags=["ransomware"], severity_id=6)
    # escalating an alert creates IOCs and assets without firing their hooks: the case hook sends them all
    iris.ioc(29, "192.0.2.45", cases=[case])
    iris.ioc(30, "evil.example", "domain", cases=[case], tlp="green")
    iris.ioc(31, "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12", "sha1", cases=[case], tlp="red")
    iris.ioc(32, "not-an-ip", "ip-dst", cases=[case])
    iris.asset(3, case, "DC01", "Windows - DC", ip="10.0.0.1")
    status = module.run("on_postload_case_create", case)
    assert status.is_success(), status.logs
    (env,) = module.messages()
    assert env["event"] == "case.created"
    assert_valid_bundle(env["bundle"])
    assert env["iris"] == {"ioc_ids": [29, 30, 31, 32], "asset_ids": [3]}
    assert set(env["produced"]) == {"ioc:29", "ioc:30", "asset:3", "case:10"}
    reasons = {s["object_id"]: s for s in env["skipped"]}
    assert "value" not in reasons[31] and "TLP:RED" in reasons[31]["reason"]
    assert reasons[32]["value"] == "not-an-ip"
    incident = [o for o in env["bundle"]["objects"] if o["type"] == "case-incident"][0]
    assert incident["labels"] == ["ransomware"]
    assert any("IOC 31 (sha1): TLP:RED is above the export ceiling" in line for line in status.logs), status.logs


def test_case_update_then_delete(module, iris):
    case = iris.case(4)
    iris.ioc(29, "192.0.2.45", cases=[case])
    module.run("on_postload_case_create", case)
    case.description = "Now with a timeline"
    status = module.run("on_postload_case_update", case)
    assert "case #4 updated: case.updated sent" in status.logs[0], status.logs
    status = module.run("on_postload_case_delete", 4)
    assert "case #4 deleted: case.deleted sent" in status.logs[0], status.logs
    created, updated, deleted = module.messages()
    assert updated["event"] == "case.updated" and updated["iris"] == {"ioc_ids": [], "asset_ids": []}
    assert [o["type"] for o in updated["bundle"]["objects"]] == ["marking-definition", "identity", "case-incident"]
    assert updated["bundle"]["objects"][2]["description"] == "Now with a timeline"
    assert deleted["event"] == "case.deleted" and deleted["case"]["id"] == 4
    assert deleted["case"]["ref"] == created["case"]["ref"] and deleted["deleted"] == [{"kind": "case", "id": 4}]
    # a case the module never saw is deleted by id: the connector finds its Case-Incident in the ledger
    module.run("on_postload_case_delete", 8)
    (unknown,) = module.messages()
    assert unknown["case"] == {"id": 8, "name": None, "ref": None}


def test_manual_triggers(module, iris):
    case = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[case])
    asset = iris.asset(3, case, "WS-042")
    status = module.run("on_manual_trigger_case", case, ui="Sync case to OpenCTI")
    assert "(synced by hand)" in status.logs[0]
    module.run("on_manual_trigger_ioc", ioc, ui="Push to OpenCTI")
    module.run("on_manual_trigger_ioc", ioc, ui="Push to OpenCTI")  # unchanged, but asked for: sent again
    module.run("on_manual_trigger_asset", asset, ui="Push to OpenCTI")
    events = [(e["event"], e["iris"]["ioc_ids"], e["iris"]["asset_ids"]) for e in module.messages()]
    assert events == [("case.sync", [29], [3]), ("ioc.updated", [29], []), ("ioc.updated", [29], []),
                      ("asset.updated", [], [3])]


def test_alert_merge_resends_the_case(module, iris):
    case = iris.case(4)
    iris.ioc(29, "192.0.2.45", cases=[case])
    alert = iris.alert(77, [case])
    status = module.run("on_postload_alert_merge", alert)
    assert "(alert 77 merged)" in status.logs[0]
    (env,) = module.messages()
    assert env["event"] == "case.sync" and env["iris"]["ioc_ids"] == [29]


def test_case_sync_queries_do_not_grow_with_the_case(module, iris):
    from app.models import models

    case = iris.case(4)
    for n in range(300):
        iris.ioc(1000 + n, "10.1.%d.%d" % (n // 250, n % 250), cases=[case], user_id=ANALYST_ID)
    module.run("on_postload_case_create", case)
    (env,) = module.messages()
    assert len(env["iris"]["ioc_ids"]) == 300
    # the stub counts .all()/.first(); relationship loads of tlp/type/user are cached by SQLAlchemy in IRIS,
    # here they count too: the adapter's own queries are few (a handful per case, not one per IOC)
    from iris_opencti_module.hooks import iris_adapter

    before = models.QUERY_COUNT[0]
    iris_adapter.case_contents(case)
    assert models.QUERY_COUNT[0] - before <= 3


def test_errors_become_failed_statuses_with_readable_logs(module, iris, tmp_path):
    case = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[case])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    module.configure(spool_dir=str(blocker / "spool"))
    status = module.run("on_postload_ioc_create", ioc)
    assert status.is_failure() and status.get_data() == [ioc]
    assert "cannot" in status.logs[-1] and "not-a-dir" in status.logs[-1]
    module.configure(spool_dir=module.spool_dir, mappings_path=str(tmp_path / "missing.json"))
    status = module.run("on_postload_ioc_create", ioc)
    assert status.is_failure() and "missing.json" in status.logs[-1]


def test_a_manual_trigger_on_several_iocs_ships_the_others_when_one_fails(module, iris, monkeypatch):
    """IRIS calls a manual hook once with every selected object (seen on real IRIS 2.4.20 and 2.5)."""
    from iris_opencti_module.hooks import handler as shipping

    case = iris.case(4)
    bad = iris.ioc(30, "192.0.2.46", cases=[case])
    good = iris.ioc(31, "192.0.2.47", cases=[case])
    real = shipping.Shipper.ioc_changed

    def ioc_changed(self, ioc, event, forced=False):
        if ioc.ioc_id == 30:
            raise ValueError("the IOC's case cannot be read")
        return real(self, ioc, event, forced)

    monkeypatch.setattr(shipping.Shipper, "ioc_changed", ioc_changed)
    status = module.run("on_manual_trigger_ioc", bad, good, ui="Push to OpenCTI")
    assert status.is_failure() and "1 of 2" in status.get_message()
    assert any("IOC #30" in line and "cannot be read" in line for line in status.logs), status.logs
    assert [e["iris"]["ioc_ids"] for e in module.messages()] == [[31]]
