"""Publishing to RabbitMQ: persistent messages, publisher confirms, a reused connection, and the spool.

IRIS creates a new module instance for every hook, and a hook must take milliseconds, so the connection
lives at process level (:func:`get_publisher`): connecting costs more than ten publishes. A message counts as
sent only when the broker confirms it (``confirm_delivery``; ``mandatory`` so a deleted queue is noticed, and
``delivery_mode=2`` so it survives a broker restart). Anything else - refused connection, a connection that
died while idle, a nack - means one reconnect and retry, then the spool. So does any other exception raised
while connecting or publishing, whatever its type (a TypeError from pika's host lookup under eventlet was one):
nothing a hook hands to :meth:`Publisher.publish` is lost while the spool directory is writable. Once a
connection attempt fails, the next ones wait :attr:`Publisher.retry_interval` seconds, so a dead broker does not
cost every hook a timeout.

Connections are opened with :func:`~.amqp_connect.open_blocking_connection`, which also works under eventlet's
monkey-patching (IRIS 2.4's web app, where preload hooks run).

Order: a new message never overtakes spooled ones. Each publish takes the spool lock and, if messages are
waiting, sends them oldest first before the new one; if that stops halfway, the new message joins the spool
behind them.

URLs are logged only through :func:`mask_url`; errors are scrubbed of the password.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import pika
import pika.exceptions

from iris_opencti_module.core.amqp_logs import pika_quiet
from iris_opencti_module.core.masking import mask_url, redact
from iris_opencti_module.transport.amqp_connect import open_blocking_connection
from iris_opencti_module.transport.spool import Spool, open_spool

#: broker refusals that no retry can fix, by AMQP reply code (406 PRECONDITION_FAILED: message too large)
_PERMANENT_PUBLISH_CODES = (406,)


class PublishError(RuntimeError):
    """The message was not confirmed by the broker (its text never contains the password)."""


class MessageRejected(PublishError):
    """The broker refuses this message for good (e.g. larger than its max_message_size)."""


@dataclass
class Outcome:
    """What happened to one message, for the hook's logs."""

    status: str  # "sent", "spooled" or "rejected"
    detail: str = ""
    drained: int = 0
    waiting: int = 0
    path: Optional[str] = None


@dataclass
class DrainResult:
    sent: int = 0
    rejected: int = 0
    waiting: int = 0
    error: Optional[str] = None


