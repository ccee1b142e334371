"""IRIS's module handler, reduced to what ``iris_interface`` calls, with the same return conventions.

``MODULE_CONFIGS`` holds each module's saved configuration (the list IRIS stores: param dicts with ``value``);
``HOOKS`` records registrations per module id. As IRIS's ``register_hook`` (2.4.20 and 2.5): a hook name not in
IRIS's hook table is refused; a registration whose hook, module and UI name already exist is answered "already
registered" and adds nothing; a manual hook without a UI name gets ``<module>::<hook>``.
"""

import os
from typing import Any, Dict, List, Optional, Tuple

from iris_interface import IrisInterfaceStatus

_HOOK_TABLE = os.path.join(os.path.dirname(__file__), *[".."] * 5, "data", "real", "iris-hooks.txt")
with open(_HOOK_TABLE, encoding="utf-8") as _handle:
    KNOWN_HOOKS = {line.strip() for line in _handle if line.strip() and not line.startswith("#")}

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
                  run_asynchronously: bool = True, module_name: str = "module") -> Tuple[bool, List[str]]:
    if "on_manual_trigger_" in iris_hook_name and not manual_hook_name:
        manual_hook_name = f"{module_name}::{iris_hook_name}"
    if iris_hook_name not in KNOWN_HOOKS:
        return False, [f"Hook {iris_hook_name} is unknown"]
    rows = HOOKS.setdefault(module_id, [])
    if any(r["hook"] == iris_hook_name and r["manual_hook_name"] == manual_hook_name for r in rows):
        return True, [f"Hook {iris_hook_name} already registered"]
    rows.append({"hook": iris_hook_name, "manual_hook_name": manual_hook_name,
                 "run_asynchronously": run_asynchronously})
    return True, [f"Hook {iris_hook_name} registered"]


def deregister_from_hook(module_id: int, iris_hook_name: str) -> Tuple[bool, List[str]]:
    HOOKS[module_id] = [r for r in HOOKS.get(module_id, []) if r["hook"] != iris_hook_name]
    return True, ["Hook deregistered"]
