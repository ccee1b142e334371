"""The IRIS 2.5 v2 IOC API (absent in 2.4 mode: 404 like any unknown URL).

Source (develop): ``blueprints/rest/v2/cases/iocs.py``, ``blueprints/rest/v2/iocs.py``,
``blueprints/rest/endpoints.py`` and ``business/iocs.py``.  Answers carry no envelope: the IOC itself
(``IocSchemaForAPIV2``: the export fields plus ``tlp`` and ``link``), 404 with an empty body, 400
``{"message", "data"}``.  Order of checks, as in IRIS: key (401), IOC exists (404), access to the IOC's own
case (403), then for GET the IOC must be in the URL's case (404).  PUT does *not* compare the URL's case
with the IOC's on that branch, and neither does this server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from . import auth, responses, views
from .legacy_routes import json_body
from .responses import Request, Response
from .updates import DataError, ServerError

if TYPE_CHECKING:
    from .routes import Ctx


def _ioc_case(ctx: "Ctx", ioc_id: int) -> Optional[int]:
    cases = ctx.state.cases_of(ioc_id)
    return cases[0] if cases else None


def _denied_listing(ctx: "Ctx", request: Request, case_id: int) -> Optional[Response]:
    """The answer when the caller may not list this case's objects, else None."""
    user = request.user
    if user is None:
        return auth.authentication_required()
    request.open_session()
    existing = ctx.state.case_ids()
    # An administrator passes the access check for an unknown case (auth.Sessions) and gets an empty page.
    admin = request.session_admin if request.session_admin is not None else user.administrator
    if not (case_id not in existing and admin) and not auth.can_access(user, case_id, existing, write=False):
        return auth.case_access_denied(user, case_id)
    return None


def list_assets(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /api/v2/cases/<cid>/assets``: paginated as the IOC list (``page``, ``per_page`` default 10)."""
    denied = _denied_listing(ctx, request, params["case_id"])
    if denied is not None:
        return denied
    return responses.api_success(views.v2_asset_page(ctx.state, params["case_id"], request.int_arg("page") or 1,
                                                     request.int_arg("per_page") or 10))


def list_iocs(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /api/v2/cases/<cid>/iocs``: ``{"total", "data", "last_page", "current_page", "next_page"}``."""
    case_id = params["case_id"]
    denied = _denied_listing(ctx, request, case_id)
    if denied is not None:
        return denied
    user = request.user
    assert user is not None
    if "ioc_type" in request.query:
        # _build_filter_ioc_query compares the ioc_type relationship with a string: SQLAlchemy ArgumentError.
        return responses.internal_error("ioc_type filter: 'Mapped instance expected for relationship comparison'")
    filters: Dict[str, Any] = {}
    for name in ("ioc_type_id", "ioc_tlp_id"):
        value = request.int_arg(name)
        if value is not None:
            filters[name] = value
    for name in ("ioc_value", "ioc_description", "ioc_tags"):
        if name in request.query:
            filters[name] = request.query[name]
    page = request.int_arg("page") or 1
    per_page = request.int_arg("per_page") or 10
    sort_dir = request.query.get("sort_dir", "asc")
    return responses.api_success(views.v2_ioc_page(ctx.state, case_id, user, page, per_page, filters,
                                                   request.query.get("order_by"), sort_dir))


def _get(ctx: "Ctx", request: Request, ioc_id: int, case_id: Optional[int]) -> Response:
    user = request.user
    if user is None:
        return auth.authentication_required()
    request.open_session()
    ioc_case = _ioc_case(ctx, ioc_id)
    if ioc_case is None:
        return responses.api_not_found()
    if not auth.can_access(user, ioc_case, ctx.state.case_ids(), write=False):
        return auth.case_access_denied(user, ioc_case)
    if case_id is not None and case_id != ioc_case:
        return responses.api_not_found()
    return responses.api_success(views.ioc_dump_v2(ctx.state, ioc_id, user))


def _put(ctx: "Ctx", request: Request, ioc_id: int) -> Response:
    user = request.user
    if user is None:
        return auth.authentication_required()
    request.open_session()
    ioc_case = _ioc_case(ctx, ioc_id)
    if ioc_case is None:
        return responses.api_not_found()
    if not auth.can_access(user, ioc_case, ctx.state.case_ids(), write=True):
        return auth.case_access_denied(user, ioc_case)
    refusal, body = json_body(request)
    if refusal is not None:
        return refusal
    try:
        ctx.state.update_ioc(ioc_id, body, user.id, ioc_case)
    except DataError as err:
        return responses.api_error("Data error", err.messages)
    except ServerError as err:
        return responses.internal_error(str(err))
    return responses.api_success(views.ioc_dump_v2(ctx.state, ioc_id, user))


def get_case_ioc(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /api/v2/cases/<cid>/iocs/<id>``."""
    return _get(ctx, request, params["ioc_id"], params["case_id"])


def put_case_ioc(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``PUT /api/v2/cases/<cid>/iocs/<id>`` with a partial body; answers the updated IOC."""
    return _put(ctx, request, params["ioc_id"])


def get_ioc(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``GET /api/v2/iocs/<id>``."""
    return _get(ctx, request, params["ioc_id"], None)


def put_ioc(ctx: "Ctx", request: Request, params: Dict[str, int]) -> Response:
    """``PUT /api/v2/iocs/<id>``."""
    return _put(ctx, request, params["ioc_id"])
