"""The message IRIS sends to the import connector: a small JSON envelope around a STIX bundle.

The envelope carries what the bundle alone cannot: which IRIS event happened, which IRIS ids produced which
STIX ids (the connector's ledger needs this to delete exactly), and the IRIS user (to tell write-backs
apart). ``message_id`` is derived from the content, so a replayed or duplicated message is recognisable.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple

from iris_opencti_module.core.case_records import KINDS
from iris_opencti_module.core.stix_ids import NAMESPACE

SCHEMA_VERSION = 1
#: the IRIS object kinds of :mod:`case_records` (the envelope's ``iris`` holds ``<kind>_ids`` lists for them)
RECORD_KINDS = KINDS
#: kinds whose ids an envelope's ``iris`` may list as ``<kind>_ids``: the records, and comments (case_records.py)
ID_KINDS = KINDS + ("comment",)

EVENTS = frozenset({
    "case.created", "case.updated", "case.deleted", "case.sync",
    "ioc.created", "ioc.updated", "ioc.deleted",
    "asset.created", "asset.updated", "asset.deleted",
    # a case's notes, timeline events, tasks or evidences, all of one kind (``covers`` names it), after any
    # change; the deletion of one of them by id (IRIS's postload delete hooks hand the id alone)
    "records.sync", "note.deleted", "event.deleted", "task.deleted", "evidence.deleted",
    # a comment on an IOC, asset, event, note, task or evidence, created or edited; deleted (by id alone)
    "comment.updated", "comment.deleted",
})
#: events that may name no case: the connector finds the cases holding the object in its ledger
CASELESS_EVENTS = frozenset({"ioc.deleted", "asset.deleted"} | {f"{k}.deleted" for k in ID_KINDS})

#: events that carry a whole case, and so may come in parts (``chunks.py``): ``part`` says which
SYNC_EVENTS = frozenset({"case.sync", "case.created"})

#: what each entry of ``skipped`` holds (``convert.Skipped.as_dict``); the connector prints them in the work
SKIPPED_FIELDS = ("kind", "object_id", "type", "value", "reason")


class EnvelopeError(ValueError):
    """A message that is not a valid envelope; the text says which field is wrong."""


def part_label(part: Dict[str, Any]) -> str:
    """``part 2`` or, on the last part (which names the total), ``part 5/5``: for logs and work names."""
    total = part.get("total")
    return "part %d%s" % (part["index"] + 1, "/%d" % total if total else "")


def make_envelope(event: str, case_id: Optional[Any], *, case_name: Optional[str] = None,
                  case_ref: Optional[str] = None, bundle: Optional[Dict[str, Any]] = None,
                  produced: Optional[Dict[str, List[str]]] = None,
                  ioc_ids: Iterable[Any] = (), asset_ids: Iterable[Any] = (), user: Optional[str] = None,
                  deleted: Iterable[Dict[str, Any]] = (), skipped: Iterable[Dict[str, Any]] = (),
                  time: Optional[str] = None, covers: Optional[Iterable[str]] = None,
                  record_ids: Optional[Dict[str, List[Any]]] = None,
                  conversion: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Build an envelope. ``deleted`` lists ``{"kind": "ioc"|"asset"|"case", "id": n, ...}`` entries.

    ``covers`` (whole-case messages): the kinds of IRIS objects the message holds *all* of, so that the
    connector deletes in OpenCTI only what is absent among those kinds; without it, ``case``, ``ioc`` and
    ``asset`` (:data:`DEFAULT_COVERS`). A case synced from IRIS's database before the module read notes would
    otherwise delete the notes a reconcile from the case export brought.

    ``conversion`` (``Converter.conversion``): the settings the bundle was converted with and their
    fingerprint, the contract the connector checks before it reconciles the case (``core.conversion``).
    """
    if event not in EVENTS:
        raise EnvelopeError(f"unknown event {event!r}")
    ioc_ids = list(ioc_ids)
    asset_ids = list(asset_ids)
    deleted = list(deleted)
    seed = "|".join([event, str(case_id), ",".join(map(str, ioc_ids)), ",".join(map(str, asset_ids)),
                     (bundle or {}).get("id", ""), json.dumps(deleted, sort_keys=True)]
                    + ([json.dumps(record_ids, sort_keys=True, default=str)] if record_ids else []))
    iris: Dict[str, List[Any]] = {"ioc_ids": ioc_ids, "asset_ids": asset_ids}
    for kind, ids in (record_ids or {}).items():
        iris[f"{kind}_ids"] = list(ids)
    envelope: Dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "message_id": str(uuid.uuid5(NAMESPACE, seed)),
        "event": event,
        "case": {"id": case_id, "name": case_name, "ref": case_ref},
        "iris": iris,
        "user": user,
        "time": time or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "bundle": bundle,
        "produced": produced or {},
        "deleted": deleted,
        "skipped": list(skipped),
    }
    if covers is not None:
        envelope["covers"] = sorted(set(covers))
    if conversion is not None:
        envelope["conversion"] = conversion
    return envelope


#: what a whole-case message without ``covers`` holds all of (every message before records existed)
DEFAULT_COVERS = ("asset", "case", "ioc")


def whole_case_covers(records: Iterable[str]) -> List[str]:
    """What a whole-case message converted with ``records`` (record kinds) holds all of."""
    return sorted(set(DEFAULT_COVERS) | set(records))


