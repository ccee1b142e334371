"""The scale figures in one run: hook → OpenCTI's push queue latency for 200 single events (``e2e.py``), then
1,000, 10,000 and 100,000-IOC cases end to end with the module's and the connector's peak RSS, on a broker
refusing messages over 16 MiB, and 1,000 events through 1, 2 and 3 replicas on one PostgreSQL ledger
(``big_case.py``). Each script runs in a process of its own, one after the other, so neither measures the
other's leftovers.

The replicas need PostgreSQL: ``--pg`` names a ledger database, or a throw-away one is created (and dropped)
through ``IRIS_TEST_PG`` (the tests' administrator URL, ``postgresql://postgres@127.0.0.1:5432/postgres``).

Run: python bench/scale.py [--sizes 1000,10000,100000] [--events 200] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from typing import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from tests.connector.harness import throwaway_database  # noqa: E402


@contextlib.contextmanager
def ledger_database(url: str) -> Iterator[str]:
    """``url`` as given, or a database of its own for this run."""
    if url:
        yield url
        return
    with throwaway_database("iris_opencti_scale_") as made:
        yield made


def run(script: str, *args: str) -> None:
    print(f"== {script} {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, os.path.join(HERE, script), *args], timeout=7200)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed with status {done.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--events", type=int, default=200, help="single events timed hook -> push queue")
    parser.add_argument("--pg", default="", help="PostgreSQL ledger for the replicas (default: a throw-away one)")
    args = parser.parse_args()
    run("e2e.py", "--events", str(args.events), "--iocs", "0")
    with ledger_database(args.pg) as url:
        run("big_case.py", "--sizes", args.sizes, "--pg", url)


if __name__ == "__main__":
    main()
