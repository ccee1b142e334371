"""Run the real connector processes against the OpenCTI simulator and this machine's RabbitMQ."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, Iterable, Iterator, List, Optional

import pika

from iris_opencti_module.core.convert import Converter, ConverterConfig
from iris_opencti_module.core.envelope import encode, make_envelope, whole_case_covers

AMQP_URL = os.environ.get("IRIS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: the real PostgreSQL's administrator, who creates and drops the throw-away ledger databases
PG_ADMIN = os.environ.get("IRIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def throwaway_database(prefix: str = "iris_opencti_") -> Iterator[str]:
    """The URL of a database of its own on the real PostgreSQL, dropped afterwards."""
    import psycopg2

    name = prefix + uuid.uuid4().hex[:10]
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))


#: simulator options of the ordering drills: half the messages taken out of order, short holds and retries
HARSH_SIM = {"workers": 3, "prefetch": 64, "reorder": 0.5, "hold": 0.03, "retry_delay": 0.01}

#: the token of the simulator the ``sim`` fixture (conftest.py) starts
SIM_TOKEN = "sim-" + uuid.uuid4().hex


def publish(queue: str, bodies: Iterable[bytes]) -> int:
    """Publish like the IRIS module does: durable queue, persistent messages, publisher confirms."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.confirm_delivery()
    count = 0
    for body in bodies:
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2,
                                                                     content_type="application/json"))
        count += 1
    connection.close()
    return count


def queue_depth(queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return connection.channel().queue_declare(queue=queue, durable=True, passive=True).method.message_count
    finally:
        connection.close()


def get_all(queue: str) -> List[Any]:
    """Read (and ack) every message of a queue: (properties, body) pairs."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    out = []
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append((props, body))
    connection.close()
    return out


def delete_queues(*queues: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for queue in queues:
        channel.queue_delete(queue=queue)
    connection.close()


def other_case(export: Dict[str, Any], case_id: int, name: str) -> Dict[str, Any]:
    """The same export as another IRIS case (its own id, name and so its own Case-Incident)."""
    copy = json.loads(json.dumps(export))
    case = copy["data"]["case"]
    case.update(case_id=case_id, name="#%d - %s" % (case_id, name), case_uuid="0c6f4b4e-3f9a-4c1e-8d3b-%012d" % case_id)
    return copy


def case_sync(export: Dict[str, Any], event: str = "case.sync") -> bytes:
    result = CONVERTER.convert_export(export)
    data = export.get("data", export)
    case = data["case"]
    env = make_envelope(event, case["case_id"], case_name=case["name"], case_ref=result.case_ref,
                        bundle=result.bundle(event), produced=result.produced, user="administrator",
                        skipped=[s.as_dict() for s in result.skipped],
                        covers=whole_case_covers(CONVERTER.config.records))  # as `push` sends it
    return encode(env)


def ioc_event(export: Dict[str, Any], event: str, ioc: Dict[str, Any]) -> bytes:
    data = export.get("data", export)
    case = data["case"]
    result = CONVERTER.convert(case, [] if event == "ioc.deleted" else [ioc])
    env = make_envelope(event, case["case_id"], case_name=case["name"], case_ref=result.case_ref,
                        bundle=result.bundle(event + str(ioc["ioc_id"])), produced=result.produced,
                        ioc_ids=[ioc["ioc_id"]], user="administrator",
                        deleted=[{"kind": "ioc", "id": ioc["ioc_id"], "value": ioc["ioc_value"]}]
                        if event == "ioc.deleted" else ())
    return encode(env)


class ConnectorProcess:
    """``python -m iris_opencti_connector.<module>`` configured through environment variables only."""

    def __init__(self, module: str, workdir: str, env: Dict[str, str]) -> None:
        self.module = module
        self.workdir = workdir
        self.env = dict(os.environ, PYTHONPATH=ROOT, **env)
        self.log_path = os.path.join(workdir, "{}.log".format(module.rsplit(".", 1)[-1]))
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "ConnectorProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=self.workdir, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self, kill: bool = False, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def import_env(sim_url: str, token: str, queue: str, workdir: str, **extra: str) -> Dict[str, str]:
    env = {
        "OPENCTI_URL": sim_url, "OPENCTI_TOKEN": token, "CONNECTOR_ID": str(uuid.uuid4()),
        "CONNECTOR_NAME": "DFIR-IRIS", "CONNECTOR_SCOPE": "iris", "CONNECTOR_LOG_LEVEL": "info",
        "CONNECTOR_DURATION_PERIOD": "PT1H", "IRIS_URL": "https://iris.example", "IRIS_AMQP_URL": AMQP_URL,
        "IRIS_QUEUE": queue, "IRIS_LEDGER": "sqlite:///" + os.path.join(workdir, "ledger.sqlite"),
        "IRIS_ARCHIVE_DIR": os.path.join(workdir, "archive"),
    }
    env.update(extra)
    return env


def wait(predicate, timeout: float = 30.0, what: str = "condition", proc: Optional[ConnectorProcess] = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and not proc.alive():
            raise AssertionError(f"connector exited while waiting for {what}:\n{proc.log()[-4000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + ("\n" + proc.log()[-4000:] if proc else ""))


def wait_settled(sim: Any, queue: str, proc: Optional[ConnectorProcess] = None, quiet: float = 1.5,
                 timeout: float = 60.0) -> int:
    """Wait until the import connector is idle: nothing ready on its queue, every work complete, and no new
    work for ``quiet`` seconds (a message it holds unacknowledged becomes a work within that time).
    Returns the number of works then."""
    deadline = time.time() + timeout
    last, since = -1, time.time()
    while time.time() < deadline:
        works = list(sim.works.values())
        busy = queue_depth(queue) > 0 or any(w.get("status") != "complete" for w in works)
        if busy or len(works) != last:
            last, since = len(works), time.time()
        elif time.time() - since >= quiet:
            return last
        time.sleep(0.1)
    raise AssertionError("the import connector did not settle within "
                         "{}s{}".format(timeout, "\n" + proc.log()[-3000:] if proc else ""))


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
