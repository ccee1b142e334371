"""Cost of the IRIS module's hooks, publishing to the real RabbitMQ.

Prints:
  - the median and 99th percentile of one ``on_postload_ioc_create`` hook, measured as IRIS runs it: a new
    module instance, the configuration read, the IOC converted, the state updated, the message published and
    confirmed by the broker (goal: median under 5 ms);
  - the time to ship a 10,000-IOC case (``on_manual_trigger_case``, "Sync case to OpenCTI"), in parts of at
    most the module's Maximum message size (4 MiB by default).

IRIS itself is replaced by the test-suite's stub of its ``app`` package (tests/module/iris_stub), so the
figures are the module's own cost, not IRIS's database time.

Run: python bench/hook.py [--hooks 2000] [--case-iocs 10000] [--amqp-url URL]
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

from bench.convert import KINDS  # noqa: E402
from iris_opencti_module.core.masking import mask_url  # noqa: E402
from iris_opencti_module.hooks.state import close_states  # noqa: E402
from iris_opencti_module.transport.publisher import close_publishers  # noqa: E402
from tests.module.broker import AMQP_URL, Rabbit, broker_problem  # noqa: E402
from tests.module.iris_world import IrisWorld, ModuleHarness  # noqa: E402


def percentile(values: list, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def bench_ioc_hook(harness: ModuleHarness, world: IrisWorld, hooks: int) -> list:
    case = world.case(4)
    iocs = [world.ioc(100000 + i, KINDS[0][1](i), cases=[case]) for i in range(hooks + 50)]
    for ioc in iocs[:50]:  # warm-up: connection, converter, state database
        harness.run("on_postload_ioc_create", ioc)
    times = []
    for ioc in iocs[50:]:
        start = time.perf_counter()
        status = harness.run("on_postload_ioc_create", ioc)
        times.append(time.perf_counter() - start)
        if not status.is_success() or "sent to queue" not in status.logs[0]:
            raise SystemExit(f"hook did not publish: {status.logs}")
    return times


def bench_case(harness: ModuleHarness, world: IrisWorld, n_iocs: int, repeat: int) -> tuple:
    case = world.case(10, name="Big case")
    for i in range(n_iocs):
        type_name, make = KINDS[i % len(KINDS)]
        world.ioc(500000 + i, make(i), type_name, cases=[case], tags="phishing,bench",
                  description="synthetic IOC %d" % i)
    best = float("inf")
    logs: list = []
    for _ in range(repeat):
        start = time.perf_counter()
        status = harness.run("on_manual_trigger_case", case, ui="Sync case to OpenCTI")
        best = min(best, time.perf_counter() - start)
        logs = status.logs
        if not status.is_success() or "sent to queue" not in logs[-1]:
            raise SystemExit(f"case sync did not publish: {logs}")
    return best, logs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hooks", type=int, default=2000)
    parser.add_argument("--case-iocs", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--amqp-url", default=AMQP_URL)
    args = parser.parse_args()
    problem = broker_problem(args.amqp_url)
    if problem:
        raise SystemExit(f"RabbitMQ not usable at {mask_url(args.amqp_url)}: {problem}")
    rabbit = Rabbit(args.amqp_url)
    with tempfile.TemporaryDirectory() as spool:
        try:
            world = IrisWorld("2.5")
            harness = ModuleHarness(rabbit, spool)
            times = bench_ioc_hook(harness, world, args.hooks)
            ms = [t * 1000 for t in times]
            print("on_postload_ioc_create, %d hooks (new module instance each, confirmed publish to %s):"
                  % (len(ms), mask_url(args.amqp_url)))
            print(f"  median {statistics.median(ms):.2f} ms   p99 {percentile(ms, 0.99):.2f} ms   mean "
                  f"{statistics.mean(ms):.2f} ms   max {max(ms):.2f} ms   (goal: median < 5 ms)")
            seconds, line = bench_case(harness, world, args.case_iocs, args.repeat)
            print("on_manual_trigger_case, %d-IOC case (in parts): %.2f s (best of %d)"
                  % (args.case_iocs, seconds, args.repeat))
            print("  " + line.split(": ", 1)[1])
        finally:
            close_publishers()
            close_states()
            rabbit.cleanup()


if __name__ == "__main__":
    main()
