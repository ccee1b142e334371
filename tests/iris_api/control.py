"""``/_test/`` control API: inspect and steer a server running in another process (no API key needed).

==============================  ================================================================================
``GET  /_test/state``           ``{"mode", "versions", "cases": {id: case}, "iocs": {id: ioc}, "links": {id: [cids]}}``
``GET  /_test/iocs?case_id=N``  the case's IOCs (export shape)
``GET  /_test/ioc?id=N``        one IOC (404 if unknown)
``GET  /_test/export?case_id=`` what ``/case/export`` would answer in ``data``
``GET  /_test/requests``        the request log; ``?method=POST&path=/case/ioc/update`` filters
``GET  /_test/faults``          active failure and delay rules
``POST /_test/fail``            ``{"n": 1, "status": 500, "match": null}`` (status 0 drops the connection)
``POST /_test/fail_for``        ``{"seconds": 2, "status": 500, "match": null}``
``POST /_test/delay``           ``{"seconds": 1.5, "match": null}`` (0 clears)
``POST /_test/down``            ``{"seconds": 2}``: refuse connections, then come back by itself
``POST /_test/reset``           ``{"state": true, "requests": true, "faults": true}``
``POST /_test/seed``            ``{"export": {...}}`` → ``{"case_id"}``
``POST /_test/case``            ``{"case_id"?, "name"?, ...case fields}`` → the case
``POST /_test/ioc``             ``{"case_id", "ioc_value", "ioc_type"?, "ioc_tags"?, ...}`` → the IOC
``POST /_test/ioc/edit``        ``{"ioc_id", "fields": {...}}`` (an analyst's change, no validation)
``POST /_test/ioc/delete``      ``{"ioc_id", "case_id"?}``
``POST /_test/ioc/link``        ``{"ioc_id", "case_id"}`` (2.4)
``POST /_test/key``             ``{"key", "user": {"id", "user_name", "access"?, ...}}``; ``{"key", "user": null}``
                                revokes
==============================  ================================================================================

Errors: 400 ``{"error": ...}`` for bad input, 404 for an unknown endpoint or object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict

from . import responses
from .responses import BadJson, Request, Response

if TYPE_CHECKING:
    from .server import IrisApiServer

PREFIX = "/_test/"


def _state(server: "IrisApiServer", query: Dict[str, str]) -> Any:
    ids = server.cases()
    iocs = {}
    links = {}
    for case_id in ids:
        for ioc in server.iocs(case_id):
            iocs[ioc["ioc_id"]] = ioc
    for ioc_id in iocs:
        links[ioc_id] = server.state.cases_of(ioc_id)
    return {"mode": server.mode, "versions": server.versions, "cases": {c: server.case(c) for c in ids},
            "iocs": iocs, "links": links}


def _requests(server: "IrisApiServer", query: Dict[str, str]) -> Any:
    return server.requests_to(query.get("method"), query.get("path", ""))


def _one_ioc(server: "IrisApiServer", query: Dict[str, str]) -> Any:
    ioc = server.ioc(int(query["id"]))
    if ioc is None:
        raise KeyError(f"no IOC {query['id']}")
    return ioc


_GETS: Dict[str, Callable[["IrisApiServer", Dict[str, str]], Any]] = {
    "state": _state,
    "iocs": lambda s, q: s.iocs(int(q["case_id"])),
    "ioc": _one_ioc,
    "export": lambda s, q: s.export(int(q["case_id"])),
    "requests": _requests,
    "faults": lambda s, q: s.faults.describe(),
}


def _key(server: "IrisApiServer", body: Dict[str, Any]) -> Any:
    if body.get("user") is None:
        server.remove_api_key(body["key"])
        return {"ok": True}
    return server.add_api_key(body["key"], body["user"]).as_dict()


def _ioc(server: "IrisApiServer", body: Dict[str, Any]) -> Any:
    fields = dict(body)
    ioc_id = server.add_ioc(int(fields.pop("case_id")), fields.pop("ioc_value"), fields.pop("ioc_type", "ip-dst"),
                            **fields)
    return server.ioc(ioc_id)


def _reset(server: "IrisApiServer", body: Dict[str, Any]) -> Any:
    server.reset(state=bool(body.get("state", True)), requests=bool(body.get("requests", True)),
                 faults=bool(body.get("faults", True)))
    return {"ok": True}


def _down(server: "IrisApiServer", body: Dict[str, Any]) -> Any:
    seconds = float(body["seconds"])
    if seconds <= 0:
        raise ValueError("seconds must be > 0: nothing could bring the server back up")
    server.down(seconds)
    return {"ok": True}


_POSTS: Dict[str, Callable[["IrisApiServer", Dict[str, Any]], Any]] = {
    "fail": lambda s, b: s.fail_next(int(b.get("n", 1)), int(b.get("status", 500)), b.get("match")),
    "fail_for": lambda s, b: s.fail_for(float(b["seconds"]), int(b.get("status", 500)), b.get("match")),
    "delay": lambda s, b: s.delay(float(b.get("seconds", 0)), b.get("match")),
    "down": _down,
    "reset": _reset,
    "seed": lambda s, b: {"case_id": s.seed(b["export"])},
    "case": lambda s, b: s.add_case(**b),
    "ioc": _ioc,
    "ioc/edit": lambda s, b: s.edit_ioc(int(b["ioc_id"]), **b.get("fields", {})),
    "ioc/delete": lambda s, b: s.delete_ioc(int(b["ioc_id"]), None if b.get("case_id") is None else int(b["case_id"])),
    "ioc/link": lambda s, b: s.link_ioc(int(b["ioc_id"]), int(b["case_id"])),
    "key": _key,
}


def handle(server: "IrisApiServer", request: Request) -> Response:
    """Dispatch one control request."""
    name = request.path[len(PREFIX):].strip("/")
    table: Dict[str, Callable[..., Any]] = _GETS if request.method == "GET" else _POSTS
    if request.method not in ("GET", "POST") or name not in table:
        return responses.control({"error": f"unknown control endpoint {request.method} {request.path}"}, 404)
    try:
        if request.method == "GET":
            result = table[name](server, request.query)
        else:
            body = request.json() or {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            result = table[name](server, body)
    except KeyError as err:
        return responses.control({"error": f"not found or missing: {err}"}, 404)
    except (BadJson, TypeError, ValueError) as err:
        return responses.control({"error": str(err)}, 400)
    if result is None and request.method == "POST":
        result = {"ok": True}
    return responses.control(result)
