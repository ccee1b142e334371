"""IRIS's models (``app/models/models.py`` in iris-web), with their real field names, held in memory.

Only what the module reads is modelled. Relationships are properties that look rows up by foreign key, as
SQLAlchemy's lazy loading would. ``set_variant`` switches the IOC model between IRIS 2.4 (no ``case_id``;
``IocLink`` rows) and IRIS 2.5 (``case_id`` and ``case``; ``IocLink`` does not exist).
"""

import sys
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional

#: table name -> rows
ROWS: Dict[str, List[Any]] = {}
#: which IRIS the stub currently is
VARIANT = "2.4"
#: how many queries the module ran (the adapter must not run one per IOC)
QUERY_COUNT = [0]


#: (table, column) -> (row count when built, value -> rows): equality look-ups by key, as a database index does
_INDEXES: Dict[Any, Any] = {}


class Predicate:
    def __init__(self, test: Callable[[Any], bool], column: str = "", values: Optional[set] = None) -> None:
        self.test = test
        self.column = column
        self.values = values


class Column:
    """A class-level column: ``Model.col == value`` and ``Model.col.in_(values)`` build filters."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: Any) -> Predicate:  # type: ignore[override]
        return Predicate(lambda row: getattr(row, self.name, None) == other, self.name, {other})

    def in_(self, values: Iterable[Any]) -> Predicate:
        wanted = set(values)
        return Predicate(lambda row: getattr(row, self.name, None) in wanted, self.name, wanted)

    __hash__ = object.__hash__


class Query:
    """``Model.query.filter(...).all()/.first()`` over the in-memory rows."""

    def __init__(self, model: type, predicates: tuple = ()) -> None:
        self.model = model
        self.predicates = predicates

    def filter(self, *predicates: Predicate) -> "Query":
        return Query(self.model, self.predicates + predicates)

    def filter_by(self, **values: Any) -> "Query":
        return self.filter(*(getattr(self.model, k) == v for k, v in values.items()))

    def all(self) -> List[Any]:
        QUERY_COUNT[0] += 1
        table = self.model.__tablename__
        rows = ROWS.get(table, [])
        first = self.predicates[0] if self.predicates else None
        if first is not None and first.values is not None and first.column == self.model._primary_key:
            # primary keys never change, so an index on them cannot go stale
            index = _index(table, first.column, rows)
            rows = [r for value in first.values for r in index.get(value, ())]
        return [r for r in rows if all(p.test(r) for p in self.predicates)]

    def first(self) -> Optional[Any]:
        rows = self.all()
        return rows[0] if rows else None


def _index(table: str, column: str, rows: List[Any]) -> Dict[Any, List[Any]]:
    """Rebuilt whenever the table changed (rows are only added or deleted through save/delete)."""
    key = (table, column)
    cached = _INDEXES.get(key)
    if cached is None or cached[0] != _VERSIONS.get(table, 0):
        index: Dict[Any, List[Any]] = {}
        for row in rows:
            index.setdefault(getattr(row, column, None), []).append(row)
        cached = _INDEXES[key] = (_VERSIONS.get(table, 0), index)
    return cached[1]


_VERSIONS: Dict[str, int] = {}


class _QueryProperty:
    def __get__(self, instance: Any, owner: type) -> Query:
        return Query(owner)


class Model:
    """Base of the stub models: keyword construction, ``save()`` stores the row."""

    __tablename__ = ""
    _columns: tuple = ()
    _primary_key = ""
    query = _QueryProperty()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._columns:
            setattr(cls, name, Column(name))
        if cls._columns and "_primary_key" not in cls.__dict__:
            cls._primary_key = cls._columns[0]

    def __init__(self, **values: Any) -> None:
        for name in self._columns:
            setattr(self, name, values.pop(name, None))
        for name, value in values.items():
            setattr(self, name, value)

    def save(self) -> "Model":
        ROWS.setdefault(self.__tablename__, []).append(self)
        _VERSIONS[self.__tablename__] = _VERSIONS.get(self.__tablename__, 0) + 1
        return self

    def delete(self) -> None:
        ROWS[self.__tablename__].remove(self)
        _VERSIONS[self.__tablename__] = _VERSIONS.get(self.__tablename__, 0) + 1


def _lookup(model_name: str, column: str, attribute: str) -> property:
    def get(self: Any) -> Any:
        value = getattr(self, attribute, None)
        if value is None:
            return None
        model = getattr(sys.modules[__name__], model_name, None) or _resolve(model_name)
        return model.query.filter(getattr(model, column) == value).first()
    return property(get)


def _resolve(name: str) -> type:
    from app.models import authorization, cases
    return getattr(cases, name, None) or getattr(authorization, name)


class Tlp(Model):
    __tablename__ = "tlp"
    _columns = ("tlp_id", "tlp_name", "tlp_bscolor")


class IocType(Model):
    __tablename__ = "ioc_type"
    _columns = ("type_id", "type_name", "type_description", "type_taxonomy", "type_validation_regex",
                "type_validation_expect")


class AssetsType(Model):
    __tablename__ = "assets_type"
    _columns = ("asset_id", "asset_name", "asset_description")


class AnalysisStatus(Model):
    __tablename__ = "analysis_status"
    _columns = ("id", "name")


class Tags(Model):
    __tablename__ = "tags"
    _columns = ("id", "tag_title", "tag_namespace")


class Severity(Model):
    __tablename__ = "severities"
    _columns = ("severity_id", "severity_name", "severity_description")


class CaseState(Model):
    __tablename__ = "case_state"
    _columns = ("state_id", "state_name", "state_description")


class Client(Model):
    __tablename__ = "client"
    _columns = ("client_id", "client_uuid", "name", "description", "sla", "custom_attributes")


_IOC_COLUMNS = ("ioc_id", "ioc_uuid", "ioc_value", "ioc_type_id", "ioc_description", "ioc_tags", "user_id",
                "ioc_misp", "ioc_tlp_id", "custom_attributes", "ioc_enrichment", "modification_history")


class Ioc24(Model):
    """IRIS 2.4's ``Ioc``: no ``case_id``; cases come from ``IocLink``."""

    __tablename__ = "ioc"
    _columns = _IOC_COLUMNS
    user = _lookup("User", "id", "user_id")
    tlp = _lookup("Tlp", "tlp_id", "ioc_tlp_id")
    ioc_type = _lookup("IocType", "type_id", "ioc_type_id")


