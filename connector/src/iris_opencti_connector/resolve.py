"""Turn one IRIS message into exact OpenCTI operations: what to upsert, what to remove, what to delete.

For every IRIS object the message touches, the ids it produced before (the ledger) are compared with the ids
it produces now (the message). An id that is no longer produced leaves the case; the object itself is deleted
only when nothing else in IRIS still produces it and OpenCTI says IRIS is its sole author and no other
container holds it. Everything else only loses its place in the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .ledger import Ledger

OPENCTI_EXTENSION = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"
#: events whose message describes the whole case: ledger keys missing from it were deleted in IRIS
COMPLETE_EVENTS = ("case.sync", "case.created")

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


@dataclass
class MessagePlan:
    upserts: List[Dict[str, Any]]
    cases: List[CasePlan]

    def operations(self) -> List[Dict[str, Any]]:
        """Deletion and patch objects (OpenCTI's ``opencti_operation``) for the removals of every case."""
        ops: List[Dict[str, Any]] = []
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


def delete_object(stix_id: str) -> Dict[str, Any]:
    return {"id": stix_id, "type": stix_id.split("--", 1)[0], "spec_version": "2.1",
            "opencti_operation": "delete",
            "extensions": {OPENCTI_EXTENSION: {"extension_type": "property-extension", "id": stix_id,
                                               "opencti_operation": "delete"}}}


def patch_remove_refs(container_id: str, refs: List[str]) -> Dict[str, Any]:
    """Take objects out of a container without deleting them (OpenCTI's field patch on ``objects``)."""
    patch = [{"key": "objects", "value": sorted(set(refs)), "operation": "remove"}]
    return {"id": container_id, "type": container_id.split("--", 1)[0], "spec_version": "2.1",
            "opencti_operation": "patch", "opencti_field_patch": patch,
            "extensions": {OPENCTI_EXTENSION: {"extension_type": "property-extension", "id": container_id,
                                               "opencti_operation": "patch", "opencti_field_patch": patch}}}


def _keys_of(envelope: Dict[str, Any]) -> List[str]:
    iris = envelope.get("iris") or {}
    keys = ["ioc:%s" % i for i in iris.get("ioc_ids") or []]
    keys += ["asset:%s" % i for i in iris.get("asset_ids") or []]
    return keys


def plan_message(envelope: Dict[str, Any], ledger: Ledger, may_delete: Ownership) -> MessagePlan:
    """Everything a message asks of OpenCTI and of the ledger, without doing any of it."""
    event = envelope["event"]
    case = envelope.get("case") or {}
    produced: Dict[str, List[str]] = envelope.get("produced") or {}
    bundle = envelope.get("bundle") or {}
    upserts = list(bundle.get("objects") or [])
    kind = event.split(".", 1)[0]
    touched = _keys_of(envelope)

    if event in ("ioc.deleted", "asset.deleted"):
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
        if event == "case.deleted":
            plan.delete_case = True
            plans.append(plan)
            continue
        if event in COMPLETE_EVENTS:
            old = ledger.case_map(case_id)
            keys = sorted(set(old) | set(produced))
        else:  # only the keys this message touches: a one-IOC event must not read a 10,000-IOC case
            if event.endswith(".deleted"):
                keys = touched
            else:
                keys = sorted(set(touched) | {k for k in produced if k.startswith((kind + ":", "case:"))})
            old = {key: ledger.ids_of(case_id, key) for key in keys}
        gone: Dict[str, Set[str]] = {}
        for key in keys:
            new_ids = [] if event.endswith(".deleted") else produced.get(key, [])
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
    return MessagePlan(upserts=upserts, cases=plans)


def _delete_order(stix_id: str) -> int:
    """Relationships first, then indicators, then what they pointed at."""
    kind = stix_id.split("--", 1)[0]
    return {"relationship": 0, "indicator": 1}.get(kind, 2)
