"""The OpenCTI simulator, driven by the real (unpatched) pycti.

These tests are the simulator's contract: what pycti's ``OpenCTIConnectorHelper`` and ``OpenCTIApiClient``
do against it (registration, ping, works, AMQP and API bundle pushes, enrichment messages, reads) and the
OpenCTI semantics the store applies (upsert merge, deletion cascade, missing references, work completion).
Connector tests elsewhere rely on these behaviours being the platform's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pika
import pytest
import requests
import stix2
from pycti import CaseIncident, Identity, OpenCTIApiClient, OpenCTIConnectorHelper, StixCoreRelationship

from tests.opencti_sim import DEFAULT_AMQP_URL, OpenCTISimulator
from tests.opencti_sim.graphql_exec import Executor
from tests.opencti_sim.graphql_parser import parse
from tests.opencti_sim.stix_types import OCTI_EXT

TOKEN = "sim-test-token"
CREATED = "2024-03-01T10:00:00.000Z"
REPO = Path(__file__).resolve().parents[2]


def _broker_up() -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(DEFAULT_AMQP_URL)).close()
    except Exception:  # noqa: BLE001 - any failure means no broker
        return False
    return True


BROKER = _broker_up()


@pytest.fixture
def rabbitmq_up() -> None:
    """These tests need the real RabbitMQ: a missing broker is a failure, never a skip."""
    assert BROKER, "RabbitMQ is not reachable on 127.0.0.1:5672 (start it: rabbitmq-server -detached)"


needs_broker = pytest.mark.usefixtures("rabbitmq_up")


# -- STIX fixtures -------------------------------------------------------------------------------------------
def identity(name: str = "DFIR-IRIS") -> Dict[str, Any]:
    return {"type": "identity", "spec_version": "2.1", "id": Identity.generate_id(name, "organization"),
            "name": name, "identity_class": "organization", "created": CREATED, "modified": CREATED}


def ipv4(value: str = "198.51.100.7", **extra: Any) -> Dict[str, Any]:
    return json.loads(stix2.IPv4Address(value=value, allow_custom=True, **extra).serialize())


def domain(value: str = "evil.example") -> Dict[str, Any]:
    return json.loads(stix2.DomainName(value=value).serialize())


def case(refs: List[str], author: str, name: str = "IRIS case 1", **extra: Any) -> Dict[str, Any]:
    return {"type": "case-incident", "spec_version": "2.1", "id": CaseIncident.generate_id(name, CREATED),
            "name": name, "created": CREATED, "modified": CREATED, "created_by_ref": author,
            "object_refs": refs, "severity": "high", **extra}


def relationship(source: str, target: str, kind: str = "related-to") -> Dict[str, Any]:
    return {"type": "relationship", "spec_version": "2.1",
            "id": StixCoreRelationship.generate_id(kind, source, target), "relationship_type": kind,
            "source_ref": source, "target_ref": target, "created": CREATED, "modified": CREATED}


def bundle(*objects: Dict[str, Any]) -> str:
    return json.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": list(objects)})


# -- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[OpenCTISimulator]:
    options = getattr(request, "param", {})
    simulator = OpenCTISimulator(token=TOKEN, amqp_url=DEFAULT_AMQP_URL if BROKER else None, **options)
    simulator.start()
    yield simulator
    simulator.stop()


HelperFactory = Callable[..., OpenCTIConnectorHelper]


@pytest.fixture
def make_helper(sim: OpenCTISimulator) -> Iterator[HelperFactory]:
    """Build real helpers against the simulator; stop them and tidy their queues afterwards.

    pycti replaces ``sys.excepthook`` with a hook that SIGTERMs the process; it is restored so that a
    failing test cannot kill the test run.
    """
    helpers: List[OpenCTIConnectorHelper] = []
    ids: List[str] = []
    original_hook = sys.excepthook

    def factory(connector_type: str = "EXTERNAL_IMPORT", **connector: Any) -> OpenCTIConnectorHelper:
        connector_id = str(uuid.uuid4())
        ids.append(connector_id)
        settings = {"id": connector_id, "type": connector_type, "name": f"Sim test {connector_id[:8]}",
                    "scope": "case-incident,ipv4-addr", "log_level": "error", "queue_protocol": "amqp",
                    "duration_period": "PT5M", **connector}
        helper = OpenCTIConnectorHelper({"opencti": {"url": sim.url, "token": TOKEN}, "connector": settings})
        sys.excepthook = original_hook
        helpers.append(helper)
        return helper

    yield factory
    for helper in helpers:
        if not sim.connectors[helper.connect_id]["deleted"]:  # the test may have stopped it already
            quiesce_listener(helper)
            helper.stop()
    sys.excepthook = original_hook
    if BROKER:
        connection = pika.BlockingConnection(pika.URLParameters(DEFAULT_AMQP_URL))
        channel = connection.channel()
        for connector_id in ids:
            channel.queue_delete(f"push_{connector_id}")
            channel.queue_delete(f"listen_{connector_id}")
        connection.close()


def quiesce_listener(helper: OpenCTIConnectorHelper) -> None:
    """End an AMQP ``helper.listen()`` consumer from its own thread before ``helper.stop()``.

    ``ListenQueue.stop()`` closes the consumer's pika connection from the calling thread while the listen
    thread is still servicing it (pika is not thread-safe): depending on timing, ``stop()`` then raises
    from pika internals.  Asking the consumer to stop through pika's thread-safe callback first leaves
    ``stop()`` an idle connection to close.
    """
    listener = helper.listen_queue
    if listener is None or listener.listen_protocol != "AMQP" or listener.pika_connection is None:
        return
    listener.exit_event.set()
    channel = listener.channel
    if channel is not None and listener.pika_connection.is_open:
        listener.pika_connection.add_callback_threadsafe(channel.stop_consuming)
    listener.join(timeout=5)


def queue_exists(name: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(DEFAULT_AMQP_URL))
    try:
        connection.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- GraphQL machinery (no pycti) ------------------------------------------------------------------------------
def test_projection_follows_the_selection_set() -> None:
    """Aliases, variables, inline fragments on type and interface, named fragments, @skip."""
    document = parse("""
        query Q($id: String!, $no: Boolean) {
          thing(id: $id) {
            id
            alias_name: name
            ... on Organization { x_org }
            ... on Individual { x_ind }
            ... Shared
            hidden @skip(if: $no)
            list { edges { node { value } } }
          }
        }
        fragment Shared on Identity { identity_class }
    """)
    operation = document.operation()
    executor = Executor(document.fragments, {"id": "x", "no": True})
    field = operation.selections[0]
    assert executor.field_args(field) == {"id": "x"}
    value = {"__typename": "Organization", "__types": {"Organization", "Identity"}, "id": "1", "name": "n",
             "x_org": "o", "x_ind": "i", "identity_class": "organization", "hidden": 1,
             "list": lambda args: {"edges": [{"node": {"value": "v", "other": 2}}]}}
    assert executor.project(value, field.selections) == {
        "id": "1", "alias_name": "n", "x_org": "o", "identity_class": "organization",
        "list": {"edges": [{"node": {"value": "v"}}]}}


# -- registration, ping, deletion --------------------------------------------------------------------------------
@needs_broker
def test_registration_declares_queues_and_pings(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    helper = make_helper(scope="case-incident,ipv4-addr")
    cid = helper.connect_id
    register = sim.ops_named("RegisterConnector")[-1]
    assert register["variables"]["input"]["id"] == cid
    assert register["variables"]["input"]["type"] == "EXTERNAL_IMPORT"
    assert register["variables"]["input"]["name"] == helper.connect_name
    assert register["variables"]["input"]["scope"] == ["case-incident", "ipv4-addr"]
    assert [op["operation"] for op in sim.ops[:2]] == ["healthCheck", "healthCheck"]
    sim.wait_for(lambda: sim.ops_named("PingConnector"))
    assert sim.connectors[cid]["pings"] >= 1
    assert helper.connector_config["push"] == f"push_{cid}"
    assert helper.connector_config["push_exchange"] == "amqp.worker.exchange"
    assert helper.connector_config["push_routing"] == f"push_routing_{cid}"
    assert helper.connector_config["listen"] == f"listen_{cid}"
    assert helper.connector_config["listen_exchange"] == "amqp.connector.exchange"
    assert json.loads(helper.connector_config["connector_jwks"])["keys"][0]["kty"] == "RSA"
    assert queue_exists(f"push_{cid}") and queue_exists(f"listen_{cid}")
    assert helper.api.connector.read(cid)["connector_scope"] == ["case-incident", "ipv4-addr"]
    assert cid in [c["id"] for c in helper.api.connector.list()]
    work_id = helper.api.work.initiate_work(cid, "listed")
    assert [w["id"] for w in helper.api.work.get_connector_works(cid)] == [work_id]
    assert helper.api.work.get_is_work_alive(work_id) is True

    helper.set_state({"last_run": 42})
    helper.force_ping()
    assert sim.connector_state(cid) == {"last_run": 42}
    sim.reset_connector_state(cid, {"last_run": 0})  # "reset state" in the UI
    answer = helper.api.connector.ping(cid, {"last_run": 42}, {})
    assert json.loads(answer["connector_state"]) == {"last_run": 0}

    helper.stop()
    assert sim.ops_named("deleteConnector")
    assert sim.connectors[cid]["deleted"]
    assert not queue_exists(f"push_{cid}") and not queue_exists(f"listen_{cid}")


def test_wrong_token_is_refused(sim: OpenCTISimulator) -> None:
    with pytest.raises(ValueError, match="not reachable"):
        OpenCTIApiClient(sim.url, "not-the-token", log_level="error")
    client = OpenCTIApiClient(sim.url, TOKEN, log_level="error")
    assert client.health_check()
    assert sim.ops[0]["errors"] == ["AUTH_REQUIRED"]
    assert sim.ops[-1]["variables"] == {} and sim.ops[-1]["errors"] == []


# -- bundles over AMQP ----------------------------------------------------------------------------------------------
@needs_broker
def test_amqp_bundle_is_ingested_and_work_completes(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    helper = make_helper()
    cid = helper.connect_id
    author, ip = identity(), ipv4()
    the_case = case([ip["id"]], author["id"], object_marking_refs=[stix2.TLP_AMBER.id])
    rel = relationship(ip["id"], author["id"])
    work_id = helper.api.work.initiate_work(cid, "IRIS import")
    sent = helper.send_stix2_bundle(bundle(the_case, rel, ip, author), work_id=work_id)
    assert len(sent) == 4  # pycti splits one object per message, in dependency order

    sim.wait_for(lambda: sim.work(work_id)["import_processed_number"] == 4)
    assert set(sim.store) == {author["id"], ip["id"], the_case["id"], rel["id"]}
    assert sim.store[the_case["id"]]["object_refs"] == [ip["id"]]
    assert sim.objects_of_type("case-incident")[0]["created_by_ref"] == author["id"]
    assert sim.objects_of_type("IPv4-Addr")[0]["value"] == "198.51.100.7"
    sources = sim.meta(the_case["id"])["sources"]
    assert sources[0]["connector_id"] == cid and sources[0]["work_id"] == work_id and sources[0]["via"] == "amqp"
    work = sim.work(work_id)
    assert work["import_expected_number"] == 4 and work["status"] == "complete"  # not multi-part

    helper.api.work.to_processed(work_id, "4 objects sent")
    read_back = helper.api.work.get_work(work_id)
    assert read_back["status"] == "complete"
    assert read_back["tracking"] == {"import_expected_number": 4, "import_processed_number": 4}
    assert read_back["messages"][-1]["message"] == "4 objects sent"

    entity = helper.api.case_incident.read(id=the_case["id"])
    assert entity["standard_id"] == the_case["id"] and entity["createdBy"]["name"] == "DFIR-IRIS"
    assert [m["definition"] for m in entity["objectMarking"]] == ["TLP:AMBER"]
    assert entity["objectsIds"] == [sim.meta(ip["id"])["internal_id"]]


@needs_broker
def test_upsert_merges_reference_lists(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    helper = make_helper()
    author, ip, dom = identity(), ipv4(), domain()
    first = case([ip["id"]], author["id"], labels=["iris"], description="v1")
    work_id = helper.api.work.initiate_work(helper.connect_id, "run 1")
    helper.send_stix2_bundle(bundle(author, ip, first), work_id=work_id)
    sim.wait_for(lambda: first["id"] in sim.store)

    second = case([dom["id"], ip["id"]], author["id"], labels=["iris", "phishing"], description="v2")
    work_id = helper.api.work.initiate_work(helper.connect_id, "run 2")
    helper.send_stix2_bundle(bundle(author, dom, second), work_id=work_id)
    sim.wait_for_work(work_id)

    stored = sim.store[first["id"]]
    assert stored["object_refs"] == [ip["id"], dom["id"]]
    assert stored["labels"] == ["iris", "phishing"]
    assert stored["description"] == "v2"
    assert [e["action"] for e in sim.events if e["id"] == first["id"]] == ["create", "update"]


@needs_broker
def test_delete_operation_cascades(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    helper = make_helper()
    author, ip, dom = identity(), ipv4(), domain()
    the_case = case([ip["id"], dom["id"]], author["id"])
    rel = relationship(ip["id"], dom["id"], "resolves-to")
    work_id = helper.api.work.initiate_work(helper.connect_id, "create")
    helper.send_stix2_bundle(bundle(author, ip, dom, the_case, rel), work_id=work_id)
    sim.wait_for_work(work_id)

    work_id = helper.api.work.initiate_work(helper.connect_id, "delete")
    helper.send_stix2_bundle(bundle({**ip, "opencti_operation": "delete"}), work_id=work_id)
    sim.wait_for_work(work_id)
    assert ip["id"] not in sim.store and rel["id"] not in sim.store
    assert sim.store[the_case["id"]]["object_refs"] == [dom["id"]]
    cascade = [e for e in sim.events if e["action"] == "delete" and e.get("cascade_of") == ip["id"]]
    assert [e["id"] for e in cascade] == [rel["id"]]

    work_id = helper.api.work.initiate_work(helper.connect_id, "delete case")
    as_extension = {"type": "case-incident", "spec_version": "2.1", "id": the_case["id"], "name": the_case["name"],
                    "extensions": {OCTI_EXT: {"extension_type": "property-extension", "opencti_operation": "delete"}}}
    helper.send_stix2_bundle(bundle(as_extension), work_id=work_id)
    sim.wait_for_work(work_id)
    assert the_case["id"] not in sim.store and dom["id"] in sim.store


@needs_broker
def test_missing_reference_is_an_error_but_counts(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    helper = make_helper()
    ip = ipv4()
    dangling = relationship(ip["id"], identity("Nobody")["id"])
    work_id = helper.api.work.initiate_work(helper.connect_id, "dangling")
    helper.send_stix2_bundle(bundle(ip, dangling), work_id=work_id)
    work = sim.wait_for_work(work_id)
    assert dangling["id"] not in sim.store and ip["id"] in sim.store
    assert work["import_processed_number"] == 2
    assert "Element(s) not found" in work["errors"][0]["message"]
    assert json.loads(work["errors"][0]["source"])["id"] == dangling["id"]


@needs_broker
def test_multipart_work_waits_for_to_processed(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    helper = make_helper()
    work_id = helper.api.work.initiate_work(helper.connect_id, "multi", is_multipart=True)
    helper.send_stix2_bundle(bundle(ipv4()), work_id=work_id)
    helper.send_stix2_bundle(bundle(domain()), work_id=work_id)
    sim.wait_for(lambda: sim.work(work_id)["import_processed_number"] == 2)
    assert sim.work(work_id)["status"] == "wait"
    helper.api.work.to_received(work_id, "started")
    assert sim.work(work_id)["status"] == "progress"
    helper.api.work.to_processed(work_id, "done")
    assert sim.work(work_id)["status"] == "complete"


@needs_broker
def test_stopping_right_after_sending_loses_nothing(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    """``deleteConnector`` deletes the queues; the simulator ingests what is still queued first."""
    helper = make_helper()
    objects = [ipv4(f"192.0.2.{i}") for i in range(1, 31)]
    work_id = helper.api.work.initiate_work(helper.connect_id, "burst")
    helper.send_stix2_bundle(bundle(*objects), work_id=work_id)
    helper.stop()
    assert {o["id"] for o in objects} <= set(sim.store)
    work = sim.work(work_id)  # kept for inspection, though the platform's API no longer returns it
    assert work["status"] == "complete" and work["import_processed_number"] == 30 and not work["alive"]
    assert helper.api.work.get_work(work_id) is None


def test_patch_operation_removes_objects_from_a_container(sim: OpenCTISimulator) -> None:
    case = {"type": "case-incident", "spec_version": "2.1", "id": CaseIncident.generate_id("#1 - Patch", CREATED),
            "name": "#1 - Patch", "created": CREATED, "modified": CREATED}
    first, second = ipv4("198.51.100.1"), ipv4("198.51.100.2")
    case["object_refs"] = [first["id"], second["id"]]
    sim.ingest_bundle([first, second, case])
    patch = [{"key": "objects", "value": [first["id"]], "operation": "remove"}]
    sim.ingest_bundle([{"id": case["id"], "type": "case-incident", "spec_version": "2.1",
                        "extensions": {OCTI_EXT: {"extension_type": "property-extension", "id": case["id"],
                                                  "opencti_operation": "patch", "opencti_field_patch": patch}}}])
    assert sim.store[case["id"]]["object_refs"] == [second["id"]]
    assert sim.store.get(first["id"]) is not None  # patched out of the case, not deleted


def test_case_severity_is_read_at_the_top_level_only(sim: OpenCTISimulator) -> None:
    """pycti's CaseIncident.import_from_stix2 reads severity/priority from the top level, never the extension."""
    top = {**case([], identity()["id"], name="#2 - Top"), "priority": "P1"}
    hidden = {**case([], identity()["id"], name="#3 - Hidden"),
              "extensions": {OCTI_EXT: {"extension_type": "property-extension", "severity": "low", "priority": "P4"}}}
    del hidden["severity"]
    sim.ingest_bundle([identity(), top, hidden])
    assert (sim.store[top["id"]]["severity"], sim.store[top["id"]]["priority"]) == ("high", "P1")
    stored = sim.store[hidden["id"]]
    assert "severity" not in stored and "priority" not in stored
    assert "severity" not in stored["extensions"][OCTI_EXT] and "priority" not in stored["extensions"][OCTI_EXT]


