"""The RabbitMQ side of the platform: queue declaration, the ingestion worker, enrichment publishing.

One thread owns one pika ``BlockingConnection`` (pika is not thread-safe).  Other threads hand it work
through :meth:`AmqpWorker.call`, which schedules a function on the connection thread with
``add_callback_threadsafe`` and waits for its result.

Like OpenCTI's worker, it consumes every registered connector's ``push_<id>`` queue, decodes the
messages pycti's ``send_stix2_bundle`` publishes (``{"bundle_type": "QUEUE_BUNDLE", "content":
base64(bundle), "work_id": ...}``, or the platform's own ``{"type": "bundle", ...}`` for
``stixBundlePush``), hands them to the simulator for ingestion, then acks.  In strict mode (a
:class:`~.strict.WorkerPool`) the connection thread only receives up to ``prefetch`` messages and the pool's
threads process them out of order; each acknowledgement is handed back to the connection thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, Optional, Set, TypeVar

import pika
from pika.adapters.blocking_connection import BlockingChannel

from .strict import Delivery, WorkerPool

CONNECTOR_EXCHANGE = "amqp.connector.exchange"
WORKER_EXCHANGE = "amqp.worker.exchange"

LOG = logging.getLogger(__name__)
T = TypeVar("T")
MessageHandler = Callable[[str, Dict[str, Any]], None]


def push_routing(connector_id: str) -> str:
    """Routing key of a connector's push queue."""
    return f"push_routing_{connector_id}"


def listen_routing(connector_id: str) -> str:
    """Routing key of a connector's listen queue."""
    return f"listen_routing_{connector_id}"


