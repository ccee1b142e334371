"""The real RabbitMQ for the tests: unique queues, reading messages back, and a TCP proxy to cut connections."""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import subprocess
import threading
import uuid
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pika

from iris_opencti_module.core.envelope import parse_envelope

AMQP_URL = os.environ.get("IRIS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


#: RabbitMQ 4's default ``max_message_size`` (this machine's RabbitMQ 3 allows 128 MiB)
RABBITMQ_4_LIMIT = 16 * 1024 * 1024


def _rabbitmqctl_eval(expression: str) -> str:
    done = subprocess.run(["rabbitmqctl", "eval", expression], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl eval {expression!r} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def max_message_size(limit: int = RABBITMQ_4_LIMIT) -> Iterator[str]:
    """The local broker refuses messages over ``limit`` bytes meanwhile (``rabbitmqctl eval``); yields the
    setting it had, which comes back after."""
    before = _rabbitmqctl_eval("application:get_env(rabbit, max_message_size).")
    _rabbitmqctl_eval("application:set_env(rabbit, max_message_size, %d)." % limit)
    try:
        yield before
    finally:
        value = before.split(",")[1].rstrip("}") if before.startswith("{ok,") else "134217728"
        _rabbitmqctl_eval(f"application:set_env(rabbit, max_message_size, {value}).")


def broker_problem(url: str) -> Optional[str]:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"{type(exc).__name__}: {exc.args!r}"
    connection.close()
    return None


class Rabbit:
    """Queues made for one test and deleted after it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: List[str] = []
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self._channel = self._connection.channel()

    def new_queue(self) -> str:
        name = f"test-iris-opencti-{uuid.uuid4().hex[:12]}"
        self.queues.append(name)
        return name

    def depth(self, queue: str) -> int:
        return self._channel.queue_declare(queue=queue, durable=True, passive=False).method.message_count

    def _drain(self, queue: str) -> List[Tuple[Any, bytes]]:
        """Every message waiting in the queue, in order, as (properties, body); acknowledged."""
        self._channel.queue_declare(queue=queue, durable=True)
        out = []
        while True:
            method, properties, body = self._channel.basic_get(queue=queue, auto_ack=True)
            if method is None:
                return out
            out.append((properties, body))

    def read(self, queue: str) -> List[Tuple[Dict[str, Any], Any]]:
        """Every message waiting in the queue, in order, as (envelope, properties); acknowledged."""
        return [(parse_envelope(body), properties) for properties, body in self._drain(queue)]

    def bodies(self, queue: str) -> List[bytes]:
        """Every message waiting in the queue, as raw bytes; acknowledged."""
        return [body for _, body in self._drain(queue)]

    def envelopes(self, queue: str) -> List[Dict[str, Any]]:
        return [env for env, _ in self.read(queue)]

    def cleanup(self) -> None:
        for queue in self.queues:
            try:
                self._channel.queue_delete(queue=queue)
            except Exception:  # noqa: BLE001 - best effort
                pass
        self._connection.close()


def _local_port_range() -> Tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


class TcpProxy:
    """127.0.0.1:<port> → RabbitMQ, which a test can cut (connections closed under the publisher) or stop
    (connection refused) and restart on the same port.

    The port is chosen below the kernel's ephemeral range: a port that ``bind(0)`` handed out can, once the
    listener is closed, become the local end of any outgoing connection on the machine (the publisher's own
    retries included), and the restart then fails with EADDRINUSE.
    """

    def __init__(self, target: Tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.target = target
        self.port = 0
        self._listener: Optional[socket.socket] = None
        self._pairs: List[Tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self.start()

    def url(self) -> str:
        return "amqp://guest:guest@127.0.0.1:%d/%%2F" % self.port

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.port:
            listener.bind(("127.0.0.1", self.port))
        else:
            self.port = self._bind_outside_ephemeral_range(listener)
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    @staticmethod
    def _bind_outside_ephemeral_range(listener: socket.socket) -> int:
        low, _ = _local_port_range()
        candidates = list(range(max(1024, low - 12000), low))
        random.shuffle(candidates)
        for port in candidates[:200]:
            try:
                listener.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
        raise OSError("no free port below the ephemeral range %d" % low)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for sock in (a, b):
                try:
                    sock.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Close every proxied connection (both sides), as a broker restart or a network cut would."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept() (Linux)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        self.cut()

    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)
