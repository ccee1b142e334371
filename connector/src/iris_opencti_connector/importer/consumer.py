"""The import connector's consumer loop: IRIS's queue read in batches, with backoff and a dead-letter queue.

Messages are taken as they wait (up to ``CONNECTOR_BATCH_SIZE``), decoded and handed to the work flow
(``ImportConnector.process_group``) as one group; they are acknowledged only once that group is in OpenCTI and
in the ledger. A message that cannot be read, or that the flow finds poisonous, goes to ``<queue>.dead`` with
its reason; a failing service means backoff and redelivery; a ledger unreachable longer than its bound ends
the process. Replicas on a PostgreSQL ledger consume side by side (or, in standby mode, only the one holding
the leader lock).
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import pika

from iris_opencti_connector.importer.errors import (
    LedgerOutage,
    PoisonMessage,
    Transient,
    outage_reason,
)
from iris_opencti_connector.importer.work_names import work_name
from iris_opencti_connector.settings import IrisSettings
from iris_opencti_connector.store.ledger import LeaderLock, LeadershipLost, LedgerUnavailable
from iris_opencti_module.core.envelope import EnvelopeError, parse_envelope
from iris_opencti_module.core.masking import mask_url

#: a group holds no more messages once their bodies add up to this: a decoded 4 MiB case part takes ~10 MiB,
#: and a backlog of a 100,000-IOC case is 50 of them. The pipeline of steps (ImportConnector.process_group)
#: drains at the end of each group, so a 50,000-IOC backlog in 2 groups rather than 7 saves ~3 s
GROUP_BYTES = 64 * 1024 * 1024


def _close_quietly(connection: Any) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception:  # noqa: BLE001 - it is being abandoned either way
        pass


class QueueConsumer:
    """The consumer loop of :class:`~iris_opencti_connector.importer.connector.ImportConnector`, which
    provides ``settings``, ``helper``, ``ledger``, ``_stop``, ``max_group``, ``dead_letter_queue`` and the work
    flow (``process_group``, ``_open_work``, ``_work_in_error``)."""

    settings: IrisSettings
    helper: Any
    ledger: Any
    max_group: int
    dead_letter_queue: str
    _stop: threading.Event
    _leader: Optional[LeaderLock]

    # the work flow, which ImportConnector provides
    def check(self, envelope: Dict[str, Any]) -> None:
        raise NotImplementedError

    def process_group(self, items: List[Tuple[Dict[str, Any], bytes]],
                      done: Optional[Callable[[List[int]], None]] = None) -> str:
        raise NotImplementedError

    def _open_work(self, name: str) -> str:
        raise NotImplementedError

    def _work_in_error(self, work_id: Optional[str], reason: str, name: str = "IRIS: ledger unreachable") -> None:
        raise NotImplementedError

    def _keep_alive_while_waiting(self, connection: Any) -> None:
        raise NotImplementedError

    def _outage(self, exc: LedgerUnavailable) -> LedgerOutage:
        """Say, in the log and in a work in error, why the connector stops."""
        reason = outage_reason(exc, self.settings.ledger_outage_timeout)
        self.helper.connector_logger.error(reason, {"ledger": mask_url(self.settings.ledger)})
        self._work_in_error(None, reason)
        return LedgerOutage(reason)

    def _check_outage(self, exc: BaseException) -> None:
        cause = exc if isinstance(exc, LedgerUnavailable) else exc.__cause__  # a Transient wraps it
        if isinstance(cause, LedgerUnavailable) and cause.down_for >= self.settings.ledger_outage_timeout:
            raise self._outage(cause) from cause

    def _wait_or_give_up(self, exc: LedgerUnavailable, delay: float) -> None:
        self._check_outage(exc)
        self.helper.connector_logger.warning("ledger unreachable, retrying", {
            "ledger": mask_url(self.settings.ledger), "down_for": round(exc.down_for, 1), "retry_in": delay,
            "error": str(exc)[:300]})
        self._stop.wait(min(delay, max(0.1, self.settings.ledger_outage_timeout - exc.down_for)))

    def consume(self) -> None:
        """Consume until stopped. Replicas sharing a PostgreSQL ledger consume side by side: RabbitMQ hands
        each its share, the locks of what each step writes keep two replicas off the same IRIS object
        (``StepLocks``), and the ledger's event times keep IRIS's order per object however the messages were
        shared out (``plan.plan_message``). In standby mode (``IRIS_REPLICA_MODE``) only the replica holding
        the leader lock consumes, the others wait to take over. A SQLite ledger is one replica's own: its
        consumer is exclusive, so a second replica with a file of its own waits instead of consuming beside it
        (its ledger would miss what the first recorded)."""
        if not self.ledger.shared or self.settings.replica_mode != "standby":
            self._consume_queue()
            return
        leader = LeaderLock(self.ledger, self.settings.queue)
        standby_logged = False
        delay = 0.5
        while not self._stop.is_set():
            try:
                held = leader.try_acquire()
            except LedgerUnavailable as exc:
                self._wait_or_give_up(exc, delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            if not held:
                if not standby_logged:
                    self.helper.connector_logger.info("standby: another replica consumes the queue", {
                        "queue": self.settings.queue, "retry_every": self.settings.leader_retry})
                    standby_logged = True
                self._stop.wait(self.settings.leader_retry)
                continue
            standby_logged = False
            self.helper.connector_logger.info("leader: consuming as the only replica", {
                "queue": self.settings.queue, "ledger": mask_url(self.settings.ledger)})
            self._leader = leader
            try:
                self._consume_queue(leader)
            except LeadershipLost as exc:
                self.helper.connector_logger.warning("leadership lost: stopped consuming, unacknowledged "
                                                     "messages returned to the queue", {"reason": str(exc)[:300]})
            finally:
                self._leader = None
                leader.release()

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
            work_id = self._open_work(name)
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
        groups (of at most ``max_group`` messages and :data:`GROUP_BYTES`), each retried until it succeeds."""
        group: List[Tuple[int, Dict[str, Any], bytes]] = []
        size = 0
        for tag, body in batch:
            try:
                envelope = parse_envelope(body)
                self.check(envelope)
            except (EnvelopeError, PoisonMessage) as exc:
                reason = str(exc)
            except Exception as exc:  # noqa: BLE001 - whatever a message holds, it must not end the consumer
                reason = f"cannot read the message: {type(exc).__name__}: {exc}"
                self.helper.connector_logger.error(reason, {"traceback": traceback.format_exc()[-3000:]})
            else:
                group.append((tag, envelope, body))
                size += len(body)
                if len(group) >= self.max_group or size >= GROUP_BYTES:
                    self._flush(connection, channel, group)
                    group, size = [], 0
                continue
            self._flush(connection, channel, group)
            group, size = [], 0
            self._poison(channel, tag, body, None, reason)
        self._flush(connection, channel, group)

    def _flush(self, connection: Any, channel: Any, group: List[Tuple[int, Dict[str, Any], bytes]]) -> None:
        """Process a group until it is in OpenCTI: OpenCTI/RabbitMQ/ledger faults are retried with backoff
        (never dropped), a message at fault is dead-lettered, each acknowledged as soon as its step is done."""
        pending = list(group)
        tried = list(pending)  # what the current attempt was handed: ``done`` names indices into it

        def done(taken: List[int]) -> None:
            acked = {tried[i][0] for i in taken}
            for tag in sorted(acked):
                channel.basic_ack(tag)
            pending[:] = [item for item in pending if item[0] not in acked]

        self._keep_alive_while_waiting(connection)  # heartbeats go on during the waits on OpenCTI
        attempt = 0
        while pending and not self._stop.is_set():
            tried = list(pending)
            try:
                self.process_group([(envelope, body) for _, envelope, body in tried], done=done)
                return
            except (LeadershipLost, LedgerOutage, pika.exceptions.AMQPError):
                raise  # stop consuming (or reconnect): unacknowledged messages return to the queue
            except (Transient, LedgerUnavailable) as exc:
                self._check_outage(exc)  # raises LedgerOutage once the ledger is away too long
                attempt += 1
                delay = min(60.0, 0.5 * (2 ** min(attempt, 7)))
                self.helper.connector_logger.warning("messages not processed, will retry", {
                    "messages": len(pending), "attempt": attempt, "delay": delay, "error": str(exc)[:300]})
                self._pause(connection, delay)
                continue
            except PoisonMessage as exc:
                reason = str(exc)
            except Exception as exc:  # noqa: BLE001 - a fault of the message's content, not of a service
                reason = f"cannot process the message: {type(exc).__name__}: {exc}"
                self.helper.connector_logger.error(reason, {"traceback": traceback.format_exc()[-3000:]})
            if len(pending) == 1:
                tag, envelope, body = pending[0]
                self._poison(channel, tag, body, envelope, reason)
                return
            # find the culprit: the rest one by one
            for item in list(pending):
                self._flush(connection, channel, [item])
            return
        for tag, _, _ in pending:
            channel.basic_nack(tag, requeue=True)

    def _pause(self, connection: Any, delay: float) -> None:
        """Wait before a retry, keeping the AMQP heartbeat alive, and end at once when the connector stops
        (a SIGTERM during a minute's backoff must not wait for it)."""
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            connection.sleep(min(0.5, left))

    def _consume_queue(self, leader: Optional[LeaderLock] = None) -> None:
        """Consume until stopped; reconnects with backoff when RabbitMQ goes away (unacked messages return).

        Messages already waiting are taken together (up to ``max_group``), so a burst of single-IOC events
        costs a few OpenCTI works instead of one per IOC. With ``leader`` (standby mode), and on a SQLite
        ledger, the consumer is exclusive: RabbitMQ refuses it while another consumer (a previous leader not
        yet gone, another replica) holds the queue, so the two never overlap. The leader lock's session is
        checked every second, consumption stopping at once when it is lost.
        """
        delay = 1.0
        while not self._stop.is_set():
            if leader is not None and not leader.alive():
                raise LeadershipLost("the leader lock's database session is gone")
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
                batch: List[Tuple[int, bytes]] = []
                next_check = time.monotonic() + 1.0
                exclusive = leader is not None or not self.ledger.shared
                consumer = channel.consume(self.settings.queue, inactivity_timeout=0.2, exclusive=exclusive)
                self.helper.connector_logger.info("consuming IRIS messages", {
                    "queue": self.settings.queue, "url": mask_url(self.settings.amqp_url)})
                for method, _props, body in consumer:
                    if self._stop.is_set():
                        break
                    if leader is not None and time.monotonic() >= next_check:
                        next_check = time.monotonic() + 1.0
                        if not batch and not leader.alive():
                            raise LeadershipLost("the leader lock's database session is gone")
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
            except (LeadershipLost, LedgerOutage):
                _close_quietly(connection)  # unacknowledged messages go back to the queue, in order
                raise
            except pika.exceptions.ChannelClosedByBroker as exc:
                _close_quietly(connection)
                if exc.reply_code == 403:  # another consumer still holds the queue (a previous leader?)
                    self.helper.connector_logger.info("queue in use by another consumer, retrying", {
                        "queue": self.settings.queue})
                else:
                    self.helper.connector_logger.warning("RabbitMQ channel closed", {"error": str(exc)[:300]})
                self._stop.wait(1.0)
            except pika.exceptions.AMQPError as exc:
                self.helper.connector_logger.warning("RabbitMQ connection lost", {"error": type(exc).__name__})
                _close_quietly(connection)
                self._stop.wait(1.0)
            except Exception as exc:  # noqa: BLE001 - never end the process: unacked messages return on reconnect
                self.helper.connector_logger.error("consumer failed, reconnecting", {
                    "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                    "traceback": traceback.format_exc()[-3000:]})
                try:
                    connection.close()
                except Exception:  # noqa: BLE001 - it may be broken already
                    pass
                self._stop.wait(delay)
                delay = min(delay * 2, 60.0)
