"""IRIS's ``Cases`` (``app/models/cases.py``): ``name`` is stored as ``#<id> - <name>``."""

from app.models.models import Model, _lookup


class Cases(Model):
    __tablename__ = "cases"
    _columns = ("case_id", "soc_id", "client_id", "name", "description", "open_date", "close_date", "initial_date",
                "closing_note", "user_id", "owner_id", "status_id", "state_id", "custom_attributes", "case_uuid",
                "classification_id", "reviewer_id", "review_status_id", "severity_id", "modification_history",
                "tags")
    client = _lookup("Client", "client_id", "client_id")
    user = _lookup("User", "id", "user_id")
    owner = _lookup("User", "id", "owner_id")
    severity = _lookup("Severity", "severity_id", "severity_id")
    state = _lookup("CaseState", "state_id", "state_id")
    classification = None


class CasesEvent(Model):
    """``app.models.cases.CasesEvent``: the postload event hooks hand it without its IOC and asset links (those
    live in CaseEventsIoc / CaseEventsAssets; seen on real 2.4.20 and 2.5)."""
    __tablename__ = "cases_events"
    _columns = ("event_id", "parent_event_id", "event_uuid", "case_id", "event_title", "event_source",
                "event_content", "event_raw", "event_date", "event_added", "event_in_graph", "event_in_summary",
                "user_id", "modification_history", "event_color", "event_tags", "event_tz", "event_date_wtz",
                "event_is_flagged", "custom_attributes")
