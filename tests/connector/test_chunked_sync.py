"""A case sync in parts, through the real connector, RabbitMQ and the strict OpenCTI simulator (issue 14).

The parts arrive shuffled, one of them twice, interleaved with single IOC events made in IRIS after the sync
was taken. Nothing may be deleted while a part is missing; once the last part is in, exactly the IOCs IRIS
no longer has are deleted; an IOC deleted in IRIS after the sync was taken is not brought back by a later
part, and an IOC created after it is not deleted by the sync's end.
"""

from __future__ import annotations

import random
import sqlite3
import time

from iris_opencti_module.core import stix_ids
from iris_opencti_module.core.convert import Converter, ConverterConfig, unwrap_export
from iris_opencti_module.core.envelope import encode
from tests.connector.harness import case_sync, ioc_event, publish, wait, wait_settled
from tests.module.samples import case_parts, load_export, make_ioc

CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))


def value(i: int) -> str:
    return "10.20.%d.%d" % (i // 256, i % 256)


def ip_id(i: int) -> str:
    return stix_ids.sco_id({"type": "ipv4-addr", "value": value(i)})


def export_with(ids):
    export = load_export()
    export["data"]["iocs"] = [make_ioc(i, "ip-dst", value(i)) for i in ids]
    export["data"]["assets"] = []
    return export


def case_refs(sim, export):
    ref = CONVERTER.convert_export(export).case_ref
    return set((sim.store.get(ref) or {}).get("object_refs") or [])


def test_parts_shuffled_and_interleaved_delete_only_once_complete(sim, queue, connector, tmp_path):
    before = export_with(range(1, 301))
    publish(queue, [case_sync(before)])
    proc = connector()
    wait(lambda: ip_id(300) in sim.store and ip_id(1) in sim.store, timeout=90, what="the first sync", proc=proc)
    wait_settled(sim, queue, proc)

    # the picture IRIS gives at the next sync: IOC 1 gone, 301..360 new
    now = export_with(range(2, 361))
    data = unwrap_export(now)
    parts = case_parts(CONVERTER, data["case"], data["iocs"], [], 65536)
    assert len(parts) >= 5
    time.sleep(0.01)  # the single events below are made in IRIS after the sync was taken
    deleted_later = ioc_event(now, "ioc.deleted", make_ioc(7, "ip-dst", value(7)))
    created_later = ioc_event(now, "ioc.created", make_ioc(9000, "ip-dst", value(9000)))

    with_7 = next(p for p in parts if 7 in p["iris"]["ioc_ids"])
    others = [p for p in parts if p is not with_7]
    last = others.pop()
    random.Random(14).shuffle(others)
    bodies = [encode(p) for p in others] + [encode(others[0])]  # one part twice
    publish(queue, bodies[: len(bodies) // 2] + [deleted_later, created_later] + bodies[len(bodies) // 2:]
            + [encode(with_7)])
    wait_settled(sim, queue, proc)

    assert ip_id(1) in sim.store, "IOC 1 was deleted while a part of the sync was still missing"
    assert ip_id(7) not in sim.store, "a part taken before IOC 7's deletion brought it back"
    assert ip_id(9000) in sim.store and ip_id(9000) in case_refs(sim, now)
    ledger = sqlite3.connect(str(tmp_path / "ledger.sqlite"))
    assert ledger.execute("SELECT count(*) FROM iris_sync_parts").fetchone()[0] == len(parts) - 1

    publish(queue, [encode(last)])
    wait(lambda: ip_id(1) not in sim.store, timeout=60, what="IOC 1 deleted once the sync is complete", proc=proc)
    wait_settled(sim, queue, proc)
    expected = (set(range(2, 361)) - {7}) | {9000}
    assert all(ip_id(i) in sim.store for i in expected)
    assert ip_id(7) not in sim.store
    refs = case_refs(sim, now)
    assert {ip_id(i) for i in expected} <= refs and ip_id(1) not in refs
    keys = {row[0] for row in ledger.execute("SELECT DISTINCT iris_key FROM iris_produced")}
    assert keys == {"ioc:%d" % i for i in expected} | {"case:{}".format(data["case"]["case_id"])}
    assert ledger.execute("SELECT count(*) FROM iris_sync_parts").fetchone()[0] == 0
    names = [w.get("name") for w in sim.works.values()]
    assert any("full sync complete, 1 object gone from IRIS" in (n or "") for n in names), names
    assert any("full sync part %d/%d" % (parts.index(last) + 1, len(parts)) in (n or "") for n in names), names

    # a part replayed after the end changes nothing and deletes nothing
    count = len(sim.store)
    publish(queue, [encode(others[1])])
    wait_settled(sim, queue, proc)
    assert len(sim.store) == count and ip_id(9000) in sim.store
    assert ledger.execute("SELECT count(*) FROM iris_sync_parts").fetchone()[0] == 0
    assert "Traceback" not in proc.log(), proc.log()[-3000:]
    assert [p["part"]["total"] for p in parts if "total" in p["part"]] == [len(parts)]  # named by the last
