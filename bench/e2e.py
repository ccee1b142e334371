"""End to end: IRIS module hook → RabbitMQ → iris-opencti-import → object in OpenCTI's (simulator) store.

Prints, over sequential single events each sent once the connector is idle, the time from an
``on_postload_ioc_create`` hook to its observable's message on OpenCTI's push queue (taken off the broker by
the simulator's workers) and to the observable being in the store (median and 99th percentile), and the
end-to-end throughput of a 10,000-IOC case shipped by the manual "Sync case to OpenCTI" trigger.

Run: python bench/e2e.py [--events 200] [--iocs 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "module", "iris_stub"))

from iris_opencti_module.core import stix_ids  # noqa: E402
from tests.connector.harness import wait  # noqa: E402
from tests.e2e.conftest import Stack  # noqa: E402
from tests.opencti_sim.ingestion import decode_message  # noqa: E402

CREATED = "2026-11-28T06:40:10.969Z"


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * len(ordered))) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--iocs", type=int, default=10000)
    args = parser.parse_args()
    stack = Stack("2.5", tempfile.mkdtemp(prefix="iris-opencti-e2e-"))
    try:
        stack.start_connectors(enrich=False)
        world, module, sim = stack.world, stack.module, stack.sim
        case = world.case(50)
        module.run("on_postload_case_create", case)
        latencies = []
        queued = []
        arrivals = {}

        def on_arrival(message, arrived):  # the first time each object's message reached the push queue's consumer
            for obj in decode_message(message).get("objects") or []:
                arrivals.setdefault(obj.get("id"), arrived)
        sim.amqp.on_arrival = on_arrival
        for n in range(args.events):
            value = "latency-%05d.evil.example" % n
            target = stix_ids.sco_id({"type": "domain-name", "value": value})
            ioc = world.ioc(500000 + n, value, "domain", [case])
            start = time.perf_counter()
            module.run("on_postload_ioc_create", ioc)
            while sim.store.get(target) is None:
                time.sleep(0.001)
                if time.perf_counter() - start > 60:
                    raise SystemExit("event %d never arrived:\n%s" % (n, stack.importer.log()[-2000:]))
            latencies.append(time.perf_counter() - start)
            queued.append(arrivals[target] - start)
            # the next event finds the connector idle: otherwise it would time the wait on this event's work
            # (the connector takes the next message once OpenCTI reported the previous work complete)
            wait(lambda: all(w["status"] == "complete" for w in sim.works.values()), timeout=60,
                 what="event %d's work complete" % n, proc=stack.importer)
        sim.amqp.on_arrival = None
        print("hook -> message on OpenCTI's push queue, %d sequential single-IOC events: median %.1f ms, p99 %.1f ms"
              % (len(queued), statistics.median(queued) * 1000, p99(queued) * 1000))
        print("hook -> object in OpenCTI, %d sequential single-IOC events: median %.0f ms, p99 %.0f ms"
              % (len(latencies), statistics.median(latencies) * 1000, p99(latencies) * 1000))

        if args.iocs:  # 0: the single events alone (bench/scale.py times cases with bench/big_case.py)
            big = world.case(51)
            for n in range(args.iocs):
                world.ioc(600000 + n, "case-%05d.evil.example" % n, "domain", [big])
            ref = stix_ids.case_incident_id("#51 - Ransomware precursor on build server", CREATED)
            start = time.perf_counter()
            module.run("on_manual_trigger_case", big, ui="Sync case to OpenCTI")
            hook_seconds = time.perf_counter() - start
            expected = 3 * args.iocs  # domain, indicator, based-on per IOC
            wait(lambda: sim.ref_count(ref) >= expected, timeout=1800, what="the case", proc=stack.importer)
            seconds = time.perf_counter() - start
            print("%d-IOC case, manual sync hook -> all in OpenCTI: %.1f s (hook itself %.1f s) -> %.0f IOCs/s, "
                  "%.0f STIX objects/s" % (args.iocs, seconds, hook_seconds, args.iocs / seconds,
                                           expected / seconds))
    finally:
        stack.close()


if __name__ == "__main__":
    main()