class AmqpWorker(threading.Thread):
    """Owns the broker connection; consumes push queues; runs declarations and publications."""

    def __init__(self, parameters: pika.ConnectionParameters, handler: MessageHandler,
                 on_error: Optional[Callable[[str], None]] = None, pool: Optional[WorkerPool] = None,
                 prefetch: int = 1) -> None:
        super().__init__(name="opencti-sim-amqp", daemon=True)
        self.parameters = parameters
        self.handler = handler
        self.on_error = on_error
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._connection: Optional[pika.BlockingConnection] = None
        self._channel: Optional[BlockingChannel] = None
        self._consumers: Dict[str, str] = {}  # queue → consumer tag
        self._wanted: Set[str] = set()  # connector ids whose push queue is consumed
        self._startup_error: Optional[BaseException] = None
        self.pool = pool
        self.prefetch = max(1, int(prefetch)) if pool is not None else 1
        self._generation = 0  # one per broker connection: older delivery tags must not be acknowledged
        #: strict mode: told ``(message, time.perf_counter())`` as each push-queue message is taken off the broker,
        #: before any processing: benchmarks time "hook -> OpenCTI's push queue" with it (None: no cost at all)
        self.on_arrival: Optional[Callable[[Dict[str, Any], float], None]] = None

    # -- lifecycle --------------------------------------------------------------------------------------
    def start_and_wait(self, timeout: float = 10.0) -> None:
        """Start the thread and wait for the broker connection."""
        self.start()
        if not self.ready.wait(timeout):
            raise TimeoutError("RabbitMQ connection not ready")
        if self._startup_error is not None:
            raise RuntimeError(f"Cannot connect to RabbitMQ: {self._startup_error}") from self._startup_error

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection and end the thread."""
        self._stopping.set()
        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.add_callback_threadsafe(lambda: None)
            except Exception:  # noqa: BLE001 - already closing
                pass
        self.join(timeout)

    def run(self) -> None:
        """Connect, (re)subscribe, and service the connection until stopped; reconnect on failure."""
        first = True
        while not self._stopping.is_set():
            try:
                self._connection = pika.BlockingConnection(self.parameters)
                self._channel = self._connection.channel()
                self._channel.basic_qos(prefetch_count=self.prefetch)
                self._generation += 1
                if self.pool is not None:
                    self.pool.discard_acks()
                self._consumers.clear()
                for connector_id in list(self._wanted):
                    self._declare(connector_id, {})
                self.ready.set()
                first = False
                while not self._stopping.is_set():
                    self._connection.process_data_events(time_limit=0.2)
            except Exception as err:  # noqa: BLE001 - broker went away: report, retry
                if first:
                    self._startup_error = err
                    self.ready.set()
                    return
                self._report(f"AMQP worker error: {err!r}")
                time.sleep(0.5)
            finally:
                self._close()

    def _close(self) -> None:
        try:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
        except Exception:  # noqa: BLE001 - closing anyway
            pass

    def _report(self, message: str) -> None:
        LOG.warning(message)
        if self.on_error is not None:
            self.on_error(message)

    # -- cross-thread calls --------------------------------------------------------------------------------
    def call(self, fn: Callable[[BlockingChannel], T], timeout: float = 15.0) -> T:
        """Run ``fn(channel)`` on the connection thread and return its result."""
        if threading.current_thread() is self:
            assert self._channel is not None
            return fn(self._channel)
        if self._connection is None or not self._connection.is_open:
            raise RuntimeError("RabbitMQ connection is not open")
        future: Future = Future()

        def runner() -> None:
            try:
                assert self._channel is not None
                future.set_result(fn(self._channel))
            except BaseException as err:  # noqa: BLE001 - handed back to the caller
                future.set_exception(err)

        self._connection.add_callback_threadsafe(runner)
        return future.result(timeout)

    # -- platform operations --------------------------------------------------------------------------------
    def declare_connector(self, connector_id: str, arguments: Dict[str, Any]) -> None:
        """Exchanges, listen and push queues with their bindings, as ``registerConnectorQueues``."""
        self._wanted.add(connector_id)
        self.call(lambda _ch: self._declare(connector_id, arguments))

    def _declare(self, connector_id: str, arguments: Dict[str, Any]) -> None:
        channel = self._channel
        assert channel is not None
        channel.exchange_declare(CONNECTOR_EXCHANGE, exchange_type="direct", durable=True)
        channel.exchange_declare(WORKER_EXCHANGE, exchange_type="direct", durable=True)
        listen_queue, push_queue = f"listen_{connector_id}", f"push_{connector_id}"
        args = {**arguments, "x-queue-type": "classic"}
        channel.queue_declare(listen_queue, durable=True, exclusive=False, auto_delete=False, arguments=args)
        channel.queue_bind(listen_queue, CONNECTOR_EXCHANGE, routing_key=listen_routing(connector_id))
        channel.queue_declare(push_queue, durable=True, exclusive=False, auto_delete=False, arguments=args)
        channel.queue_bind(push_queue, WORKER_EXCHANGE, routing_key=push_routing(connector_id))
        if push_queue not in self._consumers:
            self._consumers[push_queue] = channel.basic_consume(
                push_queue, lambda ch, method, props, body: self._on_message(push_queue, ch, method, body))

    def delete_connector(self, connector_id: str, drain: bool = True) -> None:
        """Stop consuming, ingest what is still queued (``drain``), delete both queues."""
        self._wanted.discard(connector_id)

        def delete(channel: BlockingChannel) -> None:
            push_queue = f"push_{connector_id}"
            tag = self._consumers.pop(push_queue, None)
            if tag is not None:
                channel.basic_cancel(tag)
            if self.pool is not None:
                self._drain_pool(connector_id, drain)
            if drain:
                while True:
                    method, _props, body = channel.basic_get(push_queue)
                    if method is None:
                        break
                    self._ingest_now(push_queue, channel, method, body)
                if self.pool is not None:
                    self._drain_pool(connector_id, drain)  # what the drained messages split into
            channel.queue_delete(push_queue)
            channel.queue_delete(f"listen_{connector_id}")

        self.call(delete)

    def publish(self, exchange: str, routing_key: str, message: Dict[str, Any]) -> None:
        """Publish a persistent JSON message."""
        body = json.dumps(message)
        self.call(lambda ch: ch.basic_publish(exchange, routing_key, body, pika.BasicProperties(
            delivery_mode=2, content_encoding="utf-8")))

    def queue_size(self, queue: str) -> Optional[int]:
        """Messages waiting in a queue (None if it does not exist); uses a throw-away channel."""

        def size(_channel: BlockingChannel) -> Optional[int]:
            assert self._connection is not None
            probe = self._connection.channel()
            try:
                return probe.queue_declare(queue, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                return None
            finally:
                if probe.is_open:
                    probe.close()

        return self.call(size)

    # -- consumption ---------------------------------------------------------------------------------------
    def _drain_pool(self, connector_id: str, ingest: bool) -> None:
        """Strict mode, on the connection thread: finish what the workers hold for a connector being deleted."""
        assert self.pool is not None
        while True:
            self.pool.wait_idle(connector_id)
            pending = self.pool.take_pending(connector_id)
            if not pending:
                return
            for delivery in pending:
                if ingest:
                    try:
                        self.handler(connector_id, delivery.message)
                    except Exception as err:  # noqa: BLE001 - as the worker: discarded
                        self._report(f"Cannot process message of {connector_id}: {err!r}")
                if delivery.ack is not None:
                    delivery.ack()

    def _acknowledger(self, channel: BlockingChannel, tag: int) -> Callable[[], None]:
        """An ack callable for a worker thread: runs on the connection thread, only on the same connection."""
        generation = self._generation

        def ack_now() -> None:
            if generation == self._generation and channel.is_open:
                channel.basic_ack(delivery_tag=tag)

        def ack() -> None:
            if threading.current_thread() is self:
                ack_now()
                return
            connection = self._connection
            if connection is not None and connection.is_open:
                connection.add_callback_threadsafe(ack_now)

        return ack

    def _on_message(self, queue: str, channel: BlockingChannel, method: Any, body: bytes) -> None:
        arrived = time.perf_counter()
        if self.pool is not None:
            try:
                message = json.loads(body)
            except ValueError as err:
                self._report(f"Cannot decode message from {queue}: {err!r}")
                channel.basic_ack(delivery_tag=method.delivery_tag)
                return
            if self.on_arrival is not None:
                self.on_arrival(message, arrived)
            self.pool.submit(Delivery(queue[len("push_"):], message,
                                      self._acknowledger(channel, method.delivery_tag)))
            return
        self._ingest_now(queue, channel, method, body)

    def _ingest_now(self, queue: str, channel: BlockingChannel, method: Any, body: bytes) -> None:
        connector_id = queue[len("push_"):]
        try:
            message = json.loads(body)
            self.handler(connector_id, message)
        except Exception as err:  # noqa: BLE001 - a broken message must not kill the worker
            self._report(f"Cannot process message from {queue}: {err!r}")
        finally:
            channel.basic_ack(delivery_tag=method.delivery_tag)
