"""IRIS's ``app/models/alerts.py`` (2.4.20 and 2.5): ``Alert`` and ``Severity`` live here."""

from app.models.models import Alert, Severity

__all__ = ["Alert", "Severity"]
