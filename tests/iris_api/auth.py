"""API keys, users and case access, with IRIS's answers when they are missing.

IRIS resolves the user from ``X-IRIS-AUTH`` or ``Authorization`` (``load_user_from_request`` in
``source/app/views.py``): it strips one leading ``"Bearer "``, so a bare key works too, and ignores inactive
users.  Without a user, ``ac_api_requires`` answers 401 "Authentication required"; a user without access to
the case gets 403 "Permission denied" with ``{user_id, case_id, error_uuid}`` (``ac_api_return_access_denied``).
An unknown case is a 403 as well: access rows only exist for existing cases, except for a server administrator
whose permissions are in the Flask session (see :class:`Sessions`).
"""

from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from . import responses
from .responses import Response

FULL = "full"
READ = "read"
NONE = "none"
_ACCESS_LEVEL_VALUES = {FULL: 4, READ: 2, NONE: 1}  # CaseAccessLevel: full_access, read_only, deny_all


@dataclass
class ApiUser:
    """The owner of an API key.

    :param access: access to every case unless ``case_access`` says otherwise: ``"full"`` (read and update),
        ``"read"`` (read only: updates get 403) or ``"none"`` (403 on every case route).
    :param standard_user: IRIS's ``standard_user`` permission, needed for ``/manage/cases/list``.
    :param active: an inactive user's key is refused like an unknown one (401).
    :param administrator: IRIS's ``server_administrator`` permission; only matters for unknown cases, once the
        client holds a session cookie (see :class:`Sessions`).
    """

    id: int
    user_name: str
    user_login: Optional[str] = None
    access: str = FULL
    case_access: Dict[int, str] = field(default_factory=dict)
    standard_user: bool = True
    active: bool = True
    administrator: bool = False

    def __post_init__(self) -> None:
        self.case_access = {int(k): v for k, v in self.case_access.items()}
        for level in [self.access, *self.case_access.values()]:
            if level not in _ACCESS_LEVEL_VALUES:
                raise ValueError(f"unknown access level {level!r} (use 'full', 'read' or 'none')")

    @classmethod
    def from_any(cls, value: Union["ApiUser", Mapping[str, Any]]) -> "ApiUser":
        """Accept an ``ApiUser`` or a dict such as ``{"id": 3, "user_name": "sync", "access": "read"}``."""
        if isinstance(value, ApiUser):
            return value
        known = {"id", "user_name", "user_login", "access", "case_access", "standard_user", "active", "administrator"}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown user fields {sorted(unknown)}")
        return cls(**dict(value))

    def access_to(self, case_id: int) -> str:
        """The user's access level to one case."""
        return self.case_access.get(case_id, self.access)

    def access_level_value(self, case_id: int) -> int:
        """``CaseAccessLevel`` bitmask value, as ``/manage/cases/list`` reports it."""
        return _ACCESS_LEVEL_VALUES[self.access_to(case_id)]

    def as_dict(self) -> Dict[str, Any]:
        """JSON-friendly view (control API, request log)."""
        return {"id": self.id, "user_name": self.user_name, "access": self.access,
                "case_access": dict(self.case_access), "standard_user": self.standard_user, "active": self.active,
                "administrator": self.administrator}


class Sessions:
    """IRIS's Flask session cookie, as far as API clients are concerned.

    ``ac_api_requires`` stores the caller's permissions in the session (so the answer sets a ``session``
    cookie), and ``check_ua_case_client`` trusts ``server_administrator`` *from the session* for a case the
    user has no access row for, i.e. an unknown case.  So with an administrator key, a client that kept the
    cookie of an earlier call (``requests.Session`` does) gets, for an unknown case on the legacy routes,
    2.4: 404 "Invalid case ID"; 2.5: the request is served for case 1 (``get_case_access_from_api`` falls back
    to it); without the cookie, 403 like anyone.  2.4's ``ac_api_case_requires`` never sets the cookie; 2.5's
    legacy routes do, through the ``ac_api_requires`` they also carry.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._admin: Dict[str, bool] = {}  # token -> server_administrator held in that session

    @staticmethod
    def token_of(headers: Mapping[str, str]) -> Optional[str]:
        """The ``session`` cookie sent with a request."""
        for part in (headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "session" and value:
                return value
        return None

    def lookup(self, token: Optional[str]) -> Optional[bool]:
        """``None`` for no (or an unknown) session, else whether it holds administrator permissions."""
        if token is None:
            return None
        with self._lock:
            return self._admin.get(token)

    def issue(self, user: ApiUser) -> str:
        """A new session for ``user``; returns the ``Set-Cookie`` value."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._admin[token] = user.administrator
        return f"session={token}; HttpOnly; Path=/"

    def clear(self) -> None:
        """Forget every session (their cookies become unknown)."""
        with self._lock:
            self._admin.clear()


def resolve_user(headers: Mapping[str, str], keys: Mapping[str, ApiUser]) -> Optional[ApiUser]:
    """The active user whose key is in ``X-IRIS-AUTH`` or ``Authorization`` (``Bearer`` optional)."""
    for header in ("X-IRIS-AUTH", "Authorization"):
        raw = headers.get(header)
        if not raw:
            continue
        user = keys.get(raw.replace("Bearer ", "", 1))
        if user is not None and user.active:
            return user
    return None


def can_access(user: ApiUser, case_id: int, existing_cases: Iterable[int], write: bool) -> bool:
    """Whether the user may read (or, with ``write``, update) a case; unknown cases are never accessible."""
    if case_id not in set(existing_cases):
        return False
    level = user.access_to(case_id)
    return level == FULL or (level == READ and not write)


def authentication_required() -> Response:
    """401 from ``ac_api_requires`` / ``ac_api_case_requires``."""
    return responses.error("Authentication required", status=401)


def permission_denied() -> Response:
    """403 from ``ac_api_requires(<permission>)`` (no case involved)."""
    return responses.error("Permission denied", status=403)


def case_access_denied(user: Optional[ApiUser], case_id: Optional[int]) -> Response:
    """403 from ``ac_api_return_access_denied``; 2.5 names an anonymous caller ``"Anonymous"``."""
    data = {"user_id": user.id if user is not None else "Anonymous", "case_id": case_id,
            "error_uuid": str(uuid.uuid4())}
    return responses.error("Permission denied", data=data, status=403)
