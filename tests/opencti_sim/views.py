"""OpenCTI's GraphQL view of stored STIX objects.

A view is a dict shaped like the platform's GraphQL objects (``id`` is the internal id, ``standard_id``
the STIX id, ``objectMarking`` / ``objectLabel`` / ``createdBy`` / ``externalReferences`` resolved,
``hashes`` as a list, connections with ``edges`` and ``pageInfo``).  Related objects are callables so that
only what a query selects is built (see :mod:`graphql_exec`).  List-valued fields default to ``[]`` as
the platform's do: pycti calls ``len()`` on several of them.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional

from .registry import Connector, Registry, Work
from .stix_types import RENAMED_ATTRIBUTES, SCO_ENTITY_TYPES, observable_value, octi_attribute, type_info
from .store import Record, Store

LABEL_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")
SKIPPED_PROPERTIES = {"id", "type", "hashes", "extensions", "object_refs", "labels", "x_opencti_labels",
                      "object_marking_refs", "created_by_ref", "external_references", "kill_chain_phases",
                      "source_ref", "target_ref", "sighting_of_ref", "where_sighted_refs", "granular_markings"}


def connection(nodes: List[Any], args: Optional[Dict[str, Any]] = None,
               edge_extra: Optional[Callable[[Any], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """A Relay connection (``edges { node }`` + ``pageInfo``) honouring ``first`` / ``after``."""
    args = args or {}
    start = 0
    if args.get("after"):
        try:
            start = int(base64.b64decode(str(args["after"])).decode()) + 1
        except (ValueError, UnicodeDecodeError):
            start = 0
    first = args.get("first")
    end = len(nodes) if first is None or args.get("all") else min(len(nodes), start + max(int(first), 0))
    page = nodes[start:end]

    def cursor(index: int) -> str:
        return base64.b64encode(str(index).encode()).decode()

    edges = []
    for offset, node in enumerate(page):
        edge = {"node": node, "cursor": cursor(start + offset), "types": ["manual"]}
        if edge_extra is not None:
            edge.update(edge_extra(node))
        edges.append(edge)
    return {
        "edges": edges,
        "pageInfo": {
            "startCursor": cursor(start) if page else None,
            "endCursor": cursor(end - 1) if page else None,
            "hasNextPage": end < len(nodes),
            "hasPreviousPage": start > 0,
            "globalCount": len(nodes),
        },
    }


def label_view(value: str) -> Dict[str, Any]:
    """A label as OpenCTI returns it (the id is stable per value)."""
    return {"id": str(uuid.uuid5(LABEL_NAMESPACE, "label:" + value.lower())), "value": value,
            "color": "#ff9800", "standard_id": "label--" + str(uuid.uuid5(LABEL_NAMESPACE, value.lower())),
            "entity_type": "Label", "__typename": "Label", "__types": frozenset(["Label", "BasicObject"])}


def external_reference_view(ref: Dict[str, Any]) -> Dict[str, Any]:
    """An embedded external reference as the ``External-Reference`` entity OpenCTI makes of it."""
    key = json.dumps({k: ref.get(k) for k in ("source_name", "url", "external_id")}, sort_keys=True)
    ident = str(uuid.uuid5(LABEL_NAMESPACE, key))
    return {
        "id": ident, "standard_id": "external-reference--" + ident, "entity_type": "External-Reference",
        "source_name": ref.get("source_name"), "description": ref.get("description"), "url": ref.get("url"),
        "hash": ref.get("hash"), "external_id": ref.get("external_id"), "created": None, "modified": None,
        "importFiles": connection([]), "__typename": "ExternalReference",
        "__types": frozenset(["ExternalReference", "BasicObject", "StixObject", "StixMetaObject"]),
    }


class Views:
    """Builds views over the store and the registry."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # -- entities ----------------------------------------------------------------------------------------
    def entity(self, record: Optional[Record]) -> Optional[Dict[str, Any]]:
        """The GraphQL view of a stored object (None stays None)."""
        if record is None:
            return None
        record = self.store.snapshot(record)
        stix = record.stix
        kind = stix.get("type", "")
        view: Dict[str, Any] = {}
        for key, value in stix.items():
            if key in SKIPPED_PROPERTIES:
                continue
            view[RENAMED_ATTRIBUTES.get(key, key)] = value
        view.update(type_info(stix))
        view.update({
            "id": record.internal_id,
            "standard_id": record.standard_id,
            "spec_version": stix.get("spec_version", "2.1"),
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "x_opencti_stix_ids": list(record.aliases),
            "objectOrganization": [],
            "creators": self._creators(record),
            "status": None,
            "customFieldValues": [],
            "importFiles": connection([]),
            "pendingFiles": connection([]),
            "exportFiles": connection([]),
            "tasks": connection([]),
            "objectLabel": [label_view(v) for v in self._labels(stix)],
            "objectMarking": lambda _args, s=stix: self._refs(s.get("object_marking_refs") or []),
            "createdBy": lambda _args, s=stix: self.entity(self.store.resolve(self._author(s))),
            "externalReferences": lambda args, s=stix: connection(
                [external_reference_view(r) for r in s.get("external_references") or []], args),
            "killChainPhases": [dict(k, id=str(uuid.uuid5(LABEL_NAMESPACE, json.dumps(k, sort_keys=True))),
                                     x_opencti_order=k.get("x_opencti_order", 0))
                                for k in stix.get("kill_chain_phases") or []],
            "containers": lambda args, r=record: connection(self._containers_of(r), args),
            "reports": lambda args, r=record: connection(
                [c for c in self._containers_of(r) if c["entity_type"] == "Report"], args),
            "notes": lambda args: connection([], args),
            "opinions": lambda args: connection([], args),
            "observedData": lambda args: connection([], args),
            "stixCoreRelationships": lambda args, r=record: connection(self._relationships_of(r), args),
            "toStix": lambda _args, s=stix: json.dumps(s),
            "representative": {"main": observable_value(stix) or stix.get("name")},
        })
        if kind in SCO_ENTITY_TYPES:
            view["observable_value"] = observable_value(stix)
            view["x_opencti_score"] = octi_attribute(stix, "score")
            view["x_opencti_description"] = octi_attribute(stix, "description")
            view["indicators"] = lambda args, r=record: connection(self._based_on_indicators(r), args)
        if "hashes" in stix or kind in ("file", "artifact", "x509-certificate"):
            view["hashes"] = [{"algorithm": k, "hash": v} for k, v in (stix.get("hashes") or {}).items()]
        if kind == "marking-definition":
            view["definition_type"] = stix.get("x_opencti_definition_type") or str(
                stix.get("definition_type", "")).upper()
            view["definition"] = stix.get("x_opencti_definition") or stix.get("name") or json.dumps(
                stix.get("definition"))
        if view.get("entity_type") in ("Report", "Note", "Opinion", "Observed-Data", "Grouping", "Case-Incident",
                                       "Case-Rfi", "Case-Rft", "Feedback", "Task"):
            view["objects"] = lambda args, s=stix: connection(self._refs(s.get("object_refs") or []), args)
        if kind == "relationship":
            view["from"] = lambda _args, s=stix: self.entity(self.store.resolve(s.get("source_ref")))
            view["to"] = lambda _args, s=stix: self.entity(self.store.resolve(s.get("target_ref")))
            view["fromId"] = self._internal_id(stix.get("source_ref"))
            view["toId"] = self._internal_id(stix.get("target_ref"))
        if kind == "sighting":
            view["from"] = lambda _args, s=stix: self.entity(self.store.resolve(s.get("sighting_of_ref")))
            view["to"] = lambda _args, s=stix: self.entity(
                self.store.resolve((s.get("where_sighted_refs") or [None])[0]))
        return view

    def _creators(self, record: Record) -> List[Dict[str, Any]]:
        creators: List[Dict[str, Any]] = []
        for source in record.sources:
            connector = self.registry.get_connector(source.get("connector_id"))
            entry = {"id": self.registry.user_id, "name": f"[C] {connector.name}" if connector else "admin"}
            if entry not in creators:
                creators.append(entry)
        return creators

    @staticmethod
    def _labels(stix: Dict[str, Any]) -> List[str]:
        labels: List[str] = []
        for value in [*(stix.get("labels") or []), *(stix.get("x_opencti_labels") or []),
                      *(octi_attribute(stix, "labels") or [])]:
            if isinstance(value, str) and value not in labels:
                labels.append(value)
        return labels

    @staticmethod
    def _author(stix: Dict[str, Any]) -> Optional[str]:
        return stix.get("created_by_ref") or octi_attribute(stix, "created_by_ref")

    def _internal_id(self, any_id: Optional[str]) -> Optional[str]:
        record = self.store.resolve(any_id)
        return record.internal_id if record else None

    def _refs(self, ids: Iterable[str]) -> List[Dict[str, Any]]:
        views = []
        for ref in ids:
            view = self.entity(self.store.resolve(ref))
            if view is not None:
                views.append(view)
        return views

    def _containers_of(self, record: Record) -> List[Dict[str, Any]]:
        ids = set(record.all_ids())
        found = []
        for other in self.store.records():
            if any(ref in ids for ref in other.stix.get("object_refs") or []):
                found.append(self.entity(other))
        return [v for v in found if v is not None]

    def _relationships_of(self, record: Record) -> List[Dict[str, Any]]:
        ids = set(record.all_ids())
        found = []
        for other in self.store.records():
            stix = other.stix
            if stix.get("type") == "relationship" and (stix.get("source_ref") in ids or stix.get("target_ref") in ids):
                found.append(self.entity(other))
        return [v for v in found if v is not None]

    def _based_on_indicators(self, record: Record) -> List[Dict[str, Any]]:
        ids = set(record.all_ids())
        found = []
        for other in self.store.records():
            stix = other.stix
            if stix.get("relationship_type") == "based-on" and stix.get("target_ref") in ids:
                found.append(self.entity(self.store.resolve(stix.get("source_ref"))))
        return [v for v in found if v is not None]

    # -- platform objects -------------------------------------------------------------------------------------
    def connector(self, connector: Optional[Connector], config: Optional[Dict[str, Any]] = None,
                  queue_details: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
        """The ``Connector`` type (``config`` is the queue/broker block of registration)."""
        if connector is None:
            return None
        return {
            "__typename": "Connector", "id": connector.id, "name": connector.name, "active": connector.active,
            "auto": connector.auto, "only_contextual": connector.only_contextual,
            "playbook_compatible": connector.playbook_compatible, "connector_type": connector.type,
            "connector_scope": list(connector.scope), "connector_state": connector.state,
            "connector_info": connector.connector_info, "connector_user_id": connector.user_id,
            "connector_user": {"id": connector.user_id, "name": "admin", "api_tokens": []},
            "connector_priority_group": None, "enrichment_resolution": connector.enrichment_resolution,
            "connector_queue_details": queue_details or {"messages_number": 0, "messages_size": 0},
            "updated_at": connector.updated_at, "created_at": connector.created_at, "built_in": False,
            "config": config, "works": lambda args, c=connector: [
                self.work(w) for w in list(self.registry.works.values()) if w.connector_id == c.id],
        }

    def work(self, work: Optional[Work]) -> Optional[Dict[str, Any]]:
        """The ``Work`` type."""
        if work is None:
            return None

        def entries(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
            return [{"timestamp": i.get("timestamp"), "message": i.get("message"), "sequence": i.get("sequence"),
                     "source": i.get("source")} for i in items]

        return {
            "__typename": "Work", "id": work.id, "name": work.name, "user": {"id": work.user_id, "name": "admin"},
            "timestamp": work.timestamp, "updated_at": work.updated_at, "status": work.status,
            "event_type": work.event_type, "event_source_id": work.event_source_id,
            "received_time": work.received_time, "processed_time": work.processed_time,
            "completed_time": work.completed_time, "draft_context": work.draft_context,
            "tracking": {"import_expected_number": work.import_expected_number,
                         "import_processed_number": work.processed_number},
            "messages": entries(work.messages), "errors": entries(work.errors),
            "connector": lambda _args, w=work: self.connector(self.registry.get_connector(w.connector_id)),
        }
