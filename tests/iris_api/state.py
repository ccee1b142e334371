"""What the test server holds: cases (as exported), IOCs, and which case each IOC belongs to.

The two IRIS generations differ in exactly the way clients care about:

* 2.4: one IOC row can be linked to several cases (``IocLink``); adding a value+type that already exists links
  the existing IOC ("IOC already existed in DB"), so an update through one case shows in every case.
* 2.5: every IOC has a single ``case_id``; the same value+type in another case is another IOC.

IOCs are stored in ``IocSchema`` dump form (the shape of the real exports) without ``case_id``; views add it
in 2.5.  Every public method takes the lock, so tests may inspect or mutate while requests are served.
"""

from __future__ import annotations

import copy
import datetime
import threading
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from .catalog import IocType
from .updates import ServerError, validate_update

SECTIONS = ("evidences", "timeline", "assets", "tasks", "comments", "notes")
IOC_FIELDS = ("ioc_value", "ioc_enrichment", "ioc_type", "ioc_id", "ioc_uuid", "ioc_type_id", "ioc_description",
              "ioc_tags", "user_id", "ioc_misp", "ioc_tlp_id", "custom_attributes", "modification_history")


def utc_now_iso() -> str:
    """Naive UTC ISO timestamp, as IRIS's ``datetime.utcnow().isoformat()``."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat()


def export_data(export: Dict[str, Any]) -> Dict[str, Any]:
    """The ``data`` part of a ``/case/export`` answer; accepts the whole answer or the part itself."""
    if "case" not in export and isinstance(export.get("data"), dict):
        export = export["data"]
    if not isinstance(export.get("case"), dict) or "case_id" not in export["case"]:
        raise ValueError("not a case export: expected {'case': {'case_id': ...}, 'iocs': [...], ...}")
    return export


def _new_case(case_id: int, name: str, user_id: int, user_name: str) -> Dict[str, Any]:
    """A case shaped like ``export_caseinfo_json`` output (see the real exports in tests/data)."""
    now = utc_now_iso()
    user = {"id": user_id, "user_name": user_name, "user_login": user_name, "user_email": f"{user_name}@localhost"}
    return {
        "client": {"customer_name": "IrisTestCustomer", "customer_description": "", "customer_sla": "",
                   "customer_id": 1, "client_uuid": str(uuid.uuid4()), "creation_date": now,
                   "last_update_date": now, "custom_attributes": None},
        "owner": dict(user), "classification": None,
        "state": {"state_name": "Open", "state_description": "Case is open", "state_id": 3, "protected": True},
        "tags": [], "user": dict(user), "reviewer": None, "review_status": None,
        "severity": {"severity_id": 4, "severity_name": "Low", "severity_description": "Low"},
        "status_name": "unknown", "protagonists": [], "alerts": [], "case_id": case_id, "soc_id": "",
        "client_id": 1, "name": f"#{case_id} - {name}", "description": "", "open_date": now[:10],
        "close_date": None, "initial_date": now, "closing_note": None, "user_id": user_id, "owner_id": user_id,
        "status_id": 0, "state_id": 3, "custom_attributes": None, "case_uuid": str(uuid.uuid4()),
        "classification_id": None, "reviewer_id": None, "review_status_id": None, "severity_id": 4,
        "modification_history": {str(datetime.datetime.now().timestamp()): {
            "user": user_name, "user_id": user_id, "action": "created"}},
        "note_directories": [],
    }


class IrisState:
    """Thread-safe store of cases and IOCs for one server mode."""

    def __init__(self, mode: str, ioc_types: Dict[int, IocType], tlps: Iterable[Tuple[int, str, str]],
                 on_change: Optional[Callable[[], None]] = None) -> None:
        self.mode = mode
        self.lock = threading.RLock()
        self.ioc_types = dict(ioc_types)
        self.tlps: Dict[int, Tuple[str, str]] = {int(i): (name, colour) for i, name, colour in tlps}
        self.cases: Dict[int, Dict[str, Any]] = {}  # case_id -> {"case": ..., "evidences": [...], ...}
        self.iocs: Dict[int, Dict[str, Any]] = {}  # ioc_id -> IocSchema dump without case_id
        self.links: Dict[int, List[int]] = {}  # ioc_id -> case ids (exactly one in 2.5)
        self.comments: Dict[int, List[Dict[str, Any]]] = {}  # ioc_id -> its comments, oldest first
        self.ioc_states: Dict[int, Dict[str, Any]] = {}  # case_id -> {"object_state", "object_last_update"}
        #: IRIS's registered modules (``IrisModule`` rows): {"module_human_name", "module_config", ...}
        self.modules: List[Dict[str, Any]] = []
        self._on_change = on_change

    # -- internal helpers (lock held) -----------------------------------------------------------------------
    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _bump_ioc_state(self, case_id: int) -> None:
        """``update_ioc_state``: a per-case counter the UI polls; created at 0, +1 on every IOC change."""
        current = self.ioc_states.get(case_id)
        count = 0 if current is None else current["object_state"] + 1
        self.ioc_states[case_id] = {"object_state": count, "object_last_update": utc_now_iso()}

    def _type(self, ioc_type: Union[int, str]) -> IocType:
        if isinstance(ioc_type, int):
            if ioc_type in self.ioc_types:
                return self.ioc_types[ioc_type]
        else:
            for candidate in self.ioc_types.values():
                if candidate.type_name == ioc_type:
                    return candidate
        raise ValueError(f"unknown IOC type {ioc_type!r}")

    def _require_case(self, case_id: int) -> None:
        if case_id not in self.cases:
            raise KeyError(f"no case {case_id}")

    def _require_ioc(self, ioc_id: int) -> None:
        if ioc_id not in self.iocs:
            raise KeyError(f"no IOC {ioc_id}")

    def _find(self, value: str, type_id: int, case_id: Optional[int] = None) -> Optional[int]:
        for ioc_id, ioc in self.iocs.items():
            if ioc["ioc_value"] == value and ioc["ioc_type_id"] == type_id and (
                    case_id is None or case_id in self.links[ioc_id]):
                return ioc_id
        return None

    def _link(self, ioc_id: int, case_id: int) -> None:
        cases = self.links.setdefault(ioc_id, [])
        if case_id not in cases:
            if cases and self.mode == "2.5":
                raise ValueError(f"IOC {ioc_id} already belongs to case {cases[0]}: IRIS 2.5 IOCs have one case")
            cases.append(case_id)
            self._bump_ioc_state(case_id)

    # -- seeding and test set-up ----------------------------------------------------------------------------
    def seed(self, export: Dict[str, Any]) -> int:
        """Load one case export (case, IOCs, assets ...); returns the case id."""
        data = copy.deepcopy(export_data(export))
        with self.lock:
            case_id = int(data["case"]["case_id"])
            if case_id in self.cases:
                raise ValueError(f"case {case_id} is already loaded")
            if self.mode == "2.5":
                for ioc in data.get("iocs") or []:
                    if int(ioc["ioc_id"]) in self.iocs:
                        raise ValueError(f"IOC {ioc['ioc_id']} of case {case_id} already belongs to another case")
            self.cases[case_id] = {"case": data["case"], **{s: data.get(s) or [] for s in SECTIONS}}
            for ioc in data.get("iocs") or []:
                ioc_id = int(ioc["ioc_id"])
                if isinstance(ioc.get("ioc_type"), dict):
                    self.ioc_types.setdefault(int(ioc["ioc_type"]["type_id"]), IocType.from_dict(ioc["ioc_type"]))
                if ioc_id not in self.iocs:  # 2.4: the same row exported from two cases is one IOC
                    self.iocs[ioc_id] = {k: ioc.get(k) for k in IOC_FIELDS}
                self._link(ioc_id, case_id)
            self._changed()
            return case_id

    def add_case(self, case_id: Optional[int] = None, name: str = "Test case", user_id: int = 1,
                 user_name: str = "administrator", **fields: Any) -> Dict[str, Any]:
        """Create an empty case (export shape); ``fields`` override top-level case keys."""
        with self.lock:
            if case_id is None:
                case_id = max(self.cases, default=0) + 1
            if case_id in self.cases:
                raise ValueError(f"case {case_id} already exists")
            case = _new_case(case_id, name, user_id, user_name)
            case.update(fields)
            self.cases[case_id] = {"case": case, **{s: [] for s in SECTIONS}}
            self._changed()
            return copy.deepcopy(case)

    def add_ioc(self, case_id: int, ioc_value: str, ioc_type: Union[int, str] = "ip-dst", *, ioc_tlp_id: int = 2,
                ioc_tags: Optional[str] = "", ioc_description: Optional[str] = "", user_id: int = 1,
                ioc_id: Optional[int] = None, custom_attributes: Any = None, ioc_enrichment: Any = None) -> int:
        """Add an IOC to a case as an analyst would; returns its id.

        2.4 links an existing IOC with the same value and type instead of creating one (as IRIS does);
        2.5 refuses a duplicate value+type within the case ("IOC with same value and type already exists").
        """
        with self.lock:
            self._require_case(case_id)
            kind = self._type(ioc_type)
            if self.mode == "2.4":
                existing = self._find(ioc_value, kind.type_id)
                if existing is not None:
                    self._link(existing, case_id)
                    self._changed()
                    return existing
            elif self._find(ioc_value, kind.type_id, case_id) is not None:
                raise ValueError("IOC with same value and type already exists")
            if ioc_id is None:
                ioc_id = max(self.iocs, default=0) + 1
            if ioc_id in self.iocs:
                raise ValueError(f"IOC {ioc_id} already exists")
            self.iocs[ioc_id] = {
                "ioc_value": ioc_value, "ioc_enrichment": ioc_enrichment, "ioc_type": kind.as_dict(),
                "ioc_id": ioc_id, "ioc_uuid": str(uuid.uuid4()), "ioc_type_id": kind.type_id,
                "ioc_description": ioc_description, "ioc_tags": ioc_tags, "user_id": user_id, "ioc_misp": None,
                "ioc_tlp_id": ioc_tlp_id, "custom_attributes": custom_attributes, "modification_history": None,
            }
            self._link(ioc_id, case_id)
            self._changed()
            return ioc_id

    def add_asset_v2(self, case_id: int, asset_name: str, asset_type: str = "Windows - Computer",
                     asset_type_id: int = 9, **fields: Any) -> int:
        """An asset created through 2.5's ``POST /api/v2/cases/<cid>/assets``: it has no analysis status, so
        ``/case/export`` leaves it out (its query joins ``AnalysisStatus``) while the v2 asset list shows it
        (seen on a real 2.5). ``fields`` set ``asset_ip``, ``asset_domain``, ``asset_tags`` ...; returns its id."""
        with self.lock:
            self._require_case(case_id)
            record = self.cases[case_id]
            asset_id = 1 + max([int(a["asset_id"]) for r in self.cases.values()
                                for a in (r["assets"] or []) + r.get("assets_v2", [])], default=0)
            now = utc_now_iso()
            row = {"asset_name": asset_name, "asset_enrichment": None,
                   "asset_type": {"asset_name": asset_type, "asset_id": asset_type_id},
                   "alerts": [], "analysis_status": None, "asset_id": asset_id, "asset_uuid": str(uuid.uuid4()),
                   "asset_description": None, "asset_domain": None, "asset_ip": None, "asset_info": None,
                   "asset_compromise_status_id": None, "asset_type_id": asset_type_id, "asset_tags": None,
                   "case_id": case_id, "date_added": now, "date_update": now, "user_id": 1,
                   "analysis_status_id": None, "custom_attributes": None, "modification_history": None}
            row.update(fields)
            record.setdefault("assets_v2", []).append(row)
            self._changed()
            return asset_id

    def comments_of(self, ioc_id: int) -> List[Dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.comments.get(ioc_id, []))

    def add_comment(self, ioc_id: int, case_id: int, text: str, user: Any) -> Dict[str, Any]:
        """A comment on an IOC, in the shape ``CommentSchema`` dumps it (recorded on real 2.4.20 and 2.5)."""
        with self.lock:
            rows = self.comments.setdefault(ioc_id, [])
            now = utc_now_iso()
            comment = {"user": {"id": user.id, "user_name": user.user_name, "user_login": user.user_name,
                                "user_email": None},
                       "comment_id": 1 + sum(len(c) for c in self.comments.values()),
                       "comment_uuid": str(uuid.uuid4()), "comment_text": text, "comment_date": now,
                       "comment_update_date": now, "comment_user_id": user.id, "comment_case_id": case_id,
                       "comment_alert_id": None}
            rows.append(comment)
            self._changed()
            return copy.deepcopy(comment)

    def link_ioc(self, ioc_id: int, case_id: int) -> None:
        """2.4 only: show an existing IOC in another case too (what re-adding the same value does)."""
        with self.lock:
            self._require_ioc(ioc_id)
            self._require_case(case_id)
            self._link(ioc_id, case_id)
            self._changed()

    def edit_ioc(self, ioc_id: int, **fields: Any) -> None:
        """Change an IOC behind the API's back (an analyst in the UI): no validation, ``user_id`` kept."""
        with self.lock:
            self._require_ioc(ioc_id)
            ioc = self.iocs[ioc_id]
            unknown = set(fields) - set(IOC_FIELDS)
            if unknown:
                raise ValueError(f"unknown IOC fields {sorted(unknown)}")
            if "ioc_type_id" in fields:
                fields["ioc_type"] = self._type(int(fields["ioc_type_id"])).as_dict()
            ioc.update(copy.deepcopy(fields))
            for case_id in self.links[ioc_id]:
                self._bump_ioc_state(case_id)
            self._changed()

    def delete_ioc(self, ioc_id: int, case_id: Optional[int] = None) -> None:
        """Remove an IOC from one case (2.4: it survives while linked elsewhere) or, without case, entirely."""
        with self.lock:
            self._require_ioc(ioc_id)
            cases = self.links[ioc_id]
            for cid in list(cases) if case_id is None else [case_id]:
                if cid in cases:
                    cases.remove(cid)
                    self._bump_ioc_state(cid)
            if not cases:
                del self.iocs[ioc_id], self.links[ioc_id]
            self._changed()

    def delete_case(self, case_id: int) -> None:
        """Remove a case and unlink its IOCs (deleting those left without a case)."""
        with self.lock:
            self._require_case(case_id)
            for ioc_id in [i for i, cases in self.links.items() if case_id in cases]:
                self.delete_ioc(ioc_id, case_id)
            del self.cases[case_id]
            self.ioc_states.pop(case_id, None)
            self._changed()

    # -- the API's update ------------------------------------------------------------------------------------
    def update_ioc(self, ioc_id: int, changes: Any, user_id: int, state_case_id: int) -> None:
        """Apply a validated update body; raises ``DataError`` (400) or ``ServerError`` (500).

        ``user_id`` becomes the IOC's ``user_id`` (IRIS: ``ioc_sc.user_id = current_user.id``).
        """
        with self.lock:
            self._require_ioc(ioc_id)
            clean = validate_update(changes, self.ioc_types)
            ioc = self.iocs[ioc_id]
            type_id = clean.get("ioc_type_id", ioc["ioc_type_id"])
            if not type_id or type_id not in self.ioc_types:
                raise ServerError(f"Not a valid IOC type ({type_id!r}): BusinessProcessingError wrapped as "
                                  "'Unexpected error server-side'")
            tlp_id = clean.get("ioc_tlp_id", ioc["ioc_tlp_id"])
            if tlp_id is not None and tlp_id not in self.tlps:
                raise ServerError(f"ioc_tlp_id {tlp_id} violates the foreign key to the tlp table (IntegrityError)")
            ioc.update(clean)
            ioc["ioc_type"] = self.ioc_types[type_id].as_dict()
            ioc["user_id"] = user_id
            self._bump_ioc_state(state_case_id)
            self._changed()

    # -- queries (copies) ------------------------------------------------------------------------------------
    def case_ids(self) -> List[int]:
        """Existing case ids, ascending."""
        with self.lock:
            return sorted(self.cases)

    def cases_of(self, ioc_id: int) -> List[int]:
        """Cases an IOC is in (one in 2.5); empty for an unknown IOC."""
        with self.lock:
            return list(self.links.get(ioc_id, []))

    def iocs_of(self, case_id: int) -> List[int]:
        """IOC ids of a case, ascending."""
        with self.lock:
            return sorted(i for i, cases in self.links.items() if case_id in cases)

    def raw_ioc(self, ioc_id: int) -> Optional[Dict[str, Any]]:
        """A copy of the stored IOC (no ``case_id``), ``None`` if unknown."""
        with self.lock:
            ioc = self.iocs.get(ioc_id)
            return copy.deepcopy(ioc) if ioc is not None else None

    def case_record(self, case_id: int) -> Optional[Dict[str, Any]]:
        """A copy of ``{"case": ..., "evidences": ..., ...}`` for one case, ``None`` if unknown."""
        with self.lock:
            record = self.cases.get(case_id)
            return copy.deepcopy(record) if record is not None else None

    def ioc_state(self, case_id: int) -> Optional[Dict[str, Any]]:
        """The case's IOC state counter (``None`` before its first IOC)."""
        with self.lock:
            state = self.ioc_states.get(case_id)
            return dict(state) if state is not None else None
