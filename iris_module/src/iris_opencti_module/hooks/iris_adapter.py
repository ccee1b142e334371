"""The only code that knows IRIS's live model objects: it turns them into the export-shaped dicts the converter
takes (the shape of ``GET /case/export``), and finds how objects relate.

Kept thin and separate because IRIS's models move between versions:

- IRIS 2.4 keeps models in ``app.models.models`` (re-exported by ``app.models``), ``Cases`` in
  ``app.models.cases`` and ``User`` in ``app.models.authorization``; an ``Ioc`` has no ``case_id`` and is linked
  to one or more cases through ``IocLink(ioc_id, case_id)``.
- IRIS 2.5 gives ``Ioc`` a ``case_id`` and a ``case``; ``IocLink`` is gone (importing it raises ImportError).

Classes are therefore looked up by name at call time, in the places each version keeps them, and only the
SQLAlchemy query API every version has is used (``Model.query.filter(Model.column == value)``,
``column.in_(values)``, ``.all()``, ``.first()``).
"""

from __future__ import annotations

import datetime as _dt
import importlib
from typing import Any, Dict, Iterable, List, Optional, Tuple

#: where each model class lives, in order of preference (2.4 and 2.5 layouts)
_HOMES: Dict[str, Tuple[str, ...]] = {
    **dict.fromkeys(("IocComments", "AssetComments", "EventComments", "NotesComments", "TaskComments",
                     "EvidencesComments"), ("app.models.models", "app.models")),
    "Ioc": ("app.models.models", "app.models"),
    "IocLink": ("app.models", "app.models.models"),
    "CaseAssets": ("app.models.models", "app.models"),
    "Cases": ("app.models.cases", "app.models"),
    "User": ("app.models.authorization", "app.models"),
}
_CHUNK = 500  # ids per IN (...) query: one round trip per 500 objects, never a query per object


def model(name: str) -> Optional[Any]:
    """IRIS's model class ``name``, or None when this IRIS version has none (``IocLink`` on 2.5)."""
    for home in _HOMES.get(name, ("app.models",)):
        try:
            module = importlib.import_module(home)
        except ImportError:
            continue
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    return None


def _first(cls: Any, column: str, value: Any) -> Any:
    if cls is None or value is None:
        return None
    return cls.query.filter(getattr(cls, column) == value).first()


def _all_in(cls: Any, column: str, values: List[Any]) -> List[Any]:
    rows: List[Any] = []
    attr = getattr(cls, column)
    for start in range(0, len(values), _CHUNK):
        rows.extend(cls.query.filter(attr.in_(values[start:start + _CHUNK])).all())
    return rows


def iso(value: Any) -> Any:
    """Dates as IRIS's exports write them (ISO 8601 without zone); everything else unchanged."""
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return value


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def object_id(item: Any, attribute: str) -> Any:
    """Delete hooks hand over an int id; be lenient if a version hands over the object instead."""
    if isinstance(item, (int, str)):
        return int(item) if isinstance(item, str) and item.isdigit() else item
    return getattr(item, attribute, None)


