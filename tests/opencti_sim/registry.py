"""Connectors and works, with the platform's bookkeeping rules.

Work completion follows OpenCTI's ``domain/work.js``:

* ``workAdd`` creates a work in status ``wait`` (``progress`` when created with a received time);
* ``addExpectations(n)`` adds to ``import_expected_number`` (pycti calls it with the number of split
  bundles before publishing them);
* every ``reportExpectation`` (one per object the worker imported, with or without an error) adds one to
  the processed count; the work becomes ``complete`` as soon as processed >= expected - unless it is a
  multi-part work (``isMultiPartWork``), which also waits for ``toProcessed``;
* ``toProcessed`` records the processed time (and the message in ``messages``, or in ``errors`` when
  ``inError``); it completes the work only if processed >= expected already.
"""

from __future__ import annotations

import datetime
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .store import now_iso


@dataclass
class Connector:
    """A registered connector as the platform keeps it."""

    id: str
    name: str
    type: str
    scope: List[str]
    user_id: str
    auto: bool = False
    only_contextual: bool = False
    playbook_compatible: bool = False
    enrichment_resolution: Optional[str] = None
    listen_callback_uri: Optional[str] = None
    version: Optional[str] = None
    slug: Optional[str] = None
    state: Optional[str] = None
    connector_info: Optional[Dict[str, Any]] = None
    active: bool = True
    deleted: bool = False
    registrations: int = 0
    pings: int = 0
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    last_ping: Optional[str] = None

    @property
    def push_queue(self) -> str:
        """``push_<id>``: bundles from the connector to the worker."""
        return f"push_{self.id}"

    @property
    def listen_queue(self) -> str:
        """``listen_<id>``: messages from the platform to the connector."""
        return f"listen_{self.id}"

    def as_dict(self) -> Dict[str, Any]:
        """Snapshot for tests and the control API."""
        return {
            "id": self.id, "name": self.name, "type": self.type, "scope": list(self.scope),
            "auto": self.auto, "only_contextual": self.only_contextual,
            "playbook_compatible": self.playbook_compatible, "enrichment_resolution": self.enrichment_resolution,
            "listen_callback_uri": self.listen_callback_uri, "version": self.version, "slug": self.slug,
            "state": self.state, "connector_info": self.connector_info, "active": self.active,
            "deleted": self.deleted, "registrations": self.registrations, "pings": self.pings,
            "created_at": self.created_at, "updated_at": self.updated_at, "last_ping": self.last_ping,
            "push_queue": self.push_queue, "listen_queue": self.listen_queue, "user_id": self.user_id,
        }


@dataclass
class Work:
    """A work (an import / enrichment run) and its tracking figures."""

    id: str
    name: str
    connector_id: str
    event_type: str
    event_source_id: Optional[str]
    user_id: str
    timestamp: str
    is_multipart: bool = False
    status: str = "wait"
    received_time: Optional[str] = None
    processed_time: Optional[str] = None
    completed_time: Optional[str] = None
    updated_at: str = field(default_factory=now_iso)
    import_expected_number: int = 0
    expectations_added: int = 0  # every addExpectations, kept as sent (toProcessed may rewrite the expected number)
    processed_number: int = 0
    completed_number: int = 0
    processed_requested: bool = False
    alive: bool = True
    draft_context: Optional[str] = None
    messages: List[Dict[str, Any]] = field(default_factory=list)
    errors: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """OpenCTI's ``isWorkFinished``: processed >= expected."""
        return self.processed_number >= self.import_expected_number

    def as_dict(self) -> Dict[str, Any]:
        """Snapshot for tests and the control API."""
        return {
            "id": self.id, "name": self.name, "connector_id": self.connector_id, "event_type": self.event_type,
            "event_source_id": self.event_source_id, "status": self.status, "timestamp": self.timestamp,
            "is_multipart": self.is_multipart, "received_time": self.received_time,
            "processed_time": self.processed_time, "completed_time": self.completed_time,
            "import_expected_number": self.import_expected_number, "import_processed_number": self.processed_number,
            "expectations_added": self.expectations_added,
            "completed_number": self.completed_number, "alive": self.alive, "draft_context": self.draft_context,
            "messages": [dict(m) for m in self.messages], "errors": [dict(e) for e in self.errors],
        }


class WorkNotFound(KeyError):
    """Unknown work id."""


