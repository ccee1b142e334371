"""Serialisers: the stored state in the exact shapes each IRIS route returns, per mode.

Sources (iris-web): ``IocSchema`` / ``IocSchemaForAPIV2`` / ``TlpSchema`` (``schema/marshables.py``),
``get_detailed_iocs`` and ``get_ioc_links`` (``datamgmt/case/case_iocs_db.py``), ``list_cases_dict``
(``datamgmt/manage/manage_cases_db.py``), ``export_case_json`` (``datamgmt/reporter/report_db.py``) and
``response_api_paginated`` (``blueprints/rest/endpoints.py``).
"""

from __future__ import annotations

import copy
import datetime
import math
from typing import Any, Dict, List, Optional

from .auth import ApiUser
from .state import SECTIONS, IrisState, utc_now_iso


def ioc_dump(state: IrisState, ioc_id: int) -> Optional[Dict[str, Any]]:
    """``IocSchema().dump(ioc)``: the export shape; 2.5 adds ``case_id``."""
    ioc = state.raw_ioc(ioc_id)
    if ioc is None:
        return None
    if state.mode == "2.5":
        cases = state.cases_of(ioc_id)
        ioc["case_id"] = cases[0] if cases else None
    return ioc


def _tlp(state: IrisState, tlp_id: Optional[int]) -> Optional[Dict[str, Any]]:
    if tlp_id is None or tlp_id not in state.tlps:
        return None
    name, colour = state.tlps[tlp_id]
    return {"tlp_id": tlp_id, "tlp_name": name, "tlp_bscolor": colour}


def _link_row(state: IrisState, case_id: int) -> Dict[str, Any]:
    case = state.cases[case_id]["case"]
    return {"case_id": case_id, "case_name": case.get("name"),
            "client_name": (case.get("client") or {}).get("customer_name")}


def _visible_cases(state: IrisState, user: ApiUser) -> List[int]:
    """``ac_get_fast_user_cases_access``: cases the user may at least read (links are limited to them)."""
    return [c for c in state.case_ids() if user.access_to(c) != "none"]


def ioc_links(state: IrisState, ioc_id: int, case_id: int, user: ApiUser) -> List[Dict[str, Any]]:
    """Other cases where this IOC shows up.

    2.4: the other cases the same IOC row is linked to.  2.5: cases holding another IOC with the same value
    and type.  Both only list cases the user can see.
    """
    with state.lock:
        visible = set(_visible_cases(state, user))
        ioc = state.iocs[ioc_id]
        if state.mode == "2.4":
            others = [c for c in state.links[ioc_id] if c != case_id]
        else:
            others = [state.links[other][0] for other, row in sorted(state.iocs.items())
                      if other != ioc_id and row["ioc_value"] == ioc["ioc_value"]
                      and row["ioc_type_id"] == ioc["ioc_type_id"]]
        return [_link_row(state, c) for c in others if c in visible]


def ioc_dump_v2(state: IrisState, ioc_id: int, user: ApiUser) -> Optional[Dict[str, Any]]:
    """``IocSchemaForAPIV2().dump(ioc)``: ``IocSchema`` fields plus nested ``tlp`` and ``link``."""
    with state.lock:
        ioc = ioc_dump(state, ioc_id)
        if ioc is None:
            return None
        ioc["tlp"] = _tlp(state, ioc["ioc_tlp_id"])
        ioc["link"] = ioc_links(state, ioc_id, ioc["case_id"], user)
        return ioc