def test_upsert_changes_scalars_only_when_confidence_allows(sim: OpenCTISimulator) -> None:
    """confidence-level.ts: the incoming confidence capped by the user's; fields change only at >= the object's."""
    other = identity("Other CTI")
    vuln = {"type": "vulnerability", "spec_version": "2.1", "id": "vulnerability--0b3f9a2e-7f43-4b5e-9a2b-2f8c1d3e4a5b",
            "name": "CVE-2026-0001", "created": CREATED, "modified": CREATED, "created_by_ref": other["id"],
            "confidence": 90, "description": "from a feed", "labels": ["feed"]}
    sim.ingest_bundle([other, vuln])
    sim.ingest_bundle([{**vuln, "confidence": 75, "description": "IRIS's", "labels": ["iris"], "x_cvss": 9.8}])
    stored = sim.store[vuln["id"]]
    assert stored["description"] == "from a feed" and stored["confidence"] == 90, "lower confidence: no change"
    assert stored["labels"] == ["feed", "iris"], "references are added whatever the confidence"
    assert stored["x_cvss"] == 9.8, "an empty field is filled even when the confidence does not match"
    sim.ingest_bundle([{**vuln, "confidence": 90, "description": ""}])
    assert sim.store[vuln["id"]]["description"] == "from a feed", "an empty value never erases"
    sim.ingest_bundle([{**vuln, "confidence": 95, "description": "revised"}])
    assert (sim.store[vuln["id"]]["description"], sim.store[vuln["id"]]["confidence"]) == ("revised", 95)


