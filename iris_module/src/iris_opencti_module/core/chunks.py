"""Split a whole-case message into parts that each stay well under any broker's message size limit.

RabbitMQ 4 refuses messages over 16 MiB by default (``max_message_size``), and a 10,000-IOC case is an
18 MB message: sent whole it would be refused for good. A case sync larger than ``max_bytes`` therefore
leaves as ``n`` parts of the same ``case.sync``, each a complete, self-describing envelope:

- ``part = {"sync": <id of the whole sync>, "index": i, "total": n}``: :func:`split_case_envelope` names the
  total in every part and takes the whole message's own (content-derived) id as the sync id; the module, which
  sends parts while it converts (``transport/case_sync.py``), names the total in the last part only and
  derives the sync id from what it converts. Either way the same case pushed twice yields the same parts,
  and a replayed part is recognised;
- its bundle holds the objects of its IRIS keys, the case's Case-Incident with ``object_refs`` naming just
  those objects (OpenCTI adds refs on upsert, so the parts together fill the case), the author and the
  markings: every reference a part makes resolves inside the part or to what OpenCTI already holds;
- ``produced`` and ``iris`` list only its keys (the case key in every part).

The module builds parts while it converts, a batch of IOCs at a time (``transport/case_sync.py``), so that it
never holds a big case whole; :func:`split_case_envelope` cuts an envelope built whole (the import connector's
reconcile). The import connector ingests each part as it comes, in any order and interleaved with other
events, and computes deletions (keys the case no longer has) only once it holds every part of the sync: never
from a partial one.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Set, Tuple

from iris_opencti_module.core.envelope import make_envelope
from iris_opencti_module.core.stix_ids import bundle_id

#: default ceiling of one message: a quarter of RabbitMQ 4's default ``max_message_size`` (16 MiB)
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: the smallest ceiling accepted (a part must hold the case, the author, the markings and some IOCs)
MIN_MESSAGE_BYTES = 64 * 1024
#: room kept in each part for the envelope's own fields
ENVELOPE_ROOM = 4096


def json_size(obj: Any) -> int:
    """Bytes of ``obj`` in a message (compact JSON, UTF-8)."""
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def part_budget(max_bytes: int, base: int) -> int:
    """Bytes a part may give its IRIS objects' STIX objects, once ``base`` (what every part carries) is taken:
    the sizes leave out JSON's separators and the envelope's id lists, so a tenth is kept in hand."""
    return max(int((max_bytes - base) * 0.9), max_bytes // 4)


def ids_cost(ids: Iterable[str], sizes: Dict[str, int]) -> int:
    """Bytes ``ids``' objects add to a part: the objects, their place in the case's ``object_refs`` and in
    ``produced``."""
    return sum(sizes.get(i, 0) + 2 * (len(i) + 3) for i in ids)


def key_cost(key: str, ids: Iterable[str], sizes: Dict[str, int]) -> int:
    """Bytes an IRIS key and the objects ``ids`` it brings add to a part."""
    return ids_cost(ids, sizes) + len(key) + 8


def split_case_envelope(envelope: Dict[str, Any], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
                        ) -> List[Dict[str, Any]]:
    """``[envelope]`` when it fits in ``max_bytes``, else its parts (see the module's docstring)."""
    bundle = envelope.get("bundle") or {}
    objects: List[Dict[str, Any]] = list(bundle.get("objects") or [])
    produced: Dict[str, List[str]] = envelope.get("produced") or {}
    sizes = {o["id"]: json_size(o) for o in objects}
    estimate = sum(sizes.values()) + json_size(produced) + json_size(envelope.get("skipped") or []) + ENVELOPE_ROOM
    if estimate <= max_bytes:
        return [envelope]
    case = envelope.get("case") or {}
    case_ref = case.get("ref")
    case_keys = [k for k in produced if k.startswith("case:")]
    keyed = {i for k, ids in produced.items() if not k.startswith("case:") for i in ids}
    incident = next((o for o in objects if o["id"] == case_ref), None)
    shared = [o for o in objects if o["id"] not in keyed and o["id"] != case_ref]  # author, markings
    bare_incident = dict(incident) if incident else None
    if bare_incident is not None:
        bare_incident.pop("object_refs", None)
    base = sum(json_size(o) for o in shared) + (json_size(bare_incident) if bare_incident else 0) + ENVELOPE_ROOM
    budget = part_budget(max_bytes, base)

    groups = _group_keys([k for k in produced if not k.startswith("case:")], produced, sizes, budget)
    skipped_groups = _group_skipped(envelope.get("skipped") or [], groups, produced, sizes, budget)
    total = len(skipped_groups)
    by_id = {o["id"]: o for o in objects}
    originals = _original_ids(envelope)
    parts = []
    for index, (keys, skipped) in enumerate(skipped_groups):
        ids = list(dict.fromkeys(i for k in keys for i in produced[k] if i != case_ref))
        part_objects = list(shared)
        if bare_incident is not None:
            part_incident = dict(bare_incident)
            wanted = set(ids)
            refs = [r for r in (incident or {}).get("object_refs") or [] if r in wanted]
            if refs:
                part_incident["object_refs"] = refs
            part_objects.append(part_incident)
        part_objects += [by_id[i] for i in ids if i in by_id]
        part_produced = {k: produced[k] for k in case_keys}
        part_produced.update({k: produced[k] for k in keys})
        part = make_envelope(
            envelope["event"], case.get("id"), case_name=case.get("name"),
            case_ref=case_ref, user=envelope.get("user"), time=envelope.get("time"), skipped=skipped,
            bundle={"type": "bundle", "id": bundle_id("%s|part %d/%d" % (bundle.get("id"), index, total)),
                    "objects": part_objects},
            produced=part_produced, covers=envelope.get("covers"), conversion=envelope.get("conversion"),
            ioc_ids=[originals.get(k, k.split(":", 1)[1]) for k in keys if k.startswith("ioc:")],
            asset_ids=[originals.get(k, k.split(":", 1)[1]) for k in keys if k.startswith("asset:")])
        part["part"] = {"sync": envelope["message_id"], "index": index, "total": total}
        parts.append(part)
    return parts


def _original_ids(envelope: Dict[str, Any]) -> Dict[str, Any]:
    """IRIS key -> the id as IRIS gave it (an int), so a part lists ids exactly as the whole message did."""
    iris = envelope.get("iris") or {}
    out = {f"ioc:{i}": i for i in iris.get("ioc_ids") or []}
    out.update({f"asset:{i}": i for i in iris.get("asset_ids") or []})
    return out


def _group_keys(keys: List[str], produced: Dict[str, List[str]], sizes: Dict[str, int], budget: int
                ) -> List[List[str]]:
    """Keys in their order, cut where the next key's objects would overflow the budget (a key larger than
    the budget gets a part of its own: one IRIS object is never split)."""
    groups: List[List[str]] = []
    current: List[str] = []
    seen: Set[str] = set()
    used = 0
    for key in keys:
        fresh = [i for i in produced[key] if i not in seen]
        # the objects, their place in the case's object_refs and in ``produced``
        cost = key_cost(key, fresh, sizes)
        if current and used + cost > budget:
            groups.append(current)
            current, seen, used = [], set(), 0
            fresh = list(produced[key])
            cost = key_cost(key, fresh, sizes)
        current.append(key)
        seen.update(fresh)
        used += cost
    if current or not groups:
        groups.append(current)
    return groups


def _group_skipped(skipped: List[Dict[str, Any]], groups: List[List[str]], produced: Dict[str, List[str]],
                   sizes: Dict[str, int], budget: int) -> List[Tuple[List[str], List[Dict[str, Any]]]]:
    """The skip reports spread over the parts' free room, in extra parts when they do not fit."""
    room = []
    for keys in groups:
        ids = {i for k in keys for i in produced[k]}
        room.append(budget - ids_cost(ids, sizes))
    out: List[Tuple[List[str], List[Dict[str, Any]]]] = [(keys, []) for keys in groups]
    index = 0
    for entry in skipped:
        cost = json_size(entry) + 1
        while index < len(out) and room[index] < cost and (out[index][0] or out[index][1]):
            index += 1  # full: the next part (an empty extra part takes even an oversized report)
        if index >= len(out):
            out.append(([], []))
            room.append(budget)
        out[index][1].append(entry)
        room[index] -= cost
    return out
