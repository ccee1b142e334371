"""What the module really published from a real IRIS, replayed into the import connector.

``tests/data/real/iris-2.4.20-messages.jsonl`` and ``iris-2.5-messages.jsonl`` are the message bodies taken off
the module's queue while an analyst's actions ran on a real IRIS 2.4.20 (gunicorn's eventlet worker, Celery
worker) and a real IRIS 2.5 (develop branch), in a development session: a case, IOCs of many types (a
composite, an invalid IP, a TLP:RED one kept in IRIS), an asset, an IOC's value changed, IOCs deleted, an alert
escalated, both manual triggers, case updates, the case deleted. The test expects of OpenCTI only what the
messages themselves say: the ledger's keys follow them message by message, OpenCTI holds exactly what the
ledger says, nothing skipped in IRIS reaches OpenCTI, deleted cases and objects are gone.
"""

import json
import os
from typing import Any, Dict, List, Set

import pytest

from iris_opencti_connector.store.ledger import Ledger
from tests.connector.harness import HARSH_SIM, publish, queue_depth
from tests.connector.test_ordering import assert_honest_works, settle

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "real")
#: each recording with the real export of its main case, taken on the same IRIS during the same actions
RECORDINGS = [("iris-2.4.20-messages.jsonl", "iris-2.4.20-case-export-before-delete.json"),
              ("iris-2.5-messages.jsonl", "iris-2.5-case-export-after-deletes.json")]
WHOLE = ("case.created", "case.sync")


def recorded(name: str) -> List[Dict[str, Any]]:
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def expected_keys(messages: List[Dict[str, Any]]) -> Dict[str, Set[str]]:
    """case id -> the IRIS keys (``ioc:N``, ``asset:N``, ``case:N``) the ledger should hold after ``messages``."""
    cases: Dict[str, Set[str]] = {}
    for m in messages:
        case_id = str(m["case"]["id"])
        produced = {k for k, ids in (m.get("produced") or {}).items() if ids}
        if m["event"] == "case.deleted":
            cases.pop(case_id, None)
        elif m["event"] in WHOLE:
            cases[case_id] = produced
        elif m["event"].endswith(".deleted"):
            kind = m["event"].split(".")[0]
            gone = {f"{kind}:{i}" for i in m["iris"][f"{kind}_ids"]}
            cases.setdefault(case_id, set()).difference_update(gone)
        else:
            cases.setdefault(case_id, set()).update(produced)
    return cases


def ledger_keys(ledger: Ledger, case_ids) -> Dict[str, Set[str]]:
    out = {}
    for case_id in case_ids:
        keys = {k for k, ids in ledger.case_map(case_id).items() if ids}
        if keys:
            out[case_id] = keys
    return out


SIM_OPTIONS = HARSH_SIM  # conftest.py's ``sim`` fixture


@pytest.mark.parametrize("name,export", RECORDINGS)
def test_messages_recorded_on_a_real_iris_are_ingested_as_they_say(name, export, sim, queue, connector, tmp_path):
    messages = recorded(name)
    with open(os.path.join(DATA, export), encoding="utf-8") as handle:
        values = {i["ioc_id"]: i["ioc_value"] for i in json.load(handle)["data"]["iocs"]}
    assert len(messages) > 20
    author = next(o["created_by_ref"] for o in messages[0]["bundle"]["objects"] if o["type"] == "case-incident")
    case_ids = sorted({str(m["case"]["id"]) for m in messages})
    cut = next(i for i, m in enumerate(messages) if m["event"] == "case.deleted")
    ledger = Ledger("sqlite:///" + str(tmp_path / "ledger.sqlite"))
    proc = None
    for phase, part in enumerate((messages[:cut], messages[cut:])):
        seen = messages[:cut] if phase == 0 else messages
        want = expected_keys(seen)
        publish(queue, [json.dumps(m).encode() for m in part])
        proc = proc or connector()
        works = settle(sim, queue, proc, lambda want=want: ledger_keys(ledger, case_ids) == want)
        assert queue_depth(queue + ".dead") == 0, "a real message was dead-lettered"
        assert_honest_works(works)
        in_ledger: Set[str] = set()
        for case_id in want:
            ids = {i for values in ledger.case_map(case_id).values() for i in values}
            in_ledger |= ids
            case_ref = ledger.case_ref(case_id)
            held = set(sim.store[case_ref].get("object_refs", [])) - {author}
            assert held == ids - {case_ref}, (case_id, sorted(held ^ (ids - {case_ref})))
        text = json.dumps([sim.store.get(i) for i in list(sim.store)])
        refused = [s for m in seen for s in m.get("skipped") or [] if "TLP:RED" in s["reason"]]
        assert refused, "the recording holds a TLP:RED IOC kept in IRIS"
        for skipped in refused:  # the message names it by id only; its value is in the case export
            assert values[skipped["object_id"]] not in text, f"a TLP:RED value reached OpenCTI: {skipped}"
            assert not any("ioc:{}".format(skipped["object_id"]) in ledger.case_map(c) for c in case_ids)
        if phase == 0:  # what IRIS deleted is gone, unless an object IRIS still has produces it too
            produced = {i for m in seen for ids in (m.get("produced") or {}).values() for i in ids}
            stray = sorted(i for i in produced - in_ledger - {author}
                           if sim.store.get(i) is not None and not i.startswith("marking-definition--"))
            assert not stray, f"objects IRIS no longer has are still in OpenCTI: {stray[:5]}"
        else:
            for m in part:
                if m["event"] == "case.deleted" and m["case"].get("ref"):
                    assert sim.store.get(m["case"]["ref"]) is None, "deleted case {} still in OpenCTI".format(m["case"])
