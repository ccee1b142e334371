"""``iris-opencti``: command-line entry points of the module.

``iris-opencti export CASE.json -o BUNDLE.json`` converts what IRIS returns from ``GET /case/export?cid=N``
into one STIX 2.1 bundle. ``iris-opencti push CASE.json...`` sends whole cases to the import connector's queue
(backfill; the same ``case.sync`` message as the module's manual case trigger), and ``iris-opencti push
--spool DIR`` sends what the module spooled while RabbitMQ was away. Errors are one line on stderr, never a
traceback: the command is meant for operators and scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, List, Optional

from iris_opencti_module import __version__
from iris_opencti_module.core.case_records import KINDS as RECORD_KINDS
from iris_opencti_module.core.case_records import SECTIONS as RECORD_SECTIONS
from iris_opencti_module.core.case_records import parse_records
from iris_opencti_module.core.case_switch import switch_state
from iris_opencti_module.core.chunks import DEFAULT_MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES
from iris_opencti_module.core.convert import DEFAULT_CONFIDENCE, Converter, ConverterConfig, unwrap_export
from iris_opencti_module.core.defaults import DEFAULT_AMQP_URL, DEFAULT_QUEUE
from iris_opencti_module.core.envelope import encode
from iris_opencti_module.core.gc_tuning import tune_for_bulk
from iris_opencti_module.core.mapping_tables import MappingError
from iris_opencti_module.core.markings import TLPError, parse_tlp
from iris_opencti_module.core.masking import mask_url, redact
from iris_opencti_module.core.progress import Progress
from iris_opencti_module.IrisOpenCTIConfig import SYNC_MODES
from iris_opencti_module.transport.case_sync import CaseSync
from iris_opencti_module.transport.messages import describe_skip
from iris_opencti_module.transport.publisher import Publisher, PublishError
from iris_opencti_module.transport.spool import Spool, SpoolError


class CliError(Exception):
    """An error to print as one line, exiting with status 2."""


def _read_json(path: str) -> Any:
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"{path}: not valid JSON: {exc}") from None


def converter_from_args(args: argparse.Namespace) -> Converter:
    try:
        default_tlp = parse_tlp(args.default_tlp, "--default-tlp (env IRIS_DEFAULT_TLP)")
        max_tlp = parse_tlp(args.max_tlp, "--max-tlp (env IRIS_MAX_TLP)")
    except TLPError as exc:
        raise CliError(str(exc)) from None
    try:
        records = parse_records(args.records, "--records (env IRIS_RECORDS)")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    config = ConverterConfig(
        iris_url=args.iris_url, author_name=args.author, default_tlp=default_tlp, max_tlp=max_tlp,
        create_indicators=not args.no_indicators, mappings_path=args.mappings, confidence=args.confidence,
        records=records, export_content=not args.no_content)
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
    parser.add_argument("--records", default=env("IRIS_RECORDS", ",".join(RECORD_KINDS)),
                        help="which of the case's notes, timeline events, tasks and evidences to send: a comma "
                        "list of note,event,task,evidence, or none (env IRIS_RECORDS, default all)")
    parser.add_argument("--no-content", action="store_true",
                        default=env("IRIS_EXPORT_CONTENT", "true").strip().lower() in ("0", "false", "no", "off"),
                        help="notes and timeline events keep their titles only (env IRIS_EXPORT_CONTENT=false)")
    parser.add_argument("--confidence", type=int, default=env("IRIS_CONFIDENCE", str(DEFAULT_CONFIDENCE)),
                        help="confidence (0-100) of every SDO and relationship (env IRIS_CONFIDENCE, default %d)"
                        % DEFAULT_CONFIDENCE)


def cmd_export(args: argparse.Namespace) -> int:
    export = _read_json(args.case)
    try:
        data = unwrap_export(export)
    except ValueError as exc:
        raise CliError(f"{args.case}: {exc}") from None
    converter = converter_from_args(args)
    result = converter.convert_export(data)
    case = data["case"]
    for skipped in result.skipped:
        print(f"skipped {skipped}", file=sys.stderr)
    bundle = result.bundle("export|case:{}".format(case.get("case_id")))
    text = json.dumps(bundle, indent=2 if args.pretty else None, ensure_ascii=False)
    if args.output in (None, "-"):
        sys.stdout.write(text + "\n")
        out = sys.stderr
    else:
        try:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        except OSError as exc:
            raise CliError(f"{args.output}: cannot write: {exc.strerror or exc}") from None
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


def _broker_error(text: str, url: str) -> CliError:
    return CliError(redact(text, url))


def _message_bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-message-bytes {text!r} is not a whole number") from None
    if value < MIN_MESSAGE_BYTES:
        raise argparse.ArgumentTypeError("--max-message-bytes %d is below the minimum %d" % (value, MIN_MESSAGE_BYTES))
    return value


def cmd_push(args: argparse.Namespace) -> int:
    """Drain a spool (oldest first) and/or send whole cases, as the module's manual case trigger does."""
    if not args.cases and not args.spool:
        raise CliError("push: give case export file(s), --spool DIR, or both")
    # pika reports connection trouble through logging; the command says it once, in its own words
    logging.getLogger("pika").addHandler(logging.NullHandler())
    url, queue = args.amqp_url, args.queue
    target = f"queue {queue!r} at {mask_url(url)}"
    status = 0
    if args.spool:
        if not os.path.isdir(args.spool):
            raise CliError(f"{args.spool}: not a directory")
        try:
            publisher = Publisher(url, queue, Spool(args.spool))
        except SpoolError as exc:
            raise CliError(str(exc)) from None
        result = publisher.drain()
        publisher.close()
        line = "spool %s: %d message(s) sent to %s, %d rejected for good, %d still waiting" % (
            args.spool, result.sent, target, result.rejected, result.waiting)
        if result.error:
            line += f" ({redact(result.error, url)})"
        print(line)
        if result.waiting or result.rejected:
            status = 1
        if result.waiting:
            return status  # cases sent now would overtake the messages still waiting
    if not args.cases:
        return status
    converter = converter_from_args(args)
    publisher = Publisher(url, queue)
    progress = Progress(len(args.cases))
    try:
        for path in args.cases:
            try:
                data = unwrap_export(_read_json(path))
            except ValueError as exc:
                raise CliError(f"{path}: {exc}") from None
            case = data["case"]
            enabled, why = switch_state(case, args.sync_mode)
            if not enabled and not args.force:
                print("case #{} ({}): not sent: {} (use --force to send it "
                      "anyway)".format(case.get("case_id"), path, why))
                continue
            sync = CaseSync(converter, case, data.get("iocs") or [], data.get("assets") or [], "case.sync",
                            user="iris-opencti push", records={s: data.get(s) or [] for s in RECORD_SECTIONS.values()},
                            max_bytes=args.max_message_bytes)
            try:
                for envelope in sync.envelopes():  # converted as they leave
                    publisher.send(encode(envelope))
            except PublishError as exc:
                sync.close()
                raise _broker_error("case #{}: not sent: {}".format(case.get("case_id"), exc), url) from None
            for entry in sync.skipped:
                print(f"skipped {describe_skip(entry)}", file=sys.stderr)
            parts = sync.parts
            how = " in %d parts of at most %d bytes" % (parts, args.max_message_bytes) if parts > 1 else ""
            if progress.enabled:
                sys.stderr.write("\r\x1b[K")  # the case's own line goes where the progress line was
            print("case #{}: sent case.sync to {}{}: {}".format(case.get("case_id"), target, how, sync.summary()),
                  flush=True)
            progress.step(sync.ioc_count)
    finally:
        progress.finish()
        publisher.close()
    return status


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

    env = os.environ.get
    push = sub.add_parser("push", help="send whole exported cases to the import connector's queue (as the module's "
                                       "'Sync case to OpenCTI' does), and/or drain a module spool")
    push.add_argument("cases", nargs="*", help="case export JSON file(s), from GET /case/export?cid=N ('-' for stdin)")
    push.add_argument("--spool", metavar="DIR", help="first send the messages waiting in this spool directory, "
                                                     "oldest first (the module's 'Spool directory')")
    push.add_argument("--amqp-url", default=env("IRIS_AMQP_URL", DEFAULT_AMQP_URL),
                      help="RabbitMQ URL (env IRIS_AMQP_URL; prefer the env: arguments show in process lists)")
    push.add_argument("--queue", default=env("IRIS_QUEUE", DEFAULT_QUEUE), help="queue name (env IRIS_QUEUE)")
    push.add_argument("--sync-mode", default=env("IRIS_SYNC_MODE", "all"), choices=SYNC_MODES,
                      help="per-case switch, as in the module (env IRIS_SYNC_MODE, default all)")
    push.add_argument("--force", action="store_true", help="send cases even if the per-case switch excludes them")
    push.add_argument("--max-message-bytes", type=_message_bytes,
                      default=env("IRIS_MAX_MESSAGE_BYTES", str(DEFAULT_MAX_MESSAGE_BYTES)),
                      help="a case larger than this goes as several parts (env IRIS_MAX_MESSAGE_BYTES; default "
                           "%d, RabbitMQ 4 refuses messages over 16 MiB)" % DEFAULT_MAX_MESSAGE_BYTES)
    add_conversion_options(push)
    push.set_defaults(func=cmd_push)

    doctor = sub.add_parser("doctor", help="check IRIS's API, RabbitMQ, OpenCTI and TLS end to end, one line each "
                                           "(reads IRIS_URL, IRIS_API_KEY, IRIS_AMQP_URL, IRIS_QUEUE, OPENCTI_URL, "
                                           "OPENCTI_TOKEN, and IRIS_VERIFY_SSL / OPENCTI_SSL_VERIFY: true, false or "
                                           "a CA bundle path; unset means true)")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def cmd_doctor(args: argparse.Namespace) -> int:
    from iris_opencti_module.tools.doctor import run

    return run()


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    tune_for_bulk()  # a process of our own (IRIS's hooks never tune IRIS's collector)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"iris-opencti: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
