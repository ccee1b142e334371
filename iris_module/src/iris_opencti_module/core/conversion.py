"""The module–connector contract on conversion: the settings both sides must share, carried in every envelope.

The IRIS module converts on IRIS's hooks; the import connector converts again when it reconciles a case from
IRIS's export. Both use :class:`~iris_opencti_module.core.convert.Converter`, but with settings each reads from
its own place (IRIS's module form, the connector's ``iris:`` section). If they differ, the same IRIS object
gets another id (author, IRIS URL, mappings), another marking (TLPs) or other objects (indicators, records),
and a reconcile would rewrite, or delete, what the module sent. So each envelope the module produces carries
``conversion``: these settings and their fingerprint. The connector keeps the last one per case in its
ledger and refuses to reconcile a case converted otherwise, naming the setting; ``iris-opencti doctor``
compares both sides before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Mapping, Tuple

#: every setting of the contract: (its name in IRIS's module form, the connectors' variable)
FIELDS: Dict[str, Tuple[str, str]] = {
    "author": ("Author organisation", "IRIS_AUTHOR"),
    "iris_url": ("IRIS base URL", "IRIS_URL"),
    "default_tlp": ("Default TLP", "IRIS_DEFAULT_TLP"),
    "max_tlp": ("Maximum TLP to export", "IRIS_MAX_TLP"),
    "create_indicators": ("Create indicators", "IRIS_CREATE_INDICATORS"),
    "confidence": ("Confidence", "IRIS_CONFIDENCE"),
    "mappings": ("Mapping override file (its content)", "IRIS_MAPPINGS"),
    "records": ("Sync notes / events / tasks / evidences", "IRIS_RECORDS"),
    "export_content": ("Export note, event and comment content", "IRIS_EXPORT_CONTENT"),
}


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A short hash of the settings, equal on both sides exactly when :func:`differences` finds none."""
    canonical = {key: settings.get(key) for key in FIELDS}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def conversion_settings(*, author: str, iris_url: str, default_tlp: str, max_tlp: str, create_indicators: bool,
                        confidence: int, mappings_digest: str, records: Any, export_content: bool) -> Dict[str, Any]:
    """The envelope's ``conversion`` value: the settings (canonical spellings) and their fingerprint."""
    settings: Dict[str, Any] = {
        "author": author, "iris_url": iris_url.rstrip("/"), "default_tlp": default_tlp, "max_tlp": max_tlp,
        "create_indicators": bool(create_indicators), "confidence": int(confidence), "mappings": mappings_digest,
        "records": sorted(records), "export_content": bool(export_content),
    }
    return {"fingerprint": fingerprint(settings), "settings": settings}


def differences(ours: Mapping[str, Any], theirs: Mapping[str, Any], here: str = "here",
                there: str = "there") -> List[str]:
    """One line per setting that differs between two ``conversion`` values (``here`` names the first side,
    ``there`` the other), naming the setting as the module's form and the connectors' environment call it."""
    mine, other = ours.get("settings") or {}, theirs.get("settings") or {}
    if ours.get("fingerprint") and ours.get("fingerprint") == theirs.get("fingerprint"):
        return []
    lines = []
    for key, (form_name, variable) in FIELDS.items():
        if key in other and mine.get(key) != other.get(key):
            shown = ("(other tables)", "(other tables)") if key == "mappings" else (mine.get(key), other.get(key))
            lines.append(f"{key} ({variable}, module: '{form_name}'): {here} {shown[0]!r}, {there} {shown[1]!r}")
    return lines
