"""RabbitMQ away, or cut under the publisher: hooks still succeed, the spool keeps every message, and the next
successful publish (or ``iris-opencti push --spool``) delivers them oldest first, each exactly once."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from iris_opencti_module.core.masking import mask_url
from iris_opencti_module.transport import publisher as publisher_mod
from iris_opencti_module.transport.publisher import MessageRejected, Publisher, PublishError, close_publishers
from iris_opencti_module.transport.spool import Spool

from .broker import TcpProxy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ioc_ids(envelopes):
    return [e["iris"]["ioc_ids"][0] for e in envelopes]


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(Publisher, "retry_interval", 0.0)


def test_mask_url():
    assert mask_url("amqp://guest:s3cret@rabbit:5672/%2F") == "amqp://guest:***@rabbit:5672/%2F"
    assert mask_url("amqps://u:p@w@h/v?heartbeat=5") == "amqps://u:***@h/v?heartbeat=5"
    assert mask_url("amqp://rabbit:5672/") == "amqp://rabbit:5672/"


def test_wrong_port_spools_then_drains_in_order(module, iris, no_backoff):
    case = iris.case(4)
    iocs = [iris.ioc(100 + n, "192.0.2.%d" % n, cases=[case]) for n in range(4)]
    good_url = module.values["amqp_url"]
    module.configure(amqp_url="amqp://guest:Pa55word-xyz@127.0.0.1:%d/%%2F" % free_port())
    for ioc in iocs[:3]:
        status = module.run("on_postload_ioc_create", ioc)
        assert status.is_success(), status.logs
        assert "spooled, RabbitMQ unavailable (cannot connect to amqp://guest:***@127.0.0.1:" in status.logs[0]
        assert "Pa55word-xyz" not in " ".join(status.logs)
    spool = Spool(module.spool_dir)
    assert len(spool.pending()) == 3
    assert module.messages() == []
    module.configure(amqp_url=good_url)
    status = module.run("on_postload_ioc_create", iocs[3])
    assert "ioc.created sent" in status.logs[0] and "3 spooled message(s) were sent before it" in status.logs[0]
    envelopes = module.messages()
    assert ioc_ids(envelopes) == [100, 101, 102, 103]
    assert len({e["message_id"] for e in envelopes}) == 4
    assert spool.pending() == []


def test_connection_cut_under_the_publisher(module, iris, no_backoff):
    proxy = TcpProxy()
    module.configure(amqp_url=proxy.url())
    case = iris.case(4)
    iocs = [iris.ioc(200 + n, "198.51.100.%d" % n, cases=[case]) for n in range(8)]
    try:
        assert "sent" in module.run("on_postload_ioc_create", iocs[0]).logs[0]
        assert proxy.connections() == 1
        module.run("on_postload_ioc_create", iocs[1])
        assert proxy.connections() == 1  # the connection is reused between hooks
        proxy.cut()  # the broker side vanishes while the publisher holds its connection
        status = module.run("on_postload_ioc_create", iocs[2])
        assert "ioc.created sent" in status.logs[0], status.logs  # reconnected transparently
        proxy.stop()  # now refused
        for ioc in iocs[3:6]:
            status = module.run("on_postload_ioc_create", ioc)
            assert status.is_success() and "spooled" in status.logs[0], status.logs
        proxy.start()
        proxy.cut()
        status = module.run("on_postload_ioc_create", iocs[6])
        assert "3 spooled message(s) were sent before it" in status.logs[0], status.logs
        proxy.cut()
        module.run("on_postload_ioc_create", iocs[7])
    finally:
        proxy.stop()
    envelopes = module.messages()
    assert ioc_ids(envelopes) == list(range(200, 208))  # nothing lost, nothing twice, in order
    assert Spool(module.spool_dir).pending() == []


def test_a_connection_the_broker_closed_while_idle_is_replaced(module, iris, monkeypatch, caplog):
    """Between hooks nothing services the connection's heartbeats; the broker drops it, the next hook reconnects,
    without pika logging the reset (on a real IRIS it wrote three ERROR tracebacks into the web app's log)."""
    import logging

    caplog.set_level(logging.DEBUG, logger="pika")
    connections = []
    real = publisher_mod.open_blocking_connection
    monkeypatch.setattr(publisher_mod, "open_blocking_connection", lambda params: connections.append(1) or real(params))
    module.configure(amqp_url=module.values["amqp_url"] + "?heartbeat=1")
    case = iris.case(4)
    first, second = iris.ioc(1, "192.0.2.1", cases=[case]), iris.ioc(2, "192.0.2.2", cases=[case])
    assert "sent to queue" in module.run("on_postload_ioc_create", first).logs[0]
    time.sleep(4)  # more than two missed heartbeats: RabbitMQ closes the connection
    status = module.run("on_postload_ioc_create", second)
    assert "sent to queue" in status.logs[0], status.logs
    assert len(connections) == 2
    assert ioc_ids(module.messages()) == [1, 2]
    noisy = [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]


def test_failed_connection_is_not_retried_by_every_hook(module, iris, monkeypatch):
    case = iris.case(4)
    ioc = iris.ioc(29, "192.0.2.45", cases=[case])
    module.configure(amqp_url="amqp://guest:guest@127.0.0.1:%d/%%2F" % free_port())
    attempts = []
    real = publisher_mod.open_blocking_connection

    def counting(params):
        attempts.append(params.port)
        return real(params)

    monkeypatch.setattr(publisher_mod, "open_blocking_connection", counting)
    monkeypatch.setattr(Publisher, "retry_interval", 60.0)
    for _ in range(20):
        assert "spooled" in module.run("on_postload_ioc_create", ioc).logs[0]
    assert len(attempts) == 1, "each hook paid for a connection attempt to a broker known to be down"
    assert "not retried yet" in module.run("on_postload_ioc_create", ioc).logs[0]
    assert len(Spool(module.spool_dir).pending()) == 21


def test_spool_files_are_atomic_and_strictly_ordered(tmp_path, monkeypatch):
    spool = Spool(str(tmp_path))
    # a crash mid-write leaves only a temporary file, which is never sent
    (tmp_path / "outbox" / ".00000000000000000001.msg.123.tmp").write_bytes(b"half")
    (tmp_path / "outbox" / "notes.msg").write_bytes(b"not ours")
    clock = iter([5_000, 4_000, 4_000, 9_000])  # the wall clock going backwards must not reorder messages
    monkeypatch.setattr("iris_opencti_module.transport.spool.time.time_ns", lambda: next(clock))
    names = [spool.add(b"m%d" % n) for n in range(4)]
    assert names == sorted(names) and len(set(names)) == 4
    assert spool.pending() == names
    assert [spool.read(n) for n in spool.pending()] == [b"m0", b"m1", b"m2", b"m3"]


def test_a_message_the_broker_refuses_for_good_does_not_block_the_others(tmp_path, monkeypatch):
    spool = Spool(str(tmp_path))
    for body in (b"one", b"too-big", b"three"):
        spool.add(body)
    sent = []

    def send(self, body):
        if body == b"too-big":
            raise MessageRejected("PRECONDITION_FAILED - message size 200000000 is larger than configured max size")
        sent.append(body)

    monkeypatch.setattr(Publisher, "send", send)
    result = Publisher("amqp://guest:guest@127.0.0.1:1/%2F", "q", spool).drain()
    assert (result.sent, result.rejected, result.waiting) == (2, 1, 0)
    assert sent == [b"one", b"three"]
    kept = sorted(os.listdir(tmp_path / "rejected"))
    assert len(kept) == 2 and kept[1].endswith(".reason.txt")


def test_drain_stops_at_the_first_failure_and_keeps_order(tmp_path, monkeypatch):
    spool = Spool(str(tmp_path))
    for n in range(5):
        spool.add(b"m%d" % n)
    sent = []

    def send(self, body):
        if body == b"m2":
            raise PublishError("connection lost")
        sent.append(body)

    monkeypatch.setattr(Publisher, "send", send)
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/%2F", "q", spool)
    outcome = publisher.publish(b"new")
    assert outcome.status == "spooled" and outcome.drained == 2 and outcome.waiting == 4
    assert sent == [b"m0", b"m1"]
    assert [spool.read(n) for n in spool.pending()] == [b"m2", b"m3", b"m4", b"new"]


def run_cli(*args, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "iris_opencti_module", *args], capture_output=True, text=True,
                          timeout=120, env=full_env)


