"""Steps of upserts in two halves (issue 14): a step's containers go behind the next step's head.

A big case in parts, through the real connector process, RabbitMQ and the strict OpenCTI simulator, with
bundles small enough (``IRIS_OPERATIONS_MAX_BYTES``) that each step has waves before its Case-Incident. The
works must overlap on OpenCTI's push queue (the next step's head arrives before the step's containers), and
nothing may be lost: every object in OpenCTI, the Case-Incident holding every ref, the sync closed once, also
when the connector is killed while a step's containers are still to go (its messages were not acknowledged:
they come again and are upserted again).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Dict, List

from iris_opencti_module.core.convert import Converter, ConverterConfig, unwrap_export
from iris_opencti_module.core.envelope import encode
from tests.connector.harness import publish, queue_depth, wait, wait_settled
from tests.module.samples import case_parts, load_export, make_ioc

CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))
IOCS = 7000  # 21,000 objects: three steps of at most 10,000 objects (connector.STEP_OBJECTS)
SMALL_BUNDLES = {"IRIS_OPERATIONS_MAX_BYTES": str(256 * 1024)}


def _case():
    export = load_export()
    data = unwrap_export(export)
    iocs = [make_ioc(n, "ip-dst", "10.%d.%d.%d" % (n // 65536, n // 256 % 256, n % 256)) for n in range(1, IOCS + 1)]
    data["iocs"], data["assets"] = iocs, []
    converted = CONVERTER.convert(data["case"], iocs, [])
    parts = case_parts(CONVERTER, data["case"], iocs, [], 1024 * 1024)
    assert len(parts) >= 3
    return converted, parts


class _Arrivals:
    """The work of each message taken off OpenCTI's push queue, in order of arrival."""

    def __init__(self, sim) -> None:
        self.works: List[str] = []
        self._lock = threading.Lock()
        sim.amqp.on_arrival = self._seen

    def _seen(self, message: Dict, _at: float) -> None:
        with self._lock:
            self.works.append(str(message.get("work_id")))

    def overlapping(self) -> int:
        """How many works had a message arrive after a later work's first one."""
        first = {}
        for n, work in enumerate(self.works):
            first.setdefault(work, n)
        last = {work: n for n, work in enumerate(self.works)}
        order = sorted(first, key=first.get)
        return sum(1 for a, b in zip(order, order[1:]) if last[a] > first[b])


def _all_in(sim, converted) -> bool:
    refs = set((sim.store.get(converted.case_ref) or {}).get("object_refs") or [])
    expected = {i for i in converted.objects if i != converted.case_ref and not i.startswith(("marking-definition",
                                                                                             "identity--"))}
    return expected <= refs and all(sim.store.get(i) is not None for i in converted.objects)


def test_a_steps_containers_go_behind_the_next_steps_head_and_nothing_is_lost(sim, queue, connector, tmp_path):
    converted, parts = _case()
    arrivals = _Arrivals(sim)
    proc = connector(**SMALL_BUNDLES)
    publish(queue, [encode(p) for p in parts])
    wait(lambda: _all_in(sim, converted), timeout=180, what="the whole case", proc=proc)
    wait_settled(sim, queue, proc)

    assert arrivals.overlapping() >= 1, "each step waited for the one before to be whole: nothing overlapped"
    assert all(w.get("status") == "complete" for w in sim.works.values())
    ledger = sqlite3.connect(str(tmp_path / "ledger.sqlite"))
    keys = {row[0] for row in ledger.execute("SELECT DISTINCT iris_key FROM iris_produced")}
    assert {"ioc:%d" % n for n in range(1, IOCS + 1)} <= keys
    assert ledger.execute("SELECT count(*) FROM iris_syncs_closed").fetchone()[0] == 1
    assert ledger.execute("SELECT count(*) FROM iris_sync_parts").fetchone()[0] == 0
    assert "Traceback" not in proc.log()


def test_killed_while_a_steps_containers_are_to_go_everything_arrives_after_the_restart(sim, queue, connector,
                                                                                       tmp_path):
    converted, parts = _case()
    arrivals = _Arrivals(sim)
    proc = connector(**SMALL_BUNDLES)
    publish(queue, [encode(p) for p in parts])
    # the second step's head is on its way: the first step is written to the ledger, its containers may not be
    wait(lambda: len(set(arrivals.works)) >= 2, timeout=120, what="the second step's head", proc=proc)
    proc.stop(kill=True)
    assert not _all_in(sim, converted), "killed too late to test anything"

    proc = connector(**SMALL_BUNDLES)
    wait(lambda: _all_in(sim, converted), timeout=180, what="the whole case after the restart", proc=proc)
    # the killed process's works stay open on OpenCTI's page (nobody can close them): wait for the sync instead
    ledger = sqlite3.connect(str(tmp_path / "ledger.sqlite"))
    wait(lambda: ledger.execute("SELECT count(*) FROM iris_syncs_closed").fetchone()[0] == 1, timeout=60,
         what="the sync closed", proc=proc)
    wait(lambda: queue_depth(queue) == 0, timeout=60, what="every message acknowledged", proc=proc)
    assert ledger.execute("SELECT count(*) FROM iris_sync_parts").fetchone()[0] == 0
    assert _all_in(sim, converted)
