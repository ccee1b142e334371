"""The simulator: an HTTP GraphQL endpoint + RabbitMQ worker + store, driven by the real pycti.

Typical use::

    sim = OpenCTISimulator(token="t0ken")
    url = sim.start()            # http://127.0.0.1:<port>
    helper = OpenCTIConnectorHelper({"opencti": {"url": url, "token": "t0ken"}, "connector": {...}})
    ...
    sim.wait_for(lambda: sim.work(work_id)["status"] == "complete")
    helper.stop(); sim.stop()
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

import pika
import requests

from iris_opencti_module.core.gc_tuning import tune_for_bulk
from tests.http_double import QuietHandler, serve

from . import control
from .amqp_worker import CONNECTOR_EXCHANGE, WORKER_EXCHANGE, AmqpWorker, listen_routing, push_routing
from .faults import Faults, Match
from .graphql_exec import Executor, GraphQLFieldError
from .graphql_ops import Operations
from .graphql_parser import GraphQLSyntaxError, parse, root_field_names
from .ingestion import decode_message, ingest_bundle
from .keys import SigningKey
from .registry import Connector, Registry
from .stix_types import entity_type_of
from .store import IngestResult, Source, Store, StoreView, now_iso
from .strict import MISSING_REFERENCE, PROCESSING_COUNT, Delivery, WorkerPool, requeued, split_like_pycti
from .views import Views

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
SECRET_KEYS = ("token", "password", "pass", "secret", "authorization", "access_key", "secret_key")


def _platform_version() -> str:
    try:
        from pycti import __version__  # optional
    except ImportError:
        return "7.261026.0"
    return str(__version__)


def pycti_error_text(result: Any) -> str:
    """What pycti's worker reports on the work for a refused item: ``str(ex)`` of the ``ValueError`` its
    ``query`` raises, ``{"name": <platform error name>, "error_message": ...}`` (``api/opencti_api_client.py``),
    reported by ``_report_expectation_item_error`` (``utils/opencti_stix2.py``)."""
    return str({"name": result.error_code or "FUNCTIONAL_ERROR", "error_message": result.error})


def strict_options() -> Dict[str, Any]:
    """Simulator options for the connector and end-to-end tests: strict mode (:mod:`.strict`) with
    ``OPENCTI_SIM_WORKERS`` workers, 3 unless set (as this project's compose file runs); ``0`` = the
    one-consumer, queue-order mode."""
    import os  # only these tests read it

    workers = int(os.environ.get("OPENCTI_SIM_WORKERS", "3"))
    return {"workers": workers} if workers > 0 else {}


def redact(value: Any) -> Any:
    """Variables as recorded: secrets masked."""
    if isinstance(value, dict):
        return {k: ("***" if any(s in k.lower() for s in SECRET_KEYS) and v is not None else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class OpenCTISimulator:
    """A stand-in OpenCTI platform for tests (see the package docstring for the full API)."""

    def __init__(self, token: str = "simulator-token", amqp_url: Optional[str] = DEFAULT_AMQP_URL,
                 host: str = "127.0.0.1", port: int = 0, *, strict_refs: bool = True, standard_ids: bool = True,
                 bundle_push_via_queue: bool = False, drain_on_delete: bool = True,
                 platform_version: Optional[str] = None, max_confidence: Optional[int] = 100, workers: int = 0,
                 prefetch: int = 0, retry_delay: float = 0.2, seed: Optional[int] = None, reorder: float = 0.3,
                 hold: float = 0.02) -> None:
        """
        :param token: the API token clients must send as ``Authorization: Bearer <token>``.
        :param amqp_url: RabbitMQ to declare queues on and consume from; None = no broker (``api`` protocol
            only; registration still hands out a broker config, as pycti requires one).
        :param strict_refs: refuse objects with unresolvable references, as OpenCTI does.
        :param standard_ids: recompute SDO/SRO standard ids like the platform (needs pycti).
        :param bundle_push_via_queue: ``stixBundlePush`` goes through the push queue and the worker
            (as the platform does) instead of being ingested before the mutation returns.
        :param drain_on_delete: on ``deleteConnector``, ingest what is still in the push queue first.
        :param max_confidence: the token user's effective max confidence level (None: none at all, so OpenCTI
            refuses every object that has a confidence attribute).
        :param workers: 0 = one consumer ingesting messages in queue order (the default); N > 0 = strict
            mode (:mod:`.strict`): N workers taking messages out of order, retrying missing references
            ``PROCESSING_COUNT`` times (``retry_delay`` apart) before reporting them in error.
        :param prefetch: strict mode: messages held unacknowledged at once, which the workers take oldest
            first (default ``8 * workers``).
        :param seed: strict mode: seed of the random hold-backs (``reorder``).
        :param reorder: strict mode: share of the messages held back (up to ``hold`` seconds) while the
            following ones flow past.
        """
        self.token = token
        self.host = host
        self.port = port
        self.amqp_url = amqp_url
        self.bundle_push_via_queue = bundle_push_via_queue
        self.drain_on_delete = drain_on_delete
        self.platform_version = platform_version or _platform_version()
        self.user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "opencti-simulator-user:" + token))
        self._cond = threading.Condition()
        self._record_lock = threading.Lock()
        self._ops: List[Dict[str, Any]] = []
        self._errors: List[str] = []
        self._state_resets: Dict[str, bool] = {}
        # Serialises register / ping / delete of connectors (each declares or deletes queues on the broker).
        self.lifecycle_lock = threading.Lock()
        self.faults = Faults()
        self._store = Store(strict_refs=strict_refs, standard_ids=standard_ids, on_change=self._notify,
                            max_confidence=max_confidence)
        self.registry = Registry(self.user_id)
        self.views = Views(self._store, self.registry)
        self.operations = Operations(self)
        self.key = SigningKey()
        self.jwks_json = self.key.jwks_json()
        self.amqp: Optional[AmqpWorker] = None
        self._mq = self._broker_settings(amqp_url)
        self._http: Optional[ThreadingHTTPServer] = None
        self._http_thread: Optional[threading.Thread] = None
        self.retry_delay = float(retry_delay)
        self.pool: Optional[WorkerPool] = None
        if workers > 0:
            self.pool = WorkerPool(workers, self._on_push_message_strict, self._record_error, seed, reorder, hold)
        self.prefetch = int(prefetch) or 8 * max(1, workers)

    # -- lifecycle -------------------------------------------------------------------------------------------
    @staticmethod
    def _broker_settings(amqp_url: Optional[str]) -> Dict[str, Any]:
        params = pika.URLParameters(amqp_url or DEFAULT_AMQP_URL)
        return {"host": params.host, "port": params.port, "vhost": params.virtual_host,
                "user": params.credentials.username, "pass": params.credentials.password,
                "use_ssl": params.ssl_options is not None}

    def start(self) -> str:
        """Start the broker worker (if any) and the HTTP server; return the platform URL."""
        # its store holds every object of a big case: at CPython's default thresholds each full collection of
        # it stopped the workers for ~0.2 s (1.6 s per 20,000-IOC case), a latency OpenCTI does not have
        tune_for_bulk()
        threading.Thread(target=self._store.standard_id_generator.warm, name="opencti-sim-warm",
                         daemon=True).start()
        if self.amqp_url:
            if self.pool is not None:
                self.pool.start()
                self.amqp = AmqpWorker(pika.URLParameters(self.amqp_url), self._on_push_message_strict,
                                       self._record_error, pool=self.pool, prefetch=self.prefetch)
            else:
                self.amqp = AmqpWorker(pika.URLParameters(self.amqp_url), self._on_push_message,
                                       self._record_error)
            self.amqp.start_and_wait()
        self._http, self._http_thread = serve((self.host, self.port), _Handler, "opencti-sim-http", {"sim": self})
        self.port = self._http.server_address[1]
        return self.url

    def stop(self, delete_queues: bool = True) -> None:
        """Stop serving.

        :param delete_queues: also delete the queues of connectors still registered (a test that forgot
            ``helper.stop()`` must not leave queues on the shared broker); nothing is ingested any more.
        """
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self.amqp is not None:
            if delete_queues:
                with self.lifecycle_lock:
                    self._delete_all_queues()
            self.amqp.stop()
            self.amqp = None
        if self.pool is not None:
            self.pool.stop()

    def _delete_all_queues(self) -> None:
        assert self.amqp is not None
        for connector in list(self.registry.connectors.values()):
            if not connector.deleted:
                try:
                    self.amqp.delete_connector(connector.id, drain=False)
                except Exception as err:  # noqa: BLE001 - best effort on the way out
                    self._record_error(f"cannot delete queues of {connector.id}: {err!r}")

    def __enter__(self) -> "OpenCTISimulator":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://host:port`` (pycti appends ``/graphql``)."""
        return f"http://{self.host}:{self.port}"

    # -- inspection ------------------------------------------------------------------------------------------
    @property
    def store(self) -> StoreView:
        """``id → STIX object`` (copies); any alias or internal id resolves."""
        return self._store.view()

    @property
    def store_backend(self) -> Store:
        """The store itself (records with metadata)."""
        return self._store

    def objects_of_type(self, stix_type: str) -> List[Dict[str, Any]]:
        """Stored objects of a STIX type (``"case-incident"``) or OpenCTI entity type (``"IPv4-Addr"``)."""
        return [copy.deepcopy(r.stix) for r in self._store.records()
                if r.stix.get("type") == stix_type or entity_type_of(r.stix) == stix_type]

    def ref_count(self, any_id: str, prop: str = "object_refs") -> int:
        """How many distinct ids a stored object's ``prop`` holds, without copying it: a benchmark polling a
        100,000-IOC case through ``store`` would copy 300,000 refs ten times a second, under the GIL the
        simulated workers need."""
        return self._store.ref_count(any_id, prop)

    def meta(self, any_id: str) -> Optional[Dict[str, Any]]:
        """OpenCTI metadata of an object: internal id, aliases, timestamps, sources (connector, work)."""
        record = self._store.resolve(any_id)
        if record is None:
            return None
        return {"internal_id": record.internal_id, "standard_id": record.standard_id,
                "aliases": list(record.aliases), "created_at": record.created_at,
                "updated_at": record.updated_at, "sources": [dict(s) for s in record.sources],
                "entity_type": entity_type_of(record.stix)}

    @property
    def events(self) -> List[Dict[str, Any]]:
        """Every ingestion event (create / update / delete / error), oldest first."""
        return [dict(e) for e in list(self._store.events)]

    @property
    def ops(self) -> List[Dict[str, Any]]:
        """Every GraphQL request: operation name, root fields, variables (secrets masked), status."""
        with self._record_lock:
            return [dict(op) for op in self._ops]

    def ops_named(self, name: str) -> List[Dict[str, Any]]:
        """Recorded requests whose operation name or a root field is ``name``."""
        return [op for op in self.ops if op["operation"] == name or name in op["fields"]]

    @property
    def errors(self) -> List[str]:
        """Internal errors (resolver crashes, broken queue messages)."""
        with self._record_lock:
            return list(self._errors)

    @property
    def works(self) -> Dict[str, Dict[str, Any]]:
        """``work id → snapshot`` (status, tracking figures, messages, errors)."""
        return {w.id: w.as_dict() for w in list(self.registry.works.values())}

    def work(self, work_id: str) -> Optional[Dict[str, Any]]:
        """One work's snapshot."""
        work = self.registry.work(work_id)
        return work.as_dict() if work else None

    @property
    def connectors(self) -> Dict[str, Dict[str, Any]]:
        """``connector id → snapshot`` (also deleted ones, flagged)."""
        return {c.id: c.as_dict() for c in list(self.registry.connectors.values())}

    def connector_state(self, connector_id: str) -> Any:
        """The connector's state as last pinged (decoded JSON)."""
        connector = self.registry.connectors.get(connector_id)
        if connector is None or connector.state in (None, ""):
            return None
        return json.loads(connector.state)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Wait until ``predicate()`` is truthy and return its value; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            with self._cond:
                self._cond.wait(min(interval, remaining))

    def wait_for_work(self, work_id: str, status: str = "complete", timeout: float = 10.0) -> Dict[str, Any]:
        """Wait for a work to reach ``status``; return its snapshot."""
        return self.wait_for(lambda: (w := self.work(work_id)) is not None and w["status"] == status and w,
                             timeout)

    # -- control ---------------------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500, match: Match = None) -> None:
        """The next ``n`` GraphQL requests (optionally only operations/fields in ``match``) get ``status``."""
        self.faults.fail_next(n, status, match)

    def fail_for(self, seconds: float, status: int = 500, match: Match = None) -> None:
        """GraphQL requests get ``status`` for ``seconds``."""
        self.faults.fail_for(seconds, status, match)

    def delay(self, seconds: float, match: Match = None) -> None:
        """Add latency to GraphQL requests (0 clears)."""
        self.faults.delay(seconds, match)

    def reset_faults(self) -> None:
        """Remove failure and delay rules."""
        self.faults.reset()

    def reset(self, store: bool = True, ops: bool = True, faults: bool = True, registry: bool = False) -> None:
        """Clear recorded state; connectors and works survive unless ``registry``."""
        if faults:
            self.faults.reset()
        if ops:
            with self._record_lock:
                self._ops.clear()
                self._errors.clear()
        if store:
            self._store.reset()
        if registry:
            self.registry.reset()
        self._notify()

    def reset_connector_state(self, connector_id: str, state: Any = None) -> None:
        """Set a connector's state from the platform side (the UI's "reset state"); the next ping hands it
        to the connector instead of storing the connector's own."""
        connector = self.registry.get_connector(connector_id)
        if connector is None:
            raise KeyError(connector_id)
        connector.state = None if state is None else json.dumps(state)
        self._state_resets[connector_id] = True

    def consume_state_reset(self, connector_id: str) -> bool:
        """Whether a platform-side state reset is pending for this ping (clears it)."""
        return self._state_resets.pop(connector_id, False)

    def ingest_bundle(self, bundle: Any, connector_id: Optional[str] = None,
                      work_id: Optional[str] = None) -> List[IngestResult]:
        """Put objects in the store directly (fixtures: what the platform already knows)."""
        data = json.loads(bundle) if isinstance(bundle, str) else bundle
        if isinstance(data, list):
            data = {"type": "bundle", "objects": data}
        return ingest_bundle(data, self._store, self.registry, Source(connector_id, work_id, "direct"), work_id)

    def delete(self, any_id: str) -> IngestResult:
        """Delete an object as the platform would (cascade included)."""
        return self._store.delete(any_id, Source(via="direct"))

    # -- platform behaviour (called by the GraphQL operations) ---------------------------------------------
    def connector_config(self, connector: Connector) -> Dict[str, Any]:
        """The ``config`` block of ``registerConnector`` (broker, S3, queue names)."""
        return {
            "connection": dict(self._mq),
            "s3": {"endpoint": "127.0.0.1", "port": 9000, "use_ssl": False, "bucket_name": "opencti-bucket",
                   "bucket_region": "us-east-1", "access_key": "simulator", "secret_key": "simulator"},
            "listen": connector.listen_queue, "listen_routing": listen_routing(connector.id),
            "listen_exchange": CONNECTOR_EXCHANGE, "listen_callback_uri": connector.listen_callback_uri,
            "push": connector.push_queue, "push_routing": push_routing(connector.id), "push_exchange": WORKER_EXCHANGE,
            "dead_letter_routing": listen_routing("too-large-bundle"),
        }

    def declare_connector_queues(self, connector: Connector) -> None:
        """``registerConnectorQueues`` on the real broker (and start consuming the push queue)."""
        if self.amqp is not None:
            self.amqp.declare_connector(connector.id, {"name": connector.name, "config": {
                "id": connector.id, "type": connector.type, "scope": list(connector.scope)}})

    def delete_connector_queues(self, connector: Connector) -> None:
        """``unregisterConnector``: the connector's queues are deleted with it."""
        if self.amqp is not None:
            self.amqp.delete_connector(connector.id, drain=self.drain_on_delete)

    def push_bundle(self, connector: Connector, bundle: str, work_id: str) -> None:
        """``stixBundlePush``: ingest now, or queue for the worker like the platform."""
        if self.bundle_push_via_queue and self.amqp is not None:
            self.amqp.publish(WORKER_EXCHANGE, push_routing(connector.id), {
                "type": "bundle", "applicant_id": self.user_id, "work_id": work_id, "update": True,
                "content": base64.b64encode(bundle.encode("utf-8")).decode("ascii")})
            return
        ingest_bundle(json.loads(bundle), self._store, self.registry, Source(connector.id, work_id, "api"), work_id)
        self._notify()

    def _on_push_message(self, connector_id: str, message: Dict[str, Any]) -> None:
        """The worker's handling of one push-queue message."""
        bundle = decode_message(message)
        work_id = message.get("work_id")
        source = Source(connector_id, work_id, "amqp", message.get("applicant_id"), message.get("draft_id"))
        ingest_bundle(bundle, self._store, self.registry, source, work_id)
        self._notify()

    def _on_push_message_strict(self, connector_id: str, message: Dict[str, Any]) -> None:
        """Strict mode: one push-queue message as ``PushHandler.handle_message`` handles it (see :mod:`.strict`)."""
        assert self.pool is not None
        bundle = decode_message(message)
        work_id = message.get("work_id")
        objects = bundle.get("objects") or []
        if not objects:
            raise ValueError("JSON data type is not a STIX2 bundle")
        expectations, incompatible, pieces = split_like_pycti(bundle)
        if len(objects) > 1 and not message.get("no_split"):
            # a whole bundle: the worker splits it, adds the expectations and re-queues the pieces
            if work_id:
                self.registry.add_expectations(work_id, expectations)
            for piece in pieces:
                self.pool.submit(Delivery(connector_id, requeued(message, piece), None))
            return
        source = Source(connector_id, work_id, "amqp", message.get("applicant_id"), message.get("draft_id"))
        if work_id:  # import_bundle: every element the splitter could not handle is reported
            for item in incompatible:
                self.registry.report_expectation(work_id, {
                    "error": "Incompatible element in bundle",
                    "source": "Element {} is incompatible and couldn't be processed".format(item.get("id"))})
        for piece in pieces:
            for item in piece["objects"]:
                self._import_item_with_retries(item, source, work_id)
        self._notify()

    def _import_item_with_retries(self, item: Dict[str, Any], source: Source, work_id: Optional[str]) -> None:
        """pycti ``import_item_with_retries``: a missing reference is retried ``PROCESSING_COUNT`` times,
        then the item is reported in error on the work (and dropped); one expectation either way."""
        attempt = 0
        while True:
            last = attempt >= PROCESSING_COUNT
            result = self._store.ingest(item, source, record_error=last, owned=True)  # decoded for this call
            if result.action == "error" and result.error_code == MISSING_REFERENCE and not last:
                attempt += 1
                time.sleep(self.retry_delay)
                continue
            break
        if work_id:
            error = None
            if result.action == "error":
                text = json.dumps(item)
                error = {"error": pycti_error_text(result), "source": text if len(text) < 50000 else "Bundle too large"}
            self.registry.report_expectation(work_id, error)

    def drop_next_push(self, n: int = 1) -> None:
        """Strict mode: the next ``n`` push-queue messages are discarded unreported (a worker's crash)."""
        if self.pool is None:
            raise RuntimeError("drop_next_push needs strict mode (workers > 0)")
        self.pool.drop_next(n)

    # -- enrichment ------------------------------------------------------------------------------------------
    def enrichment_message(self, connector: Connector, entity_id: str, work_id: str,
                           with_stix_objects: Optional[bool] = None) -> Dict[str, Any]:
        """The message OpenCTI sends an INTERNAL_ENRICHMENT connector (manual enrichment)."""
        record = self._store.resolve(entity_id)
        if record is None:
            raise KeyError(f"unknown entity {entity_id}")
        record = self._store.snapshot(record)
        if with_stix_objects is None:
            with_stix_objects = connector.enrichment_resolution == "stix_bundle"
        stix_objects = None
        if with_stix_objects:
            objects = [record.stix]
            for key, value in record.stix.items():
                if key.endswith("_ref") or key.endswith("_refs"):
                    for ref in value if isinstance(value, list) else [value]:
                        other = self._store.resolve(ref) if isinstance(ref, str) else None
                        if other is not None:
                            other = self._store.snapshot(other)
                            if other.stix not in objects:
                                objects.append(other.stix)
            stix_objects = json.dumps(objects)
        return {
            "internal": {"work_id": work_id, "applicant_id": None, "draft_id": None, "mode": "manual",
                         "trigger": "update"},
            "event": {"event_type": "INTERNAL_ENRICHMENT", "entity_id": record.standard_id,
                      "entity_type": entity_type_of(record.stix), "stix_entity": json.dumps(record.stix),
                      "stix_objects": stix_objects},
        }

    def request_enrichment(self, connector_id: str, entity_id: str,
                           with_stix_objects: Optional[bool] = None) -> str:
        """Ask an enrichment connector to enrich a stored entity, as "Enrich" in the UI; returns the work id.

        AMQP listen protocol: the message goes to ``listen_<id>``.  API listen protocol (the connector
        registered a ``listen_callback_uri``): it is POSTed there with a JWT signed by the JWKS key.
        """
        connector = self.registry.get_connector(connector_id)
        if connector is None:
            raise KeyError(f"unknown connector {connector_id}")
        record = self._store.resolve(entity_id)
        if record is None:
            raise KeyError(f"unknown entity {entity_id}")
        work = self.registry.add_work(connector, "Manual enrichment", source_id=record.standard_id)
        message = self.enrichment_message(connector, entity_id, work.id, with_stix_objects)
        if connector.listen_callback_uri:
            threading.Thread(target=self._post_callback, args=(connector, message), daemon=True).start()
        elif self.amqp is not None:
            self.amqp.publish(CONNECTOR_EXCHANGE, listen_routing(connector.id), message)
        else:
            raise RuntimeError("no broker and no listen_callback_uri: cannot reach the connector")
        self._notify()
        return work.id

    def _post_callback(self, connector: Connector, message: Dict[str, Any]) -> None:
        try:
            token = self.key.sign({"connector_id": connector.id})
            response = requests.post(str(connector.listen_callback_uri), json=message, timeout=60,
                                     headers={"Authorization": f"Bearer {token}"})
            if response.status_code >= 300:
                self._record_error(f"callback {connector.listen_callback_uri} answered {response.status_code}")
        except requests.RequestException as err:
            self._record_error(f"callback {connector.listen_callback_uri} failed: {err!r}")

    # -- GraphQL -------------------------------------------------------------------------------------------
    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _record_error(self, message: str) -> None:
        with self._record_lock:
            self._errors.append(message)

    def handle_graphql(self, headers: Dict[str, str], body: bytes) -> Tuple[int, Dict[str, Any]]:
        """One POST /graphql: latency, injected failures, auth, execution; always recorded."""
        started = time.monotonic()
        entry: Dict[str, Any] = {"at": now_iso(), "operation": None, "kind": None, "fields": [], "variables": {},
                                 "status": 200, "errors": [], "injected": False}
        try:
            status, payload = self._graphql(headers, body, entry)
        except Exception:  # noqa: BLE001 - a simulator bug must show up as an answer, not a hang
            detail = traceback.format_exc()
            self._record_error(detail)
            status, payload = 500, {"errors": [{"message": "Simulator internal error", "name": "INTERNAL_ERROR",
                                                "extensions": {"code": "INTERNAL_ERROR", "trace": detail}}]}
        entry["status"] = status
        entry["errors"] = [e.get("name") or e.get("message") for e in payload.get("errors", [])]
        entry["duration_ms"] = round((time.monotonic() - started) * 1000, 2)
        with self._record_lock:
            entry["seq"] = len(self._ops) + 1
            self._ops.append(entry)
        self._notify()
        return status, payload

    def _graphql(self, headers: Dict[str, str], body: bytes, entry: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        try:
            request = json.loads(body or b"{}")
            document = parse(str(request.get("query") or ""))
            operation = document.operation(request.get("operationName"))
        except (ValueError, GraphQLSyntaxError) as err:
            return 400, {"errors": [{"message": str(err), "name": "GRAPHQL_PARSE_FAILED",
                                     "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}]}
        variables = {**operation.variable_defaults, **(request.get("variables") or {})}
        fields = root_field_names(operation, document.fragments)
        entry.update({"operation": operation.name or (fields[0] if fields else None), "kind": operation.kind,
                      "fields": fields, "variables": redact(variables)})
        names = [n for n in [operation.name, *fields] if n]
        latency = self.faults.latency(names)
        if latency:
            time.sleep(latency)
        injected = self.faults.check(names)
        if injected is not None:
            entry["injected"] = True
            return injected.status, {"errors": [{"message": injected.message, "name": "SIMULATED_FAILURE"}]}
        if headers.get("authorization", "") != f"Bearer {self.token}":
            error = GraphQLFieldError("You must be logged in to do this.", "AUTH_REQUIRED")
            return 200, {"data": None, "errors": [error.to_graphql([])]}
        unknown = [f for f in fields if f != "__typename" and not self.operations.knows(operation.kind, f)]
        if unknown:
            return 400, {"errors": [{
                "message": f'Cannot query field "{unknown[0]}" on type "{operation.kind.capitalize()}".',
                "name": "GRAPHQL_VALIDATION_FAILED", "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]}
        executor = Executor(document.fragments, variables)
        data: Dict[str, Any] = {}
        errors: List[Dict[str, Any]] = []
        for fld in executor.collect(operation.selections, {}):
            key = fld.response_key
            if fld.name == "__typename":
                data[key] = "Mutation" if operation.kind == "mutation" else "Query"
                continue
            try:
                resolver = self.operations.resolve_root(operation.kind, fld.name)
                data[key] = executor.project(resolver(executor.field_args(fld)), fld.selections)
            except GraphQLFieldError as err:
                data[key] = None
                errors.append(err.to_graphql([key]))
        payload: Dict[str, Any] = {"data": data}
        if errors:
            payload["errors"] = errors
        return 200, payload


class _Handler(QuietHandler):
    """HTTP front: ``POST /graphql``, ``GET /health`` and the ``/_sim/`` control API."""

    server_version = "OpenCTISimulator/1.0"
    protocol_version = "HTTP/1.1"

    @property
    def sim(self) -> OpenCTISimulator:
        return self.server.sim  # type: ignore[attr-defined]

    def _send(self, status: int, payload: Any) -> None:
        self.send_body(status, json.dumps(payload, default=str).encode("utf-8"))

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        """GraphQL or control."""
        parsed = urllib.parse.urlparse(self.path)
        body = self.read_body()
        if parsed.path == "/graphql":
            if self.headers.get("Content-Type", "").startswith("multipart/"):
                self._send(400, {"errors": [{"message": "file uploads are not supported by the simulator",
                                             "name": "UNSUPPORTED_ERROR"}]})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = self.sim.handle_graphql(headers, body)
            if status == 0:  # injected "connection dropped": the client sees a ConnectionError
                self.close_connection = True
                return
            self._send(status, payload)
            return
        self._control("POST", parsed, body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """Health and control reads."""
        parsed = urllib.parse.urlparse(self.path)
        if parsed.path == "/health":
            self._send(200, {"status": "ok"})
            return
        self._control("GET", parsed, b"")

    def _control(self, method: str, parsed: urllib.parse.ParseResult, body: bytes) -> None:
        try:
            payload = json.loads(body) if body else {}
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
            status, answer = control.handle(self.sim, method, parsed.path, query, payload)
        except (KeyError, ValueError, TypeError) as err:
            status, answer = 400, {"error": f"{type(err).__name__}: {err}"}
        self._send(status, answer)
