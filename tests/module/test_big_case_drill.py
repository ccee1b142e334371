"""Drill: a 100,000-IOC case through the module's manual sync hook, on a broker refusing messages over 16 MiB
(RabbitMQ 4's default ``max_message_size``; this machine's RabbitMQ 3 defaults to 128 MiB, so the drill sets
16 MiB for its duration). Sent whole the case would be refused and kept in ``spool/rejected/`` for ever; in
parts everything reaches the queue."""

from __future__ import annotations

import os

import pika
import pytest

from iris_opencti_module.core.chunks import DEFAULT_MAX_MESSAGE_BYTES
from iris_opencti_module.core.envelope import parse_envelope

from .broker import AMQP_URL, RABBITMQ_4_LIMIT, max_message_size

LIMIT = RABBITMQ_4_LIMIT


@pytest.fixture
def broker_16mib():
    with max_message_size(LIMIT):
        yield


def test_the_broker_really_refuses_a_message_over_16_mib(broker_16mib, rabbit):
    queue = rabbit.new_queue()
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.AMQPError):
        channel.basic_publish("", queue, b"x" * (LIMIT + 1))
        channel.basic_publish("", queue, b"after")  # the broker closes the channel on the oversized one
    if connection.is_open:
        connection.close()


def test_a_100000_ioc_case_reaches_the_queue_in_parts(broker_16mib, module, iris25):
    case = iris25.case(77)
    for n in range(100000):
        iris25.ioc(1000000 + n, "drill-%06d.evil.example" % n, "domain", cases=[case])
    status = module.run("on_manual_trigger_case", case, ui="Sync case to OpenCTI")
    assert status.is_success(), status.get_logs()[-5:]
    rejected = os.path.join(module.spool_dir, "rejected")
    outbox = os.path.join(module.spool_dir, "outbox")
    assert not os.path.isdir(rejected) or not os.listdir(rejected), "a part was refused by the broker"
    assert not os.path.isdir(outbox) or not os.listdir(outbox), "a part was spooled"
    bodies = module.rabbit.bodies(module.queue)
    envelopes = [parse_envelope(body) for body in bodies]
    assert len(bodies) >= 40 and max(len(b) for b in bodies) <= DEFAULT_MAX_MESSAGE_BYTES
    parts = [e["part"] for e in envelopes]
    assert sorted(p["index"] for p in parts) == list(range(len(bodies)))
    # parts leave while the case is converted: only the last one knows, and names, the total
    assert [p.get("total") for p in parts] == [None] * (len(bodies) - 1) + [len(bodies)]
    assert len({p["sync"] for p in parts}) == 1
    ioc_ids = sorted(i for e in envelopes for i in e["iris"]["ioc_ids"])
    assert ioc_ids == list(range(1000000, 1100000))
    logs = "\n".join(status.get_logs())
    assert "part %d/%d" % (len(bodies), len(bodies)) in logs
