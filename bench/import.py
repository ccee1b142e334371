"""Import throughput: IRIS queue → iris-opencti-import → OpenCTI (simulator) store.

Prints messages/s and STIX objects/s for
  1. one 10,000-IOC case (one case.sync message),
  2. 1,000 single-IOC events (ioc.created messages),
  3. 1,000 events with one deletion in five, spread over 20 cases and then all in one case (the cost of
     keeping each case's order: a deletion holds back its own case's later events until OpenCTI ran it),
and the same figures for a per-IOC GraphQL client, as IRIS modules that call OpenCTI's API directly work
(the seed module: look the case up, create the IOC's objects, link them to the case, a new connection per
request), all against the same simulator with 5 ms of added latency per request. Goal: the connector at least
20x the per-IOC client.

Run: python bench/import.py [--iocs 10000] [--events 1000] [--baseline-iocs 300] [--latency 0.005]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import requests  # noqa: E402

from bench.convert import synthetic_case  # noqa: E402
from iris_opencti_module.core import stix_ids  # noqa: E402
from iris_opencti_module.core.envelope import encode  # noqa: E402
from iris_opencti_module.transport.case_sync import CaseSync  # noqa: E402
from tests.connector.harness import (  # noqa: E402
    CONVERTER,
    ConnectorProcess,
    delete_queues,
    import_env,
    ioc_event,
    publish,
    wait,
)
from tests.module.samples import load_export, make_ioc  # noqa: E402
from tests.opencti_sim import OpenCTISimulator, strict_options  # noqa: E402

TOKEN = "bench-" + uuid.uuid4().hex


def run_connector(sim, workdir, bodies, done, what, latency):
    queue = "iris-opencti-bench-" + uuid.uuid4().hex[:8]
    proc = ConnectorProcess("iris_opencti_connector.importer.connector", workdir,
                            import_env(sim.url, TOKEN, queue, workdir, CONNECTOR_LOG_LEVEL="error")).start()
    try:
        wait(lambda: sim.ops_named("PingConnector"), timeout=60, what="registration", proc=proc)
        sim.delay(latency)
        publish(queue, bodies)
        start = time.perf_counter()
        wait(done, timeout=1800, what=what, proc=proc)
        return time.perf_counter() - start
    finally:
        sim.delay(0)
        proc.stop()
        delete_queues(queue, queue + ".dead")


def per_ioc_client(sim, export, n_iocs):
    """What a module calling OpenCTI's GraphQL API directly does for each IOC, as the seed module does: look
    the case up, create the IOC's objects, link them to the case; a new HTTP connection per request."""
    session = requests  # no kept-alive session: each call opens its own connection
    headers = {"Authorization": "Bearer " + TOKEN}
    case = export["data"]["case"]
    iocs = export["data"]["iocs"][:n_iocs]
    objects = 0
    start = time.perf_counter()
    for ioc in iocs:
        result = CONVERTER.convert(case, [ioc])
        bundle = result.bundle("per-ioc")
        incident = result.objects[result.case_ref]
        session.post(sim.url + "/graphql", headers=headers, json={
            "query": "query Case($id: String!) { caseIncident(id: $id) { id standard_id } }",
            "variables": {"id": result.case_ref}}).raise_for_status()
        created = dict(bundle, objects=[o for o in bundle["objects"] if o["id"] != result.case_ref])
        session.post(sim.url + "/graphql", headers=headers, json={
            "query": "mutation Push($connectorId: String!, $bundle: String!) "
                     "{ stixBundlePush(connectorId: $connectorId, bundle: $bundle) }",
            "variables": {"connectorId": "per-ioc-client", "bundle": json.dumps(created)}}).raise_for_status()
        link = dict(bundle, objects=[incident])
        session.post(sim.url + "/graphql", headers=headers, json={
            "query": "mutation Push($connectorId: String!, $bundle: String!) "
                     "{ stixBundlePush(connectorId: $connectorId, bundle: $bundle) }",
            "variables": {"connectorId": "per-ioc-client", "bundle": json.dumps(link)}}).raise_for_status()
        objects += len(bundle["objects"])
    return time.perf_counter() - start, len(iocs), objects