class Ioc25(Model):
    """IRIS 2.5's ``Ioc``: ``case_id`` and ``case``."""

    __tablename__ = "ioc"
    _columns = _IOC_COLUMNS + ("case_id",)
    user = _lookup("User", "id", "user_id")
    tlp = _lookup("Tlp", "tlp_id", "ioc_tlp_id")
    ioc_type = _lookup("IocType", "type_id", "ioc_type_id")
    case = _lookup("Cases", "case_id", "case_id")


Ioc24.__name__ = Ioc24.__qualname__ = "Ioc"
Ioc25.__name__ = Ioc25.__qualname__ = "Ioc"
Ioc: type = Ioc24


class IocLink(Model):
    """IRIS 2.4 only: one row per (IOC, case)."""

    __tablename__ = "ioc_link"
    _columns = ("ioc_link_id", "ioc_id", "case_id")
    ioc = _lookup("Ioc", "ioc_id", "ioc_id")
    case = _lookup("Cases", "case_id", "case_id")


class CaseAssets(Model):
    __tablename__ = "case_assets"
    _columns = ("asset_id", "asset_uuid", "asset_name", "asset_description", "asset_domain", "asset_ip", "asset_info",
                "asset_compromise_status_id", "asset_type_id", "asset_tags", "case_id", "date_added", "date_update",
                "user_id", "analysis_status_id", "custom_attributes", "asset_enrichment", "modification_history")
    case = _lookup("Cases", "case_id", "case_id")
    user = _lookup("User", "id", "user_id")
    asset_type = _lookup("AssetsType", "asset_id", "asset_type_id")
    analysis_status = _lookup("AnalysisStatus", "id", "analysis_status_id")


