"""The TLP ceiling, and the two rules that keep the enrichment connector's write-backs from looping back."""

from __future__ import annotations

from iris_opencti_module.hooks.state import close_states

from .iris_world import SYNC_USER_ID


def raw_bodies(module):
    """Message bodies as bytes, to search them for anything that must not leave IRIS."""
    return module.rabbit.bodies(module.queue)


def test_nothing_above_the_ceiling_leaves_iris(module, iris):
    secret = "7f3b9c2e1d4a5b6c7d8e9f0a1b2c3d4e"
    c = iris.case(4)
    red = iris.ioc(31, secret, "md5", cases=[c], tlp="red", description="internal only")
    strict = iris.ioc(33, "strict.example", "domain", cases=[c], tlp="amber+strict")
    iris.ioc(29, "192.0.2.45", cases=[c])
    status = module.run("on_postload_ioc_create", red)
    assert status.is_success()
    assert "TLP:RED is above the export ceiling TLP:AMBER; it stays in IRIS" in status.logs[0], status.logs
    status = module.run("on_postload_ioc_create", strict)
    assert "TLP:AMBER+STRICT is above the export ceiling" in status.logs[0]
    module.run("on_postload_ioc_update", red)
    module.run("on_preload_ioc_delete", 31)
    assert raw_bodies(module) == []
    module.run("on_postload_case_create", c)
    module.run("on_manual_trigger_case", c)
    bodies = raw_bodies(module)
    assert len(bodies) == 2
    for body in bodies:
        assert secret.encode() not in body and b"internal only" not in body and b"strict.example" not in body
    module.configure(max_tlp="red")
    module.run("on_postload_ioc_create", red)
    (body,) = raw_bodies(module)
    assert secret.encode() in body


def test_raising_the_tlp_of_a_sent_ioc_retracts_it(module, iris):
    c = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[c])
    module.run("on_postload_ioc_create", ioc)
    ioc.ioc_tlp_id = iris.tlp_id("red")
    status = module.run("on_postload_ioc_update", ioc)
    assert "now stays in IRIS" in status.logs[0], status.logs
    ioc.ioc_description = "still red"
    status = module.run("on_postload_ioc_update", ioc)
    assert "it stays in IRIS" in status.logs[0]
    created, retraction = module.messages()
    assert retraction["event"] == "ioc.updated" and retraction["iris"]["ioc_ids"] == [29]
    # ioc:29 produces nothing now: the connector takes its objects out of the case
    assert "ioc:29" not in retraction["produced"]
    assert [o["type"] for o in retraction["bundle"]["objects"]] == ["marking-definition", "identity", "case-incident"]
    assert "192.0.2.45" not in str(retraction)
    assert retraction["skipped"] == [{"kind": "IOC", "object_id": 29, "type": "ip-dst",
                                      "reason": "TLP:RED is above the export ceiling TLP:AMBER"}]


def test_updates_by_the_sync_user_are_not_sent_back(module, iris):
    c = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[c])
    module.run("on_postload_ioc_create", ioc)
    # the enrichment connector writes through the API as the sync user: IRIS sets user_id and fires the update hook
    ioc.ioc_tags = "phishing,opencti:score=80,opencti:label=c2"
    ioc.user_id = SYNC_USER_ID
    ioc.ioc_description = "even if it changed something else"
    status = module.run("on_postload_ioc_update", ioc)
    assert "last written by the sync user 'opencti-sync'" in status.logs[0], status.logs
    module.configure(sync_user=str(SYNC_USER_ID))  # by user id
    assert "sync user '7'" in module.run("on_postload_ioc_update", ioc).logs[0]
    module.configure(sync_user="OpenCTI Sync")  # by display name, any case
    assert "sync user 'OpenCTI sync'" in module.run("on_postload_ioc_update", ioc).logs[0]
    # the sync user's own manual push is still honoured
    module.run("on_manual_trigger_ioc", ioc)
    assert [e["event"] for e in module.messages()] == ["ioc.created", "ioc.updated"]


def test_updates_that_change_nothing_exported_are_not_sent(module, iris):
    c = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[c], tags="phishing,c2")
    module.configure(sync_user="")  # the content rule must hold on its own
    module.run("on_postload_ioc_create", ioc)
    for tags in ("phishing,c2,opencti:score=80", "c2 , phishing,opencti:score=90", "opencti:x,c2,phishing"):
        ioc.ioc_tags = tags
        status = module.run("on_postload_ioc_update", ioc)
        assert "nothing exported changed" in status.logs[0], status.logs
    ioc.ioc_enrichment = {"opencti": {"score": 90}}
    ioc.custom_attributes = {"x": 1}
    logs = module.run("on_postload_ioc_update", ioc).logs
    assert "OpenCTI tab updated" in logs[0] and "nothing exported changed" in logs[1], logs
    assert len(module.messages()) == 1  # the creation only
    close_states()  # fingerprints survive a worker restart
    assert "nothing exported changed" in module.run("on_postload_ioc_update", ioc).logs[0]
    changes = [("ioc_description", "confirmed C2"), ("ioc_tlp_id", iris.tlp_id("green")),
               ("ioc_tags", "phishing,c2,apt"), ("ioc_value", "192.0.2.46")]
    for attribute, value in changes:
        setattr(ioc, attribute, value)
        status = module.run("on_postload_ioc_update", ioc)
        assert "ioc.updated sent" in status.logs[0], (attribute, status.logs)
    assert len(module.messages()) == len(changes)


def test_an_existing_value_added_to_another_case_is_sent_there(module, iris24):
    """IRIS 2.4 returns the existing IOC (same id) when a value is added to a second case."""
    one, two = iris24.case(5), iris24.case(6)
    ioc = iris24.ioc(12, "evil.example", "domain", cases=[one])
    module.run("on_postload_ioc_create", ioc)
    iris24.link(ioc, two)
    module.run("on_postload_ioc_create", ioc)
    ioc.ioc_tags = "phishing,opencti:score=10"
    status = module.run("on_postload_ioc_update", ioc)
    assert all("nothing exported changed" in line for line in status.logs) and len(status.logs) == 2
    assert [e["case"]["id"] for e in module.messages()] == [5, 5, 6]
