"""IRIS-shaped objects for the module's tests, and the module driven as IRIS drives it.

:class:`IrisWorld` fills the stub's tables the way a fresh IRIS install does (TLPs, IOC types, asset types,
users) and builds cases, IOCs and assets with IRIS's field names, for IRIS 2.4 (``IocLink``) or 2.5
(``Ioc.case_id``). TLP ids deliberately differ from the defaults, as they do between real installs: the module
must go by TLP name. :class:`ModuleHarness` stores the module's configuration where IRIS keeps it and calls
``hooks_handler`` on a new instance each time, like IRIS's task wrapper.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple

from app.iris_engine.module_handler import module_handler
from app.models import models as iris_models
from app.models.authorization import User
from app.models.cases import Cases

from iris_opencti_module.core.case_records import COMMENTED_ID_FIELDS, ID_FIELDS, SECTIONS
from iris_opencti_module.hooks.state import close_states
from iris_opencti_module.IrisOpenCTIConfig import CONFIGURATION
from iris_opencti_module.transport.publisher import close_publishers

from .samples import ioc_type_names

TLP_IDS = {"red": 11, "amber": 12, "green": 13, "clear": 14, "amber+strict": 15}
ADMIN_ID = 1
ANALYST_ID = 2
SYNC_USER_ID = 7
SYNC_LOGIN = "opencti-sync"
ASSET_TYPES = ["Account", "Firewall", "Linux - Server", "Linux - Computer", "Windows - Computer", "Windows - Server",
               "Windows - DC", "Router", "Windows Account - AD"]


class IrisWorld:
    """An IRIS database (2.4 or 2.5) with what a fresh install holds."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        iris_models.reset(variant)
        for name, tlp_id in TLP_IDS.items():
            iris_models.Tlp(tlp_id=tlp_id, tlp_name=name).save()
        self.type_ids: Dict[str, int] = {}
        for n, type_name in enumerate(ioc_type_names()):
            self.type_ids[type_name] = 1 + n
            iris_models.IocType(type_id=1 + n, type_name=type_name).save()
        self.asset_type_ids = {name: 1 + n for n, name in enumerate(ASSET_TYPES)}
        for name, type_id in self.asset_type_ids.items():
            iris_models.AssetsType(asset_id=type_id, asset_name=name).save()
        iris_models.AnalysisStatus(id=1, name="Unspecified").save()
        iris_models.Severity(severity_id=4, severity_name="Low", severity_description="Low").save()
        iris_models.Severity(severity_id=6, severity_name="Critical", severity_description="Critical").save()
        iris_models.CaseState(state_id=3, state_name="Open").save()
        iris_models.Client(client_id=2, name="ProbeCustomer").save()
        User(id=ADMIN_ID, user="administrator", name="administrator").save()
        User(id=ANALYST_ID, user="alice", name="Alice Analyst").save()
        User(id=SYNC_USER_ID, user=SYNC_LOGIN, name="OpenCTI sync", is_service_account=True).save()
        self._tags: Dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------ cases
    def tag(self, title: str) -> Any:
        if title not in self._tags:
            self._tags[title] = iris_models.Tags(id=len(self._tags) + 1, tag_title=title).save()
        return self._tags[title]

    def case(self, case_id: int, name: str = "Ransomware precursor on build server", tags: Iterable[str] = (),
             sync_checkbox: Optional[bool] = None, tab: str = "OpenCTI", severity_id: int = 4,
             description: str = "Credential phishing against the finance team.") -> Any:
        attributes = None
        if sync_checkbox is not None:
            attributes = {tab: {"Sync to OpenCTI": {"type": "input_checkbox", "value": sync_checkbox,
                                                     "mandatory": False}}}
        return Cases(
            case_id=case_id, soc_id="SOC-3107", client_id=2, name="#%d - %s" % (case_id, name),
            description=description, open_date=dt.date(2026, 11, 28),
            initial_date=dt.datetime(2026, 11, 28, 6, 40, 10, 969816), user_id=ADMIN_ID, owner_id=ADMIN_ID,
            status_id=0, state_id=3, custom_attributes=attributes, case_uuid=uuid.uuid4(), severity_id=severity_id,
            modification_history={"1795848011.028658": {"user": "administrator", "user_id": 1, "action": "created"}},
            tags=[self.tag(t) for t in tags]).save()

    def set_checkbox(self, case: Any, value: bool, tab: str = "OpenCTI") -> None:
        case.custom_attributes = {tab: {"Sync to OpenCTI": {"type": "input_checkbox", "value": value,
                                                            "mandatory": False}}}

    def set_tags(self, case: Any, tags: Iterable[str]) -> None:
        case.tags = [self.tag(t) for t in tags]

    # ------------------------------------------------------------------------------------------- IOCs
    def ioc(self, ioc_id: int, value: str, type_name: str = "ip-dst", cases: Iterable[Any] = (), tlp: str = "amber",
            tags: str = "phishing", description: str = "", user_id: int = ANALYST_ID) -> Any:
        cases = list(cases)
        values: Dict[str, Any] = {
            "ioc_id": ioc_id, "ioc_uuid": uuid.uuid4(), "ioc_value": value, "ioc_type_id": self.type_ids[type_name],
            "ioc_description": description, "ioc_tags": tags, "user_id": user_id, "ioc_tlp_id": TLP_IDS[tlp],
            "custom_attributes": None, "ioc_enrichment": None, "modification_history": None}
        if self.variant == "2.5":
            values["case_id"] = cases[0].case_id if cases else None
        ioc = iris_models.Ioc(**values).save()
        if self.variant == "2.4":
            for case in cases:
                self.link(ioc, case)
        return ioc

    def link(self, ioc: Any, case: Any) -> None:
        assert self.variant == "2.4", "IocLink exists on IRIS 2.4 only"
        rows = iris_models.ROWS.get("ioc_link", [])
        iris_models.IocLink(ioc_link_id=len(rows) + 1, ioc_id=ioc.ioc_id, case_id=case.case_id).save()

    def unlink(self, ioc: Any, case: Any) -> None:
        for row in list(iris_models.ROWS.get("ioc_link", [])):
            if row.ioc_id == ioc.ioc_id and row.case_id == case.case_id:
                row.delete()

    def delete(self, obj: Any) -> None:
        if self.variant == "2.4" and obj.__tablename__ == "ioc":
            for row in list(iris_models.ROWS.get("ioc_link", [])):
                if row.ioc_id == obj.ioc_id:
                    row.delete()
        obj.delete()

    def tlp_id(self, name: str) -> int:
        return TLP_IDS[name]

    # ----------------------------------------------------------------------------------------- assets
    def asset(self, asset_id: int, case: Any, name: str, type_name: str = "Windows - Computer", ip: str = "",
              domain: str = "", compromised: int = 1, tags: Optional[str] = None, user_id: int = ANALYST_ID) -> Any:
        return iris_models.CaseAssets(
            asset_id=asset_id, asset_uuid=uuid.uuid4(), asset_name=name, asset_description=f"host {name}",
            asset_domain=domain, asset_ip=ip, asset_compromise_status_id=compromised,
            asset_type_id=self.asset_type_ids[type_name], asset_tags=tags, case_id=case.case_id,
            date_added=dt.datetime(2026, 11, 28, 6, 41, 9, 673078), user_id=user_id, analysis_status_id=1).save()

    def record(self, kind: str, case: Any, row: Dict[str, Any]) -> Any:
        """A note, timeline event, task or evidence: ``row`` as IRIS's case export shows it (kept for the
        stub's ``report_db``), and the model object the postload hook hands over."""
        from app.datamgmt.reporter import report_db

        rows = report_db.RECORDS.setdefault(case.case_id, {}).setdefault(SECTIONS[kind], [])
        key = ID_FIELDS[kind]
        rows[:] = [r for r in rows if r.get(key) != row[key]] + [dict(row)]
        if kind == "note":
            return iris_models.Notes(note_id=row["note_id"], note_title=row.get("note_title"),
                                     note_content=row.get("note_content"), note_case_id=case.case_id).save()
        if kind == "event":
            from app.models.cases import CasesEvent

            return CasesEvent(event_id=row["event_id"], event_title=row.get("event_title"), case_id=case.case_id,
                              user_id=ANALYST_ID).save()
        if kind == "task":
            return iris_models.CaseTasks(id=row["id"], task_title=row.get("task_title"),
                                         task_case_id=case.case_id).save()
        return iris_models.CaseReceivedFile(id=row["id"], filename=row.get("filename"), case_id=case.case_id,
                                            user_id=ANALYST_ID).save()

    def comment(self, kind: str, target_id: int, case: Any, comment_id: int, text: str) -> Tuple[Any, Any]:
        """A comment on an IOC, asset or record: (what on_postload_<kind>_commented hands over, a dict of schema
        dumps; the Comments row the comment update hook hands over), as seen on real 2.4.20 and 2.5."""
        link = {"ioc": "IocComments", "asset": "AssetComments", "event": "EventComments", "note": "NotesComments",
                "task": "TaskComments", "evidence": "EvidencesComments"}[kind]
        row = iris_models.Comments(comment_id=comment_id, comment_text=text, comment_user_id=ANALYST_ID,
                                   comment_case_id=case.case_id,
                                   comment_date=dt.datetime(2026, 12, 3, 18, 45, 46, 118423)).save()
        getattr(iris_models, link)(id=comment_id, comment_id=comment_id, **{
            getattr(iris_models, link)._columns[2]: target_id}).save()
        dump = {"comment": {"comment_id": comment_id, "comment_text": text, "comment_case_id": case.case_id,
                            "comment_date": "2026-12-03T18:45:46.118423",
                            "user": {"id": ANALYST_ID, "user_name": "analyst", "user_login": "analyst"}},
                kind: {COMMENTED_ID_FIELDS[kind]: target_id}}
        return dump, row

    def drop_record(self, kind: str, case: Any, record_id: int) -> None:
        """The record deleted in IRIS (what the export no longer shows)."""
        from app.datamgmt.reporter import report_db

        key = ID_FIELDS[kind]
        rows = report_db.RECORDS.get(case.case_id, {}).get(SECTIONS[kind], [])
        rows[:] = [r for r in rows if r.get(key) != record_id]

    def alert(self, alert_id: int, cases: List[Any]) -> Any:
        return iris_models.Alert(alert_id=alert_id, alert_title="alert %d" % alert_id, cases=cases).save()