def legacy_ioc_list(state: IrisState, case_id: int, user: ApiUser) -> Dict[str, Any]:
    """``GET /case/ioc/list`` data: ``{"ioc": [rows], "state": {...}|None}``.

    Rows are ``get_detailed_iocs`` tuples (``ioc_type`` is the type *name* here, unlike everywhere else) plus
    ``link`` and ``misp_link: None``, ordered by type name.  2.5 inner-joins the TLP table, so IOCs without a
    TLP are missing from its list.
    """
    with state.lock:
        rows = []
        for ioc_id in state.iocs_of(case_id):
            ioc = state.iocs[ioc_id]
            tlp = _tlp(state, ioc["ioc_tlp_id"])
            if tlp is None and state.mode == "2.5":
                continue
            rows.append({
                "ioc_id": ioc_id, "ioc_uuid": ioc["ioc_uuid"], "ioc_value": ioc["ioc_value"],
                "ioc_type_id": ioc["ioc_type_id"], "ioc_type": ioc["ioc_type"]["type_name"],
                "ioc_description": ioc["ioc_description"], "ioc_tags": ioc["ioc_tags"], "ioc_misp": ioc["ioc_misp"],
                "tlp_name": tlp["tlp_name"] if tlp else None, "tlp_bscolor": tlp["tlp_bscolor"] if tlp else None,
                "ioc_tlp_id": ioc["ioc_tlp_id"], "link": ioc_links(state, ioc_id, case_id, user), "misp_link": None,
            })
        rows.sort(key=lambda r: (r["ioc_type"], r["ioc_id"]))
        return {"ioc": copy.deepcopy(rows), "state": state.ioc_state(case_id)}


_SORTABLE = ("ioc_id", "ioc_value", "ioc_type_id", "ioc_tlp_id", "ioc_description", "ioc_tags", "ioc_uuid", "user_id")


def v2_ioc_page(state: IrisState, case_id: int, user: ApiUser, page: int, per_page: int,
                filters: Dict[str, Any], order_by: Optional[str], sort_dir: str) -> Dict[str, Any]:
    """``GET /api/v2/cases/<cid>/iocs``: Flask-SQLAlchemy pagination through ``response_api_paginated``.

    ``next_page`` is ``has_next`` (``True``) or ``None``, not a page number: that is what IRIS sends.
    Filters are exact matches on the stored columns.
    """
    with state.lock:
        ids = [i for i in state.iocs_of(case_id)
               if all(state.iocs[i].get(k) == v for k, v in filters.items())]
        if order_by in _SORTABLE:
            ids.sort(key=lambda i: (state.iocs[i].get(order_by) is None, str(state.iocs[i].get(order_by))),
                     reverse=sort_dir == "desc")
        page = max(page, 1)
        per_page = per_page if per_page > 0 else 20
        total = len(ids)
        pages = math.ceil(total / per_page) if total else 0
        chosen = ids[(page - 1) * per_page:page * per_page]
        return {"total": total, "data": [ioc_dump_v2(state, i, user) for i in chosen], "last_page": pages,
                "current_page": page, "next_page": True if page < pages else None}


def _asset_v2(row: Dict[str, Any], case_id: int) -> Dict[str, Any]:
    """An exported asset (``export_case_assets_json``: type and analysis status by name) as the v2 list
    shows it (``CaseAssetsSchema``: the type and status as objects)."""
    out = {k: row.get(k) for k in ("asset_id", "asset_uuid", "asset_name", "asset_description", "asset_domain",
                                   "asset_ip", "asset_info", "asset_tags", "asset_compromise_status_id",
                                   "custom_attributes", "date_added")}
    out.update(case_id=case_id, asset_type={"asset_name": row.get("type")}, alerts=[],
               analysis_status={"name": row["analysis_status"]} if row.get("analysis_status") else None)
    return out


def v2_asset_page(state: IrisState, case_id: int, page: int, per_page: int) -> Dict[str, Any]:
    """``GET /api/v2/cases/<cid>/assets``: every asset of the case, those without an analysis status too."""
    with state.lock:
        record = state.case_record(case_id)
        rows = [] if record is None else [_asset_v2(a, case_id) for a in record["assets"]] + copy.deepcopy(
            record.get("assets_v2", []))
    page = max(page, 1)
    per_page = per_page if per_page > 0 else 10
    pages = math.ceil(len(rows) / per_page) if rows else 0
    return {"total": len(rows), "data": rows[(page - 1) * per_page:page * per_page], "last_page": pages,
            "current_page": page, "next_page": True if page < pages else None}


