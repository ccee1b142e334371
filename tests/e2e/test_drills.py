"""Failure drills on the full path: each asserts that nothing is lost and nothing is duplicated.

(The import connector alone is also drilled in tests/connector/test_import_integration.py: OpenCTI answering
500, a poison message, a kill mid-stream.)
"""

import threading

from iris_opencti_module.core import stix_ids
from iris_opencti_module.transport.spool import Spool
from tests.connector.harness import publish, wait

CREATED = "2026-11-28T06:40:10.969Z"


def case_ref(case_id):
    return stix_ids.case_incident_id("#%d - Ransomware precursor on build server" % case_id, CREATED)


def domain_id(value):
    return stix_ids.sco_id({"type": "domain-name", "value": value})


def refs(sim, ref):
    return (sim.store.get(ref) or {}).get("object_refs", [])


def assert_exactly(sim, ref, values):
    """Every expected domain is stored once and listed once in the case."""
    stored = [o for o in sim.objects_of_type("domain-name") if o["value"] in values]
    assert len(stored) == len(values) and len({o["id"] for o in stored}) == len(values)
    case_refs = refs(sim, ref)
    assert len(case_refs) == len(set(case_refs)), "a reference is listed twice"
    assert {domain_id(v) for v in values} <= set(case_refs)


def test_rabbitmq_unreachable_from_the_module_spools_then_drains(stack25):
    stack = stack25
    stack.start_connectors(enrich=False)
    world, module, sim = stack.world, stack.module, stack.sim
    case = world.case(30)
    good_url = module.values["amqp_url"]
    module.configure(amqp_url="amqp://guest:guest@127.0.0.1:1/%2F")
    values = ["spool-%02d.evil.example" % n for n in range(20)]
    for n, value in enumerate(values):
        status = module.run("on_postload_ioc_create", world.ioc(3000 + n, value, "domain", [case]))
        assert status.is_success(), status.get_logs()
    assert len(Spool(module.spool_dir).pending()) == 20
    module.configure(amqp_url=good_url)
    values.append("after-outage.evil.example")
    assert module.run("on_postload_ioc_create", world.ioc(3100, values[-1], "domain", [case])).is_success()
    wait(lambda: {domain_id(v) for v in values} <= set(refs(sim, case_ref(30))), timeout=60,
         what="every spooled IOC in OpenCTI", proc=stack.importer)
    assert Spool(module.spool_dir).pending() == []
    assert_exactly(sim, case_ref(30), values)


def test_import_connector_killed_mid_case_and_restarted(stack25):
    stack = stack25
    stack.start_connectors(enrich=False)
    world, module, sim = stack.world, stack.module, stack.sim
    case = world.case(31)
    values = ["kill-%04d.evil.example" % n for n in range(3000)]
    for n, value in enumerate(values):
        world.ioc(10000 + n, value, "domain", [case])
    assert module.run("on_manual_trigger_case", case, ui="Sync case to OpenCTI").is_success()
    wait(lambda: len(refs(sim, case_ref(31))) > 0 or any(
        "IRIS case #31" in w["name"] for w in sim.works.values()), timeout=60, what="the import to start",
        proc=stack.importer)
    stack.restart_importer(kill=True)
    wait(lambda: {domain_id(v) for v in values} <= set(refs(sim, case_ref(31))), timeout=180,
         what="the whole case after the restart", proc=stack.importer)
    assert_exactly(sim, case_ref(31), values)


def test_opencti_500_then_poison_message_then_recovery(stack25):
    stack = stack25
    stack.start_connectors(enrich=False)
    world, module, sim = stack.world, stack.module, stack.sim
    case = world.case(32)
    sim.fail_for(5, status=500)
    values = ["flaky-%02d.evil.example" % n for n in range(10)]
    for n, value in enumerate(values[:5]):
        assert module.run("on_postload_ioc_create", world.ioc(4000 + n, value, "domain", [case])).is_success()
    publish(stack.queue, [b"this is not an IRIS message"])
    for n, value in enumerate(values[5:], 5):
        assert module.run("on_postload_ioc_create", world.ioc(4000 + n, value, "domain", [case])).is_success()
    wait(lambda: {domain_id(v) for v in values} <= set(refs(sim, case_ref(32))), timeout=90,
         what="every IOC after the outage", proc=stack.importer)
    assert_exactly(sim, case_ref(32), values)
    dead = stack.rabbit.bodies(stack.queue + ".dead")
    assert dead == [b"this is not an IRIS message"]


def test_a_10000_ioc_case_and_1000_concurrent_single_events(stack25):
    stack = stack25
    stack.start_connectors(enrich=False)
    world, module, sim = stack.world, stack.module, stack.sim
    big, small = world.case(40), world.case(41)
    big_values = ["big-%05d.evil.example" % n for n in range(10000)]
    for n, value in enumerate(big_values):
        world.ioc(100000 + n, value, "domain", [big])
    small_values = ["single-%04d.evil.example" % n for n in range(1000)]
    small_iocs = [world.ioc(200000 + n, v, "domain", [small]) for n, v in enumerate(small_values)]
    failures = []

    def ship(chunk):
        for ioc in chunk:
            status = module.run("on_postload_ioc_create", ioc)
            if not status.is_success():
                failures.append(status.get_logs())

    threads = [threading.Thread(target=ship, args=(small_iocs[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    assert module.run("on_manual_trigger_case", big, ui="Sync case to OpenCTI").is_success()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    # events queued behind the case wait for its work to complete (ordering, see the README): the same bound
    wait(lambda: {domain_id(v) for v in small_values} <= set(refs(sim, case_ref(41))), timeout=400,
         what="the 1,000 single events", proc=stack.importer)
    wait(lambda: len(refs(sim, case_ref(40))) >= 30000, timeout=400, what="the 10,000-IOC case",
         proc=stack.importer)
    assert_exactly(sim, case_ref(41), small_values)
    assert_exactly(sim, case_ref(40), big_values)