def config_list(values: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The configuration as IRIS stores it: the module's parameter list, each with the admin's ``value``."""
    unknown = set(values) - {p["param_name"] for p in CONFIGURATION}
    assert not unknown, unknown
    out = []
    for param in CONFIGURATION:
        entry = dict(param)
        entry["value"] = values.get(param["param_name"], param["default"])
        out.append(entry)
    return out


class ModuleHarness:
    """Configure the module and call its hooks the way IRIS's worker does."""

    module_id = 42

    def __init__(self, rabbit: Any, spool_dir: str) -> None:
        from iris_opencti_module.IrisOpenCTIInterface import IrisOpenCTIInterface

        self.cls = IrisOpenCTIInterface
        self.rabbit = rabbit
        self.queue = rabbit.new_queue()
        self.spool_dir = spool_dir
        module_handler.reset()
        self.values: Dict[str, Any] = {}
        self.configure(amqp_url=rabbit.url, queue=self.queue, spool_dir=spool_dir, iris_url="https://iris.example",
                       sync_user=SYNC_LOGIN)

    def configure(self, **values: Any) -> None:
        self.values.update(values)
        module_handler.MODULE_CONFIGS[self.cls._module_name] = config_list(self.values)

    def instance(self) -> Any:
        return self.cls()

    def run(self, hook: str, *items: Any, ui: Optional[str] = None) -> Any:
        """One hook call on a new instance (IRIS always passes a list)."""
        return self.instance().hooks_handler(hook, ui, data=list(items))

    def messages(self) -> List[Dict[str, Any]]:
        return self.rabbit.envelopes(self.queue)

    def close(self) -> None:
        close_publishers()
        close_states()
        module_handler.reset()
