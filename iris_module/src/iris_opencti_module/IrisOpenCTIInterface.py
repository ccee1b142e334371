"""The class IRIS loads: ``iris_opencti_module.IrisOpenCTIInterface.IrisOpenCTIInterface``.

IRIS imports ``<package>.<__iris_module_interface>`` and instantiates the class for every hook call (in the
Celery worker for postload and manual hooks, inside the web request for preload hooks), so this file only
wires IRIS to the rest of the package: it declares the parameters, registers the hooks the configuration turns
on, and hands each hook to a :class:`~.shipping.Shipper`. The connection to RabbitMQ, the converter and the
state database are kept per process, not per instance.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Dict, List, Optional

from iris_interface import IrisInterfaceStatus as InterfaceStatus
from iris_interface.IrisModuleInterface import IrisModuleInterface, IrisModuleTypes

from iris_opencti_module import __version__
from iris_opencti_module.core.case_records import COMMENTED_KINDS
from iris_opencti_module.core.case_records import KINDS as RECORD_KINDS
from iris_opencti_module.core.mapping_tables import MappingError
from iris_opencti_module.core.masking import redact
from iris_opencti_module.hooks.handler import Shipper, converter_for
from iris_opencti_module.hooks.state import StateError, open_state
from iris_opencti_module.IrisOpenCTIConfig import (
    CONFIGURATION,
    MODULE_NAME,
    ConfigError,
    ModuleSettings,
    raw_values,
    settings_from_conf,
)
from iris_opencti_module.transport.publisher import get_publisher
from iris_opencti_module.transport.spool import SpoolError

#: hook name -> what the shipper does with each item of ``data``
_HANDLERS: Dict[str, Callable[[Shipper, Any], None]] = {
    "on_postload_case_create": lambda s, item: s.case_created(item),
    "on_postload_case_update": lambda s, item: s.case_updated(item),
    "on_postload_case_delete": lambda s, item: s.case_deleted(item),
    "on_manual_trigger_case": lambda s, item: s.case_manual(item),
    "on_postload_ioc_create": lambda s, item: s.ioc_changed(item, "ioc.created"),
    "on_postload_ioc_update": lambda s, item: s.ioc_changed(item, "ioc.updated"),
    "on_manual_trigger_ioc": lambda s, item: s.ioc_changed(item, "ioc.updated", forced=True),
    "on_preload_ioc_delete": lambda s, item: s.ioc_deleting(item),
    "on_postload_ioc_delete": lambda s, item: s.ioc_deleted(item),
    "on_postload_asset_create": lambda s, item: s.asset_changed(item, "asset.created"),
    "on_postload_asset_update": lambda s, item: s.asset_changed(item, "asset.updated"),
    "on_manual_trigger_asset": lambda s, item: s.asset_changed(item, "asset.updated", forced=True),
    "on_postload_asset_delete": lambda s, item: s.asset_deleted(item),
    "on_postload_alert_merge": lambda s, item: s.alert_merged(item),
    **{f"on_postload_{kind}_{action}": (lambda k: lambda s, item: s.record_changed(item, k))(kind)
       for kind in RECORD_KINDS for action in ("create", "update")},
    **{f"on_postload_{kind}_delete": (lambda k: lambda s, item: s.record_deleted(item, k))(kind)
       for kind in RECORD_KINDS},
    **{f"on_postload_{kind}_{action}": (lambda k: lambda s, item: s.comment_changed(item, k))(kind)
       for kind in COMMENTED_KINDS for action in ("commented", "comment_update")},
    **{f"on_postload_{kind}_comment_delete": lambda s, item: s.comment_deleted(item) for kind in COMMENTED_KINDS},
}


def _describe(item: Any) -> str:
    """The IRIS object a hook item is, for a log line (the hooks hand model objects, or bare ids on delete)."""
    for attribute, kind in (("ioc_id", "IOC"), ("asset_id", "asset"), ("alert_id", "alert"), ("case_id", "case")):
        value = getattr(item, attribute, None)
        if value is not None:
            return f"{kind} #{value}"
    return f"id {item!r}" if isinstance(item, (int, str)) else type(item).__name__


def _status(success: bool, message: str, data: Any, logs: List[str]) -> InterfaceStatus.IIStatus:
    """A new status object every time: IRIS's shared I2Success/I2Error keep stale data between calls."""
    code = InterfaceStatus.I2CodeSuccess if success else InterfaceStatus.I2CodeError
    return InterfaceStatus.IIStatus(code=code, message=message, data=data, logs=list(logs))


