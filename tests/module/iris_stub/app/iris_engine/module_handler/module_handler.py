"""IRIS's module handler, reduced to what ``iris_interface`` calls, with the same return conventions.

``MODULE_CONFIGS`` holds each module's saved configuration (the list IRIS stores: param dicts with ``value``);
``HOOKS`` records registrations per module id. Like IRIS, registering a manual hook adds a new row every time,
and unknown hook names are refused.
"""

from typing import Any, Dict, List, Optional, Tuple

from iris_interface import IrisInterfaceStatus

KNOWN_HOOKS = set()
for _obj in ("case", "ioc", "asset", "note", "event", "evidence", "task", "alert"):
    for _when in ("preload", "postload"):
        for _what in ("create", "update", "delete"):
            KNOWN_HOOKS.add("on_%s_%s_%s" % (_when, _obj, _what))
    KNOWN_HOOKS.add("on_manual_trigger_%s" % _obj)
KNOWN_HOOKS |= {"on_postload_alert_merge", "on_postload_alert_escalate", "on_postload_alert_unmerge"}

MODULE_CONFIGS: Dict[str, List[Dict[str, Any]]] = {}
#: module id -> list of registrations {"hook", "manual_hook_name", "run_asynchronously"}
HOOKS: Dict[int, List[Dict[str, Any]]] = {}


def reset() -> None:
    MODULE_CONFIGS.clear()
    HOOKS.clear()


def registered(module_id: int) -> List[str]:
    return sorted(r["hook"] for r in HOOKS.get(module_id, []))


def get_mod_config_by_name(module_name: str) -> IrisInterfaceStatus.IIStatus:
    data = MODULE_CONFIGS.get(module_name)
    if not data:
        return IrisInterfaceStatus.IIStatus(0xFF03, "Module not registered")
    return IrisInterfaceStatus.IIStatus(IrisInterfaceStatus.I2CodeSuccess, "Success", data=data)


def register_hook(module_id: int, iris_hook_name: str, manual_hook_name: Optional[str] = None,
                  run_asynchronously: bool = True) -> Tuple[bool, List[str]]:
    if iris_hook_name not in KNOWN_HOOKS:
        return False, ["Hook %s is unknown" % iris_hook_name]
    is_manual = "on_manual_trigger_" in iris_hook_name
    rows = HOOKS.setdefault(module_id, [])
    if is_manual or not any(r["hook"] == iris_hook_name for r in rows):
        rows.append({"hook": iris_hook_name, "manual_hook_name": manual_hook_name,
                     "run_asynchronously": run_asynchronously})
    return True, ["Hook %s registered" % iris_hook_name]


def deregister_from_hook(module_id: int, iris_hook_name: str) -> Tuple[bool, List[str]]:
    HOOKS[module_id] = [r for r in HOOKS.get(module_id, []) if r["hook"] != iris_hook_name]
    return True, ["Hook deregistered"]