def modules_list(state: IrisState) -> List[Dict[str, Any]]:
    """``GET /manage/modules/list`` data (``iris_modules_list`` in ``datamgmt/iris_engine/modules_db.py``, the
    same at v2.4.20 and on the 2.5 branch): the ``IrisModule`` columns it selects, ``name`` being the user who
    added the module, plus ``configured``. Read from source, not recorded from a running IRIS."""
    rows = []
    for index, module in enumerate(state.modules, start=1):
        rows.append({"id": module.get("id", index), "module_human_name": module["module_human_name"],
                     "has_pipeline": False, "module_version": module.get("module_version", "0.1.0"),
                     "interface_version": module.get("interface_version", "1.2.0"),
                     "date_added": "Thu, 03 Dec 2026 10:00:00 GMT", "name": "administrator",
                     "is_active": module.get("is_active", True), "module_config": module.get("module_config", []),
                     "configured": True})
    return rows


def tlp_list(state: IrisState) -> List[Dict[str, Any]]:
    """``GET /manage/tlp/list`` data: ``Tlp`` rows through ``AlchemyEncoder``.

    That encoder serialises every public attribute of the model instance; SQLAlchemy 2's declarative base
    adds ``registry``, which is not JSON-encodable and therefore comes out as ``null``.
    """
    return [{"registry": None, "tlp_bscolor": colour, "tlp_id": tlp_id, "tlp_name": name}
            for tlp_id, (name, colour) in sorted(state.tlps.items())]


def _us_date(value: Any) -> str:
    """``strftime("%m/%d/%Y")`` of an ISO date or datetime string; ``""`` when empty."""
    if not value:
        return ""
    return datetime.date.fromisoformat(str(value)[:10]).strftime("%m/%d/%Y")


def case_list(state: IrisState, user: ApiUser) -> List[Dict[str, Any]]:
    """``GET /manage/cases/list`` data: ``list_cases_dict`` rows the user can access, by open date."""
    with state.lock:
        rows = []
        for case_id in _visible_cases(state, user):
            case = state.cases[case_id]["case"]
            classification = case.get("classification")
            if isinstance(classification, dict):
                classification = classification.get("name")
            rows.append({
                "case_name": case.get("name"), "case_description": case.get("description"),
                "client_name": (case.get("client") or {}).get("customer_name"),
                "case_open_date": _us_date(case.get("open_date")), "case_close_date": _us_date(case.get("close_date")),
                "case_soc_id": case.get("soc_id"), "opened_by_user_id": case.get("user_id"),
                "opened_by": (case.get("user") or {}).get("user_login"), "owner_id": case.get("owner_id"),
                "owner": (case.get("owner") or {}).get("user_name"), "case_id": case_id,
                "case_uuid": case.get("case_uuid"), "classification_id": case.get("classification_id"),
                "classification": classification, "state_id": case.get("state_id"),
                "state_name": (case.get("state") or {}).get("state_name"),
                "access_level": user.access_level_value(case_id),
            })
        rows.sort(key=lambda r: (str(state.cases[r["case_id"]]["case"].get("open_date") or ""), r["case_id"]))
        return rows


def case_export(state: IrisState, case_id: int) -> Dict[str, Any]:
    """``GET /case/export`` data: the stored case and sections with the *current* IOCs."""
    with state.lock:
        record = state.case_record(case_id)
        if record is None:
            return {"errors": ["Invalid case number"]}
        out: Dict[str, Any] = {"case": record["case"]}
        for section in SECTIONS:
            if section == "assets":
                out["iocs"] = [ioc_dump(state, i) for i in state.iocs_of(case_id)]
            out[section] = record[section]
        out["export_date"] = utc_now_iso()
        return out
