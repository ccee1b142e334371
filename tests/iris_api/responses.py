"""HTTP requests and answers in the shapes IRIS produces.

Three families, because IRIS mixes them and clients must cope with each:

* legacy routes: ``{"status": "success"|"error", "message": str, "data": ...}`` (``response_success`` /
  ``response_error`` in ``source/app/util.py``; ``data`` ``None`` becomes ``[]``);
* v2 routes (2.5): the object itself with HTTP 200, ``{"message", "data"?}`` with 400, an *empty* body with
  404 (``source/app/blueprints/rest/endpoints.py``);
* Flask/Werkzeug HTML pages for what the application does not handle (500, 405, 415) and IRIS's 404 page,
  which is JSON only when the request's Content-Type is JSON (``page_not_found`` in ``util.py``).
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Dict, Mapping, Optional

JSON_TYPE = "application/json"


class BadJson(Exception):
    """The body is not parseable JSON (Flask answers 400 with an HTML page)."""


@dataclass
class Request:
    """What a route handler needs from an HTTP request; the user is resolved by the server."""

    method: str
    path: str
    query: Dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    user: Any = None
    session_admin: Optional[bool] = None  # None: no IRIS session; else whether it holds admin permissions
    grant_session: bool = False  # a handler passed ac_api_requires: the answer opens a session

    def open_session(self) -> None:
        """Mark that IRIS's ``ac_api_requires`` ran for this request (it stores permissions in the session)."""
        self.grant_session = True

    @classmethod
    def parse(cls, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> "Request":
        """Split the target into path and query (first value of a repeated parameter wins, as in Flask)."""
        parts = urllib.parse.urlsplit(raw_path)
        query: Dict[str, str] = {}
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(key, value)
        return cls(method.upper(), parts.path or "/", query, headers, body)

    @property
    def is_json(self) -> bool:
        """Content-Type says JSON (decides JSON vs HTML 404s and whether a body may be read)."""
        return JSON_TYPE in (self.headers.get("Content-Type") or "").lower()

    def json(self) -> Any:
        """The decoded body, ``None`` when empty; raises :class:`BadJson`."""
        if not self.body:
            return None
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise BadJson(str(err)) from None

    def json_for_log(self) -> Any:
        """The body as recorded in the request log: decoded JSON, else the (shortened) raw text."""
        try:
            return self.json()
        except BadJson:
            return self.body[:2000].decode("utf-8", "replace")

    def int_arg(self, name: str) -> Optional[int]:
        """Like Flask's ``request.args.get(name, type=int)``: ``None`` when absent or not an integer."""
        try:
            return int(self.query[name])
        except (KeyError, ValueError):
            return None


@dataclass
class Response:
    """An answer; ``drop`` closes the connection without one (what a crashed or unreachable server does)."""

    status: int
    body: bytes = b""
    content_type: Optional[str] = JSON_TYPE
    headers: Dict[str, str] = field(default_factory=dict)
    drop: bool = False
    error: Optional[str] = None  # why the server failed (500s): recorded in the request log, never sent

    def json(self) -> Any:
        """Decoded body (for the request log and tests)."""
        return json.loads(self.body) if self.body and self.content_type == JSON_TYPE else None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, default=str).encode("utf-8")


def success(data: Any = None, message: str = "") -> Response:
    """``response_success``: HTTP 200 envelope."""
    return Response(200, _dumps({"status": "success", "message": message, "data": [] if data is None else data}))


def error(message: str, data: Any = None, status: int = 400) -> Response:
    """``response_error``: envelope with ``status: "error"``."""
    return Response(status, _dumps({"status": "error", "message": message, "data": [] if data is None else data}))


def api_success(data: Any, status: int = 200) -> Response:
    """v2 ``response_api_success`` / ``response_api_created``: the object itself, no envelope."""
    return Response(status, _dumps(data))


def api_error(message: str, data: Any = None) -> Response:
    """v2 ``response_api_error``: 400 ``{"message"}`` plus ``data`` only when it is truthy."""
    content: Dict[str, Any] = {"message": message}
    if data:
        content["data"] = data
    return Response(400, _dumps(content))


def api_not_found() -> Response:
    """v2 ``response_api_not_found``: 404 with an empty body (still labelled application/json)."""
    return Response(404)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def html_error(status: int, error_reason: Optional[str] = None) -> Response:
    """A Werkzeug-style HTML error page (what Flask sends for an unhandled exception, 405, 415 ...)."""
    phrase = _phrase(status)
    descriptions = {
        400: "The browser (or proxy) sent a request that this server could not understand.",
        405: "The method is not allowed for the requested URL.",
        415: "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.",
        500: "The server encountered an internal error and was unable to complete your request. Either the "
             "server is overloaded or there is an error in the application.",
    }
    text = descriptions.get(status, phrase + ".")
    page = (f"<!doctype html>\n<html lang=en>\n<title>{status} {phrase}</title>\n<h1>{phrase}</h1>\n"
            f"<p>{text}</p>\n")
    return Response(status, page.encode("utf-8"), "text/html; charset=utf-8", error=error_reason)


def internal_error(reason: str) -> Response:
    """HTTP 500 as Flask renders an exception the route did not handle; ``reason`` goes to the log only."""
    return html_error(500, reason)


def not_found(request: Request) -> Response:
    """IRIS's 404 handler: JSON envelope when the request is JSON, else its HTML error page."""
    if request.is_json:
        return error("Resource not found", status=404)
    page = "<!DOCTYPE html>\n<html><head><title>404 - IRIS</title></head><body><h1>404</h1>" \
           "<p>Page not found</p></body></html>\n"
    return Response(404, page.encode("utf-8"), "text/html; charset=utf-8")


def proxy_error(status: int) -> Response:
    """An injected failure: HTML like a reverse proxy or Werkzeug for 5xx, an IRIS envelope for 4xx."""
    if status >= 500:
        return html_error(status, "injected failure")
    return error(_phrase(status), status=status)


def control(data: Any, status: int = 200) -> Response:
    """``/_test/`` answers: plain JSON, no IRIS envelope."""
    return Response(status, _dumps(data))
