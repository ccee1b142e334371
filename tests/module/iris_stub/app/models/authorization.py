"""IRIS's ``User`` (``app/models/authorization.py``): ``user`` is the login, ``name`` the display name."""

from app.models.models import Model


class User(Model):
    __tablename__ = "user"
    _columns = ("id", "user", "name", "email", "uuid", "active", "api_key", "is_service_account")
