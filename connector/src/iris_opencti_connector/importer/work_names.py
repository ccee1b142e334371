"""What an analyst reads in OpenCTI's works list (Data > Ingestion > Connectors > DFIR-IRIS).

One work per step of waiting messages: its name says what happened in IRIS, in IRIS's words, so the works
list doubles as a readable journal of the sync ("IRIS case #12: 3 IOCs created").
"""

from __future__ import annotations

from typing import Any, Dict, List

from iris_opencti_module.core.case_records import kind_label
from iris_opencti_module.core.envelope import part_label


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def work_name(envelope: Dict[str, Any]) -> str:
    """The name of one message's work: "IRIS case #12: full sync part 2/5 (4000 IOCs, 0 assets)"."""
    event = envelope["event"]
    case_id = (envelope.get("case") or {}).get("id")
    where = f"IRIS case #{case_id}" if case_id is not None else "IRIS"
    iris = envelope.get("iris") or {}
    kind, action = event.split(".", 1)
    if kind == "case":
        if action == "deleted":
            return f"{where} deleted"
        produced = envelope.get("produced") or {}
        iocs = sum(1 for k in produced if k.startswith("ioc:"))
        assets = sum(1 for k in produced if k.startswith("asset:"))
        part = envelope.get("part") or {}
        if part.get("end"):
            gone = len(iris.get("ioc_ids") or []) + len(iris.get("asset_ids") or [])
            return f"{where}: full sync complete, {plural(gone, 'object')} gone from IRIS"
        label = {"sync": "full sync", "created": "created", "updated": "updated"}[action]
        if part:
            label += " " + part_label(part)
        if action == "updated" and not iocs and not assets:
            return f"{where}: case updated"
        return f"{where}: {label} ({plural(iocs, 'IOC')}, {plural(assets, 'asset')})"
    if kind == "records":  # records.sync: all notes (or events, tasks, evidences) of the case
        covers = envelope.get("covers") or ["record"]
        record = str(covers[0])
        return f"{where}: {plural(len(iris.get(f'{record}_ids') or []), kind_label(record))} synced"
    if kind in ("ioc", "asset"):
        ids = iris.get("ioc_ids" if kind == "ioc" else "asset_ids") or []
        return f"{where}: {plural(len(ids), 'IOC' if kind == 'ioc' else 'asset')} {action}"
    ids = iris.get(f"{kind}_ids") or []
    return f"{where}: {plural(len(ids), kind_label(kind))} {action}"


def group_name(envelopes: List[Dict[str, Any]]) -> str:
    """The work name of several messages: "IRIS case #12: 37 IOCs created" when they agree."""
    cases = {(e.get("case") or {}).get("id") for e in envelopes}
    events = {e["event"] for e in envelopes}
    if len(cases) == 1 and len(events) == 1:
        kind, action = next(iter(events)).split(".", 1)
        ids = [i for e in envelopes for i in (e.get("iris") or {}).get(
            "ioc_ids" if kind == "ioc" else "asset_ids") or []]
        if kind in ("ioc", "asset"):
            return f"IRIS case #{next(iter(cases))}: {plural(len(ids), 'IOC' if kind == 'ioc' else kind)} {action}"
    counts: Dict[str, int] = {}
    for e in envelopes:
        counts[e["event"]] = counts.get(e["event"], 0) + 1
    events_text = ", ".join(f"{event} {n}" for event, n in sorted(counts.items()))
    return f"IRIS: {len(envelopes)} events ({events_text}) in {plural(len(cases), 'case')}"


def step_name(envelopes: List[Dict[str, Any]]) -> str:
    """One message's name, or the group's."""
    return work_name(envelopes[0]) if len(envelopes) == 1 else group_name(envelopes)