def test_push_spool_drains_what_the_module_spooled(module, iris):
    case = iris.case(4)
    iocs = [iris.ioc(300 + n, "203.0.113.%d" % n, cases=[case]) for n in range(5)]
    good_url = module.values["amqp_url"]
    module.configure(amqp_url="amqp://guest:Pa55word-xyz@127.0.0.1:%d/%%2F" % free_port())
    for ioc in iocs:
        module.run("on_postload_ioc_create", ioc)
    close_publishers()
    down = run_cli("push", "--spool", module.spool_dir,
                   env={"IRIS_AMQP_URL": module.values["amqp_url"], "IRIS_QUEUE": module.queue})
    assert down.returncode == 1 and "0 message(s) sent" in down.stdout and "5 still waiting" in down.stdout
    assert "Pa55word-xyz" not in down.stdout + down.stderr and "guest:***@" in down.stdout
    up = run_cli("push", "--spool", module.spool_dir, env={"IRIS_AMQP_URL": good_url, "IRIS_QUEUE": module.queue})
    assert up.returncode == 0, up.stderr
    assert f"5 message(s) sent to queue {module.queue!r}" in up.stdout and "0 still waiting" in up.stdout
    assert ioc_ids(module.messages()) == [300, 301, 302, 303, 304]
    again = run_cli("push", "--spool", module.spool_dir, env={"IRIS_AMQP_URL": good_url, "IRIS_QUEUE": module.queue})
    assert again.returncode == 0 and "0 message(s) sent" in again.stdout
    assert module.messages() == []


