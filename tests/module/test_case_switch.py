"""The per-case switch: modes all / opt-in / off, the checkbox and the tags, and what turning it on or off does."""

from __future__ import annotations

import pytest

from iris_opencti_module.core.case_switch import checkbox_value, switch_state, sync_enabled
from iris_opencti_module.hooks.state import close_states


def case(tags=(), attrs=None):
    return {"case_id": 1, "name": "#1 - x", "tags": tags if isinstance(tags, str) else list(tags),
            "custom_attributes": attrs}


def box(value, tab="OpenCTI", name="Sync to OpenCTI"):
    return {tab: {name: {"type": "input_checkbox", "value": value, "mandatory": False}}}


@pytest.mark.parametrize("data, mode, expected", [
    (case(), "all", True),
    (case(tags=["opencti:off"]), "all", False),
    (case(tags=[{"tag_title": "OpenCTI:OFF", "id": 3}]), "all", False),
    (case(attrs=box(True), tags=["opencti:off"]), "opt-in", False),
    (case(), "opt-in", False),
    (case(attrs=box(False)), "opt-in", False),
    (case(attrs=box(True)), "opt-in", True),
    (case(attrs=box("true")), "opt-in", True),
    (case(attrs=box("on", tab="Details", name="sync to  opencti")), "opt-in", True),
    (case(attrs=box("false")), "opt-in", False),
    (case(tags="phishing,opencti:on"), "opt-in", True),
    (case(attrs=box(True), tags=["opencti:on"]), "off", False),
    (case(), "off", False),
])
def test_sync_enabled(data, mode, expected):
    assert sync_enabled(data, mode) is expected
    assert switch_state(data, mode)[1]


def test_checkbox_value_shapes():
    assert checkbox_value(case()) is None
    assert checkbox_value(case(attrs={"tab": "not a dict"})) is None
    assert checkbox_value(case(attrs={"OpenCTI": {"Sync to OpenCTI": True}})) is True
    assert checkbox_value(case(attrs=box(None))) is False


def test_opt_in_switch_on_sends_the_whole_case_once(module, iris):
    module.configure(sync_mode="opt-in")
    c = iris.case(4, sync_checkbox=False)
    ioc = iris.ioc(29, "192.0.2.45", cases=[c])
    iris.asset(3, c, "WS-042", ip="10.0.0.42")
    status = module.run("on_postload_case_create", c)
    assert "not ticked" in status.logs[0]
    status = module.run("on_postload_ioc_create", ioc)
    assert "case #4 is not synced (per-case mode 'opt-in' and its 'Sync to OpenCTI' custom attribute is not " \
           "ticked)" in status.logs[0]
    assert module.messages() == []

    iris.set_checkbox(c, True)
    status = module.run("on_postload_case_update", c)
    assert "sync turned on" in status.logs[0] and "whole case" in status.logs[0], status.logs
    (whole,) = module.messages()
    assert whole["event"] == "case.sync" and whole["iris"] == {"ioc_ids": [29], "asset_ids": [3]}

    c.description = "more"
    module.run("on_postload_case_update", c)  # already on: only the case itself
    ioc.ioc_description = "changed"
    module.run("on_postload_ioc_update", ioc)
    assert [e["event"] for e in module.messages()] == ["case.updated", "ioc.updated"]

    iris.set_checkbox(c, False)
    status = module.run("on_postload_case_update", c)
    assert "sync turned off" in status.logs[0] and "stays" in status.logs[0]
    ioc.ioc_description = "changed again"
    module.run("on_postload_ioc_update", ioc)
    module.run("on_manual_trigger_case", c, ui="Sync case to OpenCTI")
    module.run("on_postload_ioc_delete", 29)
    status = module.run("on_postload_case_delete", 4)
    assert "switched off" in status.logs[0]
    assert module.messages() == []  # off means nothing more leaves IRIS, and nothing is deleted either


def test_opt_in_by_tag_and_switch_state_survives_restarts(module, iris):
    module.configure(sync_mode="opt-in")
    c = iris.case(4)
    module.run("on_postload_case_create", c)
    iris.set_tags(c, ["opencti:on"])
    close_states()  # a worker restart: the last-known switch is on disk
    module.run("on_postload_case_update", c)
    close_states()
    module.run("on_postload_case_update", c)
    assert [e["event"] for e in module.messages()] == ["case.sync", "case.updated"]


def test_mode_all_and_the_off_tag(module, iris):
    c = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[c])
    module.run("on_postload_case_create", c)
    iris.set_tags(c, ["opencti:off"])
    module.run("on_postload_case_update", c)
    module.run("on_postload_ioc_create", ioc)
    assert [e["event"] for e in module.messages()] == ["case.created"]
    iris.set_tags(c, [])
    module.run("on_postload_case_update", c)
    (env,) = module.messages()
    assert env["event"] == "case.sync" and env["iris"]["ioc_ids"] == [29]


def test_first_update_of_a_case_created_before_the_module_sends_it_whole(module, iris):
    c = iris.case(4)
    iris.ioc(29, "192.0.2.45", cases=[c])
    status = module.run("on_postload_case_update", c)
    assert "first sight of this case" in status.logs[0]
    (env,) = module.messages()
    assert env["event"] == "case.sync" and env["iris"]["ioc_ids"] == [29]


def test_mode_off_sends_nothing_at_all(module, iris):
    module.configure(sync_mode="off")
    c = iris.case(4, tags=["opencti:on"], sync_checkbox=True)
    ioc = iris.ioc(29, "192.0.2.45", cases=[c])
    for hook, item in [("on_postload_case_create", c), ("on_postload_case_update", c), ("on_postload_ioc_create", ioc),
                       ("on_manual_trigger_case", c), ("on_postload_ioc_delete", 29), ("on_postload_case_delete", 4)]:
        status = module.run(hook, item)
        assert status.is_success() and "'off'" in status.logs[0]
    assert module.messages() == []
