"""``/_sim/`` control API: inspect and steer a simulator running in another process.

==========================  ==================================================================
``GET  /_sim/store``         ``{id: stix}``; ``?type=case-incident`` filters by STIX/entity type
``GET  /_sim/object?id=``    one object with its metadata (internal id, aliases, sources)
``GET  /_sim/ops``           recorded GraphQL requests; ``?name=workEdit`` filters
``GET  /_sim/events``        ingestion events (create / update / delete / error)
``GET  /_sim/works``         works by id; ``GET /_sim/work?id=`` one work
``GET  /_sim/connectors``    registered connectors by id (state, pings, queues ...)
``GET  /_sim/faults``        active failure / delay rules
``GET  /_sim/errors``        internal simulator errors
``POST /_sim/fail``          ``{"n": 1, "status": 500, "match": null}`` (fail_next)
``POST /_sim/fail_for``      ``{"seconds": 2, "status": 500, "match": null}``
``POST /_sim/delay``         ``{"seconds": 0.005, "match": null}`` (0 clears)
``POST /_sim/reset``         ``{"store": true, "ops": true, "faults": true, "registry": false}``
``POST /_sim/enrich``        ``{"connector_id": .., "entity_id": .., "with_stix_objects": null}`` → work id
``POST /_sim/ingest``        ``{"bundle": {...}, "connector_id": null, "work_id": null}`` (fixtures)
``POST /_sim/delete``        ``{"id": ..}``
``POST /_sim/state``         ``{"connector_id": .., "state": {...}}`` (platform-side state reset)
==========================  ==================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Tuple

if TYPE_CHECKING:
    from .server import OpenCTISimulator


def handle(sim: "OpenCTISimulator", method: str, path: str, query: Dict[str, str],
           body: Dict[str, Any]) -> Tuple[int, Any]:
    """Dispatch one control request; returns (HTTP status, JSON answer)."""
    if method == "GET":
        if path == "/_sim/store":
            if query.get("type"):
                return 200, {o["id"]: o for o in sim.objects_of_type(query["type"])}
            return 200, dict(sim.store.items())
        if path == "/_sim/object":
            obj = sim.store.get(query["id"])
            return (404, {"error": "not found"}) if obj is None else (200, {"object": obj,
                                                                             "meta": sim.meta(query["id"])})
        if path == "/_sim/ops":
            return 200, sim.ops_named(query["name"]) if query.get("name") else sim.ops
        if path == "/_sim/events":
            return 200, sim.events
        if path == "/_sim/works":
            return 200, sim.works
        if path == "/_sim/work":
            work = sim.work(query["id"])
            return (404, {"error": "not found"}) if work is None else (200, work)
        if path == "/_sim/connectors":
            return 200, sim.connectors
        if path == "/_sim/faults":
            return 200, sim.faults.describe()
        if path == "/_sim/errors":
            return 200, sim.errors
    elif method == "POST":
        if path == "/_sim/fail":
            sim.fail_next(int(body.get("n", 1)), int(body.get("status", 500)), body.get("match"))
            return 200, sim.faults.describe()
        if path == "/_sim/fail_for":
            sim.fail_for(float(body["seconds"]), int(body.get("status", 500)), body.get("match"))
            return 200, sim.faults.describe()
        if path == "/_sim/delay":
            sim.delay(float(body.get("seconds", 0)), body.get("match"))
            return 200, sim.faults.describe()
        if path == "/_sim/reset":
            sim.reset(store=bool(body.get("store", True)), ops=bool(body.get("ops", True)),
                      faults=bool(body.get("faults", True)), registry=bool(body.get("registry", False)))
            return 200, {"ok": True}
        if path == "/_sim/enrich":
            work_id = sim.request_enrichment(body["connector_id"], body["entity_id"], body.get("with_stix_objects"))
            return 200, {"work_id": work_id}
        if path == "/_sim/ingest":
            results = sim.ingest_bundle(body["bundle"], body.get("connector_id"), body.get("work_id"))
            return 200, [{"action": r.action, "id": r.id, "error": r.error} for r in results]
        if path == "/_sim/delete":
            result = sim.delete(body["id"])
            return 200, {"action": result.action, "id": result.id, "error": result.error}
        if path == "/_sim/state":
            sim.reset_connector_state(body["connector_id"], body.get("state"))
            return 200, {"ok": True}
    return 404, {"error": f"unknown control endpoint {method} {path}"}
