"""Run the IRIS API test server as its own process.

``python -m tests.iris_api --mode 2.5 --port 0 --key K --seed tests/data/case_export_2_5.json`` prints the
base URL on stdout (one flushed line) once it accepts requests, then serves until SIGINT/SIGTERM.  A test
driving a connector in another process reads that line and steers the server through ``/_test/``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any, Dict, List, Optional

from .server import DEFAULT_API_KEY, IrisApiServer


def _keys(args: argparse.Namespace) -> Dict[str, Any]:
    keys: Dict[str, Any] = {}
    for key in args.key or [DEFAULT_API_KEY]:
        keys[key] = {"id": args.user_id, "user_name": args.user_name}
    if args.keys_json:
        keys.update(json.loads(args.keys_json))
    return keys


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m tests.iris_api", description=__doc__)
    parser.add_argument("--mode", choices=("2.4", "2.5"), default="2.4")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--key", action="append", help="API key of the --user-id user (repeatable)")
    parser.add_argument("--user-id", type=int, default=1)
    parser.add_argument("--user-name", default="administrator")
    parser.add_argument("--keys-json", help='more keys: {"key": {"id": 4, "user_name": "viewer", "access": "read"}}')
    parser.add_argument("--seed", action="append", default=[], help="case export JSON file (repeatable)")
    parser.add_argument("--iris-version", help="override iris_current in /api/versions")
    args = parser.parse_args(argv)
    seeds = []
    for path in args.seed:
        with open(path, encoding="utf-8") as handle:
            seeds.append(json.load(handle))
    server = IrisApiServer(args.mode, _keys(args), seeds, args.host, args.port, iris_version=args.iris_version)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(server.start(), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