# ------------------------------------------------------------------------------------------------ dicts
def case_to_dict(case: Any) -> Dict[str, Any]:
    """A ``Cases`` row as ``GET /case/export`` shows it (the fields the converter and the switch read)."""
    client = getattr(case, "client", None)
    severity = getattr(case, "severity", None)
    state = getattr(case, "state", None)
    classification = getattr(case, "classification", None)
    tags = getattr(case, "tags", None)
    if isinstance(tags, str) or tags is None:
        tag_list: Any = tags or []
    else:
        tag_list = [{"tag_title": getattr(t, "tag_title", t), "id": getattr(t, "id", None)} for t in tags]
    return {
        "case_id": case.case_id,
        "case_uuid": _text(getattr(case, "case_uuid", None)),
        "soc_id": getattr(case, "soc_id", None),
        "name": getattr(case, "name", None),
        "description": getattr(case, "description", None),
        "open_date": iso(getattr(case, "open_date", None)),
        "close_date": iso(getattr(case, "close_date", None)),
        "initial_date": iso(getattr(case, "initial_date", None)),
        "closing_note": getattr(case, "closing_note", None),
        "client_id": getattr(case, "client_id", None),
        "client": {"customer_name": getattr(client, "name", None),
                   "customer_id": getattr(client, "client_id", None)} if client is not None else None,
        "severity_id": getattr(case, "severity_id", None),
        "severity": {"severity_id": getattr(severity, "severity_id", None),
                     "severity_name": getattr(severity, "severity_name", None)} if severity is not None else None,
        "state_id": getattr(case, "state_id", None),
        "state": {"state_name": getattr(state, "state_name", None)} if state is not None else None,
        "classification": {"name": getattr(classification, "name", None)} if classification is not None else None,
        "status_id": getattr(case, "status_id", None),
        "user_id": getattr(case, "user_id", None),
        "owner_id": getattr(case, "owner_id", None),
        "tags": tag_list,
        "custom_attributes": getattr(case, "custom_attributes", None),
        "modification_history": getattr(case, "modification_history", None),
    }


def ioc_to_dict(ioc: Any) -> Dict[str, Any]:
    """An ``Ioc`` row as exported, plus its TLP *name* (TLP ids differ between installs)."""
    ioc_type = getattr(ioc, "ioc_type", None)
    tlp = getattr(ioc, "tlp", None)
    data = {
        "ioc_id": ioc.ioc_id,
        "ioc_uuid": _text(getattr(ioc, "ioc_uuid", None)),
        "ioc_value": getattr(ioc, "ioc_value", None),
        "ioc_type_id": getattr(ioc, "ioc_type_id", None),
        "ioc_type": {"type_name": getattr(ioc_type, "type_name", None),
                     "type_id": getattr(ioc_type, "type_id", None)} if ioc_type is not None else None,
        "ioc_description": getattr(ioc, "ioc_description", None),
        "ioc_tags": getattr(ioc, "ioc_tags", None),
        "user_id": getattr(ioc, "user_id", None),
        "ioc_tlp_id": getattr(ioc, "ioc_tlp_id", None),
        "custom_attributes": getattr(ioc, "custom_attributes", None),
        "modification_history": getattr(ioc, "modification_history", None),
    }
    if tlp is not None and getattr(tlp, "tlp_name", None):
        data["tlp"] = {"tlp_name": tlp.tlp_name, "tlp_id": getattr(tlp, "tlp_id", None)}
    if getattr(ioc, "case_id", None) is not None:
        data["case_id"] = ioc.case_id
    return data


def asset_to_dict(asset: Any) -> Dict[str, Any]:
    """A ``CaseAssets`` row as exported (type name under ``type``, as in IRIS's export)."""
    asset_type = getattr(asset, "asset_type", None)
    status = getattr(asset, "analysis_status", None)
    return {
        "asset_id": asset.asset_id,
        "asset_uuid": _text(getattr(asset, "asset_uuid", None)),
        "asset_name": getattr(asset, "asset_name", None),
        "asset_description": getattr(asset, "asset_description", None),
        "asset_domain": getattr(asset, "asset_domain", None),
        "asset_ip": getattr(asset, "asset_ip", None),
        "asset_info": getattr(asset, "asset_info", None),
        "asset_compromise_status_id": getattr(asset, "asset_compromise_status_id", None),
        "asset_type_id": getattr(asset, "asset_type_id", None),
        "type": getattr(asset_type, "asset_name", None) if asset_type is not None else None,
        "asset_tags": getattr(asset, "asset_tags", None),
        "case_id": getattr(asset, "case_id", None),
        "date_added": iso(getattr(asset, "date_added", None)),
        "date_update": iso(getattr(asset, "date_update", None)),
        "analysis_status": getattr(status, "name", status) if status is not None else None,
        "custom_attributes": getattr(asset, "custom_attributes", None),
        "modification_history": getattr(asset, "modification_history", None),
    }