class Publisher:
    """A reusable confirmed-publish channel to one queue, spooling what cannot be sent."""

    #: seconds between connection attempts after a failed one (hooks meanwhile spool at once)
    retry_interval = 2.0
    #: seconds allowed for connecting (TCP, AMQP handshake) before giving up and spooling
    connect_timeout = 3.0

    def __init__(self, url: str, queue: str, spool: Optional[Spool] = None) -> None:
        self.url = url
        self.queue = queue
        self.spool = spool
        self.masked_url = mask_url(url)
        self._connection: Any = None
        self._channel: Any = None
        self._pid = os.getpid()
        self._retry_after = 0.0
        self._used_at = 0.0  # last confirmed publish on the current connection (monotonic)
        self._heartbeat = 0.0  # the heartbeat interval asked for the current connection
        self._lock = threading.RLock()
        self._properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")

    # ------------------------------------------------------------------------------------- plumbing
    def scrub(self, text: str) -> str:
        """An error text safe for logs: the URL masked and the password removed wherever it appears."""
        return redact(text, self.url)

    def _parameters(self) -> pika.URLParameters:
        try:
            params = pika.URLParameters(self.url)
        except Exception as exc:  # noqa: BLE001 - pika raises several types for a malformed URL
            raise PublishError(f"invalid RabbitMQ URL {self.masked_url}: {self.scrub(str(exc))}") from None
        query = self.url.partition("?")[2]
        if "socket_timeout" not in query:
            params.socket_timeout = self.connect_timeout
        if "stack_timeout" not in query:
            params.stack_timeout = self.connect_timeout + 2
        if "blocked_connection_timeout" not in query:
            params.blocked_connection_timeout = 10
        if "connection_attempts" not in query:
            params.connection_attempts = 1
        if "heartbeat" not in query:
            params.heartbeat = 30
        return params

    def _drop(self) -> None:
        """Forget the connection (closing it if it still looks alive); never raises."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and self._pid == os.getpid():
            try:
                if connection.is_open:
                    connection.close()
            except Exception:  # noqa: BLE001 - it is being discarded anyway
                pass

    def _ready_channel(self) -> Tuple[Any, bool]:
        """(channel, fresh): a confirming channel with the queue declared; reuses the open connection."""
        if self._pid != os.getpid():  # forked: the parent's socket is not ours to use or close
            self._connection = self._channel = None
            self._pid = os.getpid()
        if self._connection is not None and self._heartbeat and time.monotonic() - self._used_at > self._heartbeat:
            # An idle BlockingConnection sends no heartbeats, so the broker drops it after two intervals (seen
            # on a real IRIS: the next hook's publish found the socket reset, and pika logged tracebacks). One
            # interval idle is enough to replace it, quietly, before it is used.
            with pika_quiet():
                self._drop()
        if self._connection is not None:
            try:
                # handles heartbeats and a Connection.Close the broker sent while we were idle
                self._connection.process_data_events(time_limit=0)
            except Exception:  # noqa: BLE001 - any failure here just means "reconnect"
                self._drop()
        if self._connection is not None and self._connection.is_open and self._channel is not None \
                and self._channel.is_open:
            return self._channel, False
        self._drop()
        now = time.monotonic()
        if now < self._retry_after:
            raise PublishError(f"connection to {self.masked_url} failed less than {self.retry_interval:.0f} s ago; "
                               "not retried yet")
        params = self._parameters()
        try:
            connection = open_blocking_connection(params)
        except pika.exceptions.ProbableAuthenticationError:
            self._retry_after = now + self.retry_interval
            raise PublishError(f"RabbitMQ at {self.masked_url} refused the login (check user and password)") from None
        except Exception as exc:  # noqa: BLE001 - whatever breaks the connection, the message must be spooled
            self._retry_after = now + self.retry_interval
            raise PublishError(f"cannot connect to {self.masked_url}: {self.scrub(_describe(exc))}") from None
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.queue_declare(queue=self.queue, durable=True)
        except Exception as exc:  # noqa: BLE001 - as above
            self._connection = connection
            self._drop()
            self._retry_after = now + self.retry_interval
            raise PublishError(f"cannot declare queue {self.queue!r} on {self.masked_url}: "
                               f"{self.scrub(_describe(exc))}") from None
        self._connection, self._channel = connection, channel
        self._retry_after = 0.0
        self._used_at, self._heartbeat = time.monotonic(), float(params.heartbeat or 0)
        return channel, True

    # --------------------------------------------------------------------------------------- sending
    def send(self, body: bytes) -> None:
        """Publish one message and wait for the broker's confirm; raises :class:`PublishError`."""
        with self._lock:
            last = ""
            for _attempt in range(2):
                channel, fresh = self._ready_channel()
                try:
                    channel.basic_publish(exchange="", routing_key=self.queue, body=body,
                                          properties=self._properties, mandatory=True)
                    self._used_at = time.monotonic()
                    return
                except pika.exceptions.ChannelClosedByBroker as exc:
                    self._drop()
                    if exc.reply_code in _PERMANENT_PUBLISH_CODES:
                        raise MessageRejected("%s (%d bytes)" % (self.scrub(exc.reply_text), len(body))) from None
                    last = f"channel closed by the broker: {self.scrub(_describe(exc))}"
                except pika.exceptions.UnroutableError:
                    self._drop()  # the queue was deleted under us: the next channel declares it again
                    last = f"queue {self.queue!r} does not exist"
                except pika.exceptions.NackError:
                    last = "the broker did not accept the message (nack)"
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self._drop()
                    last = f"connection lost: {self.scrub(_describe(exc))}"
                except Exception as exc:  # noqa: BLE001 - an unexpected type leaves the connection unusable
                    self._drop()
                    last = f"publishing failed: {self.scrub(_describe(exc))}"
                if fresh:
                    break  # a brand-new connection failed too: retrying now would fail the same way
            raise PublishError(last or "not confirmed")

    def drain(self) -> DrainResult:
        """Send the spooled messages, oldest first, stopping at the first one that cannot be sent."""
        result = DrainResult()
        if self.spool is None:
            return result
        with self.spool.locked():
            self._drain_locked(result)
            result.waiting = len(self.spool.pending())
        return result

    def _drain_locked(self, result: DrainResult) -> None:
        assert self.spool is not None
        while True:
            names = self.spool.pending()
            if not names:
                return
            for name in names:
                try:
                    body = self.spool.read(name)
                except FileNotFoundError:
                    continue
                try:
                    self.send(body)
                except MessageRejected as exc:
                    self.spool.reject(name, str(exc))
                    result.rejected += 1
                    continue
                except PublishError as exc:
                    result.error = str(exc)
                    return
                except Exception as exc:  # noqa: BLE001 - send() wraps its errors; this is the safety net
                    result.error = self._unexpected(exc)
                    return
                self.spool.remove(name)
                result.sent += 1

    def publish(self, body: bytes) -> Outcome:
        """Send a message, or spool it; spooled messages go first. Raises only if the spool is unusable.

        Every failure to send spools, whatever its type: :meth:`send` turns the ones it knows into
        :class:`PublishError`, and anything else that escapes is caught here too, since a hook's message must
        never be lost. An exception that is not an ``Exception`` (a green thread killed by a timeout, a
        worker told to exit) spools the message and is then re-raised: the message may then also have gone
        out, and a duplicate changes nothing downstream, while a lost one would.
        """
        if self.spool is None:
            try:
                self.send(body)
            except PublishError:
                raise
            except Exception as exc:  # noqa: BLE001 - the caller (iris-opencti push) reports PublishError
                raise PublishError(self._unexpected(exc)) from None
            return Outcome("sent")
        with self.spool.locked():
            drained = DrainResult()
            try:
                if self.spool.pending():
                    self._drain_locked(drained)
                    if drained.error is not None:
                        return self._spool(body, drained.error, drained)
                self.send(body)
            except MessageRejected as exc:
                path = self.spool.save_rejected(body, str(exc))
                return Outcome("rejected", str(exc), drained=drained.sent, path=path)
            except PublishError as exc:
                return self._spool(body, str(exc), drained)
            except Exception as exc:  # noqa: BLE001 - one event must never be lost
                return self._spool(body, self._unexpected(exc), drained)
            except BaseException:
                self._spool(body, "interrupted while publishing", drained)
                raise
            return Outcome("sent", drained=drained.sent)

    def _unexpected(self, exc: BaseException) -> str:
        """An unforeseen failure as a log line with its type (safe: the URL masked, no password)."""
        with self._lock:
            self._drop()  # the connection is in an unknown state
        return f"unexpected failure while publishing to {self.masked_url}: {self.scrub(_describe(exc))}"

    def _spool(self, body: bytes, reason: str, drained: DrainResult) -> Outcome:
        assert self.spool is not None
        name = self.spool.add(body)
        return Outcome("spooled", reason, drained=drained.sent, waiting=len(self.spool.pending()),
                       path=os.path.join(self.spool.outbox, name))

    def close(self) -> None:
        with self._lock:
            self._drop()


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


_PUBLISHERS: Dict[Tuple[int, str, str, str], Publisher] = {}
_PUBLISHERS_LOCK = threading.Lock()


def get_publisher(url: str, queue: str, spool_dir: Optional[str]) -> Publisher:
    """The process's publisher for this broker, queue and spool; a configuration change replaces it."""
    key = (os.getpid(), url, queue, os.path.abspath(spool_dir) if spool_dir else "")
    with _PUBLISHERS_LOCK:
        publisher = _PUBLISHERS.get(key)
        if publisher is None:
            for old_key in list(_PUBLISHERS):
                old = _PUBLISHERS.pop(old_key)
                if old_key[0] == key[0]:
                    old.close()
            spool = open_spool(spool_dir) if spool_dir else None
            publisher = _PUBLISHERS[key] = Publisher(url, queue, spool)
        return publisher


def close_publishers() -> None:
    """Close this process's connections (tests; a worker shutting down)."""
    with _PUBLISHERS_LOCK:
        for key, publisher in list(_PUBLISHERS.items()):
            if key[0] == os.getpid():
                publisher.close()
        _PUBLISHERS.clear()
