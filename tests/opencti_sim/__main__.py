"""Run the simulator as its own process: ``python -m tests.opencti_sim --port 0 --token T``.

Prints the platform URL on stdout (one line, flushed) once it accepts requests, then serves until
SIGINT/SIGTERM.  Tests running a connector in another process read that line, point the connector at it
and steer/inspect the simulator through the ``/_sim/`` control API.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import List, Optional

from .server import DEFAULT_AMQP_URL, OpenCTISimulator


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m tests.opencti_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default="simulator-token")
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL, help="'none' disables the broker")
    parser.add_argument("--lenient-refs", action="store_true", help="accept objects with unknown references")
    parser.add_argument("--keep-ids", action="store_true", help="do not recompute standard ids")
    parser.add_argument("--bundle-push-via-queue", action="store_true")
    parser.add_argument("--workers", type=int, default=0, help="strict mode: N workers taking messages out of order")
    args = parser.parse_args(argv)
    sim = OpenCTISimulator(token=args.token, amqp_url=None if args.amqp_url == "none" else args.amqp_url,
                           host=args.host, port=args.port, strict_refs=not args.lenient_refs,
                           standard_ids=not args.keep_ids, bundle_push_via_queue=args.bundle_push_via_queue,
                           workers=args.workers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(sim.start(), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
