"""Strict mode: several OpenCTI workers taking push-queue messages in no particular order.

A real deployment runs several workers on the same push queue (this project's compose file runs 3), each
taking the next message it is given and processing it for as long as it takes; nothing orders two messages
of one connector once they are in the queue.  The default simulator ingests them one at a time, in queue
order, which hides every ordering bug a connector can have.  In strict mode:

* the broker delivers up to ``prefetch`` unacknowledged messages (as each worker has a prefetch) and
  ``workers`` threads each take the oldest of those, as a worker's consumer handles its deliveries in the
  order the broker sent them: a message overtakes the ones before it when their workers are slower (a
  missing-reference retry) or held back (below), never because it was passed over. (An earlier version
  took a random one: a message could then wait behind hundreds of others, the author identity of a
  1,000-IOC case for 4 s while every worker retried objects that needed it, a stall OpenCTI never shows);
* the simulator ingests far faster than OpenCTI (a message rarely waits for a worker), so a fraction
  ``reorder`` of the messages is also held back for up to ``hold`` seconds when first taken (as if its
  worker were slow): the others flow past it meanwhile, which costs that message a few milliseconds and
  the throughput nothing;
* each message is handled as OpenCTI's worker does (``opencti-worker/src/push_handler.py``,
  ``PushHandler.handle_message``): a bundle of one object, or one sent with ``no_split``, is imported with
  pycti's ``OpenCTIStix2.import_bundle`` (re-split with ``OpenCTIStix2Splitter``, which sorts by dependency
  count and keeps one element per id; every element, and every incompatible one, reports one expectation);
  any other bundle is split again, its expectations added to the work and the pieces re-queued;
* an element whose references are not there yet is retried like pycti's
  ``OpenCTIStix2.import_item_with_retries`` (``utils/opencti_stix2.py``): while the retry count is below
  ``PROCESSING_COUNT`` it sleeps and tries again, then the element is reported in error on the work and
  dropped;
* :meth:`WorkerPool.drop_next` makes the next messages vanish without any report, as a worker's technical
  failure does (``handle_message`` answers "nack": the message is discarded, no expectation reported).

The only added latency is ``retry_delay`` before a missing-reference retry (pycti waits 1-3 s there) and
the hold-back above.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

LOG = logging.getLogger(__name__)

#: pycti ``utils/opencti_stix2.py``: ``PROCESSING_COUNT = 4``; ``import_item_with_retries`` retries a
#: ``MISSING_REFERENCE_ERROR`` while ``processing_count < PROCESSING_COUNT``, i.e. 4 retries, 5 attempts.
PROCESSING_COUNT = 4
MISSING_REFERENCE = "MISSING_REFERENCE_ERROR"


@dataclass
class Delivery:
    """A message taken from a push queue and not acknowledged yet."""

    connector_id: str
    message: Dict[str, Any]
    ack: Optional[Callable[[], None]]  # None: re-queued in memory by a worker, nothing to acknowledge
    held: bool = False  # held back once already


class WorkerPool:
    """``workers`` threads taking random deliveries out of a shared window."""

    def __init__(self, workers: int, process: Callable[[str, Dict[str, Any]], None],
                 on_error: Callable[[str], None], seed: Optional[int] = None, reorder: float = 0.3,
                 hold: float = 0.02) -> None:
        self.workers = max(1, int(workers))
        self.reorder = float(reorder)
        self.hold = float(hold)
        self._held: List[Tuple[float, int, Delivery]] = []  # heap of (due, n, delivery)
        self._seq = itertools.count()
        self.process = process
        self.on_error = on_error
        self._random = random.Random(seed)
        self._cond = threading.Condition()
        self._pending: List[Delivery] = []
        self._busy: Dict[str, int] = {}
        self._drop = 0
        self._stopping = False
        self._threads: List[threading.Thread] = []

    def start(self) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._run, name="opencti-sim-worker-%d" % n, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def submit(self, delivery: Delivery) -> None:
        """Called by the broker thread for each message it receives (and by workers re-queuing splits)."""
        with self._cond:
            self._pending.append(delivery)
            self._cond.notify()

    def drop_next(self, n: int) -> None:
        """The next ``n`` messages taken are discarded without reporting anything on their work."""
        with self._cond:
            self._drop += int(n)

    def take_pending(self, connector_id: str) -> List[Delivery]:
        """Remove the deliveries of one connector nobody started yet (its queue is being deleted)."""
        with self._cond:
            self._release(float("inf"))
            mine = [d for d in self._pending if d.connector_id == connector_id]
            self._pending = [d for d in self._pending if d.connector_id != connector_id]
            return mine

    def discard_acks(self) -> None:
        """The broker connection was lost: unacknowledged messages come back; pending ones are forgotten."""
        with self._cond:
            self._release(float("inf"))
            self._pending = [d for d in self._pending if d.ack is None]

    def wait_idle(self, connector_id: str, timeout: float = 5.0) -> None:
        """Wait until no worker is processing a message of ``connector_id``."""
        with self._cond:
            self._cond.wait_for(lambda: not self._busy.get(connector_id), timeout)

    def _release(self, now: float) -> None:
        """Held-back deliveries whose time came go back with the others (caller holds the lock)."""
        while self._held and self._held[0][0] <= now:
            self._pending.append(heapq.heappop(self._held)[2])

    def _next(self) -> Optional[Delivery]:
        """The oldest ready delivery (caller holds the lock); None when stopping."""
        while True:
            if self._stopping:
                return None
            self._release(time.monotonic())
            if self._pending:
                delivery = self._pending.pop(0)
                if not delivery.held and self.hold > 0 and self._random.random() < self.reorder:
                    delivery.held = True
                    due = time.monotonic() + self._random.uniform(0, self.hold)
                    heapq.heappush(self._held, (due, next(self._seq), delivery))
                    continue
                return delivery
            timeout = max(0.0, self._held[0][0] - time.monotonic()) if self._held else None
            self._cond.wait(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                delivery = self._next()
                if delivery is None:
                    return
                drop = self._drop > 0
                if drop:
                    self._drop -= 1
                self._busy[delivery.connector_id] = self._busy.get(delivery.connector_id, 0) + 1
            try:
                if not drop:
                    self.process(delivery.connector_id, delivery.message)
            except Exception as err:  # noqa: BLE001 - as the worker: a broken message is discarded
                self.on_error(f"strict worker: cannot process message: {err!r}")
            finally:
                if delivery.ack is not None:
                    try:
                        delivery.ack()
                    except Exception as err:  # noqa: BLE001 - connection gone: the broker redelivers
                        LOG.debug("ack failed: %r", err)
                with self._cond:
                    self._busy[delivery.connector_id] -= 1
                    self._cond.notify_all()


def split_like_pycti(bundle: Dict[str, Any]) -> Tuple[int, List[Dict[str, Any]], List[Dict[str, Any]]]:
    """``OpenCTIStix2Splitter.split_bundle_with_expectations`` (expectations, incompatible, one-object bundles).

    The splitter rewrites the objects it is given (refs, ``nb_deps``): ``bundle`` must be the caller's own, as
    a bundle just decoded from a message is (copying 4 MiB here again cost the simulator a tenth of its time)."""
    from pycti import OpenCTIStix2Splitter  # strict mode needs pycti, the default mode does not

    expectations, incompatible, bundles = OpenCTIStix2Splitter().split_bundle_with_expectations(
        bundle, False, bundle.get("x_opencti_event_version"))
    return expectations, incompatible, bundles


def requeued(message: Dict[str, Any], bundle: Dict[str, Any]) -> Dict[str, Any]:
    """``send_bundle_to_specific_queue``: the same message with another content."""
    again = dict(message)
    again["content"] = base64.b64encode(json.dumps(bundle).encode("utf-8")).decode("ascii")
    return again
