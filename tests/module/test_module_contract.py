"""The module as IRIS sees it: how it is imported, its parameters, hook registration, and its status objects."""

from __future__ import annotations

import importlib

import pytest
from app.iris_engine.module_handler import module_handler
from iris_interface import IrisInterfaceStatus
from iris_interface.IrisModuleInterface import IrisModuleInterface

import iris_opencti_module
from iris_opencti_module.IrisOpenCTIConfig import CONFIGURATION, TRIGGER_HOOKS, ConfigError, settings_from_conf

from .iris_world import config_list

ALL_HOOKS = sorted({hook for _, hook, _ in TRIGGER_HOOKS})
MANUAL = {"on_manual_trigger_case": "Sync case to OpenCTI", "on_manual_trigger_ioc": "Push to OpenCTI",
          "on_manual_trigger_asset": "Push to OpenCTI"}


def load_interface_class():
    """What IRIS's instantiate_module_from_name does: import <pkg>.<__iris_module_interface>, get the class."""
    root = importlib.import_module("iris_opencti_module")
    name = getattr(root, "__iris_module_interface")
    interface = importlib.import_module(f"iris_opencti_module.{name}")
    return getattr(interface, name)


@pytest.fixture
def fresh_iris():
    module_handler.reset()
    yield
    module_handler.reset()


def test_iris_imports_the_class_named_in_the_package(fresh_iris):
    cls = load_interface_class()
    assert cls.__name__ == "IrisOpenCTIInterface" and issubclass(cls, IrisModuleInterface)
    inst = cls()
    assert inst.get_module_name() == "IrisOpenCTI"
    assert inst.get_interface_version() == "1.2.0"
    assert inst.get_module_type() == "module_processor"
    assert inst.is_providing_pipeline() is False and inst.pipeline_get_info() == {}
    assert inst.get_module_version() == iris_opencti_module.__version__
    assert inst.is_ready()


def test_parameters_are_grouped_in_sections_with_the_right_types():
    names = [p["param_name"] for p in CONFIGURATION]
    assert len(names) == len(set(names))
    for param in CONFIGURATION:
        assert set(param) == {"param_name", "param_human_name", "param_description", "default", "mandatory", "type",
                              "section"}
        assert param["section"] in ("Connection", "Sync", "Triggers", "Mapping")
        assert param["type"] in ("string", "sensitive_string", "bool", "int")
        if param["section"] == "Triggers":
            assert param["type"] == "bool" and param["default"] is True
    by_name = {p["param_name"]: p for p in CONFIGURATION}
    assert by_name["amqp_url"]["type"] == "sensitive_string"
    assert by_name["queue"]["default"] == "iris-opencti"
    assert by_name["max_tlp"]["default"] == "amber"
    assert by_name["create_indicators"]["type"] == "bool"
    for required in ("iris_url", "amqp_url", "queue", "spool_dir", "author", "default_tlp", "max_tlp",
                     "create_indicators", "sync_mode", "sync_user", "mappings_path", "trigger_case_create",
                     "trigger_case_update", "trigger_case_delete", "trigger_ioc_create", "trigger_ioc_update",
                     "trigger_ioc_delete", "trigger_asset_create", "trigger_asset_update", "trigger_asset_delete",
                     "trigger_manual"):
        assert required in by_name, required


def registrations(module_id):
    return {(r["hook"], r["manual_hook_name"], r["run_asynchronously"]) for r in module_handler.HOOKS[module_id]}


def test_register_hooks_with_every_trigger_on(fresh_iris):
    cls = load_interface_class()
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list({})
    status = cls().register_hooks(7)
    assert status.is_success(), status.logs
    assert module_handler.registered(7) == ALL_HOOKS
    rows = registrations(7)
    for hook, ui_name, asynchronous in rows:
        assert ui_name == MANUAL.get(hook)
        assert asynchronous is (not hook.startswith("on_preload_")), hook
    assert ("on_preload_ioc_delete", None, False) in rows
    # saving the configuration again must not duplicate them, nor leave a manual action under an older name
    module_handler.HOOKS[7].append({"hook": "on_manual_trigger_ioc", "manual_hook_name": "Send to OpenCTI (0.x)",
                                    "run_asynchronously": True})
    cls().register_hooks(7)
    cls().register_hooks(7)
    assert module_handler.registered(7) == ALL_HOOKS
    assert registrations(7) == rows


