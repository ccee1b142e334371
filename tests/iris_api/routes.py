"""URL routing like Flask's: ``<int:...>`` segments, 405 for a known URL with another method, IRIS's 404.

Flask matches the URL before any access check, so a wrong method is a 405 even without an API key, and an
unknown URL is IRIS's 404 page (JSON when the request is JSON).  Routes exist per mode: the v2 IOC routes
only in 2.5, the 2.4 routes in both (2.5 kept them, deprecated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Mapping, Tuple

from . import legacy_routes, responses, v2_routes
from .responses import Request, Response
from .state import IrisState


@dataclass
class Ctx:
    """What handlers read: the state, the mode and the version strings."""

    state: IrisState
    mode: str
    versions: Mapping[str, str]


Handler = Callable[[Ctx, Request, Dict[str, int]], Response]


@dataclass(frozen=True)
class Route:
    """One URL rule; ``<name>`` in the template stands for a non-negative integer (Flask's ``int``)."""

    template: str
    methods: FrozenSet[str]
    handler: Handler
    modes: Tuple[str, ...] = ("2.4", "2.5")

    @property
    def pattern(self) -> "re.Pattern[str]":
        return re.compile(re.sub(r"<(\w+)>", r"(?P<\1>\\d+)", self.template))


def _route(template: str, methods: str, handler: Handler, modes: Tuple[str, ...] = ("2.4", "2.5")) -> Route:
    return Route(template, frozenset(methods.split()), handler, modes)


ROUTES: List[Route] = [
    _route("/api/ping", "GET", legacy_routes.api_ping),
    _route("/api/versions", "GET", legacy_routes.api_versions),
    _route("/case/ioc/list", "GET", legacy_routes.ioc_list),
    _route("/case/ioc/<ioc_id>", "GET", legacy_routes.ioc_get),
    _route("/case/ioc/update/<ioc_id>", "POST", legacy_routes.ioc_update),
    _route("/case/ioc/<ioc_id>/comments/list", "GET", legacy_routes.ioc_comments_list),
    _route("/case/ioc/<ioc_id>/comments/add", "POST", legacy_routes.ioc_comments_add),
    _route("/case/export", "GET", legacy_routes.case_export),
    _route("/manage/tlp/list", "GET", legacy_routes.tlp_list),
    _route("/manage/modules/list", "GET", legacy_routes.modules_list),
    _route("/manage/cases/list", "GET", legacy_routes.case_list),
    _route("/api/v2/cases/<case_id>/iocs", "GET", v2_routes.list_iocs, ("2.5",)),
    _route("/api/v2/cases/<case_id>/assets", "GET", v2_routes.list_assets, ("2.5",)),
    _route("/api/v2/cases/<case_id>/iocs/<ioc_id>", "GET", v2_routes.get_case_ioc, ("2.5",)),
    _route("/api/v2/cases/<case_id>/iocs/<ioc_id>", "PUT", v2_routes.put_case_ioc, ("2.5",)),
    _route("/api/v2/iocs/<ioc_id>", "GET", v2_routes.get_ioc, ("2.5",)),
    _route("/api/v2/iocs/<ioc_id>", "PUT", v2_routes.put_ioc, ("2.5",)),
]


class Router:
    """Dispatches a request to the first route of the mode that matches path and method."""

    def __init__(self, mode: str, routes: List[Route] = ROUTES) -> None:
        self.routes = [(r, r.pattern) for r in routes if mode in r.modes]

    def dispatch(self, ctx: Ctx, request: Request) -> Response:
        """The handler's answer, a 405 page, or IRIS's 404."""
        allowed: List[str] = []
        for route, pattern in self.routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if request.method in route.methods:
                return route.handler(ctx, request, {k: int(v) for k, v in match.groupdict().items()})
            allowed.extend(route.methods)
        if allowed:
            response = responses.html_error(405)
            response.headers["Allow"] = ", ".join(sorted(set(allowed) | {"HEAD", "OPTIONS"}))
            return response
        return responses.not_found(request)
