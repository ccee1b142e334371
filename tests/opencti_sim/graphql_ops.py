"""Root fields of the simulated OpenCTI GraphQL API.

Each root field is a resolver ``fn(args) -> data``; :mod:`graphql_exec` then projects the data onto
whatever selection set pycti sent.  The operations answered are the ones pycti 7 sends from
``OpenCTIConnectorHelper`` / ``OpenCTIApiClient`` (see the package docstring): health check,
connector registration / ping / deletion, works, bundle push, entity reads and lists, deletions.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from .filters import matches
from .graphql_exec import GraphQLFieldError
from .registry import Connector, Work
from .stix_types import (
    IDENTITY_CLASSES,
    SCO_ENTITY_TYPES,
    SDO_ENTITY_TYPES,
    graphql_typename,
)
from .store import Record, Source, now_iso
from .views import connection

if TYPE_CHECKING:
    from .server import OpenCTISimulator

Resolver = Callable[[Dict[str, Any]], Any]

INTERFACES = {"StixObjectOrStixRelationship", "StixCoreObject", "StixDomainObject", "StixCyberObservable",
              "StixCoreRelationship", "StixSightingRelationship", "StixRelationship", "MarkingDefinition",
              "Identity", "Location", "ThreatActor", "Container", "Case", "BasicObject", "StixObject"}
CONCRETE = {graphql_typename(t) for t in [*SCO_ENTITY_TYPES.values(), *SDO_ENTITY_TYPES.values(),
                                          *IDENTITY_CLASSES.values(), "Country", "City", "Region", "Position",
                                          "Administrative-Area", "Threat-Actor-Group", "Threat-Actor-Individual"]}
READABLE_TYPES = INTERFACES | CONCRETE
STANDARD_REFS = {"created_by_ref", "object_marking_refs", "object_refs", "source_ref", "target_ref",
                 "sighting_of_ref", "where_sighted_refs", "x_opencti_granted_refs", "granted_refs",
                 "x_opencti_created_by_ref"}
CONTAINS_SUFFIX = "ContainsStixObjectOrStixRelationship"
DELETE_MUTATIONS = {"stixCoreObjectEdit", "stixDomainObjectEdit", "stixCyberObservableEdit",
                    "stixCoreRelationshipEdit", "stixSightingRelationshipEdit", "stixEdit", "stixRefRelationshipEdit"}


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("s"):
        return name[:-1]
    return name


def _typename_for_field(name: str) -> Optional[str]:
    typename = name[:1].upper() + name[1:]
    return typename if typename in READABLE_TYPES else None


class Operations:
    """Resolves root fields against the simulator's state."""

    def __init__(self, sim: "OpenCTISimulator") -> None:
        self.sim = sim
        self._roots = {"query": self.queries(), "mutation": self.mutations()}

    # -- dispatch -------------------------------------------------------------------------------------------
    def root(self, kind: str) -> Dict[str, Any]:
        """The explicit resolvers of a query or a mutation."""
        return self._roots.get(kind, {})

    def knows(self, kind: str, field: str) -> bool:
        """Whether the root field is answered (a single read, a list, or an explicit resolver)."""
        if field in self.root(kind):
            return True
        if kind == "query" and field.endswith(CONTAINS_SUFFIX):
            return True
        return kind == "query" and (_typename_for_field(field) is not None
                                    or _typename_for_field(_singular(field)) is not None)

    def resolve_root(self, kind: str, field: str) -> Resolver:
        """Resolver of a root field."""
        explicit = self.root(kind).get(field)
        if explicit is not None:
            return explicit
        if kind == "query" and field.endswith(CONTAINS_SUFFIX):
            return self.contains
        typename = _typename_for_field(field)
        if typename is not None:
            return lambda args: self.read_one(typename, args)
        typename = _typename_for_field(_singular(field))
        if typename is not None:
            return lambda args: self.read_list(typename, args)
        raise GraphQLFieldError(f'Cannot query field "{field}" on type "{kind.capitalize()}".',
                                "GRAPHQL_VALIDATION_FAILED")

    # -- queries ---------------------------------------------------------------------------------------------
    def queries(self) -> Dict[str, Resolver]:
        """Explicit query resolvers."""
        sim = self.sim
        return {
            "about": lambda _a: {"version": sim.platform_version, "dependencies": []},
            "me": lambda _a: {"id": sim.registry.user_id, "name": "admin", "user_email": "admin@opencti.io",
                              "effective_confidence_level": None if sim.store_backend.max_confidence is None
                              else {"max_confidence": sim.store_backend.max_confidence, "overrides": []}},
            "connector": lambda a: self.connector_view(sim.registry.get_connector(a.get("id"))),
            "connectors": lambda _a: [self.connector_view(c) for c in self._live_connectors()],
            "connectorsForWorker": lambda _a: [self.connector_view(c) for c in self._live_connectors()],
            "connectorsForImport": lambda _a: [self.connector_view(c) for c in self._live_connectors()
                                               if c.type == "INTERNAL_IMPORT_FILE"],
            "work": lambda a: sim.views.work(self._visible_work(a.get("id"))),
            "works": self.works,
            "isWorkAlive": lambda a: bool((w := sim.registry.work(a.get("id"))) is not None and w.alive),
            "stix": self.stix,
            "stixNestedRefRelationships": self.nested_refs,
        }

    def _visible_work(self, work_id: Optional[str]) -> Optional[Work]:
        """Works of deleted connectors are gone from the platform's API (the simulator keeps them)."""
        work = self.sim.registry.work(work_id)
        connector = self.sim.registry.connectors.get(work.connector_id) if work else None
        return None if work is None or (connector is not None and connector.deleted) else work

    def _live_connectors(self) -> List[Connector]:
        return [c for c in list(self.sim.registry.connectors.values()) if not c.deleted]

    def connector_view(self, connector: Optional[Connector]) -> Optional[Dict[str, Any]]:
        """A connector with its queue configuration."""
        if connector is None:
            return None
        return self.sim.views.connector(connector, self.sim.connector_config(connector))

    def works(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """``works(filters)``: ``connector_id``, ``status``, ``event_source_id`` filters."""
        found: List[Work] = []
        for work in list(self.sim.registry.works.values()):
            ok = self._visible_work(work.id) is not None
            for flt in (args.get("filters") or {}).get("filters") or []:
                key, values = flt.get("key"), flt.get("values") or []
                key = key[0] if isinstance(key, list) else key
                if key not in ("connector_id", "status", "event_source_id", "event_type"):
                    raise GraphQLFieldError(f"Filter key not supported by the simulator: {key}", "UNSUPPORTED_FILTER")
                ok = ok and getattr(work, key) in values
            if ok:
                found.append(work)
        found.sort(key=lambda w: w.timestamp, reverse=(args.get("orderMode") or "desc") == "desc")
        return connection([self.sim.views.work(w) for w in found], args)

    def stix(self, args: Dict[str, Any]) -> Optional[str]:
        """``stix(id)``: the stored STIX object as a JSON string."""
        record = self.sim.store_backend.resolve(args.get("id"))
        return json.dumps(record.stix) if record else None

    def _matching(self, typename: Optional[str], args: Dict[str, Any]) -> List[Dict[str, Any]]:
        views = []
        search = str(args.get("search") or "").lower()
        types = [t for t in (args.get("types") or []) if t]
        for record in self.sim.store_backend.records(include_builtin=typename == "MarkingDefinition"):
            view = self.sim.views.entity(record)
            if view is None or (typename and typename != "StixObjectOrStixRelationship"
                                and typename not in view["__types"]):
                continue
            if types and not ({view["entity_type"], *view["parent_types"]} & set(types)):
                continue
            if search and not any(search in str(view.get(f) or "").lower()
                                  for f in ("name", "value", "observable_value", "description", "pattern")):
                continue
            if not self._relationship_args_match(record, args):
                continue
            if not matches(args.get("filters"), record, view):
                continue
            views.append(view)
        return views

    def _relationship_args_match(self, record: Record, args: Dict[str, Any]) -> bool:
        stix = record.stix

        def ids_of(value: Any) -> set:
            wanted = value if isinstance(value, list) else [value]
            found = set()
            for item in wanted:
                rec = self.sim.store_backend.resolve(item)
                found.update(rec.all_ids() if rec else [item])
            return found

        source = stix.get("source_ref") or stix.get("sighting_of_ref")
        targets = [stix.get("target_ref"), *(stix.get("where_sighted_refs") or [])]
        if args.get("fromId") and source not in ids_of(args["fromId"]):
            return False
        if args.get("toId") and not ids_of(args["toId"]) & set(targets):
            return False
        if args.get("fromOrToId"):
            wanted = ids_of(args["fromOrToId"])
            if source not in wanted and not wanted & set(targets):
                return False
        rel_types = args.get("relationship_type")
        if rel_types:
            rel_types = rel_types if isinstance(rel_types, list) else [rel_types]
            if stix.get("relationship_type") not in rel_types:
                return False
        return True

    def contains(self, args: Dict[str, Any]) -> bool:
        """``<container>ContainsStixObjectOrStixRelationship(id, stixObjectOrStixRelationshipId)``."""
        container = self.sim.store_backend.resolve(args.get("id"))
        element = self.sim.store_backend.resolve(args.get("stixObjectOrStixRelationshipId"))
        if container is None or element is None:
            return False
        return bool(set(element.all_ids()) & set(container.stix.get("object_refs") or []))

    def read_one(self, typename: str, args: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Single read by id (internal id, standard id or alias), or by filters."""
        if args.get("id") is not None:
            view = self.sim.views.entity(self.sim.store_backend.resolve(str(args["id"])))
            if view is None or (typename != "StixObjectOrStixRelationship" and typename not in view["__types"]):
                return None
            return view
        found = self._matching(typename, args)
        return found[0] if found else None

    def read_list(self, typename: str, args: Dict[str, Any]) -> Dict[str, Any]:
        """List query → connection."""
        return connection(self._matching(typename, args), args)

    def nested_refs(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """``stixNestedRefRelationships``: the embedded ``*_ref(s)`` of observables (``resolves_to_refs`` ...)."""
        wanted = args.get("fromId") or args.get("fromOrToId")
        record = self.sim.store_backend.resolve(wanted[0] if isinstance(wanted, list) else wanted)
        edges: List[Dict[str, Any]] = []
        if record is not None:
            record = self.sim.store_backend.snapshot(record)
            for key, value in record.stix.items():
                if key in STANDARD_REFS or not (key.endswith("_ref") or key.endswith("_refs")):
                    continue
                rel_type = key.rsplit("_", 1)[0].replace("_", "-")
                for target in value if isinstance(value, list) else [value]:
                    view = self.sim.views.entity(self.sim.store_backend.resolve(target))
                    if view is None:
                        continue
                    edges.append({
                        "id": f"{record.internal_id}-{rel_type}-{view['id']}", "entity_type": rel_type,
                        "relationship_type": rel_type, "parent_types": ["basic-relationship", "stix-ref-relationship"],
                        "standard_id": None, "created_at": record.created_at, "updated_at": record.updated_at,
                        "from": self.sim.views.entity(record), "to": view,
                    })
        return connection(edges, args)

    # -- mutations -------------------------------------------------------------------------------------------
    def mutations(self) -> Dict[str, Resolver]:
        """Explicit mutation resolvers."""
        resolvers: Dict[str, Resolver] = {
            "registerConnector": self.register_connector,
            "pingConnector": self.ping_connector,
            "deleteConnector": self.delete_connector,
            "resetStateConnector": self.reset_state_connector,
            "workAdd": self.work_add,
            "workEdit": self.work_edit,
            "stixBundlePush": self.bundle_push,
        }
        for name in DELETE_MUTATIONS:
            resolvers[name] = self.entity_edit
        return resolvers

    def _connector_or_fail(self, connector_id: Optional[str]) -> Connector:
        connector = self.sim.registry.get_connector(connector_id)
        if connector is None:
            raise GraphQLFieldError("No connector found with the specified ID", "FUNCTIONAL_ERROR",
                                    {"id": connector_id})
        return connector

    def register_connector(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """``registerConnector(input)``: record it, declare its queues, hand out broker config and JWKS."""
        data = dict(args.get("input") or {})
        if not data.get("id") or not data.get("type"):
            raise GraphQLFieldError("Connector id and type are required", "VALIDATION_ERROR")
        with self.sim.lifecycle_lock:
            connector = self.sim.registry.register(data)
            self.sim.declare_connector_queues(connector)
        view = self.connector_view(connector) or {}
        view["jwks"] = self.sim.jwks_json
        return view

    def ping_connector(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """``pingConnector``: keep the JSON state (unless a reset is pending) and answer the stored one."""
        with self.sim.lifecycle_lock:  # a ping racing deleteConnector must not re-create its queues
            connector = self._connector_or_fail(args.get("id"))
            self.sim.declare_connector_queues(connector)
            state = None if self.sim.consume_state_reset(connector.id) else args.get("state")
            self.sim.registry.ping(connector.id, state, args.get("connectorInfo"))
        return self.connector_view(connector) or {}

    def delete_connector(self, args: Dict[str, Any]) -> str:
        """``deleteConnector``: forget it, its works, and its queues (as the platform does)."""
        with self.sim.lifecycle_lock:
            connector = self._connector_or_fail(args.get("id"))
            self.sim.delete_connector_queues(connector)
            self.sim.registry.delete_connector(connector.id)
        return connector.id

    def reset_state_connector(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """``resetStateConnector``: the next ping hands the connector an empty state."""
        connector = self._connector_or_fail(args.get("id"))
        self.sim.reset_connector_state(connector.id, None)
        return self.connector_view(connector) or {}

    def work_add(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """``workAdd(connectorId, friendlyName, isMultiPartWork)``."""
        connector = self._connector_or_fail(args.get("connectorId"))
        work = self.sim.registry.add_work(connector, args.get("friendlyName") or "Work",
                                          bool(args.get("isMultiPartWork")))
        return self.sim.views.work(work) or {}

    def work_edit(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """``workEdit(id) { toReceived | toProcessed | addExpectations | reportExpectation | ping | ... }``."""
        work_id = str(args.get("id"))
        registry = self.sim.registry
        return {
            "toReceived": lambda a: registry.to_received(work_id, a.get("message")),
            "toProcessed": lambda a: registry.to_processed(work_id, a.get("message"), bool(a.get("inError"))),
            "addExpectations": lambda a: registry.add_expectations(work_id, int(a.get("expectations") or 0)),
            "reportExpectation": lambda a: registry.report_expectation(work_id, a.get("error")),
            "ping": lambda _a: registry.ping_work(work_id),
            "addDraftContext": lambda a: registry.add_draft_context(work_id, a.get("draftContext")),
            "delete": lambda _a: registry.delete_work(work_id),
        }

    def bundle_push(self, args: Dict[str, Any]) -> bool:
        """``stixBundlePush(connectorId, bundle, work_id)`` (the ``api`` queue protocol)."""
        try:
            bundle = json.loads(args.get("bundle") or "")
        except ValueError as err:
            raise GraphQLFieldError("Invalid bundle", "UNSUPPORTED_ERROR", {"cause": str(err)}) from err
        if not isinstance(bundle, dict) or bundle.get("type") != "bundle" or not bundle.get("objects"):
            raise GraphQLFieldError("Invalid bundle", "UNSUPPORTED_ERROR")
        connector = self.sim.registry.get_connector(args.get("connectorId"))
        if connector is None:
            raise GraphQLFieldError("Invalid bundle", "UNSUPPORTED_ERROR", {"cause": "Invalid connector"})
        work_id = args.get("work_id")
        if not work_id:
            work = self.sim.registry.add_work(connector, f"{connector.name} run @ {now_iso()}", received=True)
            work_id = work.id
            if len(bundle["objects"]) == 1:
                self.sim.registry.add_expectations(work_id, 1)
        self.sim.push_bundle(connector, args["bundle"], work_id)
        return True

    def entity_edit(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """``stix*Edit(id) { delete }`` through the API (what pycti's ``delete`` methods call)."""
        target = str(args.get("id"))

        def delete(_a: Dict[str, Any]) -> str:
            result = self.sim.store_backend.delete(target, Source(via="graphql"))
            if result.action == "error":
                raise GraphQLFieldError(result.error or "Cannot delete", result.error_code or "FUNCTIONAL_ERROR")
            return target

        return {"delete": delete, "id": target}