class Notes(Model):
    """``app.models.models.Notes`` as the postload note hooks hand it (columns seen on real 2.4.20 and 2.5)."""
    __tablename__ = "notes"
    _columns = ("note_id", "note_uuid", "note_title", "note_content", "note_user", "note_creationdate",
                "note_lastupdate", "note_case_id", "custom_attributes", "directory_id", "modification_history")


class CaseTasks(Model):
    __tablename__ = "case_tasks"
    _columns = ("id", "task_uuid", "task_title", "task_description", "task_tags", "task_open_date",
                "task_close_date", "task_last_update", "task_userid_open", "task_userid_close", "task_userid_update",
                "task_status_id", "task_case_id", "custom_attributes", "modification_history")


class CaseReceivedFile(Model):
    __tablename__ = "case_received_file"
    _columns = ("id", "file_uuid", "filename", "date_added", "acquisition_date", "file_hash", "file_description",
                "file_size", "start_date", "end_date", "case_id", "user_id", "type_id", "custom_attributes",
                "chain_of_custody", "modification_history")


class Comments(Model):
    """``app.models.models.Comments``: what the comment update hooks hand over (seen on real 2.4.20 and 2.5)."""
    __tablename__ = "comments"
    _columns = ("comment_id", "comment_uuid", "comment_text", "comment_date", "comment_update_date",
                "comment_user_id", "comment_case_id", "comment_alert_id")


def _comment_link(name: str, table: str, column: str) -> type:
    """IRIS's comment link tables: ``(id, comment_id, comment_<kind>_id)``."""
    return type(name, (Model,), {"__tablename__": table, "_columns": ("id", "comment_id", column),
                                 "_primary_key": "id"})


IocComments = _comment_link("IocComments", "ioc_comments", "comment_ioc_id")
AssetComments = _comment_link("AssetComments", "asset_comments", "comment_asset_id")
EventComments = _comment_link("EventComments", "event_comments", "comment_event_id")
NotesComments = _comment_link("NotesComments", "notes_comments", "comment_note_id")
TaskComments = _comment_link("TaskComments", "task_comments", "comment_task_id")
EvidencesComments = _comment_link("EvidencesComments", "evidences_comments", "comment_evidence_id")


class Alert(Model):
    __tablename__ = "alerts"
    _columns = ("alert_id", "alert_uuid", "alert_title", "cases")


_IOC_LINK = IocLink


def set_variant(variant: str) -> None:
    """Become IRIS 2.4 or 2.5: swap the ``Ioc`` class and make ``IocLink`` exist or not (ImportError)."""
    global VARIANT, Ioc
    if variant not in ("2.4", "2.5"):
        raise ValueError(variant)
    VARIANT = variant
    Ioc = Ioc24 if variant == "2.4" else Ioc25
    package = sys.modules.get("app.models")
    if package is not None:  # 2.4's app/models/__init__.py re-exports the models, 2.5's is empty
        saved = package.__dict__.setdefault("_reexports", {n: getattr(package, n) for n in package.__all__
                                                           if hasattr(package, n)})
        for name, value in saved.items():
            if variant == "2.4":
                setattr(package, name, value)
            elif hasattr(package, name):
                delattr(package, name)
    for module in (sys.modules[__name__], package if variant == "2.4" else None):
        if module is None:
            continue
        module.Ioc = Ioc
        if variant == "2.4":
            module.IocLink = _IOC_LINK
        elif hasattr(module, "IocLink"):
            delattr(module, "IocLink")


def reset(variant: str = "2.4") -> None:
    from app.datamgmt.reporter import report_db

    report_db.RECORDS.clear()
    ROWS.clear()
    _INDEXES.clear()
    _VERSIONS.clear()
    QUERY_COUNT[0] = 0
    set_variant(variant)


def new_uuid() -> uuid.UUID:
    return uuid.uuid4()