@pytest.mark.parametrize("sim", [{"max_confidence": 50}], indirect=True)
def test_the_users_max_confidence_caps_what_it_writes(sim: OpenCTISimulator) -> None:
    mine = {**identity("Mine"), "confidence": 75, "description": "v1"}
    sim.ingest_bundle([mine])
    assert sim.store[mine["id"]]["confidence"] == 50
    sim.ingest_bundle([{**mine, "description": "v2"}])
    assert sim.store[mine["id"]]["description"] == "v2", "its own objects still update (50 >= 50)"
    sim.ingest_bundle([ipv4()])
    assert "confidence" not in sim.store[ipv4()["id"]], "observables have no confidence attribute"


@pytest.mark.parametrize("sim", [{"max_confidence": None}], indirect=True)
def test_a_user_without_confidence_level_cannot_write_domain_objects(sim: OpenCTISimulator) -> None:
    results = sim.ingest_bundle([identity("Nobody"), ipv4()])
    assert results[0].action == "error" and "no effective max confidence" in results[0].error
    assert results[1].action == "create", "observables have no confidence attribute"


def test_standard_ids_and_aliases(sim: OpenCTISimulator) -> None:
    """An SDO sent with a random id is stored under the platform's standard id; both ids resolve."""
    author = identity()
    random_id = f"case-incident--{uuid.uuid4()}"
    results = sim.ingest_bundle([author, {**case([], author["id"]), "id": random_id}])
    standard_id = CaseIncident.generate_id("IRIS case 1", CREATED)
    assert results[1].id == standard_id
    assert sim.store[random_id]["id"] == standard_id
    assert sim.store[standard_id]["x_opencti_stix_ids"] == [random_id]
    assert sim.meta(random_id)["aliases"] == [random_id]
    sim.ingest_bundle([case([], author["id"], description="again")])
    assert len(sim.objects_of_type("case-incident")) == 1


