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
from typing import Any, Dict, Iterable, List, Optional, Tuple

import pika
from pycti import OpenCTIConnectorHelper, get_config_variable

from iris_opencti_module.convert import Converter, unwrap_export
from iris_opencti_module.envelope import EnvelopeError, encode, make_envelope, parse_envelope
from iris_opencti_module.publisher import mask_url
from iris_opencti_module.stix_ids import bundle_id

from .archive import Archive
from .iris_client import IrisClient, IrisError
from .ledger import Ledger, LedgerOverlay
from .resolve import MessagePlan, plan_message
from .settings import IrisSettings, load_config

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


_LIST_PROPS = ("object_refs", "labels", "x_opencti_labels", "object_marking_refs")


def merge_objects(groups: Iterable[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """One object per id across several messages' bundles, list properties merged as OpenCTI would."""
    merged: Dict[str, Dict[str, Any]] = {}
    for objects in groups:
        for obj in objects:
            known = merged.get(obj["id"])
            if known is None:
                merged[obj["id"]] = dict(obj)
                continue
            for key, value in obj.items():
                if key in _LIST_PROPS and isinstance(value, list):
                    current = list(known.get(key) or [])
                    current.extend(v for v in value if v not in current)
                    known[key] = current
                else:
                    known[key] = value
    return list(merged.values())


def group_name(envelopes: List[Dict[str, Any]]) -> str:
    """The work name of several messages: "IRIS case #12: 37 IOCs created" when they agree."""
    cases = {(e.get("case") or {}).get("id") for e in envelopes}
    events = {e["event"] for e in envelopes}
    if len(cases) == 1 and len(events) == 1:
        kind, action = next(iter(events)).split(".", 1)
        ids = [i for e in envelopes for i in (e.get("iris") or {}).get(
            "ioc_ids" if kind == "ioc" else "asset_ids") or []]
        if kind in ("ioc", "asset"):
            return "IRIS case #%s: %s %s" % (next(iter(cases)), _plural(len(ids), kind.upper() if kind == "ioc"
                                                                             else kind), action)
    counts: Dict[str, int] = {}
    for e in envelopes:
        counts[e["event"]] = counts.get(e["event"], 0) + 1
    return "IRIS: %d events (%s) in %s" % (len(envelopes), ", ".join("%s %d" % kv for kv in sorted(counts.items())),
                                           _plural(len(cases), "case"))


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
        self.duration = str(get_config_variable("CONNECTOR_DURATION_PERIOD", ["connector", "duration_period"], config,
                                                default=DEFAULTS["duration_period"]))
        self._stop = threading.Event()
        self._process_lock = threading.Lock()
        self.dead_letter_queue = self.settings.queue + ".dead"
        self.max_group = max(1, int(get_config_variable("CONNECTOR_BATCH_SIZE", ["connector", "batch_size"], config,
                                                        isNumber=True, default=200) or 200))

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
    def check(self, envelope: Dict[str, Any]) -> None:
        """Refuse, before anything reaches OpenCTI, a bundle no retry could ever send."""
        for obj in (envelope.get("bundle") or {}).get("objects") or []:
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or "--" not in obj["id"] \
                    or not obj.get("type"):
                raise PoisonMessage("bundle holds an object without a valid 'id'/'type': %.200s" % (obj,))

    def plan(self, envelope: Dict[str, Any], ledger: Any) -> MessagePlan:
        self.check(envelope)
        try:
            return plan_message(envelope, ledger, self.may_delete)
        except Transient:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PoisonMessage("cannot resolve the message: %s: %s" % (type(exc).__name__, exc)) from exc

    def process(self, envelope: Dict[str, Any], body: bytes) -> str:
        """One message: see :meth:`process_group`."""
        return self.process_group([(envelope, body)])

    def process_group(self, items: List[Tuple[Dict[str, Any], bytes]]) -> str:
        """Messages that share one work: resolved in order, sent, and only then written to the ledger.

        Upserts are sent first and removals last, so a group ends with the first message that removes
        anything; the rest follows as the next group. Raises on any failure: nothing is acknowledged and the
        ledger is unchanged, so the redelivered messages resolve the same way again.
        """
        with self._process_lock:
            overlay = LedgerOverlay(self.ledger)
            plans = []
            for envelope, _body in items:
                plan = self.plan(envelope, overlay)
                overlay.apply(plan)
                plans.append(plan)
                if plan.operations() and len(plans) < len(items):
                    first = self.process_group(items[:len(plans)])
                    self.process_group(items[len(plans):])
                    return first
            envelopes = [envelope for envelope, _ in items]
            name = work_name(envelopes[0]) if len(items) == 1 else group_name(envelopes)
            work_id = self.helper.api.work.initiate_work(self.helper.connect_id, name, is_multipart=True)
            first = envelopes[0]
            meta = {"case_id": (first.get("case") or {}).get("id"), "event": first["event"]}
            for envelope, body in items:
                self.archive.record_message(body, work_id=work_id, case_id=(envelope.get("case") or {}).get("id"),
                                            event=envelope["event"], message_id=envelope.get("message_id"))
            upserts = merge_objects(p.upserts for p in plans)
            meta["message_id"] = first.get("message_id") if len(items) == 1 else None
            sent = self._send(upserts, plans[-1], work_id, meta, seed=",".join(
                str(e.get("message_id")) for e in envelopes))
            with self.ledger.transaction():
                for plan in plans:
                    self._update_ledger(plan)
            summary = "%s: %d objects upserted%s" % (name, len(upserts), sent)
            skipped = [s for e in envelopes for s in e.get("skipped") or []]
            if skipped:
                summary += "; %d skipped in IRIS: %s" % (len(skipped), "; ".join(
                    "%s %s: %s" % (s.get("kind"), s.get("object_id"), s.get("reason")) for s in skipped[:5]))
            self.helper.api.work.to_processed(work_id, summary)
            self.helper.connector_logger.info(summary, {"work_id": work_id})
            return work_id

    def _send(self, upserts: List[Dict[str, Any]], last: MessagePlan, work_id: str, meta: Dict[str, Any],
              seed: str) -> str:
        if upserts:
            text = json.dumps({"type": "bundle", "id": bundle_id("upserts|" + seed), "objects": upserts})
            self.helper.send_stix2_bundle(text, work_id=work_id, cleanup_inconsistent_bundle=False)
            self.archive.record_bundle(text, work_id=work_id, **meta)
        operations = last.operations()
        if not operations:
            return ""
        text = json.dumps({"type": "bundle", "id": bundle_id("ops|" + seed), "objects": operations})
        self.helper.send_stix2_bundle(text, work_id=work_id, no_split=True)
        self.archive.record_bundle(text, work_id=work_id, **meta)
        removed = sum(len(p.removed_from_case) for p in last.cases)
        deleted = sum(len(p.deleted) + (1 if p.delete_case else 0) for p in last.cases)
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

    def _poison(self, channel: Any, tag: int, body: bytes, envelope: Optional[Dict[str, Any]], reason: str) -> None:
        self.helper.connector_logger.error("message dead-lettered", {"reason": reason[:300]})
        self.dead_letter(channel, body, reason)
        self._fail_work(envelope, reason)
        channel.basic_ack(tag)

    def handle_batch(self, connection: Any, channel: Any, batch: List[Tuple[int, bytes]]) -> None:
        """Messages taken from the queue together: poison ones are dead-lettered, the others processed in
        groups, each retried until it succeeds."""
        group: List[Tuple[int, Dict[str, Any], bytes]] = []
        for tag, body in batch:
            try:
                envelope = parse_envelope(body)
                self.check(envelope)
            except (EnvelopeError, PoisonMessage) as exc:
                self._flush(connection, channel, group)
                group = []
                self._poison(channel, tag, body, None, str(exc))
                continue
            group.append((tag, envelope, body))
            if len(group) >= self.max_group:
                self._flush(connection, channel, group)
                group = []
        self._flush(connection, channel, group)

    def _flush(self, connection: Any, channel: Any, group: List[Tuple[int, Dict[str, Any], bytes]]) -> None:
        attempt = 0
        while group and not self._stop.is_set():
            try:
                self.process_group([(envelope, body) for _, envelope, body in group])
                for tag, _, _ in group:
                    channel.basic_ack(tag)
                return
            except PoisonMessage as exc:
                if len(group) == 1:
                    tag, envelope, body = group[0]
                    self._poison(channel, tag, body, envelope, str(exc))
                    return
                # find the culprit: process one by one
                for item in group:
                    self._flush(connection, channel, [item])
                return
            except Exception as exc:  # noqa: BLE001 - OpenCTI/RabbitMQ failures are retried, never dropped
                attempt += 1
                delay = min(60.0, 0.5 * (2 ** min(attempt, 7)))
                self.helper.connector_logger.warning("messages not processed, will retry", {
                    "messages": len(group), "attempt": attempt, "delay": delay, "error": str(exc)[:300]})
                connection.sleep(delay)  # keeps the AMQP heartbeat alive while waiting
        for tag, _, _ in group:
            channel.basic_nack(tag, requeue=True)

    def consume(self) -> None:
        """Consume until stopped; reconnects with backoff when RabbitMQ goes away (unacked messages return).

        Messages already waiting are taken together (up to ``max_group``), so a burst of single-IOC events
        costs a few OpenCTI works instead of one per IOC.
        """
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
                channel.basic_qos(prefetch_count=self.max_group)
                self.helper.connector_logger.info("consuming IRIS messages", {
                    "queue": self.settings.queue, "url": mask_url(self.settings.amqp_url)})
                batch: List[Tuple[int, bytes]] = []
                for method, _props, body in channel.consume(self.settings.queue, inactivity_timeout=0.2):
                    if self._stop.is_set():
                        break
                    if method is not None:
                        batch.append((method.delivery_tag, body))
                        if len(batch) < self.max_group and channel.get_waiting_message_count():
                            continue
                    if batch:
                        self.handle_batch(connection, channel, batch)
                        batch = []
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
        """pycti's scheduler hands any exception to its excepthook, which stops the whole connector: a failed
        reconcile must only be logged (the next period tries again; messages keep flowing meanwhile)."""
        try:
            stats = self.reconcile()
        except Exception as exc:  # noqa: BLE001
            self.helper.connector_logger.error("reconcile failed, will retry next period", {"error": str(exc)[:300]})
            return
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