def test_the_stub_registers_hooks_as_a_real_iris_does(fresh_iris):
    """IRIS's hook table (the 90 names of tests/data/real/iris-hooks.txt), and its answers."""
    assert len(module_handler.KNOWN_HOOKS) == 90
    assert "on_preload_case_update" not in module_handler.KNOWN_HOOKS  # IRIS has no such hook
    assert {"on_postload_ioc_commented", "on_preload_event_duplicate"} <= module_handler.KNOWN_HOOKS
    assert module_handler.register_hook(5, "on_preload_alert_create") == (
        False, ["Hook on_preload_alert_create is unknown"])
    assert module_handler.register_hook(5, "on_manual_trigger_ioc", "Push", module_name="m")[1] == [
        "Hook on_manual_trigger_ioc registered"]
    assert module_handler.register_hook(5, "on_manual_trigger_ioc", "Push", module_name="m")[1] == [
        "Hook on_manual_trigger_ioc already registered"]
    module_handler.register_hook(5, "on_manual_trigger_case", module_name="m")
    assert ("on_manual_trigger_case", "m::on_manual_trigger_case", True) in registrations(5)


def test_the_2_5_layout_has_no_models_in_the_package_and_the_adapter_finds_them(iris25):
    import app.models

    from iris_opencti_module.hooks import iris_adapter

    assert not hasattr(app.models, "Ioc") and not hasattr(app.models, "Cases")
    for name in ("Ioc", "CaseAssets", "Cases", "User"):
        assert iris_adapter.model(name) is not None, name
    assert iris_adapter.model("IocLink") is None


def test_register_hooks_follows_each_trigger(fresh_iris):
    cls = load_interface_class()
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list({})
    cls().register_hooks(7)
    off = {"trigger_ioc_update": False, "trigger_manual": False, "trigger_ioc_delete": "false",
           "trigger_case_delete": False}
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list(off)
    status = cls().register_hooks(7)
    assert status.is_success()
    expected = sorted(set(ALL_HOOKS) - {"on_postload_ioc_update", "on_manual_trigger_case", "on_manual_trigger_ioc",
                                        "on_manual_trigger_asset", "on_preload_ioc_delete", "on_postload_ioc_delete",
                                        "on_postload_case_delete"})
    assert module_handler.registered(7) == expected
    # and back on
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list({"trigger_manual": True})
    cls().register_hooks(7)
    assert module_handler.registered(7) == ALL_HOOKS


def test_first_registration_reads_the_raw_parameter_list(fresh_iris):
    """Before IRIS stores a configuration, module_dict_conf is the module's own parameter list, not a dict."""
    cls = load_interface_class()
    inst = cls()
    assert isinstance(inst.module_dict_conf, list)
    status = inst.register_hooks(3)
    assert status.is_success(), status.logs
    assert module_handler.registered(3) == ALL_HOOKS
    settings = inst.settings()
    assert settings.queue == "iris-opencti" and settings.max_tlp == "amber" and settings.sync_mode == "all"