# ------------------------------------------------------------------------------------------ look-ups
def case_by_id(case_id: Any) -> Any:
    return _first(model("Cases"), "case_id", case_id)


def ioc_by_id(ioc_id: Any) -> Any:
    return _first(model("Ioc"), "ioc_id", ioc_id)


def _unique_cases(cases: Iterable[Any]) -> List[Any]:
    seen: Dict[Any, Any] = {}
    for case in cases:
        if case is not None and case.case_id not in seen:
            seen[case.case_id] = case
    return [seen[k] for k in sorted(seen, key=str)]


def cases_of_ioc(ioc: Any) -> List[Any]:
    """Every case the IOC belongs to: ``ioc.case`` on 2.5, its ``IocLink`` rows on 2.4."""
    case_id = getattr(ioc, "case_id", None)
    if case_id is not None:
        return _unique_cases([getattr(ioc, "case", None) or case_by_id(case_id)])
    link = model("IocLink")
    if link is None:
        return []
    links = link.query.filter(link.ioc_id == ioc.ioc_id).all()
    return _unique_cases(getattr(row, "case", None) or case_by_id(row.case_id) for row in links)


def case_of_asset(asset: Any) -> Any:
    return getattr(asset, "case", None) or case_by_id(getattr(asset, "case_id", None))


def cases_of_alert(alert: Any) -> List[Any]:
    """The cases an alert was merged into (``Alert.cases``)."""
    return _unique_cases(getattr(alert, "cases", None) or [])


def case_contents(case: Any) -> Tuple[List[Any], List[Any]]:
    """(IOCs, assets) of a case, in id order, in a handful of queries whatever the case's size."""
    case_id = case.case_id
    ioc_cls = model("Ioc")
    link = model("IocLink")
    iocs: List[Any] = []
    if link is not None:
        ids = sorted({row.ioc_id for row in link.query.filter(link.case_id == case_id).all()})
        iocs = _all_in(ioc_cls, "ioc_id", ids) if ids and ioc_cls is not None else []
    elif ioc_cls is not None and hasattr(ioc_cls, "case_id"):
        iocs = ioc_cls.query.filter(ioc_cls.case_id == case_id).all()
    assets_cls = model("CaseAssets")
    assets = assets_cls.query.filter(assets_cls.case_id == case_id).all() if assets_cls is not None else []
    return sorted(iocs, key=lambda i: i.ioc_id), sorted(assets, key=lambda a: a.asset_id)


#: IRIS's own export of each record kind (``app/datamgmt/reporter/report_db.py``, the same on 2.4.20 and 2.5):
#: what ``GET /case/export`` returns for it, so hooks and exports convert the very same shape
_RECORD_EXPORTS = {"note": "export_case_notes_json", "event": "export_case_tm_json",
                   "task": "export_case_tasks_json", "evidence": "export_case_evidences_json"}
#: the attribute holding a record's case on IRIS's models (Notes, CasesEvent, CaseTasks, CaseReceivedFile)
_RECORD_CASE = {"note": "note_case_id", "event": "case_id", "task": "task_case_id", "evidence": "case_id"}


def record_case_id(item: Any, kind: str) -> Any:
    """The case of a note, timeline event, task or evidence handed to a hook."""
    return getattr(item, _RECORD_CASE[kind], None)


def record_id(item: Any, kind: str) -> Any:
    from iris_opencti_module.core.case_records import ID_FIELDS

    return object_id(item, ID_FIELDS[kind])


def records_of(case_id: Any, kinds: Iterable[str]) -> Optional[Dict[str, List[Dict[str, Any]]]]:
    """The case's records of ``kinds`` as IRIS exports them (export section -> rows); None when this IRIS has
    no such export (the caller then leaves the records out, and says so)."""
    try:
        report = importlib.import_module("app.datamgmt.reporter.report_db")
    except ImportError:
        return None
    from iris_opencti_module.core.case_records import SECTIONS

    out: Dict[str, List[Dict[str, Any]]] = {}
    for kind in kinds:
        export = getattr(report, _RECORD_EXPORTS[kind], None)
        if export is None:
            return None
        out[SECTIONS[kind]] = [dict(row) for row in export(case_id) or [] if isinstance(row, dict)]
    return out


