"""``iris-opencti-archive``: list, show, verify, prune and replay the import connector's audit archive.

Errors are reported on one line (no tracebacks) and the OpenCTI token is never printed: this tool is meant
to be run by auditors and operators, and its output may be pasted into tickets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Union

from iris_opencti_connector.store.archive import Archive, ArchiveError, parse_time, replay
from iris_opencti_module.core.tls import opencti_verify

PROG = "iris-opencti-archive"
DEFAULT_DIR = "data/archive"  # the import connector's default archive_dir, so both find the same archive


def _env_int(name: str) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        raise ArchiveError(f"{name} must be a whole number of days, not {value!r}") from None


def _open(args: argparse.Namespace, retention_days: int = 0) -> Archive:
    """The archive at ``--dir``; refuses to create one, since a typo in the path would otherwise verify as OK."""
    root = args.dir
    if not os.path.isdir(root) or not any(os.path.exists(os.path.join(root, name))
                                          for name in ("index.jsonl", "head.json", "objects")):
        raise ArchiveError(f"no archive at {root} (set --dir or IRIS_ARCHIVE_DIR)")
    return Archive(root, retention_days)


def cmd_list(args: argparse.Namespace) -> int:
    """One line per entry: seq, time, kind, case, event, work id, SHA-256 prefix."""
    for entry in _open(args).entries(case_id=args.case, event=args.event, since=args.since, kind=args.kind):
        print("%6d  %s  %-7s  case %-6s  %-16s  work %-36s  %s" % (
            entry["seq"], entry.get("time"), entry.get("kind"), entry.get("case_id") or "-",
            entry.get("event") or "-", entry.get("work_id") or "-", str(entry.get("sha256"))[:16]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """The entry and its archived content (checked against its SHA-256), pretty-printed."""
    archive = _open(args)
    entry = archive.find(args.key)
    if entry is None:
        raise ArchiveError(f"no entry {args.key} (give a sequence number or 4+ hex digits of a SHA-256)")
    content = json.loads(archive.load(entry["sha256"]))
    print(json.dumps({"entry": entry, "content": content}, indent=2, ensure_ascii=False))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 with ``OK`` when the archive is intact, 1 with one line per problem otherwise."""
    archive = _open(args)
    problems = archive.verify()
    for problem in problems:
        print(problem)
    if problems:
        print("FAILED: %d problem%s" % (len(problems), "" if len(problems) == 1 else "s"))
        return 1
    count = sum(1 for _ in archive.entries())
    print("OK: %d entries, chain intact, every object matches its SHA-256" % count)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Apply the retention (``--retention-days``, else ``IRIS_ARCHIVE_RETENTION_DAYS``; 0 keeps everything)."""
    days = args.retention_days if args.retention_days is not None else _env_int("IRIS_ARCHIVE_RETENTION_DAYS")
    if days < 0:
        raise ArchiveError("--retention-days must not be negative")
    if days == 0:
        print("retention is 0 days (keep forever): nothing pruned")
        return 0
    dropped = _open(args, days).prune()
    print("pruned %d entr%s older than %d days" % (dropped, "y" if dropped == 1 else "ies", days))
    return 0


class _OneLineLog(logging.Handler):
    """pycti logs a rejected object as an error with a traceback and carries on; we want one line per problem,
    and a count, so that the replay's outcome (and exit status) reflects what OpenCTI refused."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
        attributes = getattr(record, "attributes", None)
        detail = attributes.get("error") if isinstance(attributes, dict) else None
        text = record.getMessage() + (f": {detail}" if detail else "")
        print(f"{PROG}: {record.levelname.lower()}: {_one_line(text)[:400]}", file=sys.stderr)


