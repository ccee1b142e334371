"""The IRIS 2.4 API (kept, deprecated, in 2.5): ping, versions, case IOCs, TLPs, case list, case export.

Sources: ``blueprints/case/case_ioc_routes.py``, ``business/iocs.py``, ``util.py`` (``ac_api_case_requires``),
``blueprints/api/api_routes.py``, ``blueprints/manage/manage_tlps_routes.py`` / ``manage_cases_routes.py`` and
``blueprints/case/case_routes.py`` at v2.4.20; ``blueprints/rest/...`` and ``blueprints/access_controls.py``
on develop (2.5).  Mode differences reproduced on purpose:

* the case comes from ``?cid=`` (else a JSON body's ``cid``, else the user's context case, 1 by default);
* an unknown case is a 403, unless an administrator's session cookie is sent (see ``auth.Sessions``);
* 2.4 checks the key first (401); 2.5's ``ac_requires_case_identifier`` runs *before* ``ac_api_requires``,
  so a missing or unknown key gets 403 "Permission denied" (user "Anonymous", case 1) on these routes;
* ``GET /case/ioc/<id>``: 2.4 needs the IOC to be in the case (400 "Invalid IOC ID for this case"); 2.5
  ignores the case (400 "Invalid IOC identifier" only for an unknown id);
* ``POST /case/ioc/update/<id>`` of an IOC not in the case: 2.4 raises "Invalid IOC ID for this case" inside
  a ``try`` that wraps it into an error it cannot serialise, so HTTP 500; 2.5 answers 400 "Object not found";
* 2.5 adds ``Deprecation: True`` and ``Link: <v2 route>; rel="alternate"`` headers to the IOC routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from . import auth, responses, views
from .responses import BadJson, Request, Response
from .updates import DataError, ServerError

if TYPE_CHECKING:
    from .routes import Ctx

DEFAULT_CONTEXT_CASE = 1  # IRIS falls back to the user's context case, which starts at 1


def _case_id(request: Request) -> int:
    """``_get_caseid_from_request_data``: ``?cid=``, else ``cid`` in a JSON body, else the context case."""
    cid = request.int_arg("cid")
    if cid:
        return cid
    try:
        body = request.json() if request.is_json else None
    except BadJson:
        body = None
    if isinstance(body, dict) and body.get("cid"):
        try:
            return int(body["cid"])
        except (TypeError, ValueError):
            pass
    return DEFAULT_CONTEXT_CASE


def case_guard(ctx: "Ctx", request: Request, write: bool) -> Tuple[Optional[Response], int]:
    """Authentication and case access for a case route: (refusal or None, the case id to serve)."""
    case_id = _case_id(request)
    user = request.user
    if user is None:
        if ctx.mode == "2.4":
            return auth.authentication_required(), case_id
        return auth.case_access_denied(None, DEFAULT_CONTEXT_CASE), case_id
    existing = ctx.state.case_ids()
    if case_id not in existing and request.session_admin:  # see auth.Sessions
        if ctx.mode == "2.4":
            return responses.error("Invalid case ID", status=404), case_id
        case_id = DEFAULT_CONTEXT_CASE
    elif not auth.can_access(user, case_id, existing, write):
        return auth.case_access_denied(user, case_id), case_id
    if ctx.mode == "2.5":
        request.open_session()  # 2.5's legacy routes also carry ac_api_requires
    return None, case_id


def json_body(request: Request) -> Tuple[Optional[Response], Any]:
    """Flask's ``request.get_json()``: 415 without a JSON Content-Type, 400 for an empty or broken body."""
    if not request.is_json:
        return responses.html_error(415, "request Content-Type is not application/json"), None
    try:
        body = request.json()
    except BadJson as err:
        return responses.html_error(400, f"invalid JSON body: {err}"), None
    if not request.body:
        return responses.html_error(400, "empty JSON body"), None
    return None, body


def _deprecated(ctx: "Ctx", response: Response, alternative: str) -> Response:
    if ctx.mode == "2.5":
        response.headers["Link"] = f"<{alternative}>; rel=\"alternate\""
        response.headers["Deprecation"] = "True"
    return response


