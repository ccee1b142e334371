"""``iris-opencti-import``: the OpenCTI external-import connector that receives IRIS's messages.

Per message: open a work named after what happened in IRIS, resolve deletions and updates against the ledger,
send the bundle with ``send_stix2_bundle`` so OpenCTI's workers ingest it natively, archive what came in and
what went out, close the work, and only then acknowledge the message. If OpenCTI or RabbitMQ fails, the
message stays unacknowledged and is retried with backoff; a message that cannot be understood goes to the
dead-letter queue with its reason, and the work says why.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Any, Dict, List, Optional

import pika
from pycti import OpenCTIConnectorHelper

from iris_opencti_module.convert import Converter, unwrap_export
from iris_opencti_module.envelope import EnvelopeError, encode, make_envelope, parse_envelope
from iris_opencti_module.stix_ids import bundle_id

from .archive import Archive
from .iris_client import IrisClient, IrisError
from .ledger import Ledger
from .resolve import MessagePlan, plan_message
from .settings import IrisSettings, load_config, mask_url

LOG = logging.getLogger("iris-opencti-import")
DEFAULTS = {"type": "EXTERNAL_IMPORT", "name": "DFIR-IRIS", "scope": "iris", "log_level": "info",
            "duration_period": "PT1H"}
OWNERSHIP_QUERY = """
query IrisOpenCTIOwnership($id: String!) {
  stixCoreObject(id: $id) {
    id
    standard_id
    createdBy { id standard_id }
    containers { edges { node { id standard_id entity_type } } }
  }
}
"""


class PoisonMessage(Exception):
    """A message that no retry can fix: it goes to the dead-letter queue."""


class Transient(Exception):
    """OpenCTI, RabbitMQ or the ledger failed: the same message will work later."""


def _plural(n: int, word: str) -> str:
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def work_name(envelope: Dict[str, Any]) -> str:
    """What an analyst reads in OpenCTI's works list: "IRIS case #12: 3 IOCs created"."""
    event = envelope["event"]
    case_id = (envelope.get("case") or {}).get("id")
    where = "IRIS case #%s" % case_id if case_id is not None else "IRIS"
    iris = envelope.get("iris") or {}
    kind, action = event.split(".", 1)
    if kind == "case":
        if action == "deleted":
            return "%s deleted" % where
        produced = envelope.get("produced") or {}
        iocs = sum(1 for k in produced if k.startswith("ioc:"))
        assets = sum(1 for k in produced if k.startswith("asset:"))
        label = {"sync": "full sync", "created": "created", "updated": "updated"}[action]
        if action == "updated" and not iocs and not assets:
            return "%s: case updated" % where
        return "%s: %s (%s, %s)" % (where, label, _plural(iocs, "IOC"), _plural(assets, "asset"))
    ids = iris.get("ioc_ids" if kind == "ioc" else "asset_ids") or []
    return "%s: %s %s" % (where, _plural(len(ids), "IOC" if kind == "ioc" else "asset"), action)