def _opencti_sender(counter: Dict[str, int]) -> Callable[[str, str], None]:
    """``send`` for :func:`replay`: a plain API client (the connector helper would register a connector)."""
    url, token = os.environ.get("OPENCTI_URL", "").strip(), os.environ.get("OPENCTI_TOKEN", "").strip()
    if not url or not token:
        raise ArchiveError("set OPENCTI_URL and OPENCTI_TOKEN to replay (or use --dry-run)")
    log = _OneLineLog()
    logging.basicConfig(handlers=[log], level=logging.WARNING, force=True)  # before pycti configures logging
    from pycti import OpenCTIApiClient  # imported here: every other command works without pycti's start-up cost

    # read as the connectors read it (unset: on; a CA bundle path is kept), so replay verifies what they verify
    ssl_verify = opencti_verify(os.environ.get("OPENCTI_SSL_VERIFY"))
    client = OpenCTIApiClient(url, token, log_level="warning", ssl_verify=ssl_verify)

    def send(bundle: str, description: str) -> None:
        errors_before = log.errors
        result = client.stix2.import_bundle_from_json(bundle, update=True)
        refused = len(result[1]) if isinstance(result, tuple) and len(result) > 1 and result[1] else 0
        rejected = max(refused, log.errors - errors_before)
        counter["sent"] += 1
        counter["rejected"] += rejected
        total = len(json.loads(bundle).get("objects") or [])
        print("sent %s: %d objects%s" % (description, total, ", %d rejected" % rejected if rejected else ""))

    return send


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-send archived bundles (oldest first) to OpenCTI, or with ``--dry-run`` only say what would be sent."""
    archive = _open(args)
    since = args.since
    if since:
        parse_time(since)  # a bad --since is an error before anything is sent
    counter = {"sent": 0, "rejected": 0}
    send: Callable[[str, str], None]
    if args.dry_run:
        def send(bundle: str, description: str) -> None:
            objects = json.loads(bundle).get("objects") or []
            print("would send %s: %d objects" % (description, len(objects)))
    else:
        send = _opencti_sender(counter)
    try:
        count = replay(archive, send, case_id=args.case, since=since)
    except Exception as exc:
        if counter["sent"]:  # the operator must know where to resume
            raise ArchiveError("%s (after %d bundles were sent)" % (_one_line(exc), counter["sent"])) from None
        raise
    if args.dry_run:
        print("%d bundles replayed (dry run: nothing sent)" % count)
        return 0
    print("%d bundles replayed%s" % (count, ", %d objects rejected by OpenCTI" % counter["rejected"]
                                     if counter["rejected"] else ""))
    return 1 if counter["rejected"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Audit archive of the IRIS → OpenCTI import connector: "
                                     "every message received and every bundle sent, hash-chained.")
    parser.add_argument("--dir", default=os.environ.get("IRIS_ARCHIVE_DIR") or DEFAULT_DIR,
                        help=f"archive directory (env IRIS_ARCHIVE_DIR, default {DEFAULT_DIR})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="one line per archived message or bundle")
    p.add_argument("--case", metavar="N", help="only this IRIS case id")
    p.add_argument("--event", metavar="E", help="only this event, e.g. ioc.created")
    p.add_argument("--kind", choices=("bundle", "message"))
    p.add_argument("--since", metavar="ISO", help="only entries at or after this time (UTC unless a zone is given)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="an entry and its content, by sequence number or SHA-256 prefix")
    p.add_argument("key", metavar="SEQ|SHA")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("verify", help="check the hash chain and every object (exit 1 on any problem)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("prune", help="drop entries older than the retention")
    p.add_argument("--retention-days", type=int, metavar="N",
                   help="days to keep (env IRIS_ARCHIVE_RETENTION_DAYS; 0 keeps everything)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("replay", help="re-send archived bundles to OpenCTI (env OPENCTI_URL, OPENCTI_TOKEN)")
    p.add_argument("--case", metavar="N", help="only bundles of this IRIS case id")
    p.add_argument("--since", metavar="ISO", help="only bundles archived at or after this time")
    p.add_argument("--dry-run", action="store_true", help="list what would be sent, send nothing")
    p.set_defaults(func=cmd_replay)
    return parser


def _one_line(exc: Union[BaseException, str]) -> str:
    """The error as one line, with the OpenCTI token masked should a library have echoed it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    token = os.environ.get("OPENCTI_TOKEN", "").strip()
    if token:
        text = text.replace(token, "***")
    return text


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``iris-opencti-archive``: 0 = done, 1 = verify found problems or OpenCTI rejected
    replayed objects, 2 = error."""
    args: Any = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `list | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # keep the final flush silent
        return 0
    except Exception as exc:  # noqa: BLE001 - one line for the operator, never a traceback
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