class Registry:
    """Connectors and works (thread-safe)."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.connectors: Dict[str, Connector] = {}
        self.works: Dict[str, Work] = {}
        self._lock = threading.RLock()

    def reset(self) -> None:
        """Forget every connector and work."""
        with self._lock:
            self.connectors.clear()
            self.works.clear()

    # -- connectors ------------------------------------------------------------------------------------
    def register(self, data: Dict[str, Any]) -> Connector:
        """``registerConnector``: create, or update a known connector (keeping its state)."""
        with self._lock:
            connector_id = str(data.get("id") or uuid.uuid4())
            scope = data.get("scope") or []
            if isinstance(scope, str):
                scope = [s.strip() for s in scope.split(",") if s.strip()]
            connector = self.connectors.get(connector_id)
            if connector is None or connector.deleted:
                connector = Connector(connector_id, str(data.get("name") or ""), str(data.get("type") or ""),
                                      list(scope), self.user_id)
                self.connectors[connector_id] = connector
            connector.name = str(data.get("name") or connector.name)
            connector.type = str(data.get("type") or connector.type)
            connector.scope = list(scope)
            for key in ("auto", "only_contextual", "playbook_compatible"):
                setattr(connector, key, bool(data.get(key)))
            for key in ("enrichment_resolution", "listen_callback_uri", "version", "slug"):
                setattr(connector, key, data.get(key))
            connector.registrations += 1
            connector.active = True
            connector.updated_at = now_iso()
            return connector

    def get_connector(self, connector_id: Optional[str]) -> Optional[Connector]:
        """A live (not deleted) connector."""
        with self._lock:
            connector = self.connectors.get(connector_id or "")
            return connector if connector is not None and not connector.deleted else None

    def ping(self, connector_id: str, state: Optional[str], info: Optional[Dict[str, Any]]) -> Connector:
        """``pingConnector``: store the state the connector sends (JSON string) and its runtime info."""
        with self._lock:
            connector = self.get_connector(connector_id)
            if connector is None:
                raise KeyError(connector_id)
            if state is not None:
                connector.state = state
            connector.connector_info = info
            connector.pings += 1
            connector.last_ping = now_iso()
            connector.updated_at = connector.last_ping
            return connector

    def delete_connector(self, connector_id: str) -> bool:
        """``deleteConnector``: the connector and its works disappear."""
        with self._lock:
            connector = self.get_connector(connector_id)
            if connector is None:
                return False
            connector.deleted = True
            connector.active = False
            for work in self.works.values():
                if work.connector_id == connector_id:
                    work.alive = False
            return True

    # -- works ---------------------------------------------------------------------------------------------
    def add_work(self, connector: Connector, name: str, multipart: bool = False,
                 source_id: Optional[str] = None, received: bool = False) -> Work:
        """``workAdd`` (ids are ``work_<connector id>_<timestamp>`` like the platform's)."""
        with self._lock:
            moment = datetime.datetime.now(datetime.timezone.utc)
            while True:
                stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
                work_id = f"work_{connector.id}_{stamp}"
                if work_id not in self.works:
                    break
                moment += datetime.timedelta(milliseconds=1)
            work = Work(work_id, name, connector.id, connector.type, source_id or connector.id, self.user_id,
                        stamp, is_multipart=multipart)
            if received:
                work.received_time = stamp
                work.status = "progress"
            self.works[work_id] = work
            return work

    def work(self, work_id: Optional[str]) -> Optional[Work]:
        """A work by id (deleted works are gone)."""
        with self._lock:
            return self.works.get(work_id or "")

    def to_received(self, work_id: str, message: Optional[str]) -> str:
        """``toReceived``: status progress, received time, optional message."""
        with self._lock:
            work = self.works.get(work_id)
            if work is not None:
                stamp = now_iso()
                work.status = "progress" if work.status != "complete" else work.status
                work.received_time = stamp
                work.updated_at = stamp
                if message:
                    work.messages.append({"timestamp": stamp, "message": message})
            return work_id

    def to_processed(self, work_id: str, message: Optional[str], in_error: bool = False) -> str:
        """``toProcessed``: see the module docstring for when it completes the work."""
        with self._lock:
            work = self.works.get(work_id)
            if work is None:
                return work_id
            stamp = now_iso()
            work.processed_time = stamp
            work.updated_at = stamp
            if work.is_multipart and not work.finished:
                work.processed_requested = True
            if work.finished:
                total = work.processed_number or 1
                work.status = "complete"
                work.import_expected_number = total
                work.completed_number = total
                work.completed_time = stamp
            if message:
                (work.errors if in_error else work.messages).append({"timestamp": stamp, "message": message})
            return work_id

    def add_expectations(self, work_id: str, expectations: int) -> str:
        """``addExpectations``."""
        with self._lock:
            work = self.works.get(work_id)
            if work is not None and work.alive:
                work.import_expected_number += int(expectations or 0)
                work.expectations_added += int(expectations or 0)
                work.updated_at = now_iso()
            return work_id

    def report_expectation(self, work_id: str, error: Optional[Dict[str, Any]] = None) -> str:
        """``reportExpectation``: one more processed element (optionally with an error)."""
        with self._lock:
            work = self.works.get(work_id)
            if work is None or not work.alive:
                return work_id
            stamp = now_iso()
            work.processed_number += 1
            work.updated_at = stamp
            complete = (not work.is_multipart or work.processed_requested) and work.finished
            if complete:
                work.status = "complete"
                work.completed_number = work.processed_number
                work.completed_time = stamp
            if error:
                if len(work.errors) < 100:
                    work.errors.append({"timestamp": stamp, "message": error.get("error"),
                                        "source": error.get("source")})
            return work_id

    def ping_work(self, work_id: str) -> str:
        """``workEdit.ping``."""
        with self._lock:
            work = self.works.get(work_id)
            if work is not None:
                work.updated_at = now_iso()
            return work_id

    def add_draft_context(self, work_id: str, draft_context: Optional[str]) -> str:
        """``workEdit.addDraftContext``."""
        with self._lock:
            work = self.works.get(work_id)
            if work is not None:
                work.draft_context = draft_context
            return work_id

    def delete_work(self, work_id: str) -> str:
        """``workEdit.delete``."""
        with self._lock:
            self.works.pop(work_id, None)
            return work_id