def test_raw_list_with_string_booleans_and_foreign_keys():
    conf = [{"param_name": "trigger_ioc_update", "value": "False", "type": "bool"},
            {"param_name": "trigger_case_create", "default": True, "type": "bool"},
            {"param_name": "some_other_module_param", "value": "x"}, "garbage", {"no_name": 1}]
    settings = settings_from_conf(conf)
    assert settings.triggers["trigger_ioc_update"] is False
    assert settings.triggers["trigger_case_create"] is True
    assert settings.triggers["trigger_manual"] is True
    assert settings.queue == "iris-opencti"
    assert settings_from_conf(None).amqp_url.startswith("amqp://")
    assert settings_from_conf({"sync_mode": "Opt_In", "default_tlp": "WHITE"}).sync_mode == "opt-in"
    assert settings_from_conf({"default_tlp": "WHITE"}).default_tlp == "clear"
    with pytest.raises(ConfigError, match="sync_mode"):
        settings_from_conf({"sync_mode": "sometimes"})
    with pytest.raises(ConfigError, match="max_tlp"):
        settings_from_conf({"max_tlp": "purple"})
    with pytest.raises(ConfigError, match="amqp_url"):
        settings_from_conf({"amqp_url": "http://guest:guest@rabbit"})
    assert settings_from_conf(None).confidence == 75 and settings_from_conf({"confidence": "90"}).confidence == 90
    for bad in ("high", "101", "-1", "7.5"):
        with pytest.raises(ConfigError, match=r"Confidence \(confidence\)"):
            settings_from_conf({"confidence": bad})


def test_every_status_is_a_new_object(fresh_iris):
    cls = load_interface_class()
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list({"sync_mode": "off"})
    shared = [IrisInterfaceStatus.I2Success, IrisInterfaceStatus.I2Error, IrisInterfaceStatus.I2InterfaceNotReady,
              IrisInterfaceStatus.I2UnknownError]
    first = cls().hooks_handler("on_postload_ioc_create", None, data=["a"])
    second = cls().hooks_handler("on_postload_ioc_update", None, data=[])
    third = cls().register_hooks(1)
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list({"sync_mode": "never"})
    error = cls().hooks_handler("on_postload_ioc_create", None, data=["b"])
    for status in (first, second, third, error):
        assert isinstance(status, IrisInterfaceStatus.IIStatus)
        assert all(status is not s for s in shared)
    assert len({id(first), id(second), id(third), id(error)}) == 4
    assert first.is_success() and first.get_data() == ["a"]
    assert second.is_success() and second.get_data() == []  # not the previous call's data
    assert error.is_failure() and error.get_data() == ["b"]
    assert any("sync_mode" in line for line in error.get_logs())
    assert first.get_logs() and first.get_logs() is not second.get_logs()


def test_unknown_hook_and_off_mode_succeed_without_sending(fresh_iris):
    cls = load_interface_class()
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list({"sync_mode": "off", "amqp_url": "amqp://x:y@h:1"})
    status = cls().hooks_handler("on_postload_ioc_create", None, data=[object()])
    assert status.is_success() and "per-case mode is 'off'" in status.logs[0]
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list({})
    status = cls().hooks_handler("on_postload_alert_update", None, data=[1])
    assert status.is_success() and "not handled" in status.logs[0]


def test_a_trigger_turned_off_is_honoured_even_if_iris_still_calls_it(fresh_iris):
    cls = load_interface_class()
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list({"trigger_ioc_update": False})
    status = cls().hooks_handler("on_postload_ioc_update", None, data=[object()])
    assert status.is_success() and "this trigger is off" in status.logs[0]


def test_settings_never_read_another_calls_data_from_the_shared_status(fresh_iris, monkeypatch):
    """iris_interface's ``module_dict_conf`` returns the one global ``I2Success``, whose data any concurrent
    ``I2Success(data=...)`` call replaces: the module must read its own saved parameters instead."""
    cls = load_interface_class()
    module_handler.MODULE_CONFIGS[cls._module_name] = config_list(
        {"amqp_url": "amqp://iris:secret@broker.example:5672/%2F", "max_tlp": "green"})
    instance = cls()
    # what another thread's status leaves in the shared object between IRIS's store and this call's read
    monkeypatch.setattr(type(IrisInterfaceStatus.I2Success), "get_data",
                        lambda self: [{"ioc_id": 1, "ioc_value": "another hook's data"}])
    settings = instance.settings()
    assert settings.amqp_url == "amqp://iris:secret@broker.example:5672/%2F" and settings.max_tlp == "green"