#: IRIS's comment link tables (models.py, the same on 2.4.20 and 2.5): model and the column naming the object
_COMMENT_LINKS = {"ioc": ("IocComments", "comment_ioc_id"), "asset": ("AssetComments", "comment_asset_id"),
                  "event": ("EventComments", "comment_event_id"), "note": ("NotesComments", "comment_note_id"),
                  "task": ("TaskComments", "comment_task_id"), "evidence": ("EvidencesComments", "comment_evidence_id")}


def comment_target(comment_id: Any) -> Optional[Tuple[str, Any]]:
    """(kind, object id) a comment belongs to: the comment update hook hands the Comments row alone."""
    for kind, (name, column) in _COMMENT_LINKS.items():
        row = _first(model(name), "comment_id", comment_id)
        if row is not None:
            return kind, getattr(row, column, None)
    return None


def comment_to_dict(comment: Any) -> Dict[str, Any]:
    """A ``Comments`` row in the shape of the comment hooks' ``CommentSchema`` dump."""
    user = getattr(comment, "user", None) or _first(model("User"), "id", getattr(comment, "comment_user_id", None))
    login, name = getattr(user, "user", None), getattr(user, "name", None)
    return {"comment_id": object_id(comment, "comment_id"), "comment_text": _text(getattr(comment, "comment_text", "")),
            "comment_date": iso(getattr(comment, "comment_date", None)),
            "comment_update_date": iso(getattr(comment, "comment_update_date", None)),
            "comment_case_id": getattr(comment, "comment_case_id", None),
            "user": {"user_name": login or name}}


def asset_by_id(asset_id: Any) -> Any:
    return _first(model("CaseAssets"), "asset_id", asset_id)


def iocs_by_ids(ids: Iterable[Any]) -> List[Any]:
    """IOC models by id (an event's linked IOCs), in id order."""
    wanted = sorted({i for i in ids if i is not None}, key=str)
    ioc_cls = model("Ioc")
    if not wanted or ioc_cls is None:
        return []
    return sorted(_all_in(ioc_cls, "ioc_id", wanted), key=lambda i: i.ioc_id)


def user_of(obj: Any) -> Tuple[Optional[int], Optional[str], Optional[str]]:
    """(user id, login, display name) of whoever last wrote ``obj`` (IRIS sets ``user_id`` on every write)."""
    user_id = getattr(obj, "user_id", None)
    user = getattr(obj, "user", None)
    if user is None or (user_id is not None and getattr(user, "id", user_id) != user_id):
        user = _first(model("User"), "id", user_id)
    if user is None:
        return user_id, None, None
    return user_id, getattr(user, "user", None), getattr(user, "name", None)


def last_editor(case: Any) -> Optional[str]:
    """The user of the case's newest ``modification_history`` entry, else its creator's login."""
    history = getattr(case, "modification_history", None)
    if isinstance(history, dict) and history:
        try:
            newest = history[max(history, key=lambda k: float(k))]
        except (TypeError, ValueError):
            newest = None
        if isinstance(newest, dict) and newest.get("user"):
            return str(newest["user"])
    return user_of(case)[1]


def request_case_id() -> Optional[int]:
    """The case named by the current web request, for preload hooks (which run inside it).

    IRIS 2.4 passes the case as ``?cid=N``; the 2.5 API puts it in the route (``/api/v2/cases/<id>/...``).
    None outside a request, or when Flask is not there (tests, the command line).
    """
    try:
        from flask import has_request_context, request
    except ImportError:
        return None
    if not has_request_context():
        return None
    candidates: List[Any] = [request.args.get("cid")]
    view_args = getattr(request, "view_args", None) or {}
    candidates += [view_args.get(k) for k in ("case_identifier", "case_id", "cid")]
    for value in candidates:
        if value is not None and str(value).isdigit():
            return int(value)
    return None
