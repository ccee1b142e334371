"""``iris-opencti-archive``: list, show, verify, prune and replay the import connector's audit archive."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from .archive import Archive, replay


def _archive(args: argparse.Namespace) -> Archive:
    if not os.path.isdir(args.dir):
        raise ValueError("no archive at %s (set --dir or IRIS_ARCHIVE_DIR)" % args.dir)
    return Archive(args.dir, args.retention_days)


def cmd_list(args: argparse.Namespace) -> int:
    for e in _archive(args).entries(case_id=args.case, event=args.event, kind=args.kind, since=args.since):
        print("%5d  %s  %-7s case %-6s %-14s work %-36s %s" % (
            e["seq"], e["time"], e["kind"], e["case_id"], e["event"], e["work_id"] or "-", e["sha256"][:16]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    archive = _archive(args)
    entry = archive.find(args.key)
    if entry is None:
        print("iris-opencti-archive: error: no entry %s" % args.key, file=sys.stderr)
        return 2
    print(json.dumps({"entry": entry, "content": json.loads(archive.load(entry["sha256"]))}, indent=2,
                     ensure_ascii=False))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    archive = _archive(args)
    problems = archive.verify()
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print("OK: %d entries, chain intact, every object matches its SHA-256" % sum(1 for _ in archive.entries()))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    print("pruned %d entries older than %d days" % (_archive(args).prune(), args.retention_days))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    archive = _archive(args)
    if args.dry_run:
        def send(bundle: str, description: str) -> None:
            print("would send %s (%d objects)" % (description, len(json.loads(bundle).get("objects", []))))
    else:
        url, token = os.environ.get("OPENCTI_URL"), os.environ.get("OPENCTI_TOKEN")
        if not url or not token:
            print("iris-opencti-archive: error: set OPENCTI_URL and OPENCTI_TOKEN to replay", file=sys.stderr)
            return 2
        from pycti import OpenCTIApiClient

        client = OpenCTIApiClient(url, token, log_level="error",
                                  ssl_verify=os.environ.get("OPENCTI_SSL_VERIFY", "true").lower() != "false")

        def send(bundle: str, description: str) -> None:
            client.stix2.import_bundle_from_json(bundle, update=True)
            print("sent " + description)
    count = replay(archive, send, case_id=args.case, since=args.since)
    print("%d bundles replayed" % count)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="iris-opencti-archive", description=__doc__)
    parser.add_argument("--dir", default=os.environ.get("IRIS_ARCHIVE_DIR", "data/archive"))
    parser.add_argument("--retention-days", type=int,
                        default=int(os.environ.get("IRIS_ARCHIVE_RETENTION_DAYS", "0") or 0))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="one line per archived message or bundle")
    p.add_argument("--case")
    p.add_argument("--event")
    p.add_argument("--kind", choices=("message", "bundle"))
    p.add_argument("--since", help="ISO time")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="an entry and its content, by sequence number or SHA-256 prefix")
    p.add_argument("key")
    p.set_defaults(func=cmd_show)
    sub.add_parser("verify", help="check the hash chain and every object").set_defaults(func=cmd_verify)
    sub.add_parser("prune", help="apply the retention").set_defaults(func=cmd_prune)
    p = sub.add_parser("replay", help="re-send archived bundles to OpenCTI (OPENCTI_URL, OPENCTI_TOKEN)")
    p.add_argument("--case")
    p.add_argument("--since")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_replay)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (OSError, ValueError) as exc:
        print("iris-opencti-archive: error: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
