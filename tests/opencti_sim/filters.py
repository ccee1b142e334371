"""OpenCTI ``FilterGroup`` evaluation for list queries.

Only the keys a connector realistically uses are understood; an unknown key is an error (``code
UNSUPPORTED_FILTER``) rather than a silently wrong answer, so a test author learns at once that the
simulator needs teaching.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from .graphql_exec import GraphQLFieldError
from .store import Record

Getter = Callable[[Record, Dict[str, Any]], List[Any]]


def _ids(record: Record, _view: Dict[str, Any]) -> List[Any]:
    return record.all_ids()


def _field(name: str) -> Getter:
    def get(_record: Record, view: Dict[str, Any]) -> List[Any]:
        value = view.get(name)
        if callable(value):
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]

    return get


def _entity_type(_record: Record, view: Dict[str, Any]) -> List[Any]:
    return [view.get("entity_type"), *(view.get("parent_types") or [])]


def _stix_list(name: str) -> Getter:
    def get(record: Record, _view: Dict[str, Any]) -> List[Any]:
        value = record.stix.get(name)
        return list(value) if isinstance(value, list) else [value]

    return get


def _labels(record: Record, view: Dict[str, Any]) -> List[Any]:
    return [*(record.stix.get("labels") or []), *(record.stix.get("x_opencti_labels") or []),
            *[label["id"] for label in view.get("objectLabel") or []]]


GETTERS: Dict[str, Getter] = {
    "ids": _ids, "id": _ids, "internal_id": _ids, "standard_id": _ids, "x_opencti_stix_ids": _ids,
    "entity_type": _entity_type,
    "name": _field("name"), "value": _field("value"), "observable_value": _field("observable_value"),
    "pattern": _field("pattern"), "pattern_type": _field("pattern_type"),
    "relationship_type": _field("relationship_type"), "identity_class": _field("identity_class"),
    "definition_type": _field("definition_type"), "definition": _field("definition"),
    "x_mitre_id": _field("x_mitre_id"), "severity": _field("severity"), "priority": _field("priority"),
    "createdBy": _stix_list("created_by_ref"), "objectMarking": _stix_list("object_marking_refs"),
    "objects": _stix_list("object_refs"), "objectLabel": _labels,
    "fromId": _stix_list("source_ref"), "toId": _stix_list("target_ref"),
}


def _values_match(found: List[Any], values: List[Any], operator: str, mode: str) -> bool:
    lowered = [str(v).lower() for v in found if v is not None]
    if operator == "nil":
        return not lowered
    if operator == "not_nil":
        return bool(lowered)

    def one(value: Any) -> bool:
        target = str(value).lower()
        if operator in ("eq", "not_eq"):
            return target in lowered
        if operator == "starts_with":
            return any(v.startswith(target) for v in lowered)
        if operator in ("contains", "search"):
            return any(target in v for v in lowered)
        raise GraphQLFieldError(f"Filter operator not supported by the simulator: {operator}", "UNSUPPORTED_FILTER")

    results = [one(v) for v in values]
    hit = all(results) if mode == "and" else any(results)
    return not hit if operator == "not_eq" else hit


def matches(group: Optional[Dict[str, Any]], record: Record, view: Dict[str, Any],
            extra: Optional[Dict[str, Getter]] = None) -> bool:
    """Whether ``record`` satisfies the ``FilterGroup``."""
    if not group:
        return True
    getters = {**GETTERS, **(extra or {})}
    checks: List[bool] = []
    for flt in group.get("filters") or []:
        keys = flt.get("key")
        keys = keys if isinstance(keys, list) else [keys]
        key_results = []
        for key in keys:
            getter = getters.get(key)
            if getter is None:
                raise GraphQLFieldError(f"Filter key not supported by the simulator: {key}", "UNSUPPORTED_FILTER")
            key_results.append(_values_match(getter(record, view), list(flt.get("values") or []),
                                             flt.get("operator") or "eq", flt.get("mode") or "or"))
        checks.append(any(key_results))
    for sub in group.get("filterGroups") or []:
        checks.append(matches(sub, record, view, extra))
    if not checks:
        return True
    return all(checks) if (group.get("mode") or "and") == "and" else any(checks)
