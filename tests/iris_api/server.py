"""``IrisApiServer``: the HTTP side (stdlib ``ThreadingHTTPServer``), request log, faults, down/up.

Typical use::

    server = IrisApiServer(mode="2.4", api_keys={"k": {"id": 3, "user_name": "sync"}}, seed=[export_data])
    url = server.start()                  # http://127.0.0.1:<free port>
    ...                                   # point the client at url with "Authorization: Bearer k"
    assert server.ioc(29)["ioc_tags"] == "phishing,opencti:score=80"
    server.stop()
"""

from __future__ import annotations

import copy
import threading
import time
import traceback
from http.server import ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from tests.http_double import QuietHandler, serve

from . import control, responses, views
from .auth import ApiUser, Sessions, resolve_user
from .catalog import DEFAULT_TLPS, MODES, VERSIONS, default_ioc_types
from .faults import Faults
from .responses import Request, Response
from .routes import Ctx, Router
from .state import IrisState

DEFAULT_API_KEY = "iris-test-api-key"
# The 2.5 branch adds these to every answer (``after_request`` in ``source/app/__init__.py``).
CORS_HEADERS_2_5 = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
}
UserSpec = Union[ApiUser, Mapping[str, Any]]


class IrisApiServer:
    """A stand-in IRIS REST API for tests (see the package docstring for the whole API)."""

    def __init__(self, mode: str = "2.4", api_keys: Optional[Mapping[str, UserSpec]] = None,
                 seed: Iterable[Dict[str, Any]] = (), host: str = "127.0.0.1", port: int = 0, *,
                 iris_version: Optional[str] = None, tlps: Iterable[Tuple[int, str, str]] = DEFAULT_TLPS,
                 tls: Optional[Tuple[str, str]] = None) -> None:
        """
        :param mode: ``"2.4"`` (IRIS 2.4.20) or ``"2.5"`` (the 2.5 development branch).
        :param api_keys: ``key → user``; a user is an :class:`ApiUser` or a dict ``{"id", "user_name",
            "access"?, "case_access"?, "standard_user"?, "active"?, "administrator"?}``.  Default: one key,
            :data:`DEFAULT_API_KEY`, of the administrator (user id 1, server administrator).
        :param seed: case exports (the whole ``/case/export`` answer or its ``data``); ``reset()`` reloads them.
        :param port: 0 picks a free port; ``down()``/``up()`` keep the port.
        :param iris_version: override ``iris_current`` in ``/api/versions``.
        :param tlps: ``(tlp_id, tlp_name, tlp_bscolor)`` rows, to test clients that must resolve TLPs by name.
        :param tls: ``(certfile, keyfile)``: serve HTTPS with that certificate, as IRIS behind its nginx does,
            to test clients' certificate verification.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.host = host
        self.port = port
        self.tls = tls
        self.versions = dict(VERSIONS[mode])
        if iris_version is not None:
            self.versions["iris_current"] = iris_version
        self._tlps = tuple(tlps)
        if api_keys is None:
            api_keys = {DEFAULT_API_KEY: {"id": 1, "user_name": "administrator", "administrator": True}}
        self._keys: Dict[str, ApiUser] = {k: ApiUser.from_any(u) for k, u in api_keys.items()}
        self._seeds: List[Dict[str, Any]] = [copy.deepcopy(s) for s in seed]
        self._cond = threading.Condition()
        self._generation = 0  # bumped on every request and state change, for wait_for
        self._log_lock = threading.Lock()
        self._log: List[Dict[str, Any]] = []
        self._lifecycle = threading.RLock()
        self.faults = Faults()
        self.sessions = Sessions()
        self.router = Router(mode)
        self.state = self._new_state()
        self._http: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._up_timer: Optional[threading.Timer] = None
        self._up_token: Optional[object] = None

    def _new_state(self) -> IrisState:
        state = IrisState(self.mode, default_ioc_types(), self._tlps, on_change=self._notify)
        for export in self._seeds:
            state.seed(export)
        return state

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Listen and serve in a background thread; returns the base URL."""
        self.up()
        return self.url

    def stop(self) -> None:
        """Stop serving (also cancels a pending automatic ``up``)."""
        with self._lifecycle:
            self._cancel_auto_up()
            self._close()

    def up(self) -> None:
        """(Re)open the listening socket on the same port (no-op when already up).

        Binding is retried for a moment: after ``down()`` another socket may briefly hold the port.
        """
        with self._lifecycle:
            if self._http is not None:
                return
            deadline = time.monotonic() + 3.0
            while True:
                try:
                    http, thread = serve((self.host, self.port), _Handler, "iris-api", {"iris": self}, self.tls)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self.port = http.server_address[1]
            self._http = http
            self._thread = thread
        self._notify()

    def down(self, seconds: Optional[float] = None) -> None:
        """Close the listening socket: clients get "connection refused" until ``up()``.

        :param seconds: come back up by itself after that long (the only way for a remote controller).
        """
        with self._lifecycle:
            self._close()
            self._cancel_auto_up()
            if seconds is not None:
                token = object()
                self._up_timer = threading.Timer(seconds, self._auto_up, args=(token,))
                self._up_timer.daemon = True
                self._up_token = token
                self._up_timer.start()

    def _auto_up(self, token: object) -> None:
        # A timer that fired while stop() or another down() held the lock must not reopen the port.
        with self._lifecycle:
            if self._up_token is token:
                self._up_token = None
                self._up_timer = None
                self.up()

    def _cancel_auto_up(self) -> None:
        if self._up_timer is not None:
            self._up_timer.cancel()
        self._up_timer = None
        self._up_token = None

    def _close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
            self._thread = None
            self._notify()

    @property
    def is_up(self) -> bool:
        """Whether the port is listening."""
        return self._http is not None

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` with ``tls``; no trailing slash)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def __enter__(self) -> "IrisApiServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- users -----------------------------------------------------------------------------------------------
    def add_api_key(self, key: str, user: UserSpec) -> ApiUser:
        """Accept another key (e.g. a read-only or a no-access user)."""
        parsed = ApiUser.from_any(user)
        self._keys[key] = parsed
        return parsed

    def remove_api_key(self, key: str) -> None:
        """Revoke a key: its requests get 401 (403 on 2.5's legacy case routes) from now on."""
        self._keys.pop(key, None)

    # -- state: inspection -----------------------------------------------------------------------------------
    def iocs(self, case_id: int) -> List[Dict[str, Any]]:
        """The case's IOCs as IRIS exports them (``IocSchema``; ``case_id`` in 2.5), by id."""
        return [views.ioc_dump(self.state, i) for i in self.state.iocs_of(case_id)]  # type: ignore[misc]

    def ioc(self, ioc_id: int) -> Optional[Dict[str, Any]]:
        """One IOC as IRIS exports it, ``None`` if it does not exist."""
        return views.ioc_dump(self.state, ioc_id)

    def shown_tags(self, ioc_id: int) -> List[str]:
        """The tag badges IRIS's IOC table shows for an IOC (``None``-safe): ``ui/src/pages/case.ioc.js`` renders
        ``ioc_tags.split(',')`` (no trimming) through ``get_tag_from_data``, which skips empty strings and puts
        each one in a badge as text. So a comma inside a tag shows as two badges, and a newline or NUL stays
        inside the badge's text."""
        ioc = self.ioc(ioc_id) or {}
        return [tag for tag in str(ioc.get("ioc_tags") or "").split(",") if tag]

    def cases(self) -> List[int]:
        """Existing case ids."""
        return self.state.case_ids()

    def case(self, case_id: int) -> Optional[Dict[str, Any]]:
        """The case object of the export, ``None`` if it does not exist."""
        record = self.state.case_record(case_id)
        return record["case"] if record else None

    def export(self, case_id: int) -> Dict[str, Any]:
        """What ``GET /case/export?cid=`` would answer in ``data`` now."""
        return views.case_export(self.state, case_id)

    # -- state: set-up ---------------------------------------------------------------------------------------
    def seed(self, export: Dict[str, Any]) -> int:
        """Load one more case export (kept for ``reset()``); returns its case id."""
        case_id = self.state.seed(export)
        self._seeds.append(copy.deepcopy(export))
        return case_id

    def add_case(self, case_id: Optional[int] = None, name: str = "Test case", **fields: Any) -> Dict[str, Any]:
        """Create an empty case; see :meth:`IrisState.add_case`."""
        return self.state.add_case(case_id, name, **fields)

    def add_ioc(self, case_id: int, ioc_value: str, ioc_type: Union[int, str] = "ip-dst", **fields: Any) -> int:
        """Add an IOC to a case as an analyst would; see :meth:`IrisState.add_ioc`.  Returns its id."""
        return self.state.add_ioc(case_id, ioc_value, ioc_type, **fields)

    def add_asset_v2(self, case_id: int, asset_name: str, **fields: Any) -> int:
        """2.5: an asset created through the v2 API (absent from the export); see :meth:`IrisState.add_asset_v2`."""
        return self.state.add_asset_v2(case_id, asset_name, **fields)

    def link_ioc(self, ioc_id: int, case_id: int) -> None:
        """2.4: make an existing IOC appear in another case as well."""
        self.state.link_ioc(ioc_id, case_id)

    def edit_ioc(self, ioc_id: int, **fields: Any) -> None:
        """Change an IOC as an analyst in the UI would (no validation, not logged as a request)."""
        self.state.edit_ioc(ioc_id, **fields)

    def delete_ioc(self, ioc_id: int, case_id: Optional[int] = None) -> None:
        """Remove an IOC from a case (or from everywhere)."""
        self.state.delete_ioc(ioc_id, case_id)

    def delete_case(self, case_id: int) -> None:
        """Remove a case and its IOC links."""
        self.state.delete_case(case_id)

    def reset(self, state: bool = True, requests: bool = True, faults: bool = True) -> None:
        """Back to the seeds (``state``, which also forgets IRIS sessions), an empty log, no fault rules."""
        if state:
            self.state = self._new_state()
            self.sessions.clear()
        if requests:
            with self._log_lock:
                self._log.clear()
        if faults:
            self.faults.clear()
        self._notify()

    # -- faults ----------------------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500, match: Optional[str] = None) -> None:
        """The next ``n`` requests (matching ``"METHOD /path"`` substring ``match``) fail; 0 drops them."""
        self.faults.fail_next(n, status, match)

    def fail_for(self, seconds: float, status: int = 500, match: Optional[str] = None) -> None:
        """Requests fail with ``status`` for ``seconds``."""
        self.faults.fail_for(seconds, status, match)

    def delay(self, seconds: float, match: Optional[str] = None) -> None:
        """Answer late (client timeouts); 0 removes the delay."""
        self.faults.delay(seconds, match)

    # -- request log -----------------------------------------------------------------------------------------
    @property
    def requests(self) -> List[Dict[str, Any]]:
        """Every IRIS request served, oldest first: ``method``, ``path``, ``query``, ``json``, ``user``,
        ``user_id``, ``status``, ``fault`` (injected), ``error`` (why a 500), ``time``.  No headers: the API
        key is never recorded."""
        with self._log_lock:
            return copy.deepcopy(self._log)

    def requests_to(self, method: Optional[str] = None, path_contains: str = "") -> List[Dict[str, Any]]:
        """The logged requests with that method whose path contains ``path_contains``."""
        return [r for r in self.requests
                if (method is None or r["method"] == method.upper()) and path_contains in r["path"]]

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._log_lock:
            self._log.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` holds (re-checked on every request and state change); False on timeout.

        The predicate runs without any server lock held, so it may inspect the state freely.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._generation
            if predicate():
                return True
            with self._cond:
                while self._generation == seen:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)

    def _notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    # -- request handling ------------------------------------------------------------------------------------
    def dispatch(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one HTTP request (control API, injected fault, or IRIS route)."""
        request = Request.parse(method, raw_path, headers, body)
        if request.path.startswith(control.PREFIX):
            return control.handle(self, request)
        pause = self.faults.delay_for(request.method, request.path)
        if pause:
            time.sleep(pause)
        request.user = resolve_user(headers, self._keys)
        request.session_admin = self.sessions.lookup(Sessions.token_of(headers))
        status = self.faults.take(request.method, request.path)
        if status is not None:
            response = Response(0, drop=True) if status == 0 else responses.proxy_error(status)
        else:
            try:
                response = self.router.dispatch(Ctx(self.state, self.mode, self.versions), request)
            except Exception:  # noqa: BLE001 - a bug here must look like IRIS crashing, and be visible
                response = responses.internal_error("test server bug: " + traceback.format_exc())
        if request.grant_session and request.session_admin is None and request.user is not None:
            response.headers["Set-Cookie"] = self.sessions.issue(request.user)
        if self.mode == "2.5" and not response.drop:
            response.headers.update(CORS_HEADERS_2_5)
        self._record(request, response, injected=status is not None)
        return response

    def _record(self, request: Request, response: Response, injected: bool) -> None:
        user = request.user
        entry = {"method": request.method, "path": request.path, "query": dict(request.query),
                 "json": request.json_for_log(), "user": user.user_name if user else None,
                 "user_id": user.id if user else None, "status": response.status, "fault": injected,
                 "error": response.error, "time": time.time()}
        with self._log_lock:
            self._log.append(entry)
        self._notify()


class _Handler(QuietHandler):
    """Reads the request, lets the server answer, writes the answer (or drops the connection)."""

    server_version = "IrisApiTestServer/1.0"

    def _serve(self) -> None:
        iris: IrisApiServer = self.server.iris  # type: ignore[attr-defined]
        response = iris.dispatch(self.command, self.path, self.headers, self.read_body())  # type: ignore[arg-type]
        if response.drop:
            self.close_connection = True
            return
        self.send_body(response.status, response.body, response.content_type, response.headers)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve  # noqa: N815 - http.server's names
