"""Conversion speed on a synthetic 10,000-IOC, 500-asset case.

Prints objects per second for three ways of producing the same bundle:
  - the converter (ids, checks, patterns, then json.dumps),
  - the floor: the same objects built as plain dicts and json.dumps'd (no ids or checks to compute),
  - the stix2 library: the same objects built as stix2 objects and serialised as a stix2 Bundle.
Goal: the converter within 3x of the floor and at least 10x faster than stix2.

Run: python bench/convert.py [--iocs 10000] [--assets 500]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from iris_opencti_module.core.convert import Converter, ConverterConfig
from tests.module.samples import load_export, make_ioc

#: the IOC mix of the synthetic cases the benchmarks use: (IRIS type, value of the i-th IOC)
KINDS = [
    ("ip-dst", lambda i: "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)),
    ("domain", lambda i: "host%d.evil.example" % i),
    ("md5", lambda i: "%032x" % (i * 7919)),
    ("sha256", lambda i: "%064x" % (i * 104729)),
    ("url", lambda i: "http://c2-%d.evil.example/gate.php" % i),
    ("filename|sha256", lambda i: "drop%d.exe|%064x" % (i, i * 31337)),
    ("email-src", lambda i: "sender%d@evil.example" % i),
    ("ip-dst|port", lambda i: "192.0.%d.%d|%d" % (i >> 8 & 255, i & 255, 1024 + i % 60000)),
]


def synthetic_case(n_iocs: int, n_assets: int) -> dict:
    export = load_export()
    data = export["data"]
    data["iocs"] = []
    for i in range(n_iocs):
        type_name, make = KINDS[i % len(KINDS)]
        data["iocs"].append(make_ioc(100000 + i, type_name, make(i), tags="phishing,bench",
                                     description="synthetic IOC %d" % i))
    template = data["assets"][1]
    data["assets"] = []
    for i in range(n_assets):
        asset = copy.deepcopy(template)
        asset.update({"asset_id": 50000 + i, "asset_name": "HOST-%04d" % i,
                      "asset_ip": "172.16.%d.%d" % (i >> 8, i & 255)})
        data["assets"].append(asset)
    return export


def timed(func, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iocs", type=int, default=10000)
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--skip-stix2", action="store_true")
    args = parser.parse_args()
    export = synthetic_case(args.iocs, args.assets)
    converter = Converter(ConverterConfig())

    def ours() -> str:
        return json.dumps(converter.convert_export(export).bundle("bench"))

    objects = converter.convert_export(export).bundle("bench")["objects"]
    n = len(objects)

    def floor() -> str:
        return json.dumps({"type": "bundle", "id": "bundle--x", "objects": [
            {k: (list(v) if isinstance(v, list) else v) for k, v in o.items()} for o in objects]})

    t_ours = timed(ours)
    t_floor = timed(floor)
    print("case: %d IOCs, %d assets -> %d STIX objects" % (args.iocs, args.assets, n))
    print(f"converter : {t_ours:8.3f} s  {n / t_ours:10.0f} objects/s")
    print(f"floor     : {t_floor:8.3f} s  {n / t_floor:10.0f} objects/s  (plain dicts + json.dumps)")
    print("ratio to floor: %.2fx (goal: <= 3x)" % (t_ours / t_floor))
    if not args.skip_stix2:
        import stix2

        def with_stix2() -> str:
            built = [stix2.parse(o, allow_custom=True) for o in objects]
            return stix2.Bundle(objects=built, allow_custom=True).serialize()

        t_stix2 = timed(with_stix2, repeat=1)
        print(f"stix2     : {t_stix2:8.3f} s  {n / t_stix2:10.0f} objects/s  (stix2 objects + Bundle.serialize)")
        print("speed-up over stix2: %.1fx (goal: >= 10x)" % (t_stix2 / t_ours))


if __name__ == "__main__":
    main()
