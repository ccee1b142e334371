"""``iris-opencti``: command-line entry points of the module (export, and shipping added by the module).

``iris-opencti export CASE.json -o BUNDLE.json`` converts what IRIS returns from ``GET /case/export?cid=N``
into one STIX 2.1 bundle. Errors are one line on stderr, never a traceback: the command is meant for
operators and scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, List, Optional

from . import __version__
from .convert import Converter, ConverterConfig, unwrap_export
from .mapping_tables import MappingError


class CliError(Exception):
    """An error to print as one line, exiting with status 2."""


def _read_json(path: str) -> Any:
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise CliError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise CliError("%s: not valid JSON: %s" % (path, exc)) from None


def converter_from_args(args: argparse.Namespace) -> Converter:
    config = ConverterConfig(
        iris_url=args.iris_url, author_name=args.author, default_tlp=args.default_tlp, max_tlp=args.max_tlp,
        create_indicators=not args.no_indicators, mappings_path=args.mappings)
    try:
        return Converter(config)
    except (MappingError, ValueError) as exc:
        raise CliError(str(exc)) from None


def add_conversion_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--iris-url", default=env("IRIS_URL", "https://iris.local"),
                        help="IRIS base URL, for the links back to cases (env IRIS_URL)")
    parser.add_argument("--author", default=env("IRIS_AUTHOR", "DFIR-IRIS"),
                        help="organisation named as author of every object (env IRIS_AUTHOR)")
    parser.add_argument("--default-tlp", default=env("IRIS_DEFAULT_TLP", "amber"),
                        help="TLP of the case and of IOCs without one (default amber)")
    parser.add_argument("--max-tlp", default=env("IRIS_MAX_TLP", "amber"),
                        help="IOCs above this TLP stay in IRIS (default amber)")
    parser.add_argument("--no-indicators", action="store_true", help="do not build Indicators from observables")
    parser.add_argument("--mappings", default=env("IRIS_MAPPINGS"), help="JSON file overriding mapping entries")


def cmd_export(args: argparse.Namespace) -> int:
    export = _read_json(args.case)
    try:
        data = unwrap_export(export)
    except ValueError as exc:
        raise CliError("%s: %s" % (args.case, exc)) from None
    converter = converter_from_args(args)
    result = converter.convert_export(data)
    case = data["case"]
    for skipped in result.skipped:
        print("skipped %s" % skipped, file=sys.stderr)
    bundle = result.bundle("export|case:%s" % case.get("case_id"))
    text = json.dumps(bundle, indent=2 if args.pretty else None, ensure_ascii=False)
    if args.output in (None, "-"):
        sys.stdout.write(text + "\n")
        out = sys.stderr
    else:
        try:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        except OSError as exc:
            raise CliError("%s: cannot write: %s" % (args.output, exc.strerror or exc)) from None
        out = sys.stdout
    iocs = len(data.get("iocs") or [])
    ioc_skips = sum(1 for s in result.skipped if s.kind == "IOC")
    print("case #%s: %d IOCs, %d assets -> %d STIX objects (%s); %d IOCs skipped"
          % (case.get("case_id"), iocs, len(data.get("assets") or []), len(bundle["objects"]),
             ", ".join("%s %d" % kv for kv in sorted(result.counts().items())), ioc_skips), file=out)
    if args.strict and result.skipped:
        print("error: --strict and %d object(s) skipped" % len(result.skipped), file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iris-opencti", description="DFIR-IRIS to OpenCTI bridge")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = parser.add_subparsers(dest="command")
    export = sub.add_parser("export", help="convert an IRIS case export (GET /case/export) to a STIX bundle")
    export.add_argument("case", help="case export JSON file ('-' for stdin)")
    export.add_argument("-o", "--output", help="bundle file to write (default: stdout)")
    export.add_argument("--strict", action="store_true", help="exit 1 if any IOC or value is skipped")
    export.add_argument("--pretty", action="store_true", help="indent the JSON")
    add_conversion_options(export)
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except CliError as exc:
        print("iris-opencti: error: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130




if __name__ == "__main__":
    sys.exit(main())