def api_ping(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /api/ping``: ``message: "pong"``, ``data: []``."""
    if request.user is None:
        return auth.authentication_required()
    request.open_session()
    return responses.success(message="pong")


def api_versions(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /api/versions``: ``{"iris_current", "api_min", "api_current"}``."""
    if request.user is None:
        return auth.authentication_required()
    request.open_session()
    return responses.success(dict(ctx.versions))


def ioc_list(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /case/ioc/list?cid=N``: ``data: {"ioc": [...], "state": {...}}``."""
    refusal, case_id = case_guard(ctx, request, write=False)
    response = refusal or responses.success(views.legacy_ioc_list(ctx.state, case_id, request.user))
    return _deprecated(ctx, response, "/api/v2/cases/<int:identifier>/iocs")


def ioc_get(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /case/ioc/<id>?cid=N``: the IOC (``IocSchema``) in the envelope."""
    ioc_id = params["ioc_id"]
    refusal, case_id = case_guard(ctx, request, write=False)
    if refusal is not None:
        response = refusal
    elif ctx.mode == "2.4" and case_id not in ctx.state.cases_of(ioc_id):
        response = responses.error("Invalid IOC ID for this case")
    elif ctx.mode == "2.5" and not ctx.state.cases_of(ioc_id):
        response = responses.error("Invalid IOC identifier")
    else:
        response = responses.success(views.ioc_dump(ctx.state, ioc_id))
    return _deprecated(ctx, response, "/api/v2/cases/<int:case_identifier>/iocs/<int:cur_id>")


def _update(ctx: "Ctx", request: Request, ioc_id: int, case_id: int) -> Response:
    if ctx.mode == "2.5" and not ctx.state.cases_of(ioc_id):
        return responses.error("Object not found")  # ObjectNotFoundError from iocs_get, before the body is read
    refusal, body = json_body(request)
    if refusal is not None:
        return refusal
    cases = ctx.state.cases_of(ioc_id)
    if ctx.mode == "2.4" and case_id not in cases:
        return responses.internal_error("Invalid IOC ID for this case: IRIS 2.4.20 wraps the BusinessProcessingError "
                                        "into one whose data is an exception, which it cannot JSON-encode")
    try:
        ctx.state.update_ioc(ioc_id, body, request.user.id, case_id if ctx.mode == "2.4" else cases[0])
    except DataError as err:
        return responses.error("Data error", data=err.messages)
    except ServerError as err:
        return responses.internal_error(str(err))
    ioc = views.ioc_dump(ctx.state, ioc_id)
    return responses.success(ioc, message=f"Updated ioc \"{ioc['ioc_value']}\"")


def ioc_update(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``POST /case/ioc/update/<id>?cid=N`` with a partial body; answers the updated IOC."""
    refusal, case_id = case_guard(ctx, request, write=True)
    response = refusal or _update(ctx, request, params["ioc_id"], case_id)
    return _deprecated(ctx, response, "/api/v2/cases/<int:case_identifier>/iocs/<int:cur_id>")


def modules_list(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /manage/modules/list`` (``ac_api_requires(Permissions.server_administrator)``)."""
    if request.user is None:
        return auth.authentication_required()
    request.open_session()
    if not request.user.administrator:
        return auth.permission_denied()
    return responses.success(views.modules_list(ctx.state))


def tlp_list(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /manage/tlp/list``."""
    if request.user is None:
        return auth.authentication_required()
    request.open_session()
    return responses.success(views.tlp_list(ctx.state))


def case_list(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /manage/cases/list`` (needs the ``standard_user`` permission)."""
    if request.user is None:
        return auth.authentication_required()
    request.open_session()
    if not request.user.standard_user:
        return auth.permission_denied()
    return responses.success(views.case_list(ctx.state, request.user))


def case_export(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /case/export?cid=N``: the whole case as it is now."""
    refusal, case_id = case_guard(ctx, request, write=False)
    return refusal or responses.success(views.case_export(ctx.state, case_id))


def _comment_guard(ctx: "Ctx", request: Request, ioc_id: int, write: bool) -> Any:
    refusal, case_id = case_guard(ctx, request, write=write)
    if refusal is not None:
        return refusal, case_id
    if case_id not in ctx.state.cases_of(ioc_id):
        return responses.error("Invalid IOC ID for this case"), case_id
    return None, case_id


def ioc_comments_list(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /case/ioc/<id>/comments/list?cid=N``: the IOC's comments, oldest first (same on 2.4.20 and 2.5)."""
    refusal, _case_id = _comment_guard(ctx, request, params["ioc_id"], write=False)
    if refusal is not None:
        return refusal
    return responses.success(ctx.state.comments_of(params["ioc_id"]))


def ioc_comments_add(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``POST /case/ioc/<id>/comments/add?cid=N`` with ``{"comment_text"}``. 2.4.20 answers "Event commented"
    for an IOC (its message is copied from the event route), 2.5 "IOC commented" (both seen on real IRIS)."""
    refusal, case_id = _comment_guard(ctx, request, params["ioc_id"], write=True)
    if refusal is not None:
        return refusal
    refusal, body = json_body(request)
    if refusal is not None:
        return refusal
    text = body.get("comment_text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return responses.error("Data error", data={"comment_text": ["Missing data for required field."]})
    comment = ctx.state.add_comment(params["ioc_id"], case_id, text, request.user)
    return responses.success(comment, "Event commented" if ctx.mode == "2.4" else "IOC commented")