def mixed_events(sim, workdir, base, n_events, n_cases, latency):
    """``n_events`` IOC events round-robin over ``n_cases`` new cases, each case's every fifth event deleting
    the oldest IOC it still has; returns seconds, works, (kept, kept but missing), (deleted, deleted but present).

    Each case ends with a creation: once it is in OpenCTI, so is everything before it in that case (a
    deletion holds back its case's later events until OpenCTI ran it)."""
    cases = []
    for n in range(n_cases):
        export = json.loads(json.dumps(base))
        export["data"]["case"].update(case_id=1000 * n_cases + n, name="#%d - Bench %d/%d" % (n, n, n_cases))
        cases.append(export)
    events, deleted = [], []
    created = {n: [] for n in range(n_cases)}
    for i in range(n_events):
        c = i % n_cases
        if (i // n_cases) % 5 == 3 and created[c]:
            ioc = created[c].pop(0)
            events.append(ioc_event(cases[c], "ioc.deleted", ioc))
            deleted.append(ioc)
        else:
            ioc = make_ioc(100000 * n_cases + i, "domain", "mix-%d-%d.bench.example" % (n_cases, i))
            created[c].append(ioc)
            events.append(ioc_event(cases[c], "ioc.created", ioc))
    kept = [ioc for iocs in created.values() for ioc in iocs]

    def obs(ioc):
        return stix_ids.sco_id({"type": "domain-name", "value": ioc["ioc_value"]})

    works_before = len(sim.works)
    seconds = run_connector(sim, workdir, events, lambda: all(sim.store.get(obs(i)) for i in kept)
                            and not any(sim.store.get(obs(i)) for i in deleted),
                            "%d mixed events over %d cases" % (n_events, n_cases), latency)
    present = sum(1 for i in kept if sim.store.get(obs(i)))
    still = sum(1 for i in deleted if sim.store.get(obs(i)))
    return seconds, len(sim.works) - works_before, (present, len(kept) - present), (len(deleted) - still, still)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iocs", type=int, default=10000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--baseline-iocs", type=int, default=300, help="IOCs timed for the per-IOC client")
    parser.add_argument("--latency", type=float, default=0.005)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="iris-opencti-bench-")
    # OpenCTI's workers as they really run: several, taking messages out of order, retrying a missing
    # reference then dropping the item (OPENCTI_SIM_WORKERS, default 3)
    sim = OpenCTISimulator(token=TOKEN, **strict_options())
    sim.start()
    try:
        export = synthetic_case(args.iocs, 0)
        converted = CONVERTER.convert_export(export)
        n_objects = len(converted.objects)
        case_ref = converted.case_ref
        expected_refs = len(converted.objects[case_ref]["object_refs"])
        data = export["data"]
        sync = CaseSync(CONVERTER, data["case"], data["iocs"], data.get("assets") or [])  # as the module ships it
        parts = [encode(p) for p in sync.envelopes()]
        seconds = run_connector(sim, workdir, parts, lambda: sim.ref_count(case_ref) >= expected_refs,
                                "the %d-IOC case" % args.iocs, args.latency)
        print("connector, %d-IOC case: %d messages (largest %.1f MiB), %d STIX objects in %.1f s -> %.0f objects/s, "
              "%.0f IOCs/s" % (args.iocs, len(parts), max(map(len, parts)) / 2 ** 20, n_objects, seconds,
                               n_objects / seconds, args.iocs / seconds))
        case_rate = args.iocs / seconds
        stored = {i for i in converted.objects if sim.store.get(i) is not None}
        print("  in OpenCTI: %d of %d objects (lost: %d), case holds %d refs (duplicates: %d), worker errors: %d"
              % (len(stored), n_objects, n_objects - len(stored),
                 len(sim.store[case_ref]["object_refs"]),
                 len(sim.store[case_ref]["object_refs"]) - len(set(sim.store[case_ref]["object_refs"])),
                 len(sim.errors)))

        sim.reset(store=True, ops=True)
        base = load_export()
        events = [ioc_event(base, "ioc.created", make_ioc(900000 + n, "domain", "ev-%d.bench.example" % n))
                  for n in range(args.events)]
        last = stix_ids.sco_id({"type": "domain-name", "value": "ev-%d.bench.example" % (args.events - 1)})
        every = {stix_ids.sco_id({"type": "domain-name", "value": "ev-%d.bench.example" % n})
                 for n in range(args.events)}
        ev_objects = sum(len(json.loads(e)["bundle"]["objects"]) for e in events)
        seconds = run_connector(sim, workdir, events,
                                lambda: sim.store.get(last) is not None and all(sim.store.get(i) for i in every),
                                "%d single-IOC events" % args.events, args.latency)
        print("connector, %d single-IOC events: %.1f s -> %.0f messages/s, %.0f objects/s"
              % (args.events, seconds, args.events / seconds, ev_objects / seconds))
        event_rate = args.events / seconds
        print("  in OpenCTI: %d of %d observables (lost: %d), worker errors: %d"
              % (sum(1 for i in every if sim.store.get(i)), len(every),
                 sum(1 for i in every if not sim.store.get(i)), len(sim.errors)))

        for n_cases in (20, 1):
            sim.reset(store=True, ops=True)
            seconds, works, kept, gone = mixed_events(sim, workdir, base, args.events, n_cases, args.latency)
            print("connector, %d events (1 in 5 a deletion) over %d case%s: %.1f s -> %.0f messages/s in %d works; "
                  "in OpenCTI %d kept, %d deleted (wrong: %d)"
                  % (args.events, n_cases, "s" if n_cases > 1 else "", seconds, args.events / seconds, works,
                     kept[0], gone[0], kept[1] + gone[1]))

        sim.reset(store=True, ops=True)
        sim.delay(args.latency)
        seconds, n, objects = per_ioc_client(sim, export, args.baseline_iocs)
        sim.delay(0)
        rate = n / seconds
        print("per-IOC GraphQL client (3 round trips per IOC, %.0f ms latency): %d IOCs in %.1f s -> %.0f IOCs/s, "
              "%.0f objects/s" % (args.latency * 1000, n, seconds, rate, objects / seconds))
        print(f"speed-up: {case_rate / rate:.0f}x for the case, {event_rate / rate:.1f}x for single events (goal: >= "
              "20x)")
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