def _worker(harness, iocs, barrier, first_half_done):
    """One IRIS worker process: hooks half its IOCs while the broker is away, the rest once it is back."""
    barrier.wait(60)
    for n, ioc in enumerate(iocs):
        if n == len(iocs) // 2 and not first_half_done.wait(120):
            os._exit(4)  # the test gave up: never outlive it (pytest would wait for this child at exit)
        status = harness.run("on_postload_ioc_create", ioc)
        if not status.is_success():
            sys.stderr.write("worker %d: %s\n" % (os.getpid(), status.logs))
            os._exit(3)
    os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="IRIS's Celery workers fork; this needs fork too")
# the TCP proxy runs threads in this process; the forked workers never touch them
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_concurrent_workers_lose_nothing(module, iris, no_backoff):
    proxy = TcpProxy()
    module.configure(amqp_url=proxy.url())
    case = iris.case(4)
    per_worker = 12
    groups = [[iris.ioc(1000 * (w + 1) + n, "10.%d.0.%d" % (w, n), cases=[case]) for n in range(per_worker)]
              for w in range(4)]
    proxy.stop()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    back = ctx.Event()
    workers = [ctx.Process(target=_worker, args=(module, group, barrier, back)) for group in groups]
    try:
        for proc in workers:
            proc.start()
        deadline = time.time() + 60
        while len(Spool(module.spool_dir).pending()) < 4 * (per_worker // 2) and time.time() < deadline:
            time.sleep(0.05)
        assert len(Spool(module.spool_dir).pending()) == 4 * (per_worker // 2), [p.exitcode for p in workers]
        proxy.start()
        back.set()
        for proc in workers:
            proc.join(60)
            assert proc.exitcode == 0
    finally:
        proxy.stop()
        for proc in workers:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    envelopes = module.messages()
    ids = ioc_ids(envelopes)
    assert sorted(ids) == sorted(i.ioc_id for g in groups for i in g)  # every message exactly once
    for group in groups:  # and each worker's messages in the order it produced them
        mine = [i for i in ids if i in {x.ioc_id for x in group}]
        assert mine == [x.ioc_id for x in group]
    assert Spool(module.spool_dir).pending() == []