class ImportConnector:
    """Consumes the IRIS queue and gets every message into OpenCTI, exactly once in effect."""

    def __init__(self, config: Optional[Dict[str, Any]] = None) -> None:
        config = config if config is not None else load_config()
        connector = config.setdefault("connector", {})
        for key, value in DEFAULTS.items():
            connector.setdefault(key, value)
        self.helper = OpenCTIConnectorHelper(config)
        self.settings = IrisSettings.from_config(config)
        self.ledger = Ledger(self.settings.ledger)
        self.archive = Archive(self.settings.archive_dir, self.settings.archive_retention_days)
        self.converter = Converter(self.settings.converter_config())
        self.author_id = self.converter.author["id"]
        self.duration = connector.get("duration_period") or DEFAULTS["duration_period"]
        self._stop = threading.Event()
        self._process_lock = threading.Lock()
        self.dead_letter_queue = self.settings.queue + ".dead"

    # ------------------------------------------------------------------------------------- ownership
    def may_delete(self, stix_id: str, case_ref: Optional[str]) -> bool:
        """True when OpenCTI says IRIS is the object's sole author and no other container holds it."""
        if stix_id.startswith("relationship--"):
            return True  # relationships are IRIS's own statements (ids derive from IRIS's objects)
        try:
            result = self.helper.api.query(OWNERSHIP_QUERY, {"id": stix_id})
        except Exception as exc:  # noqa: BLE001 - any failure to ask OpenCTI is worth a retry
            raise Transient("ownership of %s: %s" % (stix_id, exc)) from exc
        obj = (result.get("data") or {}).get("stixCoreObject")
        if not obj:
            return False
        author = (obj.get("createdBy") or {}).get("standard_id")
        if author != self.author_id:
            return False
        containers = [(e.get("node") or {}).get("standard_id") for e in ((obj.get("containers") or {})
                                                                           .get("edges") or [])]
        return all(c == case_ref for c in containers)

    # -------------------------------------------------------------------------------------- messages
    def process(self, envelope: Dict[str, Any], body: bytes) -> str:
        """Everything one message asks, in order; raises on any OpenCTI failure so the message is retried."""
        with self._process_lock:
            for obj in (envelope.get("bundle") or {}).get("objects") or []:
                if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or "--" not in obj["id"] \
                        or not obj.get("type"):
                    raise PoisonMessage("bundle holds an object without a valid 'id'/'type': %.200s" % (obj,))
            try:
                plan = plan_message(envelope, self.ledger, self.may_delete)
            except Transient:
                raise
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise PoisonMessage("cannot resolve the message: %s: %s" % (type(exc).__name__, exc)) from exc
            name = work_name(envelope)
            work_id = self.helper.api.work.initiate_work(self.helper.connect_id, name, is_multipart=True)
            case_id = (envelope.get("case") or {}).get("id")
            meta = {"case_id": case_id, "event": envelope["event"], "message_id": envelope.get("message_id")}
            self.archive.record_message(body, work_id=work_id, **meta)
            sent = self._send(plan, envelope, work_id, meta)
            self._update_ledger(plan)
            summary = "%s: %d objects upserted%s" % (name, len(plan.upserts), sent)
            skipped = envelope.get("skipped") or []
            if skipped:
                summary += "; %d skipped in IRIS: %s" % (len(skipped), "; ".join(
                    "%s %s: %s" % (s.get("kind"), s.get("object_id"), s.get("reason")) for s in skipped[:5]))
            self.helper.api.work.to_processed(work_id, summary)
            self.helper.connector_logger.info(summary, {"work_id": work_id})
            return work_id

    def _send(self, plan: MessagePlan, envelope: Dict[str, Any], work_id: str, meta: Dict[str, Any]) -> str:
        if plan.upserts:
            bundle = {"type": "bundle", "id": (envelope.get("bundle") or {}).get("id") or bundle_id(
                envelope.get("message_id") or ""), "objects": plan.upserts}
            text = json.dumps(bundle)
            self.helper.send_stix2_bundle(text, work_id=work_id, cleanup_inconsistent_bundle=False)
            self.archive.record_bundle(text, work_id=work_id, **meta)
        operations = plan.operations()
        if not operations:
            return ""
        text = json.dumps({"type": "bundle", "id": bundle_id("ops|" + (envelope.get("message_id") or "")),
                           "objects": operations})
        self.helper.send_stix2_bundle(text, work_id=work_id, no_split=True)
        self.archive.record_bundle(text, work_id=work_id, **meta)
        removed = sum(len(p.removed_from_case) for p in plan.cases)
        deleted = sum(len(p.deleted) + (1 if p.delete_case else 0) for p in plan.cases)
        return ", %d removed from the case, %d deleted" % (removed, deleted)

    def _update_ledger(self, plan: MessagePlan) -> None:
        for case in plan.cases:
            if case.delete_case:
                self.ledger.forget_case(case.case_id)
                continue
            self.ledger.record(case.case_id, case.set_keys, case_ref=case.case_ref, name=case.case_name)
            if case.forget_keys:
                self.ledger.forget(case.case_id, case.forget_keys)

    # ---------------------------------------------------------------------------------------- queue
    def _parameters(self) -> pika.URLParameters:
        params = pika.URLParameters(self.settings.amqp_url)
        params.heartbeat = 30
        params.blocked_connection_timeout = 60
        return params

    def _declare(self, channel: Any) -> None:
        channel.queue_declare(queue=self.settings.queue, durable=True)
        channel.queue_declare(queue=self.dead_letter_queue, durable=True)

    def dead_letter(self, channel: Any, body: bytes, reason: str) -> None:
        """Keep the message, with the reason, on a durable queue an operator can inspect and replay."""
        channel.basic_publish(exchange="", routing_key=self.dead_letter_queue, body=body,
                              properties=pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                                              headers={"x-iris-opencti-error": reason[:1000]}))

    def _fail_work(self, envelope: Optional[Dict[str, Any]], reason: str) -> None:
        name = work_name(envelope) if envelope else "IRIS: unreadable message"
        try:
            work_id = self.helper.api.work.initiate_work(self.helper.connect_id, name, is_multipart=True)
            self.helper.api.work.to_processed(work_id, "dead-lettered: " + reason, in_error=True)
        except Exception as exc:  # noqa: BLE001 - the message is already safe on the dead-letter queue
            self.helper.connector_logger.error("could not record the failed work", {"error": str(exc)})

    def handle(self, connection: Any, channel: Any, method: Any, body: bytes) -> None:
        envelope: Optional[Dict[str, Any]] = None
        try:
            envelope = parse_envelope(body)
        except EnvelopeError as exc:
            self._poison(channel, method, body, None, str(exc))
            return
        attempt = 0
        while not self._stop.is_set():
            try:
                self.process(envelope, body)
                channel.basic_ack(method.delivery_tag)
                return
            except PoisonMessage as exc:
                self._poison(channel, method, body, envelope, str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - OpenCTI/RabbitMQ failures are retried, never dropped
                error = exc
            attempt += 1
            delay = min(60.0, 0.5 * (2 ** min(attempt, 7)))
            self.helper.connector_logger.warning(
                "message not processed, will retry", {"attempt": attempt, "delay": delay, "error": str(error)[:300]})
            connection.sleep(delay)  # keeps the AMQP heartbeat alive while waiting
        channel.basic_nack(method.delivery_tag, requeue=True)

    def _poison(self, channel: Any, method: Any, body: bytes, envelope: Optional[Dict[str, Any]], reason: str) -> None:
        self.helper.connector_logger.error("message dead-lettered", {"reason": reason[:300]})
        self.dead_letter(channel, body, reason)
        self._fail_work(envelope, reason)
        channel.basic_ack(method.delivery_tag)

    def consume(self) -> None:
        """Consume until stopped; reconnects with backoff when RabbitMQ goes away (unacked messages return)."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                connection = pika.BlockingConnection(self._parameters())
            except pika.exceptions.AMQPError as exc:
                self.helper.connector_logger.warning("RabbitMQ unreachable", {
                    "url": mask_url(self.settings.amqp_url), "error": type(exc).__name__, "retry_in": delay})
                self._stop.wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            delay = 1.0
            try:
                channel = connection.channel()
                self._declare(channel)
                channel.basic_qos(prefetch_count=1)
                self.helper.connector_logger.info("consuming IRIS messages", {
                    "queue": self.settings.queue, "url": mask_url(self.settings.amqp_url)})
                for method, _props, body in channel.consume(self.settings.queue, inactivity_timeout=1.0):
                    if self._stop.is_set():
                        break
                    if method is None:
                        continue
                    self.handle(connection, channel, method, body)
                try:
                    channel.cancel()
                    connection.close()
                except pika.exceptions.AMQPError:
                    pass
            except pika.exceptions.AMQPError as exc:
                self.helper.connector_logger.warning("RabbitMQ connection lost", {"error": type(exc).__name__})
                self._stop.wait(1.0)

    # ------------------------------------------------------------------------------------- reconcile
    def reconcile(self) -> Dict[str, int]:
        """Compare IRIS with the ledger for every switched-on case; ship what is missing, delete what is gone."""
        stats = {"cases": 0, "changed": 0}
        if not self.settings.api_key:
            self.helper.connector_logger.info("reconcile skipped: no IRIS_API_KEY configured")
            return stats
        from iris_opencti_module.case_switch import sync_enabled

        client = IrisClient(self.settings.url, self.settings.api_key, self.settings.verify_ssl, self.settings.timeout)
        try:
            cases = client.list_cases()
        except IrisError as exc:
            self.helper.connector_logger.error("reconcile: cannot list IRIS cases", {"error": str(exc)})
            return stats
        for summary in cases:
            case_id = summary.get("case_id")
            try:
                export = unwrap_export(client.export_case(case_id))
            except (IrisError, ValueError) as exc:
                self.helper.connector_logger.warning("reconcile: case skipped", {"case": case_id, "error": str(exc)})
                continue
            if not sync_enabled(export["case"], self.settings.sync_mode):
                continue
            stats["cases"] += 1
            if self.reconcile_case(export):
                stats["changed"] += 1
        return stats

    def reconcile_case(self, export: Dict[str, Any]) -> bool:
        """One case: nothing is sent when IRIS and the ledger already agree."""
        result = self.converter.convert_export(export)
        case = export["case"]
        known = self.ledger.case_map(case["case_id"])
        changed = {k for k, ids in result.produced.items() if set(ids) != known.get(k, set())}
        gone = set(known) - set(result.produced)
        if not changed and not gone:
            return False
        keep = {i for k in changed for i in result.produced[k]} | {result.case_ref}
        objects = [o for o in result.objects.values()
                   if o["id"] in keep or o["type"] == "marking-definition" or o["id"] == self.author_id]
        incident = dict(result.objects[result.case_ref])
        refs = [r for r in incident.get("object_refs", []) if r in keep]
        if refs:
            incident["object_refs"] = refs
        else:
            incident.pop("object_refs", None)
        objects = [incident if o["id"] == incident["id"] else o for o in objects]
        bundle = {"type": "bundle", "id": bundle_id("reconcile|%s|%s" % (case["case_id"], ",".join(sorted(keep)))),
                  "objects": objects}
        envelope = make_envelope("case.sync", case["case_id"], case_name=incident["name"], case_ref=result.case_ref,
                                 bundle=bundle, produced=result.produced, user="reconcile",
                                 skipped=[s.as_dict() for s in result.skipped])
        self.process(envelope, encode(envelope))
        return True

    # ------------------------------------------------------------------------------------------ run
    def stop(self, *_: Any) -> None:
        self._stop.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        if self.settings.api_key and self.duration not in ("0", "", None):
            thread = threading.Thread(target=self.helper.schedule_iso, args=(self._scheduled_reconcile, self.duration),
                                      name="reconcile", daemon=True)
            thread.start()
        try:
            self.consume()
        finally:
            self.archive_prune()
            self.helper.connector_logger.info("stopping")
            self.helper.stop()

    def _scheduled_reconcile(self) -> None:
        stats = self.reconcile()
        self.helper.connector_logger.info("reconcile done", stats)

    def archive_prune(self) -> None:
        try:
            self.archive.prune()
        except Exception as exc:  # noqa: BLE001 - pruning must never stop the connector
            self.helper.connector_logger.warning("archive prune failed", {"error": str(exc)})


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO)
    connector = ImportConnector()
    if argv and argv[0] == "reconcile":
        stats = connector.reconcile()
        print("reconciled %d cases, %d changed" % (stats["cases"], stats["changed"]))
        connector.helper.stop()
        return 0
    connector.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