def covered_kinds(envelope: Dict[str, Any]) -> Tuple[str, ...]:
    """The kinds of IRIS objects a whole-case message holds all of (see :func:`make_envelope`)."""
    covers = envelope.get("covers")
    return tuple(covers) if isinstance(covers, list) and covers else DEFAULT_COVERS


def encode(envelope: Dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_envelope(body: bytes) -> Dict[str, Any]:
    """Decode and check a message; raises :class:`EnvelopeError` naming the problem (for the dead-letter queue)."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"message is not JSON: {exc}") from None
    except RecursionError:  # e.g. 200,000 nested '[': json's decoder gives up on the depth
        raise EnvelopeError("message is not JSON this connector can read: nested too deeply") from None
    if not isinstance(envelope, dict):
        raise EnvelopeError("message is not a JSON object")
    if envelope.get("schema") != SCHEMA_VERSION:
        raise EnvelopeError("unsupported schema %r (expected %d)" % (envelope.get("schema"), SCHEMA_VERSION))
    if envelope.get("event") not in EVENTS:
        raise EnvelopeError("unknown event {!r}".format(envelope.get("event")))
    for key in ("message_id", "time", "user"):
        if envelope.get(key) is not None and not isinstance(envelope[key], str):
            raise EnvelopeError(f"field '{key}' must be a string")
    conversion = envelope.get("conversion")
    if conversion is not None and not (isinstance(conversion, dict) and isinstance(conversion.get("settings"), dict)
                                       and isinstance(conversion.get("fingerprint"), str)):
        raise EnvelopeError("field 'conversion' must be an object with 'fingerprint' and 'settings'")
    covers = envelope.get("covers")
    if covers is not None and not (isinstance(covers, list) and all(isinstance(c, str) for c in covers)):
        raise EnvelopeError("field 'covers' must be a list of IRIS object kinds")
    case = envelope.get("case")
    if not isinstance(case, dict):
        raise EnvelopeError("field 'case' is missing")
    if case.get("id") is not None and (isinstance(case["id"], bool) or not isinstance(case["id"], (int, str))):
        raise EnvelopeError("field 'case.id' must be an IRIS id")
    # IRIS's postload delete hooks hand over the object id only: the connector finds its cases in the ledger
    if case.get("id") is None and envelope["event"] not in CASELESS_EVENTS:
        raise EnvelopeError("field 'case.id' is missing")
    ref = case.get("ref")
    if ref is not None and (not isinstance(ref, str) or not ref.startswith("case-incident--")):
        raise EnvelopeError("field 'case.ref' must be a case-incident id")
    if case.get("name") is not None and not isinstance(case["name"], str):
        raise EnvelopeError("field 'case.name' must be a string")
    iris = envelope.get("iris", {})
    if not isinstance(iris, dict) or any(not isinstance(iris.get(k, []), list) for k in ("ioc_ids", "asset_ids")):
        raise EnvelopeError("field 'iris' must hold the lists 'ioc_ids' and 'asset_ids'")
    for key in ("ioc_ids", "asset_ids") + tuple(f"{k}_ids" for k in ID_KINDS):
        if not isinstance(iris.get(key, []), list):
            raise EnvelopeError(f"field 'iris.{key}' must list IRIS ids")
        if any(not isinstance(i, (int, str)) or isinstance(i, bool) for i in iris.get(key, [])):
            raise EnvelopeError(f"field 'iris.{key}' must list IRIS ids")
    bundle = envelope.get("bundle")
    if bundle is not None and (not isinstance(bundle, dict) or bundle.get("type") != "bundle"
                               or not isinstance(bundle.get("objects"), list)):
        raise EnvelopeError("field 'bundle' is not a STIX bundle")
    produced = envelope.get("produced", {})
    if not isinstance(produced, dict) or any(
            not isinstance(ids, list) or any(not isinstance(i, str) or "--" not in i for i in ids)
            for ids in produced.values()):
        raise EnvelopeError("field 'produced' must map IRIS keys to lists of STIX ids")
    if not isinstance(envelope.get("deleted", []), list) or any(
            not isinstance(d, dict) for d in envelope.get("deleted", [])):
        raise EnvelopeError("field 'deleted' must be a list of objects")
    part = envelope.get("part")
    if part is not None:
        if envelope["event"] not in SYNC_EVENTS:
            raise EnvelopeError("field 'part': only {} messages come in "
                                "parts".format(" and ".join(sorted(SYNC_EVENTS))))
        # the total is named by the last part only (``transport/case_sync.py``): parts leave while converting
        index, total = (part.get("index"), part.get("total")) if isinstance(part, dict) else (None, None)
        counted = isinstance(index, int) and not isinstance(index, bool) and 0 <= index and (
            total is None or (isinstance(total, int) and not isinstance(total, bool) and index < total))
        if not isinstance(part, dict) or not isinstance(part.get("sync"), str) or not part["sync"] or not counted:
            raise EnvelopeError("field 'part' must be {sync: id, index: i} (the last part adding total: n) with "
                                "0 <= i < n")
    skipped = envelope.get("skipped", [])
    if not isinstance(skipped, list) or any(
            not isinstance(s, dict) or any(not isinstance(s.get(k, ""), (str, int)) or isinstance(s.get(k), bool)
                                           for k in SKIPPED_FIELDS)
            for s in skipped):
        raise EnvelopeError("field 'skipped' must be a list of {{{}}} objects".format(", ".join(SKIPPED_FIELDS)))
    return envelope
