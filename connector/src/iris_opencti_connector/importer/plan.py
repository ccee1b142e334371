"""Turn one IRIS message into exact OpenCTI operations: what to upsert, what to remove, what to delete.

For every IRIS object the message touches, the ids it produced before (the ledger) are compared with the ids
it produces now (the message). An id that is no longer produced leaves the case; the object itself is deleted
only when nothing else in IRIS still produces it and OpenCTI says IRIS is its sole author and no other
container holds it. Everything else only loses its place in the case.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from iris_opencti_connector.store.ledger import Ledger
from iris_opencti_module.core.envelope import CASELESS_EVENTS, DEFAULT_COVERS, ID_KINDS, covered_kinds

OPENCTI_EXTENSION = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"
#: events whose message describes the whole case: ledger keys missing from it were deleted in IRIS
COMPLETE_EVENTS = ("case.sync", "case.created", "records.sync")

#: (stix id, case-incident id) -> True when the object may be deleted from OpenCTI
Ownership = Callable[[str, Optional[str]], bool]


@dataclass
class CasePlan:
    """What one message means for one case."""

    case_id: str
    case_ref: Optional[str]
    case_name: Optional[str] = None
    set_keys: Dict[str, List[str]] = field(default_factory=dict)
    forget_keys: List[str] = field(default_factory=list)
    removed_from_case: List[str] = field(default_factory=list)
    deleted: List[str] = field(default_factory=list)
    delete_case: bool = False
    #: key -> stix id -> labels and markings the key now asserts on it (see ``asserted_refs``)
    asserted: Dict[str, Dict[str, List[str]]] = field(default_factory=dict)
    #: the IRIS event's time, stamped on every key set or forgotten (see ``event_time``)
    at: Optional[str] = None
    #: a part of a sync in parts: (sync id, index, total, keys it carries)
    sync_part: Optional[Tuple[str, int, int, List[str]]] = None
    #: the sync whose end this message is (every part was in): closed with the ledger's writes
    closes_sync: Optional[str] = None
    #: keys of a whole-case message left alone: IRIS changed them after the sync was taken
    stale: List[str] = field(default_factory=list)
    #: the kinds of IRIS objects a whole-case message holds all of (envelope ``covers``)
    covers: Tuple[str, ...] = DEFAULT_COVERS


@dataclass
class MessagePlan:
    upserts: List[Dict[str, Any]]
    cases: List[CasePlan]
    #: stix id -> labels / markings IRIS asserted before and no IRIS object asserts any more
    unasserted: Dict[str, List[str]] = field(default_factory=dict)
    #: the message's case and the module's conversion settings (``core.conversion``), kept by the ledger
    case_id: Any = None
    conversion: Optional[Dict[str, Any]] = None
    #: keys IRIS deleted without naming their case, and when: a tombstone in every case (``ledger.ANY_CASE``)
    tombstones: List[str] = field(default_factory=list)
    tombstones_at: str = ""

    def operations(self) -> List[Dict[str, Any]]:
        """Deletion and patch objects (OpenCTI's ``opencti_operation``) for the removals of every case.

        Label and marking removals name labels by value and markings by id; the connector turns them into
        the ids OpenCTI really holds on the object just before sending (``unassert_patch``).
        """
        ops: List[Dict[str, Any]] = []
        deleted = {i for plan in self.cases for i in plan.deleted}
        for stix_id, refs in sorted(self.unasserted.items()):
            if stix_id not in deleted:
                ops.append(unassert_patch(stix_id, refs))
        seen: Set[str] = set()
        for plan in self.cases:
            if plan.removed_from_case and plan.case_ref and not plan.delete_case:
                ops.append(patch_remove_refs(plan.case_ref, plan.removed_from_case))
            for stix_id in plan.deleted:
                if stix_id not in seen:
                    seen.add(stix_id)
                    ops.append(delete_object(stix_id))
            if plan.delete_case and plan.case_ref and plan.case_ref not in seen:
                seen.add(plan.case_ref)
                ops.append(delete_object(plan.case_ref))
        return ops


def _operation(stix_id: str, operation: str, patch: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """An ``opencti_operation`` object, top level and in OpenCTI's extension (pycti reads either)."""
    fields: Dict[str, Any] = {"opencti_operation": operation}
    if patch is not None:
        fields["opencti_field_patch"] = patch
    return {"id": stix_id, "type": stix_id.split("--", 1)[0], "spec_version": "2.1", **fields,
            "extensions": {OPENCTI_EXTENSION: {"extension_type": "property-extension", "id": stix_id, **fields}}}


def delete_object(stix_id: str) -> Dict[str, Any]:
    return _operation(stix_id, "delete")


def patch_remove_refs(container_id: str, refs: List[str]) -> Dict[str, Any]:
    """Take objects out of a container without deleting them (OpenCTI's field patch on ``objects``)."""
    return _operation(container_id, "patch", [{"key": "objects", "value": sorted(set(refs)), "operation": "remove"}])


def asserted_refs(obj: Dict[str, Any]) -> List[str]:
    """What an IRIS object asserts on a STIX object beyond its properties, in the ledger's notation."""
    labels = [*(obj.get("labels") or []), *(obj.get("x_opencti_labels") or [])]  # SDOs / observables
    refs = [f"label:{v}" for v in labels if isinstance(v, str)]
    refs += [f"marking:{v}" for v in obj.get("object_marking_refs") or [] if isinstance(v, str)]
    return sorted(set(refs))


def unassert_patch(stix_id: str, refs: List[str]) -> Dict[str, Any]:
    """Take labels and markings off an object (OpenCTI's field patch on ``objectLabel`` / ``objectMarking``).

    The values are still IRIS's (label values, marking ids) and must be mapped onto what OpenCTI stores
    before the patch is sent: the platform refuses a patch that names a ref it does not hold."""
    patch = []
    labels = sorted({r.split(":", 1)[1] for r in refs if r.startswith("label:")})
    markings = sorted({r.split(":", 1)[1] for r in refs if r.startswith("marking:")})
    if labels:
        patch.append({"key": "objectLabel", "value": labels, "operation": "remove"})
    if markings:
        patch.append({"key": "objectMarking", "value": markings, "operation": "remove"})
    return _operation(stix_id, "patch", patch)


def with_field_patch(op: Dict[str, Any], patch: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The same patch operation with its field patch replaced (values mapped onto OpenCTI's ids)."""
    return _operation(op["id"], "patch", patch)


def keys_of(envelope: Dict[str, Any]) -> List[str]:
    """The IRIS keys a message names (``iris``'s ids): for a deletion, what it deletes."""
    iris = envelope.get("iris") or {}
    keys = [f"ioc:{i}" for i in iris.get("ioc_ids") or []]
    keys += [f"asset:{i}" for i in iris.get("asset_ids") or []]
    if envelope.get("event") != "records.sync":  # there the ids name what it holds, not what it removes
        keys += [f"{kind}:{i}" for kind in ID_KINDS for i in iris.get(f"{kind}_ids") or []]
    return keys


def keep_first_case_ref(envelope: Dict[str, Any], ledger: Ledger) -> Dict[str, Any]:
    """The envelope with the case's Case-Incident id as first recorded in the ledger.

    The id follows the case's name and creation date (as pycti's ``CaseIncident.generate_id``), so a case
    renamed in IRIS arrives under a new id. OpenCTI must keep one Case-Incident per IRIS case: the first id
    stays the case's reference, and every mention of the new id (the object itself, refs to it, ``produced``)
    is rewritten to it, so the upsert renames that object. Ids are UUID-based and never a substring of
    anything else, which makes the textual rewrite exact.
    """
    case = envelope.get("case") or {}
    new_ref, case_id = case.get("ref"), case.get("id")
    if case_id is None or not new_ref:
        return envelope
    first = ledger.case_ref(case_id)
    if not first or first == new_ref:
        return envelope
    return json.loads(json.dumps(envelope).replace(json.dumps(new_ref), json.dumps(first)))


def event_time(envelope: Dict[str, Any]) -> str:
    """The envelope's IRIS time in one sortable form (UTC, microseconds); now when it has none."""
    text = envelope.get("time")
    try:
        moment = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        moment = _dt.datetime.now(_dt.timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sync_end_envelope(case_id: str, case_ref: Optional[str], case_name: Optional[str], sync_id: str, at: str,
                      gone: List[str]) -> Dict[str, Any]:
    """The connector's own message that ends a sync in parts: ``gone`` (keys of the case in no part, and not
    changed in IRIS since the sync was taken) are deleted as an ``ioc.deleted`` would delete them."""
    return {"schema": 1, "message_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"iris-opencti sync end {sync_id}")),
            "event": "case.sync", "case": {"id": case_id, "name": case_name, "ref": case_ref},
            "iris": {"ioc_ids": [k.split(":", 1)[1] for k in gone if k.startswith("ioc:")],
                     "asset_ids": [k.split(":", 1)[1] for k in gone if k.startswith("asset:")]},
            "user": "iris-opencti-import", "time": at, "bundle": None, "produced": {}, "deleted": [], "skipped": [],
            "part": {"sync": sync_id, "end": True}}


def _without_stale(envelope: Dict[str, Any], stale: Set[str]) -> Tuple[Dict[str, List[str]], List[Dict[str, Any]]]:
    """``produced`` and the bundle's objects without what only the stale keys produce (nor the case's refs
    to them): a message taken before IRIS deleted an IOC must not bring its objects back."""
    produced: Dict[str, List[str]] = envelope.get("produced") or {}
    objects = list((envelope.get("bundle") or {}).get("objects") or [])
    if not stale:
        return produced, objects
    kept = {k: ids for k, ids in produced.items() if k not in stale}
    still = {i for ids in kept.values() for i in ids}
    dropped = {i for k in stale for i in produced.get(k, []) if i not in still}
    case_ref = (envelope.get("case") or {}).get("ref")
    out = []
    for obj in objects:
        if obj.get("id") in dropped:
            continue
        if obj.get("id") == case_ref and obj.get("object_refs"):
            obj = dict(obj, object_refs=[r for r in obj["object_refs"] if r not in dropped])
            if not obj["object_refs"]:  # STIX forbids an empty list
                del obj["object_refs"]
        out.append(obj)
    return kept, out


#: what a Case-Incident keeps in a message older than the case's last change: OpenCTI's upsert leaves alone
#: the fields a message does not fill (``generateAttributesInputsForUpsert`` skips empty values), so the
#: newer description, severity, priority and dates stay, and the refs are added
_REFS_ONLY = frozenset({"type", "spec_version", "id", "created", "name", "created_by_ref", "object_marking_refs",
                        "object_refs", "confidence", "external_references"})


def _refs_only(obj: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in obj.items() if k in _REFS_ONLY}


def _newer_in_ledger(ledger: Ledger, case_id: Any, keys: List[str], at: str) -> Set[str]:
    """Those of ``keys`` IRIS changed in this case after ``at`` (or deleted, with or without the case)."""
    return {k for k, when in ledger.stamps(case_id, keys).items() if when > at}


def plan_message(envelope: Dict[str, Any], ledger: Ledger, may_delete: Ownership) -> MessagePlan:
    """Everything a message asks of OpenCTI and of the ledger, without doing any of it.

    Every message is a picture taken at its ``time``, and messages may come out of IRIS's order (from IRIS's
    web and worker processes, or consumed by replicas side by side): for each key, the latest time wins. Keys
    IRIS changed after the message's time (stamped in the ledger by a later event, or deleted, with or without
    their case) are left as they are, neither rewritten nor deleted; a single event whose every key is such a
    key changes nothing at all, nor does any message about a case IRIS deleted after it. A part upserts its own
    keys only; the deletions a sync implies come with the connector's sync-end message, once every part is in
    (``sync_end_envelope``).
    """
    event = envelope["event"]
    case = envelope.get("case") or {}
    part = envelope.get("part") or {}
    ending = bool(part.get("end"))
    at = event_time(envelope)
    produced: Dict[str, List[str]] = envelope.get("produced") or {}
    bundle = envelope.get("bundle") or {}
    upserts = list(bundle.get("objects") or [])
    kind = event.split(".", 1)[0]
    touched = keys_of(envelope)
    whole = event in COMPLETE_EVENTS and not ending
    stale: Set[str] = set()
    older_case = False
    superseded = MessagePlan(upserts=[], cases=[], case_id=case.get("id"))
    if case.get("id") is not None and event != "case.deleted" and not ending:
        if whole:
            case_deleted = ledger.deleted_at(case["id"])
            if case_deleted and case_deleted > at:
                return superseded
            stale = _newer_in_ledger(ledger, case["id"], [k for k in produced if not k.startswith("case:")], at)
        else:
            keys_here = sorted(set(touched) | set(produced))
            stale = _newer_in_ledger(ledger, case["id"], keys_here, at)
            own = [k for k in keys_here if not k.startswith("case:")] or keys_here
            if own and stale >= set(own):
                return superseded  # IRIS changed (or deleted) all of it since: this picture is out of date
            # the case's own key stays: its Case-Incident carries the refs to what this message still brings,
            # but not its older fields (a case edited since, its newer fields already in OpenCTI)
            older_case = any(k.startswith("case:") for k in stale)
            stale = {k for k in stale if not k.startswith("case:")}
        produced, upserts = _without_stale(envelope, stale)
        if not whole and older_case:
            upserts = [_refs_only(o) if o.get("id") == case.get("ref") else o for o in upserts]

    if event in CASELESS_EVENTS:
        case_ids = [str(case["id"])] if case.get("id") is not None else sorted(
            {c for key in touched for c in ledger.cases_holding(key)})
    else:
        case_ids = [str(case["id"])]

    plans: List[CasePlan] = []
    # ids being released by this message in each case, so two IOCs deleted together do not keep each other
    releasing: Set[Tuple[str, str, str]] = set()
    per_case: List[Tuple[CasePlan, Dict[str, Set[str]]]] = []
    for case_id in case_ids:
        ref = case.get("ref") if str(case.get("id")) == case_id else None
        plan = CasePlan(case_id=case_id, case_ref=ref or ledger.case_ref(case_id), case_name=case.get("name"))
        plan.at = at
        if event == "case.deleted":
            plan.delete_case = True
            plans.append(plan)
            continue
        plan.covers = covered_kinds(envelope)
        if whole and not part:
            # only the kinds the message holds all of: a case synced without its notes keeps them
            old = {k: v for k, v in ledger.case_map(case_id).items() if k.split(":", 1)[0] in plan.covers}
            absent = [k for k in old if k not in produced and not k.startswith("case:")]
            stale |= {k for k, when in ledger.stamps(case_id, absent).items() if when > at}
            keys = sorted((set(old) | set(produced)) - stale)
        else:  # only the keys this message touches: a one-IOC event must not read a 10,000-IOC case
            if event.endswith(".deleted") or ending:
                keys = touched
                if case.get("id") is None:  # found in the ledger: per case, a key IRIS changed since stays
                    newer = _newer_in_ledger(ledger, case_id, keys, at)
                    keys = [k for k in keys if k not in newer]
                else:
                    keys = [k for k in keys if k not in stale]
            elif part:
                keys = sorted(produced)
                plan.sync_part = (str(part["sync"]), int(part["index"]), int(part.get("total") or 0),
                                  sorted({*produced, *touched, *stale}))
            else:
                keys = sorted((set(touched) | {k for k in produced if k.startswith((kind + ":", "case:"))}) - stale)
            old = {key: ledger.ids_of(case_id, key) for key in keys}
        if ending:
            plan.closes_sync = str(part["sync"])
        plan.stale = sorted(stale)
        gone: Dict[str, Set[str]] = {}
        for key in keys:
            new_ids = [] if event.endswith(".deleted") or ending else produced.get(key, [])
            if new_ids or key in produced:
                plan.set_keys[key] = list(new_ids)
            else:
                plan.forget_keys.append(key)
            lost = old.get(key, set()) - set(new_ids)
            if lost:
                gone[key] = lost
                releasing.update((case_id, key, stix_id) for stix_id in lost)
        per_case.append((plan, gone))
        plans.append(plan)

    for plan, gone in per_case:
        still_in_case = {i for ids in plan.set_keys.values() for i in ids}
        for lost in gone.values():
            for stix_id in sorted(lost):
                if stix_id in still_in_case:
                    continue
                holders = {(c, k) for c, k in ledger.holders(stix_id) if (c, k, stix_id) not in releasing}
                if any(c == plan.case_id for c, _ in holders):
                    continue  # another IRIS object of this case still produces it
                if not holders and may_delete(stix_id, plan.case_ref):
                    plan.deleted.append(stix_id)
                else:
                    plan.removed_from_case.append(stix_id)
        plan.deleted.sort(key=_delete_order)
    message = MessagePlan(upserts=upserts, cases=plans, case_id=(envelope.get("case") or {}).get("id"),
                          conversion=envelope.get("conversion"))
    if event in CASELESS_EVENTS and case.get("id") is None:
        # a creation of these keys on its way (or on another replica) is older than this deletion: it must
        # not bring them back, in whatever case it comes
        message.tombstones, message.tombstones_at = sorted(touched), at
    message.unasserted = _unasserted(upserts, per_case, ledger)
    return message


def _unasserted(upserts: List[Dict[str, Any]], per_case: List[Tuple[CasePlan, Dict[str, Set[str]]]],
                ledger: Ledger) -> Dict[str, List[str]]:
    """Labels and markings to take off objects: asserted before by the keys this message rewrites, and by
    no IRIS object (of any case) now. Fills each plan's ``asserted`` on the way."""
    objects = {o["id"]: o for o in upserts if isinstance(o, dict) and isinstance(o.get("id"), str)}
    rewritten: Set[Tuple[str, str]] = set()
    now: Dict[str, Set[str]] = {}
    affected: Set[str] = set(objects)
    for plan, gone in per_case:
        for key, ids in plan.set_keys.items():
            refs_of = {i: asserted_refs(objects[i]) for i in ids if i in objects}
            plan.asserted[key] = {i: refs for i, refs in refs_of.items() if refs}
            for stix_id, refs in plan.asserted[key].items():
                now.setdefault(stix_id, set()).update(refs)
            rewritten.add((plan.case_id, key))
        rewritten.update((plan.case_id, key) for key in plan.forget_keys)
        for lost in gone.values():
            affected.update(lost)
    out: Dict[str, List[str]] = {}
    for stix_id, before in ledger.asserted_many(affected).items():
        still: Set[str] = set(now.get(stix_id, set()))
        for pair, claimed in before.items():
            if pair not in rewritten:
                still |= claimed
        removed = set().union(*before.values()) - still
        if removed:
            out[stix_id] = sorted(removed)
    return out


def _delete_order(stix_id: str) -> int:
    """Relationships first, then indicators, then what they pointed at."""
    kind = stix_id.split("--", 1)[0]
    return {"relationship": 0, "indicator": 1}.get(kind, 2)