# -- the api queue protocol -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sim", [{}, {"bundle_push_via_queue": True}],
                         ids=["ingested-at-once", "through-the-push-queue"], indirect=True)
def test_api_queue_protocol_uses_stix_bundle_push(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    helper = make_helper(queue_protocol="api")
    author, ip = identity(), ipv4()
    the_case = case([ip["id"]], author["id"])
    work_id = helper.api.work.initiate_work(helper.connect_id, "api run")
    helper.send_stix2_bundle(bundle(the_case, ip, author), work_id=work_id)
    push = sim.ops_named("StixBundlePush")
    assert len(push) == 1 and push[0]["variables"]["work_id"] == work_id
    sim.wait_for(lambda: len(sim.store) == 3)
    assert set(sim.store) == {author["id"], ip["id"], the_case["id"]}
    assert sim.meta(ip["id"])["sources"][0]["via"] == ("amqp" if sim.bundle_push_via_queue else "api")
    assert sim.wait_for_work(work_id)["import_processed_number"] == 3


# -- failures and latency -------------------------------------------------------------------------------------------
def test_failures_and_latency_reach_pycti(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    helper = make_helper(queue_protocol="api")
    sim.fail_for(0.4)
    assert helper.api.health_check() is False
    with pytest.raises(ValueError, match="Simulated OpenCTI outage"):
        helper.api.work.initiate_work(helper.connect_id, "during outage")
    time.sleep(0.45)
    assert helper.api.health_check() is True
    work_id = helper.api.work.initiate_work(helper.connect_id, "after outage")

    sim.fail_next(1, status=502, match="workEdit")
    with pytest.raises(ValueError):
        helper.api.work.to_received(work_id, "first try")
    helper.api.work.to_received(work_id, "second try")
    assert [m["message"] for m in sim.work(work_id)["messages"]] == ["second try"]

    sim.fail_next(1, status=0)  # connection dropped without an answer
    with pytest.raises(requests.ConnectionError):
        helper.api.work.to_received(work_id, "dropped")

    sim.delay(0.05)
    started = time.monotonic()
    helper.api.health_check()
    assert time.monotonic() - started >= 0.05
    sim.reset_faults()
    injected = [op for op in sim.ops if op["injected"]]
    assert {op["status"] for op in injected} == {0, 500, 502}


# -- enrichment --------------------------------------------------------------------------------------------------------
@needs_broker
def test_enrichment_over_amqp(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    author = identity()
    ip = ipv4(x_opencti_score=40, x_opencti_labels=["c2"], x_opencti_created_by_ref=author["id"],
              object_marking_refs=[stix2.TLP_GREEN.id])
    sim.ingest_bundle([author, ip])
    helper = make_helper("INTERNAL_ENRICHMENT", scope="IPv4-Addr", queue_protocol="amqp")
    received: List[Dict[str, Any]] = []

    def enrich(data: Dict[str, Any]) -> str:
        received.append(data)
        helper.send_stix2_bundle(bundle({**data["stix_entity"], "x_opencti_score": 90}))
        return "score raised"

    threading.Thread(target=helper.listen, args=(enrich,), daemon=True).start()
    work_id = sim.request_enrichment(helper.connect_id, ip["id"])
    sim.wait_for(lambda: sim.work(work_id)["processed_time"] is not None)

    data = received[0]
    assert data["entity_id"] == ip["id"] and data["entity_type"] == "IPv4-Addr"
    entity = data["enrichment_entity"]
    assert entity["observable_value"] == "198.51.100.7" and entity["x_opencti_score"] == 40
    assert [m["definition"] for m in entity["objectMarking"]] == ["TLP:GREEN"]
    assert [label["value"] for label in entity["objectLabel"]] == ["c2"]
    assert entity["createdBy"]["name"] == "DFIR-IRIS"
    assert data["stix_entity"]["id"] == ip["id"]
    assert data["stix_entity"]["x_opencti_created_by_ref"] == author["id"]
    assert {o["id"] for o in data["stix_objects"]} == {ip["id"], author["id"], stix2.TLP_GREEN.id}
    work = sim.wait_for_work(work_id)
    assert [m["message"] for m in work["messages"]] == ["Connector ready to process the operation", "score raised"]
    sim.wait_for(lambda: sim.store[ip["id"]]["x_opencti_score"] == 90)
    assert [op["operation"] for op in sim.ops if op["operation"] in ("StixCyberObservable", "workToReceived")] == [
        "StixCyberObservable", "workToReceived"]


def test_enrichment_over_the_api_listen_protocol(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    """The callback carries a JWT signed with the key of the JWKS handed out at registration."""
    ip = ipv4("203.0.113.9")
    sim.ingest_bundle([ip])
    port = free_port()
    helper = make_helper("INTERNAL_ENRICHMENT", scope="IPv4-Addr", queue_protocol="api", listen_protocol="API",
                         listen_protocol_api_port=port, listen_protocol_api_uri=f"http://127.0.0.1:{port}")
    assert sim.connectors[helper.connect_id]["listen_callback_uri"] == f"http://127.0.0.1:{port}/api/callback"
    threading.Thread(target=helper.listen, args=(lambda data: f"seen {data['entity_id']}",), daemon=True).start()
    sim.wait_for(lambda: _accepts(port), timeout=10)
    work_id = sim.request_enrichment(helper.connect_id, ip["id"])
    work = sim.wait_for_work(work_id)
    assert work["messages"][-1]["message"] == f"seen {ip['id']}"
    assert requests.post(f"http://127.0.0.1:{port}/api/callback", json={}, timeout=5,
                         headers={"Authorization": "Bearer forged"}).status_code == 401


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# -- as a separate process -------------------------------------------------------------------------------------------
def test_runs_as_a_process_with_a_control_api() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "tests.opencti_sim", "--port", "0", "--token", TOKEN,
                                "--amqp-url", DEFAULT_AMQP_URL if BROKER else "none"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url: Optional[str] = process.stdout.readline().strip()
        assert url and url.startswith("http://127.0.0.1:")
        client = OpenCTIApiClient(url, TOKEN, log_level="error")
        ip = ipv4()
        answer = requests.post(f"{url}/_sim/ingest", json={"bundle": json.loads(bundle(ip))}, timeout=5).json()
        assert answer == [{"action": "create", "id": ip["id"], "error": None}]
        assert client.stix_cyber_observable.read(id=ip["id"])["observable_value"] == ip["value"]
        assert list(requests.get(f"{url}/_sim/store", params={"type": "ipv4-addr"}, timeout=5).json()) == [ip["id"]]
        requests.post(f"{url}/_sim/fail", json={"n": 1, "status": 503}, timeout=5)
        assert client.health_check() is False and client.health_check() is True
        ops = requests.get(f"{url}/_sim/ops", params={"name": "healthCheck"}, timeout=5).json()
        assert [op["status"] for op in ops][-2:] == [503, 200]
        requests.post(f"{url}/_sim/reset", json={}, timeout=5)
        assert requests.get(f"{url}/_sim/store", timeout=5).json() == {}
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- strict mode: several workers, messages out of order ------------------------------------------------------
STRICT = {"workers": 3, "prefetch": 64, "retry_delay": 0.01}


@needs_broker
@pytest.mark.parametrize("sim", [STRICT], indirect=True)
def test_strict_workers_take_messages_out_of_order(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    """The messages of one connector do not keep their order: a later message can overtake earlier ones."""
    helper = make_helper()
    work_id = helper.api.work.initiate_work(helper.connect_id, "many", is_multipart=True)
    ips = [ipv4(f"198.51.100.{i}") for i in range(1, 61)]
    queued = [json.loads(b)["objects"][0]["id"] for b in helper.send_stix2_bundle(bundle(*ips), work_id=work_id)]
    sim.wait_for(lambda: sim.work(work_id)["import_processed_number"] == 60)
    created = [e["id"] for e in sim.events if e["action"] == "create"]
    assert sorted(created) == sorted(queued)
    assert created != queued, "60 messages ingested exactly in queue order"
    work = sim.work(work_id)
    assert work["status"] == "wait" and work["expectations_added"] == 60  # multi-part: waits for toProcessed
    helper.api.work.to_processed(work_id, "done")
    assert sim.work(work_id)["status"] == "complete"


@needs_broker
@pytest.mark.parametrize("sim", [STRICT], indirect=True)
def test_strict_arrivals_are_told_before_processing(sim: OpenCTISimulator, make_helper: HelperFactory) -> None:
    """``on_arrival`` (what bench/e2e.py times the push queue with) sees every message, stamped when it was
    taken off the broker: no later than the object is in the store."""
    from tests.opencti_sim.ingestion import decode_message

    helper = make_helper()
    seen: Dict[str, float] = {}
    assert sim.amqp is not None
    sim.amqp.on_arrival = lambda message, at: seen.update(
        {o["id"]: at for o in decode_message(message)["objects"]})
    ips = [ipv4(f"203.0.113.{i}") for i in range(1, 11)]
    work_id = helper.api.work.initiate_work(helper.connect_id, "arrivals", is_multipart=True)
    helper.send_stix2_bundle(bundle(*ips), work_id=work_id)
    sim.wait_for(lambda: sim.work(work_id)["import_processed_number"] == 10)
    stored = time.perf_counter()
    assert set(seen) >= {ip["id"] for ip in ips}
    assert all(seen[ip["id"]] <= stored for ip in ips)


@needs_broker
@pytest.mark.parametrize("sim", [STRICT], indirect=True)
def test_strict_missing_reference_is_retried_then_reported(sim: OpenCTISimulator,
                                                          make_helper: HelperFactory) -> None:
    """pycti's ``import_item_with_retries``: PROCESSING_COUNT retries, then one error on the work."""
    from tests.opencti_sim.strict import PROCESSING_COUNT

    helper = make_helper()
    ip = ipv4()
    dangling = relationship(ip["id"], identity("Nobody")["id"])
    work_id = helper.api.work.initiate_work(helper.connect_id, "dangling")
    started = time.monotonic()
    helper.send_stix2_bundle(bundle(ip, dangling), work_id=work_id)
    work = sim.wait_for_work(work_id)
    assert time.monotonic() - started >= PROCESSING_COUNT * STRICT["retry_delay"]
    assert dangling["id"] not in sim.store and ip["id"] in sim.store
    assert work["import_processed_number"] == 2 and len(work["errors"]) == 1
    assert "Element(s) not found" in work["errors"][0]["message"]
    errors = [e for e in sim.events if e["action"] == "error"]
    assert [e["id"] for e in errors] == [dangling["id"]], "retried attempts are not errors, the last one is"


@needs_broker
@pytest.mark.parametrize("sim", [STRICT], indirect=True)
def test_strict_reference_arriving_in_time_is_not_an_error(sim: OpenCTISimulator,
                                                          make_helper: HelperFactory) -> None:
    """A relationship taken before its target succeeds on a retry once the target is in."""
    helper = make_helper(log_level="error")
    author = identity()
    targets = [ipv4(f"203.0.113.{i}") for i in range(1, 41)]
    rels = [relationship(t["id"], author["id"]) for t in targets]
    work_id = helper.api.work.initiate_work(helper.connect_id, "racing")
    helper.send_stix2_bundle(bundle(author, *targets, *rels), work_id=work_id)
    work = sim.wait_for_work(work_id)
    assert not work["errors"] and all(r["id"] in sim.store for r in rels)


@needs_broker
@pytest.mark.parametrize("sim", [STRICT], indirect=True)
def test_strict_no_split_bundle_reports_one_expectation_per_element(sim: OpenCTISimulator,
                                                                   make_helper: HelperFactory) -> None:
    """The worker re-splits a ``no_split`` bundle and reports each element, in the bundle's order."""
    helper = make_helper()
    ips = [ipv4(f"192.0.2.{i}") for i in range(1, 6)]
    work_id = helper.api.work.initiate_work(helper.connect_id, "create")
    helper.send_stix2_bundle(bundle(*ips), work_id=work_id)
    sim.wait_for_work(work_id)
    work_id = helper.api.work.initiate_work(helper.connect_id, "delete", is_multipart=True)
    helper.send_stix2_bundle(bundle(*({**ip, "opencti_operation": "delete"} for ip in ips)), work_id=work_id,
                             no_split=True)
    sim.wait_for(lambda: sim.work(work_id)["import_processed_number"] == 5)
    work = sim.work(work_id)
    assert work["expectations_added"] == 1, "pycti adds one expectation for a no_split bundle"
    deleted = [e["id"] for e in sim.events if e["action"] == "delete"]
    assert deleted == [ip["id"] for ip in ips]


@needs_broker
@pytest.mark.parametrize("sim", [STRICT], indirect=True)
def test_strict_dropped_message_leaves_the_work_incomplete(sim: OpenCTISimulator,
                                                          make_helper: HelperFactory) -> None:
    helper = make_helper()
    sim.drop_next_push(1)
    work_id = helper.api.work.initiate_work(helper.connect_id, "lossy")
    helper.send_stix2_bundle(bundle(ipv4("192.0.2.1"), ipv4("192.0.2.2")), work_id=work_id)
    sim.wait_for(lambda: sim.work(work_id)["import_processed_number"] == 1)
    time.sleep(0.3)
    work = sim.work(work_id)
    assert work["import_processed_number"] == 1 and work["status"] != "complete"
    assert len([e for e in sim.events if e["action"] == "create"]) == 1


@needs_broker
@pytest.mark.parametrize("sim", [STRICT], indirect=True)
def test_strict_stopping_right_after_sending_loses_nothing(sim: OpenCTISimulator,
                                                          make_helper: HelperFactory) -> None:
    """``deleteConnector`` still ingests what the workers hold and what is still queued."""
    helper = make_helper()
    objects = [ipv4(f"192.0.2.{i}") for i in range(1, 101)]
    work_id = helper.api.work.initiate_work(helper.connect_id, "burst")
    helper.send_stix2_bundle(bundle(*objects), work_id=work_id)
    helper.stop()
    assert {o["id"] for o in objects} <= set(sim.store)
    assert sim.work(work_id)["import_processed_number"] == 100
    assert not sim.errors


def test_kept_alive_requests_are_not_stalled_by_the_simulator(sim: OpenCTISimulator) -> None:
    """Headers and body are written separately; without TCP_NODELAY each kept-alive answer waited ~40 ms for
    the client's delayed ACK, inflating every latency measured against the simulator."""
    session = requests.Session()
    session.get(sim.url + "/health").raise_for_status()
    started = time.perf_counter()
    for _ in range(25):
        session.get(sim.url + "/health").raise_for_status()
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"25 kept-alive requests took {elapsed:.2f} s (a Nagle stall costs ~1 s)"
