"""Load the IRIS→STIX mapping tables shipped with the module, optionally overridden by a user file.

The tables are data (``mappings/*.json``) so that analysts can read how each IRIS type lands in OpenCTI and
change it without touching code. An override file has the same shape as the tables and replaces the entries it
names (TLP settings merge key by key), e.g.::

    {"ioc_types": {"uri": {"kind": "observable", "stix_type": "url", "property": "value"}},
     "tlp": {"by_id": {"6": "amber"}},
     "severity": {"High": {"severity": "critical", "priority": "P1"}}}
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from typing import Any, Dict, Optional

TABLES = ("ioc_types", "asset_types", "tlp", "severity")
KINDS = ("observable", "composite", "indicator", "sdo", "unsupported")
SPLITS = ("filename|hash", "ip|port", "hostname|port", "domain|ip", "regkey|value")


class MappingError(ValueError):
    """An override file or table that cannot be used; the message names the file and entry."""


def _packaged(name: str) -> Dict[str, Any]:
    # the tables are package data of the top package; one name per step: 3.9's zipfile.Path
    ref = resources.files("iris_opencti_module") / "mappings" / (name + ".json")
    return json.loads(ref.read_text(encoding="utf-8"))


def _merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Recursive dict merge: override wins, nested dicts merge, everything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate_ioc_entry(type_name: str, entry: Any, origin: str) -> None:
    """Fail early, naming the entry, rather than when the first IOC of that type arrives."""
    where = f"{origin}: ioc_types[{type_name!r}]"
    if not isinstance(entry, dict) or entry.get("kind") not in KINDS:
        raise MappingError("{}: 'kind' must be one of {}".format(where, ", ".join(KINDS)))
    kind = entry["kind"]
    required = {"observable": ("stix_type", "property"), "composite": ("split",), "indicator": ("pattern_type",),
                "sdo": ("stix_type",), "unsupported": ("reason",)}[kind]
    for key in required:
        if not entry.get(key):
            raise MappingError(f"{where}: kind {kind!r} needs {key!r}")
    if kind == "composite" and entry["split"] not in SPLITS:
        raise MappingError("{}: split must be one of {}".format(where, ", ".join(SPLITS)))


class Mappings:
    """The four tables, merged with an optional override file, with lookups the converter needs."""

    def __init__(self, override_path: Optional[str] = None) -> None:
        tables = {name: _packaged(name) for name in TABLES}
        origin = "packaged tables"
        if override_path:
            origin = override_path
            try:
                with open(os.path.expanduser(override_path), encoding="utf-8") as handle:
                    override = json.load(handle)
            except (OSError, ValueError) as exc:
                raise MappingError(f"mapping override {override_path} cannot be read: {exc}") from None
            if not isinstance(override, dict):
                raise MappingError(f"mapping override {override_path} must be a JSON object")
            for key, value in override.items():
                if key.startswith("_"):
                    continue
                if key not in TABLES or not isinstance(value, dict):
                    raise MappingError("mapping override {}: {!r} is not one of the tables "
                                       "{}".format(override_path, key, ", ".join(TABLES)))
                inner = key if key in ("ioc_types", "asset_types", "severity") else None
                if inner:  # entries are replaced whole, so no stale key of the old entry survives
                    tables[key][inner] = dict(tables[key][inner], **value)
                else:
                    tables[key] = _merge(tables[key], value)
        #: what the tables say, as a short hash: the module and the connector must convert with the same
        #: (``core.conversion``), whichever file each read them from
        self.digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        self.ioc_types: Dict[str, Dict[str, Any]] = tables["ioc_types"]["ioc_types"]
        for type_name, entry in self.ioc_types.items():
            validate_ioc_entry(type_name, entry, origin)
        self.asset_types: Dict[str, Dict[str, Any]] = tables["asset_types"]["asset_types"]
        self.asset_default: Dict[str, Any] = tables["asset_types"]["default"]
        self.compromise_status: Dict[str, str] = tables["asset_types"]["compromise_status"]
        self.tlp_by_id: Dict[str, str] = tables["tlp"]["by_id"]
        self.tlp_order = list(tables["tlp"]["order"])
        self.severity: Dict[str, Dict[str, Optional[str]]] = tables["severity"]["severity"]

    def tlp_rank(self, name: str) -> int:
        """Position in the TLP order (higher is more restrictive); unknown names rank as the most restrictive."""
        try:
            return self.tlp_order.index(name)
        except ValueError:
            return len(self.tlp_order)