class IrisOpenCTIInterface(IrisModuleInterface):
    """DFIR-IRIS processor module: cases, IOCs and assets to OpenCTI as STIX 2.1, over RabbitMQ."""

    _module_name = MODULE_NAME
    _module_description = ("Sends IRIS cases, IOCs and assets to OpenCTI as STIX 2.1 (through RabbitMQ and the "
                           "IRIS-OpenCTI import connector), per case, within a TLP ceiling.")
    _interface_version = "1.2.0"
    _module_version = __version__
    _module_type = IrisModuleTypes.module_processor
    _pipeline_support = False
    _pipeline_info: Dict[str, Any] = {}
    _module_configuration = CONFIGURATION

    # ----------------------------------------------------------------------------------- configuration
    def settings(self) -> ModuleSettings:
        """The configuration as saved in IRIS (read once per call: every read queries IRIS's database)."""
        return settings_from_conf(self._saved_configuration())

    def _saved_configuration(self) -> Any:
        """This instance's saved parameter list, read without iris_interface's shared status object.

        ``module_dict_conf`` goes through ``IrisInterfaceStatus.I2Success(data=...)``, whose ``__call__``
        stores the data on the one global ``I2Success`` instance and returns it: with hooks running at once
        (IRIS 2.5's threaded web worker, Celery's pool, eventlet's green threads) a call can read another
        call's data and run with the default settings (seen in the 10,000-IOC drill: 16 of 1,000 concurrent
        hooks published to the default ``rabbitmq`` host). The list ``IrisModuleInterface.__init__`` loaded
        into ``_mod_web_config`` belongs to this instance alone.
        """
        saved = getattr(self, "_mod_web_config", None)
        if isinstance(saved, list) and saved and all(isinstance(p, dict) and "param_name" in p for p in saved):
            return saved
        return self.module_dict_conf

    def register_hooks(self, module_id: int) -> InterfaceStatus.IIStatus:
        """Register exactly the hooks the configuration turns on, deregister the others.

        IRIS calls this at registration (configuration may then be the raw parameter list), on enable, and on
        every configuration save. IRIS keeps one row per hook, module and UI name ("already registered" on a
        repeat, seen on real 2.4.20 and 2.5), so a manual hook is deregistered first: a row left under an older
        UI name would show the action twice in IRIS's menus.
        """
        logs: List[str] = []
        try:
            settings = self.settings()
        except ConfigError as exc:
            logs.append(f"configuration: {exc} (hooks registered from the trigger settings anyway)")
            settings = settings_from_conf({k: v for k, v in raw_values(self._saved_configuration()).items()
                                           if k.startswith("trigger_")})
        ok = True
        for hook, ui_name, wanted in settings.hooks():
            if not wanted:
                self.deregister_from_hook(module_id=module_id, iris_hook_name=hook)
                continue
            if ui_name:
                self.deregister_from_hook(module_id=module_id, iris_hook_name=hook)
            status = self.register_to_hook(module_id, iris_hook_name=hook, manual_hook_name=ui_name,
                                           run_asynchronously=not hook.startswith("on_preload_"))
            if status.is_failure():
                ok = False
                logs.append(f"failed to register {hook}: {status.get_message()}")
                self.log.error("Failed to register %s: %s", hook, status.get_message())
            else:
                logs.append("registered {}{}".format(hook, f" ({ui_name})" if ui_name else ""))
        for line in logs:
            self.log.info(line)
        return _status(ok, "hooks registered" if ok else "some hooks could not be registered", None, logs)

    # ------------------------------------------------------------------------------------------- hooks
    def hooks_handler(self, hook_name: str, hook_ui_name: Optional[str], data: Any) -> InterfaceStatus.IIStatus:
        """Ship what the hook means; returns ``data`` unchanged (preload hooks hand it back to IRIS)."""
        logs: List[str] = []
        try:
            settings = self.settings()
        except ConfigError as exc:
            logs.append(f"configuration error: {exc}")
            return _status(False, "IrisOpenCTI: configuration error", data, self._echo(logs))
        handler = _HANDLERS.get(hook_name)
        if handler is None:
            logs.append(f"hook {hook_name} is not handled by this module")
            return _status(True, "IrisOpenCTI: nothing to do", data, self._echo(logs))
        if not settings.wants(hook_name):
            # IRIS may still hold a registration the configuration has since turned off
            logs.append(f"{hook_name}: nothing sent: this trigger is off in the module's configuration")
            return _status(True, "IrisOpenCTI: trigger off", data, self._echo(logs))
        if settings.sync_mode == "off":
            logs.append(f"{hook_name}: nothing sent: the module's per-case mode is 'off'")
            return _status(True, "IrisOpenCTI: sync is off", data, self._echo(logs))
        try:
            shipper = Shipper(settings, converter_for(settings), open_state(settings.spool_dir),
                              get_publisher(settings.amqp_url, settings.queue, settings.spool_dir), self.log.info)
        except (ConfigError, MappingError, StateError, SpoolError, ValueError) as exc:
            logs.append(f"{hook_name} failed: {redact(str(exc), settings.amqp_url)}")
            return _status(False, f"IrisOpenCTI: {hook_name} failed", data, self._echo(logs))
        items = list(data) if isinstance(data, (list, tuple)) else [data]
        failed = 0
        # a manual trigger hands every selected object in one call: one that fails must not stop the others
        for item in items:
            try:
                handler(shipper, item)
            except (ConfigError, MappingError, StateError, SpoolError, ValueError) as exc:
                failed += 1
                shipper.log(f"{hook_name} failed for {_describe(item)}: {redact(str(exc), settings.amqp_url)}")
            except Exception as exc:  # noqa: BLE001 - a module must never break IRIS; the traceback goes to the logs
                failed += 1
                shipper.log(f"{hook_name} failed for {_describe(item)}: {type(exc).__name__}: "
                            f"{redact(str(exc), settings.amqp_url)}")
                shipper.logs.append(redact(traceback.format_exc(limit=6), settings.amqp_url))
                self.log.error(shipper.logs[-2])
        if failed:
            return _status(False, "IrisOpenCTI: %s failed for %d of %d" % (hook_name, failed, len(items)), data,
                           shipper.logs)
        if not shipper.logs:
            shipper.logs.append(f"{hook_name}: nothing to send")
        summary = "IrisOpenCTI: %d sent, %d spooled" % (shipper.sent, shipper.spooled)
        return _status(not shipper.failed, summary, data, shipper.logs)

    def _echo(self, lines: List[str], logs: Optional[List[str]] = None) -> List[str]:
        for line in lines:
            self.log.info(line)
        return logs if logs is not None else lines
