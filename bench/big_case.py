"""Big cases end to end, and replicas: time and peak memory of the module's side and the connector's side.

For each size (default 1,000 and 10,000 IOCs; add 100000 with --sizes): ``iris-opencti push`` of a synthetic
case export (the module's conversion, split into parts and publishing, in its own process: its peak RSS is the
module's), then the import connector ingesting it into the OpenCTI simulator (strict mode, 3 workers, no added
latency): time until the case holds every object, and the connector process's peak RSS (VmHWM).
Then the same 1,000 single-IOC events (spread over 20 cases, ``--cases``) through 1, 2 and 3 connector replicas
on one PostgreSQL ledger (``--pg``), consuming side by side and, as the peer in the same run, in standby mode
(one consumes, the others wait): throughput, and that nothing was lost or duplicated.

Each size also prints the CPU seconds each side used in that time (the connector process, this process where
the simulator runs, the push): a figure far from twice the wall time on this 2-core machine means the sides
wait for each other. The simulator's own garbage collector is off for the run: a full collection of its store
(every object of the case) stopped its workers for up to 0.5 s at a time, a pause OpenCTI does not have.

The broker refuses messages over 16 MiB for the whole run (RabbitMQ 4's default ``max_message_size``; this
machine's RabbitMQ 3 allows 128 MiB), as in the module's drill: a case that arrives in full arrived in parts
under the limit.

Run: python bench/big_case.py [--sizes 1000,10000,100000] [--events 1000] [--cases 20] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from bench.convert import synthetic_case  # noqa: E402
from iris_opencti_module.core import stix_ids  # noqa: E402
from tests.connector.harness import (  # noqa: E402
    AMQP_URL,
    CONVERTER,
    ConnectorProcess,
    delete_queues,
    import_env,
    ioc_event,
    other_case,
    publish,
    wait,
)
from tests.module.broker import RABBITMQ_4_LIMIT, max_message_size  # noqa: E402
from tests.module.samples import load_export, make_ioc  # noqa: E402
from tests.opencti_sim import OpenCTISimulator, strict_options  # noqa: E402

TOKEN = "bench-" + uuid.uuid4().hex


def peak_rss_mib(pid: int) -> float:
    with open("/proc/%d/status" % pid, encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process (``/proc/<pid>/stat``)."""
    with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push(path: str, queue: str) -> tuple:
    """``iris-opencti push`` in a child process: (seconds, its peak RSS in MiB, parts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    env.update(IRIS_AMQP_URL=AMQP_URL, IRIS_QUEUE=queue)
    # VmHWM, not getrusage's ru_maxrss: Linux folds the high-water mark of the memory a process had before
    # execve (here a fork of this benchmark, simulator and all) into ru_maxrss
    script = ("import sys; from iris_opencti_module.tools.cli import main; code = main(sys.argv[1:]); "
              "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]; "
              "sys.stderr.write('PEAK_RSS_KIB %s\\n' % hwm); sys.exit(code)")
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", script, "push", path, "--iris-url", "https://iris.example"],
                          capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"push failed: {done.stderr[-2000:]}")
    rss = int(done.stderr.rsplit("PEAK_RSS_KIB ", 1)[1].split()[0]) / 1024
    parts = done.stdout.split(" in ", 1)[1].split(" parts")[0] if " parts of at most" in done.stdout else "1"
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, rss, parts, cpu


def big_case(sim: OpenCTISimulator, workdir: str, size: int) -> None:
    export = synthetic_case(size, 0)
    converted = CONVERTER.convert_export(export)
    case_ref = converted.case_ref
    expected = len(converted.objects[case_ref]["object_refs"])
    path = os.path.join(workdir, "case-%d.json" % size)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(export, handle)
    queue = "iris-opencti-bench-" + uuid.uuid4().hex[:8]
    proc = ConnectorProcess("iris_opencti_connector.importer.connector", workdir,
                            import_env(sim.url, TOKEN, queue, os.path.join(workdir, str(size)),
                                       CONNECTOR_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "error"))).start()
    os.makedirs(os.path.join(workdir, str(size)), exist_ok=True)
    try:
        wait(lambda: sim.ops_named("PingConnector"), timeout=60, what="registration", proc=proc)
        connector_cpu, own_cpu = cpu_seconds(proc.proc.pid), os.times()
        start = time.perf_counter()
        push_seconds, module_rss, parts, push_cpu = push(path, queue)
        wait(lambda: sim.ref_count(case_ref) >= expected, timeout=3600,
             what="the %d-IOC case" % size, proc=proc)
        seconds = time.perf_counter() - start
        connector_cpu, now = cpu_seconds(proc.proc.pid) - connector_cpu, os.times()
        simulator_cpu = now.user + now.system - own_cpu.user - own_cpu.system
        stored = sum(1 for i in converted.objects if sim.store.get(i) is not None)
        print("%7d IOCs (%d objects, %s messages): push %.1f s, module peak RSS %.0f MiB; all in OpenCTI after "
              "%.1f s (%.0f IOCs/s, %.0f µs per IOC); connector peak RSS %.0f MiB; lost %d; CPU seconds: connector "
              "%.1f, simulator %.1f, push %.1f"
              % (size, len(converted.objects), parts, push_seconds, module_rss, seconds, size / seconds,
                 seconds / size * 1e6, peak_rss_mib(proc.proc.pid), len(converted.objects) - stored,
                 connector_cpu, simulator_cpu, push_cpu))
    finally:
        proc.stop()
        delete_queues(queue, queue + ".dead")
        sim.reset(store=True, ops=True)


def empty_ledger(pg_url: str) -> None:
    """Every run starts from an empty ledger: a ledger grown by the runs before would slow the later ones."""
    import psycopg2

    from iris_opencti_connector.store.ledger import Ledger

    Ledger(pg_url).close()  # its tables exist
    conn = psycopg2.connect(pg_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'iris_%'")
            tables = [row[0] for row in cur.fetchall()]
            cur.execute("TRUNCATE " + ", ".join(tables))
    finally:
        conn.close()


def replicas(sim: OpenCTISimulator, workdir: str, events: int, pg_url: str, cases: int) -> None:
    """The same single-IOC events through 1, 2 and 3 replicas: side by side (``active``, the default) and, as
    the peer in the same run, one consuming while the others stand by (``standby``, the stop-21 design)."""
    exports = [other_case(load_export(), 500 + c, "bench case") for c in range(cases)]
    run = 0
    for mode in ("active", "standby"):
        for count in (1, 2, 3):
            if mode == "standby" and count == 1:
                continue  # one replica consumes in either mode
            run += 1
            queue = "iris-opencti-bench-" + uuid.uuid4().hex[:8]
            schema_dir = os.path.join(workdir, "replicas-%s-%d" % (mode, count))
            os.makedirs(schema_dir, exist_ok=True)
            values = ["rep%d-%d.bench.example" % (run, n) for n in range(events)]
            # IOC ids of their own per run: the ledger is shared, and a known id with a new value is a value
            # change (a deletion each), not a create; IRIS's events interleave the cases
            bodies = [ioc_event(exports[n % cases], "ioc.created", make_ioc(700000 + run * 100000 + n, "domain", v))
                      for n, v in enumerate(values)]
            env = import_env(sim.url, TOKEN, queue, schema_dir, CONNECTOR_LOG_LEVEL="error", IRIS_LEDGER=pg_url,
                             IRIS_LEADER_RETRY="0.5", IRIS_REPLICA_MODE=mode)
            procs = []
            empty_ledger(pg_url)
            try:
                for _ in range(count):
                    procs.append(ConnectorProcess("iris_opencti_connector.importer.connector", schema_dir,
                                                  dict(env)).start())
                wait(lambda: sim.ops_named("PingConnector"), timeout=60, what="registration")
                time.sleep(1.0)  # every replica consuming (or standing by) before the burst
                ids = [stix_ids.sco_id({"type": "domain-name", "value": v}) for v in values]
                start = time.perf_counter()
                publish(queue, bodies)
                wait(lambda ids=ids: all(sim.store.get(i) for i in ids), timeout=1800, what="the events")
                seconds = time.perf_counter() - start
                stored = [o for o in sim.objects_of_type("domain-name") if o["value"] in set(values)]
                print("%d replica(s), %s, one PostgreSQL ledger: %d single-IOC events over %d cases in %.1f s -> "
                      "%.0f events/s; lost %d, duplicated %d" % (
                          count, mode, events, cases, seconds, events / seconds,
                          events - len({o["id"] for o in stored}), len(stored) - len({o["id"] for o in stored})))
            finally:
                for proc in procs:
                    proc.stop()
                delete_queues(queue, queue + ".dead")
                sim.reset(store=True, ops=True)


def main() -> None:
    gc.disable()  # the simulator's (see the module docstring); the connector and the push tune their own
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=20, help="cases the replica figures' events belong to")
    parser.add_argument("--pg", default=os.environ.get("IRIS_TEST_PG_URL", ""),
                        help="PostgreSQL ledger URL for the replica figures (skipped when empty)")
    args = parser.parse_args()
    workdir = os.environ.get("BENCH_WORKDIR") or tempfile.mkdtemp(prefix="iris-opencti-bench-")
    sim = OpenCTISimulator(token=TOKEN, **strict_options())
    sim.start()
    try:
        with max_message_size(RABBITMQ_4_LIMIT) as before:
            print("broker: max_message_size %d bytes for this run (was %s)" % (RABBITMQ_4_LIMIT, before))
            for size in (int(s) for s in args.sizes.split(",") if s.strip()):
                big_case(sim, workdir, size)
        if args.pg:
            replicas(sim, workdir, args.events, args.pg, max(1, args.cases))
        else:
            print("replicas: give --pg postgresql://... (or IRIS_TEST_PG_URL) for the replica figures")
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
