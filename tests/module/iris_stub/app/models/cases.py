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
