"""``iris-opencti-import``: the OpenCTI external-import connector that receives IRIS's messages.

Per message: open a work named after what happened in IRIS, resolve deletions and updates against the ledger,
send the bundle with ``send_stix2_bundle`` so OpenCTI's workers ingest it natively, archive what came in and
what went out, close the work, and only then acknowledge the message. If OpenCTI or RabbitMQ fails, the
message stays unacknowledged and is retried with backoff; a message that cannot be understood goes to the
dead-letter queue with its reason, and the work says why.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Optional, Set, Tuple

from pycti import OpenCTIConnectorHelper, get_config_variable

from iris_opencti_connector.importer.ahead import Committed, NotAhead, Prepared, still_valid
from iris_opencti_connector.importer.consumer import QueueConsumer
from iris_opencti_connector.importer.errors import (
    CONTENT_ERRORS,
    EXIT_LEDGER_OUTAGE,
    LEDGER_ERRORS,
    LedgerOutage,
    PoisonMessage,
    Transient,
    outage_reason,
)
from iris_opencti_connector.importer.plan import (
    COMPLETE_EVENTS,
    CasePlan,
    MessagePlan,
    keep_first_case_ref,
    keys_of,
    plan_message,
    sync_end_envelope,
    with_field_patch,
)
from iris_opencti_connector.importer.reconcile import Reconciler
from iris_opencti_connector.importer.sending import (
    Sender,
    Stopping,
    WavePlan,
    WorkStalled,
    dependency_levels,
    wave_plan,
)
from iris_opencti_connector.importer.work_names import step_name
from iris_opencti_connector.settings import IrisSettings, load_config, prepare_config
from iris_opencti_connector.startup import open_archive, open_ledger, run_main, stop_helper
from iris_opencti_connector.store.ledger import (
    LeaderLock,
    LedgerOverlay,
    LedgerUnavailable,
    LockTarget,
    StepLocks,
    StepsLock,
)
from iris_opencti_module.core.conversion import differences
from iris_opencti_module.core.convert import Converter
from iris_opencti_module.core.envelope import encode
from iris_opencti_module.core.progress import Progress
from iris_opencti_module.core.stix_merge import merge_object

DEFAULTS = {"type": "EXTERNAL_IMPORT", "name": "DFIR-IRIS", "scope": "iris", "log_level": "info",
            "duration_period": "PT1H"}
HELD_REFS_QUERY = """
query IrisOpenCTIHeldRefs($id: String!) {
  %s(id: $id) {
    id
    objectLabel { id value }
    objectMarking { id standard_id }
  }
}
"""

STORED_QUERY = """
query IrisOpenCTIStored($filters: FilterGroup, $first: Int) {
  %s(filters: $filters, first: $first) {
    edges { node { id standard_id x_opencti_stix_ids } }
  }
}
"""

#: ids per existence query (``held_refs_only``)
STORED_CHUNK = 200

OWNERSHIP_QUERY = """
query IrisOpenCTIOwnership($id: String!) {
  stixCoreObject(id: $id) {
    id
    standard_id
    createdBy { id standard_id }
    containers { edges { node { id standard_id entity_type } } }
  }
}
"""


#: a step takes no more messages once it holds this many objects: what a step plans, merges and archives is
#: in memory at once, and other cases' events wait for the step's end (the parts of a big case, chunks.py,
#: go as several steps, and the events that arrived meanwhile go with the first one that has room)
STEP_OBJECTS = 10000
#: how many times a work's objects dropped for a missing reference are sent again (see _resend_refused)
RESEND_ROUNDS = 3
#: seconds a step may wait for the other replicas' steps (``StepsLock``) before the log says so: a replica
#: stuck in a step (OpenCTI not answering) holds back every removal until its work times out
STEPS_WAIT_WARNING = 30.0
#: a STIX object's values nest a few levels (extensions -> hashes, external references); deeper is not STIX
MAX_OBJECT_DEPTH = 32
#: OpenCTI keeps a work's first 100 errors only (``reportExpectation`` in the platform's ``work.js``)
WORK_ERRORS_KEPT = 100
#: OpenCTI's answer to a call naming a connector it does not hold (``FUNCTIONAL_ERROR``)
UNKNOWN_CONNECTOR = "No connector found with the specified ID"
#: objects whose refs point into their own step: the ones a parallel worker most often drops
CONTAINER_TYPES = frozenset({"case-incident", "report", "grouping", "note", "opinion", "observed-data"})


def too_deep(obj: Dict[str, Any], limit: int) -> Optional[str]:
    """The top-level field of ``obj`` whose value nests deeper than ``limit`` levels, if any. Iterative: a
    value deep enough to matter would break a recursive walk (the archive's scrub, ``json.dumps``)."""
    for field, value in obj.items():
        stack = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > limit:
                return field
            if isinstance(item, dict):
                stack.extend((v, depth + 1) for v in item.values())
            elif isinstance(item, list):
                stack.extend((v, depth + 1) for v in item)
    return None


def unsplittable(obj: Dict[str, Any]) -> Optional[str]:
    """Why pycti's splitter, which OpenCTI's worker runs on every bundle, would fail on ``obj`` (None: it would
    not): it hashes every ``*_ref`` and ``*_refs`` value, reads a relationship's two ends and calls ``.get`` on
    each external reference and kill chain phase (``OpenCTIStix2Splitter.enlist_element``). A failure there
    makes the worker drop the whole message unreported, and its work never completes."""
    for field, value in obj.items():
        if field.endswith("_ref") and value is not None and not isinstance(value, str):
            return f"field {field!r} must hold a STIX id (a string)"
        if field.endswith("_refs") and value is not None and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return f"field {field!r} must be a list of STIX ids (strings)"
        if field in ("external_references", "kill_chain_phases") and value is not None and not (
                isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            return f"field {field!r} must be a list of objects"
    if obj.get("type") == "relationship" and not (obj.get("source_ref") and obj.get("target_ref")):
        return "a relationship needs 'source_ref' and 'target_ref'"
    return None


def merge_objects(groups: Iterable[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """One object per id across several messages' bundles, in queue order, by the converter's own rule
    (``stix_merge.merge_object``: references and labels add up, a later message's other values win)."""
    merged: Dict[str, Dict[str, Any]] = {}
    for objects in groups:
        for obj in objects:
            known = merged.get(obj["id"])
            if known is None:
                merged[obj["id"]] = dict(obj)
            else:
                merge_object(known, obj)
    return list(merged.values())


@dataclass
class _Step:
    """A step under way: its messages (indices into the group), plans, work, upserts and their waves, and the
    archive records submitted for it (the ledger commit and the acknowledgement wait for them)."""

    taken: List[int]
    plans: List[MessagePlan]
    items: List[Tuple[Dict[str, Any], bytes]]
    name: str
    work_id: str
    upserts: List[Dict[str, Any]]
    waves: WavePlan
    seed: str
    meta: Dict[str, Any]
    archived: List[Tuple[str, Future]]
    #: how many of ``waves`` were sent (a pipelined step goes in several calls)
    sent: int = 0
    #: its work was closed in error (a failure is reported once, wherever it is caught)
    failed: bool = False
    #: its hold of the steps lock (``StepsLock``), ended once its last wave was reported
    held: Optional[Tuple[int, bool]] = None

    def summary(self) -> str:
        """The first words of its work's summary."""
        return "%s: %d objects upserted" % (self.name, len(self.upserts))

    def pipelined(self) -> bool:
        """Whether the step can go as head, commit, containers (see ``ImportConnector.process_group``): only
        upserts, and waves before its containers."""
        return 0 < self.waves.head < len(self.waves.waves) and not any(p.operations() for p in self.plans)


def _not_ahead(stix_id: str, _case_ref: Optional[str]) -> bool:
    """The ownership question a step planned ahead may not ask (see ahead.py)."""
    raise NotAhead(f"who owns {stix_id} is asked once the step before is in OpenCTI")


class ImportConnector(QueueConsumer):
    """Consumes the IRIS queue and gets every message into OpenCTI, exactly once in effect."""

    def __init__(self, config: Optional[Dict[str, Any]] = None, *, helper: Any = None, ledger: Any = None,
                 archive: Any = None) -> None:
        """``config`` as ``config.yml`` holds it (read from there when None). ``helper`` (pycti's
        ``OpenCTIConnectorHelper``), ``ledger`` and ``archive`` are built from it unless passed in: unit tests
        pass small fakes, integration tests the real ones against the simulator."""
        config = prepare_config(config if config is not None else load_config())
        connector = config.setdefault("connector", {})
        for key, value in DEFAULTS.items():
            connector.setdefault(key, value)
        self.settings = IrisSettings.from_config(config)
        self._leader: Optional[LeaderLock] = None  # set while this replica is the one consuming (standby mode)
        # the stores first: pycti's helper would turn a failure here into a silent SIGTERM (see startup.py)
        try:
            self.ledger = ledger or open_ledger(self.settings.ledger, self.settings.ledger_outage_timeout)
        except LedgerUnavailable as exc:  # waited for the bound already; main prints why and exits 3
            raise LedgerOutage(outage_reason(exc, self.settings.ledger_outage_timeout)) from exc
        # replicas side by side: steps that remove anything run alone (see StepsLock)
        self._steps: Optional[StepsLock] = StepsLock(self.ledger) if self.ledger.shared else None
        self.archive = archive or open_archive(self.settings.archive_dir, self.settings.archive_retention_days)
        self.helper = helper or OpenCTIConnectorHelper(config)
        self.converter = Converter(self.settings.converter_config())
        self.author_id = str(self.converter.author["id"])
        self.duration = str(get_config_variable("CONNECTOR_DURATION_PERIOD", ["connector", "duration_period"], config,
                                                default=DEFAULTS["duration_period"]))
        self._stop = threading.Event()
        self._process_lock = threading.Lock()  # consumption and the reconcile thread, one step at a time
        self.dead_letter_queue = self.settings.queue + ".dead"
        self.max_group = max(1, int(get_config_variable("CONNECTOR_BATCH_SIZE", ["connector", "batch_size"], config,
                                                        isNumber=True, default=200) or 200))
        # sending (see sending.py): waits on OpenCTI's workers between ordered steps
        self._waiting = threading.local()
        self.sender = Sender(self.helper, self.author_id, self.settings.operations_max_bytes,
                             self.settings.work_timeout, stopping=self._stop.is_set, sleep=self._wait_sleep)
        self._conversions_seen: Set[Any] = {self.converter.conversion["fingerprint"]}
        # the archive is written beside the sending, while the step waits on OpenCTI's workers, in order
        # (one thread); a step's records are all written before its ledger commit and acknowledgement
        self._archiving = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iris-opencti-archive")
        # the next step is planned on this thread while the current one is in OpenCTI's hands (ahead.py)
        self._planning = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iris-opencti-plan")
        self.reconciler = Reconciler(self.settings, self.converter, self.ledger, self.helper.connector_logger,
                                     self.process)

    # ------------------------------------------------------------------------------------- ownership
    def may_delete(self, stix_id: str, case_ref: Optional[str]) -> bool:
        """True when OpenCTI says IRIS is the object's sole author and no other container holds it."""
        if stix_id.startswith(("relationship--", "sighting--")):
            return True  # relationships and sightings are IRIS's own statements (ids derive from IRIS's objects)
        try:
            result = self.helper.api.query(OWNERSHIP_QUERY, {"id": stix_id})
        except Exception as exc:  # any failure to ask OpenCTI is worth a retry
            raise Transient(f"ownership of {stix_id}: {exc}") from exc
        obj = (result.get("data") or {}).get("stixCoreObject")
        if not obj:
            return False  # never ingested (or already gone): nothing to delete
        author = (obj.get("createdBy") or {}).get("standard_id")
        if author != self.author_id:
            return False
        containers = [(e.get("node") or {}).get("standard_id") for e in ((obj.get("containers") or {})
                                                                           .get("edges") or [])]
        return all(c == case_ref for c in containers)

    def held_refs_only(self, operations: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Label and marking removals rewritten onto what OpenCTI holds on each object.

        OpenCTI refuses a patch naming a ref the object does not hold, and stores labels under its own ids:
        each removal is read back (once its upserts were reported) and keeps only the labels (matched by value,
        as OpenCTI compares them) and markings really there; a patch left empty is not sent at all.
        """
        out: List[Dict[str, Any]] = []
        for op in operations:
            patches = op.get("opencti_field_patch") or []
            if op.get("opencti_operation") == "patch" and [p.get("key") for p in patches] == ["objects"]:
                refs = self._stored(patches[0].get("value") or [])
                if refs:
                    out.append(with_field_patch(op, [dict(patches[0], value=sorted(refs))]))
                continue
            if op.get("opencti_operation") != "patch" or not any(
                    p.get("key") in ("objectLabel", "objectMarking") for p in patches):
                out.append(op)
                continue
            field = "stixCoreRelationship" if op["id"].startswith("relationship--") else "stixCoreObject"
            try:
                result = self.helper.api.query(HELD_REFS_QUERY % field, {"id": op["id"]})
            except Exception as exc:  # any failure to ask OpenCTI is worth a retry
                raise Transient("labels and markings of {}: {}".format(op["id"], exc)) from exc
            held = (result.get("data") or {}).get(field) or {}
            labels = {(lab.get("value") or "").lower(): lab.get("id") for lab in held.get("objectLabel") or []}
            markings = {m.get("standard_id") for m in held.get("objectMarking") or []}
            kept = []
            for patch in patches:
                wanted = patch.get("value") or []
                if patch.get("key") == "objectLabel":
                    ids = [labels[v.lower()] for v in wanted if v.lower() in labels]
                else:
                    ids = [v for v in wanted if v in markings]
                if ids:
                    kept.append(dict(patch, value=sorted(set(ids))))
            if kept:
                out.append(with_field_patch(op, kept))
        return out

    def _stored(self, ids: List[str]) -> Set[str]:
        """Those of ``ids`` OpenCTI holds (an object a worker dropped was never stored, and a case patch
        naming it would be refused whole, taking the other removals with it)."""
        found: Set[str] = set()
        wanted = sorted(set(ids))
        for field, group in (("stixCoreRelationships", [i for i in wanted if i.startswith("relationship--")]),
                             ("stixCoreObjects", [i for i in wanted if not i.startswith("relationship--")])):
            for start in range(0, len(group), STORED_CHUNK):
                chunk = group[start:start + STORED_CHUNK]
                filters = {"mode": "and", "filterGroups": [], "filters": [
                    {"key": ["ids"], "values": chunk, "operator": "eq", "mode": "or"}]}
                try:
                    result = self.helper.api.query(STORED_QUERY % field, {"filters": filters, "first": len(chunk)})
                except Exception as exc:  # any failure to ask OpenCTI is worth a retry
                    raise Transient("which of %d objects OpenCTI holds: %s" % (len(chunk), exc)) from exc
                for edge in ((result.get("data") or {}).get(field) or {}).get("edges") or []:
                    node = edge.get("node") or {}
                    found.update({node.get("standard_id"), *(node.get("x_opencti_stix_ids") or [])} & set(chunk))
        return found

    # -------------------------------------------------------------------------------------- messages
    def check(self, envelope: Dict[str, Any]) -> None:
        """Refuse, before anything reaches OpenCTI, a bundle no retry could ever send."""
        for obj in (envelope.get("bundle") or {}).get("objects") or []:
            # pycti's splitter hashes the type and the id: anything else stops OpenCTI's worker on the message
            # before it reports anything, and the work never completes
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) \
                    or not isinstance(obj.get("type"), str) or not obj["type"] \
                    or not obj["id"].startswith(obj["type"] + "--"):
                raise PoisonMessage(f"bundle holds an object without a valid 'id'/'type': {obj!s:.200}")
            why = unsplittable(obj)
            if why is not None:
                raise PoisonMessage("bundle object %s: %s" % (obj["id"], why))
            field = too_deep(obj, MAX_OBJECT_DEPTH)
            if field is not None:
                raise PoisonMessage("bundle object %s: field %r nests deeper than %d levels (no STIX object "
                                    "does; the archive and pycti would fail on it)" % (
                                        obj["id"], field, MAX_OBJECT_DEPTH))

    def plan(self, envelope: Dict[str, Any], ledger: Any, ahead: bool = False) -> MessagePlan:
        """The message's plan against ``ledger``; ``ahead``: planned before the step before it is in OpenCTI,
        where asking OpenCTI who owns an object is refused (:class:`~.ahead.NotAhead`)."""
        self.check(envelope)
        self._check_conversion(envelope)
        try:
            return plan_message(keep_first_case_ref(envelope, ledger), ledger,
                                _not_ahead if ahead else self.may_delete)
        except Transient:
            raise
        except LEDGER_ERRORS + (LedgerUnavailable,) as exc:  # the ledger's database failed, not the message
            raise Transient(f"read the ledger: {type(exc).__name__}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PoisonMessage(f"cannot resolve the message: {type(exc).__name__}: {exc}") from exc

    def _check_conversion(self, envelope: Dict[str, Any]) -> None:
        """Warn, once per distinct setting set, when the module converts with other settings than this
        connector (``core.conversion``): its messages are still ingested as they are, but reconcile will leave
        those cases alone until both sides agree."""
        theirs = envelope.get("conversion")
        if not theirs or theirs.get("fingerprint") in self._conversions_seen:
            return
        self._conversions_seen.add(theirs.get("fingerprint"))
        diffs = differences(self.converter.conversion, theirs, "this connector", "the module")
        if diffs:
            self.helper.connector_logger.warning(
                "the IRIS module converts with other settings than this connector; reconcile refuses its cases "
                "until they agree", {"case": (envelope.get("case") or {}).get("id"), "differences": diffs})

    def process(self, envelope: Dict[str, Any], body: bytes) -> str:
        """One message: see :meth:`process_group`."""
        return self.process_group([(envelope, body)])

    def process_group(self, items: List[Tuple[Dict[str, Any], bytes]],
                      done: Optional[Callable[[List[int]], None]] = None) -> str:
        """Messages taken together, cut into steps that each get one work; returns the first work's id.

        Each step is written to the ledger before the next one is planned, so the next step sees its effect in
        the ledger itself and in OpenCTI. A step takes messages in queue order from every case at once (see
        :meth:`_form_step`): a removal in one case holds back only that case's later messages, not the other
        cases'. ``done(indices)`` is told after each step which of ``items`` are now safely in OpenCTI and the
        ledger (the consumer acknowledges them), so a failure in a later step never sends an earlier step
        again. Raises on any failure: a step not acknowledged is redelivered and resolves the same way again.

        A step of upserts alone (a part of a big case, a burst of creations) goes in two halves, so that
        OpenCTI's workers are never idle while the connector plans, commits and acknowledges: its head (every
        wave before its containers) is sent and, once reported, written to the ledger; its containers follow
        behind the next step's head, and it is acknowledged once they are reported too. A redelivery of a step
        whose ledger was written but which was not acknowledged upserts everything again, as the first time.
        Anything else (a removal, the end of a sync) waits until nothing is under way: in this replica by this
        order, in the others by holding the steps lock alone (``StepsLock``; a step learns that it removes
        something from its plan, and is then planned again once it holds the lock alone).
        """
        with self._process_lock:  # one step at a time: the reconcile thread shares the ledger
            first_work: Optional[str] = None
            remaining = list(range(len(items)))
            ahead: Optional["Future[Optional[Prepared]]"] = None
            committed: Optional[Committed] = None
            tail: Optional[_Step] = None  # a step whose containers are still to go
            alone = False  # the next step removes something: it holds the steps lock alone
            wait_first = False  # the last round could take no message's locks: wait for the first one's
            acknowledge = done or (lambda _taken: None)
            try:
                while remaining or tail is not None:
                    if tail is not None and (not remaining or self._ends_a_sync(tail.plans)):
                        self._finish(tail)
                        self._end_syncs(tail.plans)  # before its acknowledgement, see _end_syncs
                        acknowledge(tail.taken)
                        tail = None
                        continue
                    # what each message must lock, read once for the round (the ledger is read for a deletion
                    # without its case), and whether one of them names an object no case holds yet
                    targets, unheld = self._lock_targets(items, remaining)
                    held = self._hold(alone or unheld)
                    step: Optional[_Step] = None
                    try:
                        # advisory locks across plan -> send -> commit (PostgreSQL ledgers, see StepLocks),
                        # released by the commit
                        with self.ledger.step_locks(self._leader) as locks:
                            if locks is not None and wait_first:
                                locks.take(targets[remaining[0]], wait=True)
                            if locks is not None:  # one round trip for the whole group's locks
                                locks.prefetch(t for i in remaining for t in targets[i])
                            prepared = self._prepared(ahead, committed, remaining, locks, targets)
                            if prepared is not None:
                                taken, plans = prepared.taken, prepared.plans
                            else:
                                taken, plans = self._form_step(items, remaining, locks=locks, needs=targets)
                            wait_first = not taken
                            if not taken:  # another replica holds what every message writes: wait, then
                                ahead = None
                                continue
                            if held is not None and not held[1] and any(p.operations() for p in plans):
                                alone, ahead = True, None  # planned again, alone (see StepsLock)
                                continue
                            alone = False
                            chosen = set(taken)
                            rest = [i for i in remaining if i not in chosen]
                            # the next step is planned ahead once OpenCTI's workers are busy with this one
                            started: List["Future[Optional[Prepared]]"] = []
                            plan_next = (lambda rest=rest, plans=plans, started=started: started.append(
                                self._planning.submit(self._plan_ahead, items, rest, plans))) if rest else None
                            step = self._open_step(items, taken, plans, prepared)
                            step.held, held = held, None
                            first_work = first_work or step.work_id
                            try:
                                if step.pipelined() and hasattr(self.sender, "send_waves"):
                                    # what the step before's head brought (reported before its commit) need
                                    # not be waited for again
                                    self._send_waves(step, step.waves.head, frozenset(
                                        tail.waves.held_before(tail.waves.head)) if tail is not None else frozenset())
                                    # archived while OpenCTI ingests it (awaited before the ledger commit)
                                    step.archived.append(("archive the bundle", self._archive_later(
                                        self.archive.record_bundle, self.sender.as_bundle(step.upserts, step.seed),
                                        work_id=step.work_id, **step.meta)))
                                    if plan_next is not None:
                                        plan_next()
                                    if tail is not None:  # its containers go while this step's head is ingested
                                        self._finish(tail)
                                        acknowledge(tail.taken)
                                        tail = None
                                    self._on_sending_failure(step, self.sender.wait, step.work_id)
                                    self._send_waves(step, step.sent + 1)  # its first containers, while it commits
                                    committed = self._commit(step)
                                    tail, step = step, None
                                else:
                                    self.sender.on_long_wait = plan_next
                                    if tail is not None:
                                        self._finish(tail)
                                        acknowledge(tail.taken)
                                        tail = None
                                    committed = self._process_step(step)
                            except BaseException:
                                if tail is not None and step is not None:  # a tail failed behind this step's head
                                    self._close_in_error(step, "an earlier step failed")
                                raise
                            finally:
                                self.sender.on_long_wait = None
                                ahead = started[0] if started else None
                    finally:
                        self._release(held)
                        if step is not None:  # sent whole, or failed: its hold ends here
                            self._release(step.held)
                    if step is not None:  # sent whole: done
                        self._end_syncs(plans)
                        acknowledge(taken)
                    remaining = rest
            except BaseException:
                if tail is not None:  # not acknowledged: redelivered and upserted again
                    self._close_in_error(tail, "a later step failed")
                raise
            finally:
                if tail is not None:
                    self._release(tail.held)
            return first_work or ""

    def _ends_a_sync(self, plans: List[MessagePlan]) -> bool:
        """Whether these plans brought the last part of a sync (whose end, with its deletions, must come once
        nothing else is under way)."""
        for plan in plans:
            for case in plan.cases:
                if case.sync_part:
                    state = self._io("read the ledger", self.ledger.sync_state, case.case_id, case.sync_part[0])
                    if state is not None and state.due:
                        return True
        return False

    def _form_step(self, items: List[Tuple[Dict[str, Any], bytes]], remaining: List[int],
                   overlay: Optional[LedgerOverlay] = None, ahead: bool = False,
                   locks: Optional[StepLocks] = None, needs: Optional[Dict[int, List[LockTarget]]] = None
                   ) -> Tuple[List[int], List[MessagePlan]]:
        """The messages of the next step (indices into ``items``, in queue order) and their plans.

        Order matters within a case, not across independent cases. So a message waits for a later step, and
        holds back every later message of its cases, when it cannot go with what the step already has:
        - it removes something and its case already has a message in the step (what it removes may be
          created by this very step: it is planned again once OpenCTI holds the step and can say who owns
          it), or its case already removes something in the step (upserts go out before removals, so a
          re-creation would be undone);
        - it upserts an object the step's removals act on, or removes or patches one the step upserts or
          already acts on (another case's IOC of the same value: the step's order would decide who wins);
        - the step would grow past ``STEP_OBJECTS``.
        The first message always goes, so every step makes progress, unless another replica holds its locks
        (``locks``, see ``StepLocks``; ``needs``: each message's, from :meth:`_lock_targets`): a message whose
        locks cannot be taken now waits, with every later message of its cases, and so does a deletion without
        its case that turns out to hold a case not locked. ``overlay``: the ledger as a step not committed yet
        leaves it; ``ahead``: see :meth:`plan`.
        """
        overlay = overlay if overlay is not None else LedgerOverlay(self.ledger)
        taken: List[int] = []
        plans: List[MessagePlan] = []
        blocked: Set[str] = set()  # cases whose next message waits for a later step
        in_step: Set[str] = set()  # cases with a message in the step
        upserted: Set[str] = set()  # ids the step upserts
        targets: Set[str] = set()  # ids the step's removals and patches act on
        objects = 0
        for index in remaining:
            envelope = items[index][0]
            named = {str(c) for c in [(envelope.get("case") or {}).get("id")] if c is not None}
            if named & blocked or (locks is not None and not locks.take((needs or {}).get(index, []))):
                blocked |= named
                continue
            size = len((envelope.get("bundle") or {}).get("objects") or [])
            if plans and objects + size > STEP_OBJECTS:
                blocked |= named  # the parts of a big case stay separate steps (see STEP_OBJECTS)
                continue
            plan = self.plan(envelope, overlay, ahead)
            cases = named | {c.case_id for c in plan.cases}
            if locks is not None and cases - locks.cases():  # a deletion's case, written meanwhile
                blocked |= cases
                continue
            operations = plan.operations()
            op_ids = {str(op.get("id")) for op in operations}
            up_ids = {str(o.get("id")) for o in plan.upserts if isinstance(o, dict)}
            if plans and (cases & blocked or (operations and cases & in_step) or up_ids & targets
                          or op_ids & (upserted | targets)):
                blocked |= cases
                continue
            overlay.apply(plan)
            taken.append(index)
            plans.append(plan)
            in_step |= cases
            objects += len(plan.upserts)
            upserted |= up_ids
            targets |= op_ids
            if operations:
                blocked |= cases
        return taken, plans

    def _plan_ahead(self, items: List[Tuple[Dict[str, Any], bytes]], rest: List[int],
                    current: List[MessagePlan]) -> Optional[Prepared]:
        """The step after ``current``, planned while ``current`` is being sent (see ahead.py); None when it
        cannot be planned yet (a removal, an error: the step is then planned when it comes, as always)."""
        try:
            named = {str((items[i][0].get("case") or {}).get("id")) for i in rest
                     if (items[i][0].get("case") or {}).get("id") is not None}
            seen = self.ledger.case_versions(named | {c.case_id for p in current for c in p.cases})
            overlay = LedgerOverlay(self.ledger)
            for plan in current:
                overlay.apply(plan)
            taken, plans = self._form_step(items, rest, overlay, ahead=True)
            if any(plan.operations() for plan in plans):
                return None
            if any((items[i][0].get("case") or {}).get("id") is None for i in taken):
                return None  # its cases are found in the ledger, which the write counts of its cases cannot vouch for
            upserts = merge_objects(p.upserts for p in plans)
            return Prepared(taken, plans, upserts, wave_plan(upserts, self.settings.operations_max_bytes), seen)
        except NotAhead:
            return None
        except Exception as exc:  # noqa: BLE001 - an optimisation only: the step is planned again when it comes
            logging.getLogger(__name__).debug("next step not planned ahead: %s: %.300s", type(exc).__name__, exc)
            return None

    def _prepared(self, ahead: Optional["Future[Optional[Prepared]]"], committed: Optional[Committed],
                  remaining: List[int], locks: Optional[StepLocks] = None,
                  targets: Optional[Dict[int, List[LockTarget]]] = None) -> Optional[Prepared]:
        """The step planned ahead, if it is still what planning it now would give (``ahead.still_valid``) and
        this replica could take its locks."""
        if ahead is None:
            return None
        prepared = ahead.result()
        if prepared is None or not prepared.taken or prepared.taken[0] != remaining[0]:
            return None
        if locks is not None and not all(locks.take((targets or {}).get(i, [])) for i in prepared.taken):
            return None
        now = self._io("read the ledger", self.ledger.case_versions, prepared.cases())
        return prepared if still_valid(prepared, committed, now) else None

    def _io(self, what: str, call: Callable[..., Any], *args: Any, blame_content: bool = True, **kwargs: Any) -> Any:
        """Run a call to OpenCTI, RabbitMQ, the archive or the ledger: any failure of it is worth a retry.

        pycti reports an OpenCTI error as a ``ValueError``, requests as ``OSError``, the ledger with its driver's
        own errors: the exception's type cannot tell a fault of the message from a fault of a service, the
        place of the call can. Everything outside such calls that fails is the message's fault (poison).
        In a call that handles the message's content (``blame_content``), a programming-type error (a value of
        the wrong type, a missing key, a value too deep) is the message's too: it would fail the same way on
        every retry, so it is poison, not a fault of OpenCTI.
        """
        try:
            return call(*args, **kwargs)
        except (Transient, PoisonMessage):
            raise
        except CONTENT_ERRORS as exc:
            if not blame_content:
                raise Transient(f"{what}: {type(exc).__name__}: {exc}") from exc
            self.helper.connector_logger.error(f"cannot {what}: the message's content fails it", {
                "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                "traceback": traceback.format_exc()[-3000:]})
            raise PoisonMessage(f"{what}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # classified by where it happened, see above
            raise Transient(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _open_step(self, items: List[Tuple[Dict[str, Any], bytes]], taken: List[int], plans: List[MessagePlan],
                   prepared: Optional[Prepared] = None) -> _Step:
        """A step's work opened and its messages handed to the archive; its upserts and their waves (those
        cut ahead of time when ``prepared``)."""
        chosen = [items[i] for i in taken]
        envelopes = [envelope for envelope, _ in chosen]
        if prepared is not None:
            upserts, waves = prepared.upserts, prepared.waves
        else:
            upserts = merge_objects(p.upserts for p in plans)
            waves = wave_plan(upserts, self.settings.operations_max_bytes)
        first = envelopes[0]
        meta = {"case_id": (first.get("case") or {}).get("id"), "event": first["event"],
                "message_id": first.get("message_id") if len(chosen) == 1 else None}
        seed = ",".join(str(e.get("message_id")) for e in envelopes)
        name = step_name(envelopes)
        work_id = self._io("open an OpenCTI work", self._open_work, name, blame_content=False)
        archived: List[Tuple[str, Future]] = [("archive the messages", self._archive_later(
            self.archive.record_messages, [(body, {
                "work_id": work_id, "case_id": (envelope.get("case") or {}).get("id"), "event": envelope["event"],
                "message_id": envelope.get("message_id")}) for envelope, body in chosen]))]
        return _Step(taken, plans, chosen, name, work_id, upserts, waves, seed, meta, archived)

    def _process_step(self, step: _Step) -> Committed:
        """A step sent whole: the bundles (archived beside their sending), the ledger, the work closed; see
        :meth:`process_group`. Returns what the ledger commit found (see ahead.py)."""
        try:
            with self._failing(step):
                self.sender.prepared = (step.upserts, step.waves)
                summary = step.summary() + self._io(
                    "send to OpenCTI", self._unwrap_wait, self._send, step.upserts, step.plans, step.work_id,
                    step.meta, seed=step.seed, archived=step.archived)
        finally:
            self.sender.prepared = None
        committed = self._commit(step)
        self._end_work(step, summary)
        return committed

    def _send_waves(self, step: _Step, stop: int, known: FrozenSet[str] = frozenset()) -> None:
        """A pipelined step's waves up to ``stop``, each once the work reported the one before (see
        :meth:`process_group` and ``Sender.send_waves``)."""
        self._on_sending_failure(step, self.sender.send_waves, step.waves, step.work_id, step.seed, step.sent, stop,
                                 known)
        step.sent = stop

    def _on_sending_failure(self, step: _Step, call: Callable[..., Any], *args: Any) -> Any:
        """``call`` to OpenCTI for ``step``: on failure its work is closed in error (a retry opens another)."""
        with self._failing(step):
            return self._io("send to OpenCTI", self._unwrap_wait, call, *args)

    @contextmanager
    def _failing(self, step: _Step) -> Iterator[None]:
        """Whatever fails in the block closes the step's work in error: a retry opens a new work, and this one
        must not stay "in progress" for ever on OpenCTI's page."""
        try:
            yield
        except Exception as exc:
            self._close_in_error(step, str(exc))
            raise

    def _close_in_error(self, step: _Step, reason: str) -> None:
        """Close the step's work in error, once (the failure may be caught at several depths)."""
        if not step.failed:
            step.failed = True
            self._close_work(step.work_id, f"not processed, will retry: {reason[:300]}", in_error=True)

    @staticmethod
    def _unwrap_wait(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A stalled work or a stop is a fault of the moment, retried as such (the caller closes the work in
        error; the step is retried)."""
        try:
            return call(*args, **kwargs)
        except (WorkStalled, Stopping) as exc:
            raise Transient(str(exc)) from exc

    def _commit(self, step: _Step) -> Committed:
        """The step's archive records, then its ledger writes (see :meth:`_commit_ledger`)."""
        with self._failing(step):
            for what, record in step.archived:
                self._io(what, record.result)
            step.archived = []
            return self._io("write the ledger", self._commit_ledger, step.plans)

    def _finish(self, step: _Step) -> None:
        """The rest of a step whose head was sent and written to the ledger (see :meth:`process_group`): its
        containers, each wave once the work reported the one before; what OpenCTI dropped sent again; the work
        closed."""
        def rest() -> Tuple[Any, int]:
            self.sender.send_waves(step.waves, step.work_id, step.seed, step.sent)
            progress = self.sender.wait(step.work_id)
            return self._resend_refused(progress, step.work_id, step.seed, step.meta, step.upserts)

        progress, resent = self._on_sending_failure(step, rest)  # its bundle was archived before its commit
        self._release(step.held)
        step.held = None
        self._end_work(step, step.summary() + self._refused_summary(progress, resent))

    def _end_work(self, step: _Step, summary: str) -> None:
        """The messages are in OpenCTI and the ledger: the work is closed as done, with what IRIS skipped."""
        skipped = [s for e, _ in step.items for s in e.get("skipped") or []]
        if skipped:
            summary += "; %d skipped in IRIS: %s" % (len(skipped), "; ".join(
                "{} {}: {}".format(s.get("kind"), s.get("object_id"), s.get("reason")) for s in skipped[:5]))
        self._close_work(step.work_id, summary)
        self.helper.connector_logger.info(summary, {"work_id": step.work_id})

    def _open_work(self, name: str) -> str:
        """A new work; when OpenCTI no longer knows this connector (an administrator deleted it, or an older
        version of this connector unregistered on stop), register it again first, as at start."""
        try:
            return str(self.helper.api.work.initiate_work(self.helper.connect_id, name, is_multipart=True))
        except ValueError as exc:
            if UNKNOWN_CONNECTOR not in str(exc):
                raise
            self.helper.connector_logger.warning("OpenCTI no longer knows this connector: registering it again", {
                "connector_id": self.helper.connect_id})
            self.helper.api.connector.register(self.helper.connector)
            return str(self.helper.api.work.initiate_work(self.helper.connect_id, name, is_multipart=True))

    def _commit_ledger(self, plans: List[MessagePlan]) -> Committed:
        """Write what OpenCTI accepted and commit it now, before the work is closed and the messages are
        acknowledged (on PostgreSQL this also releases the cases' locks). Returns the cases' write counts
        before and after these writes, read in the same transaction (see ahead.py)."""
        cases = {c.case_id for p in plans for c in p.cases}
        with self.ledger.transaction():
            before = self.ledger.case_versions(cases)
            self.ledger.count_writes(cases)  # once per case, not once per message (a burst of 200 events)
            for plan in plans:
                self.ledger.apply(plan, counted=True)
            after = self.ledger.case_versions(cases)
        self.ledger.commit()
        return Committed(before, after)

    def _close_work(self, work_id: str, message: str, in_error: bool = False) -> None:
        try:
            self.helper.api.work.to_processed(work_id, message, in_error=in_error)
        except Exception as exc:  # noqa: BLE001 - the work's status is a report, not the data itself
            self.helper.connector_logger.warning("could not close the OpenCTI work", {
                "work_id": work_id, "error": str(exc)[:300]})

    def _send(self, upserts: List[Dict[str, Any]], plans: List[MessagePlan], work_id: str, meta: Dict[str, Any],
              seed: str, archived: List[Tuple[str, Future]]) -> str:
        """The group's upserts, then its operations, and back only once OpenCTI's workers reported all of it.

        OpenCTI's workers run messages in no particular order (see sending.py): the operations (deletions,
        case patches) are sent once every upsert was reported, each operations chunk once the previous one
        was, and the caller writes the ledger and acknowledges only after the whole work was, so the next
        group is planned against, and sent onto, what this one left in OpenCTI. A work with no progress for
        ``IRIS_WORK_TIMEOUT`` seconds (a worker dropped a message) is closed in error and the group retried:
        nothing is acknowledged, upserts are idempotent and the ledger is unchanged. What is sent is archived
        beside it: each record joins ``archived``, which the caller waits for before the ledger commit.
        """
        operations = self.held_refs_only([op for plan in plans for op in plan.operations()])
        if upserts:
            bundle = self.sender.send_upserts(upserts, work_id, seed)
            archived.append(("archive the bundle", self._archive_later(
                self.archive.record_bundle, bundle, work_id=work_id, **meta)))
        if operations:
            self.sender.send_operations(operations, work_id, seed, on_sent=lambda sent: archived.append((
                "archive the bundle", self._archive_later(self.archive.record_bundle, sent, work_id=work_id,
                                                          **meta))))
        progress = self.sender.wait(work_id)
        progress, resent = self._resend_refused(progress, work_id, seed, meta, upserts)
        summary = ""
        if operations:
            removed = sum(len(c.removed_from_case) for p in plans for c in p.cases)
            deleted = sum(len(c.deleted) + (1 if c.delete_case else 0) for p in plans for c in p.cases)
            summary = ", %d removed from the case, %d deleted" % (removed, deleted)
        return summary + self._refused_summary(progress, resent)

    @staticmethod
    def _refused_summary(progress: Any, resent: int) -> str:
        """What the work's summary says of objects OpenCTI refused, and of those sent again."""
        if not progress.errors:
            return ""
        summary = "; %d%s refused by OpenCTI (see the work's errors)" % (
            len(progress.errors), "+" if len(progress.errors) >= WORK_ERRORS_KEPT else "")
        if resent:
            summary += ", %d objects sent again after a missing reference" % resent
        return summary

    def _archive_later(self, record: Callable[..., Any], data: Any, **fields: Any) -> "Future[Any]":
        """``record(data, **fields)`` on the archive's thread (see ``__init__``)."""
        return self._archiving.submit(lambda: record(data, **fields))

    def _resend_refused(self, progress: Any, work_id: str, seed: str, meta: Dict[str, Any],
                        upserts: List[Dict[str, Any]]) -> Tuple[Any, int]:
        """Send again, in the same work, what OpenCTI's workers dropped for a missing reference.

        Several workers take a bundle's objects in any order; one whose reference another worker had not
        stored yet is retried ``PROCESSING_COUNT`` times and then dropped (pycti ``import_item_with_retries``),
        though its reference is in OpenCTI a moment later. Once the work is complete everything it references
        has been stored, so a second send finds it. The work's error list cannot say what was dropped: OpenCTI
        keeps only its first 100 errors (``reportExpectation`` in the platform's ``work.js``), and a 10,000-IOC
        case can have thousands. So when the work reported any error, OpenCTI is asked which of the step's
        objects it holds, and what it lacks is sent again in dependency levels (each once the previous one was
        reported), except what was refused for another reason than a missing reference (an invalid value).
        An object OpenCTI already held before the step (a case gaining refs, an IOC gaining a label) is
        "held" even when its upsert was dropped: those named in the errors are sent again too, and when the
        list was cut at 100, so is every container of the step (its refs point into the step, so it is the
        object most often dropped, and the cut list may hide it).
        """
        resent = 0
        if not progress.errors:
            return progress, resent
        candidates = {o["id"]: o for o in upserts if isinstance(o, dict) and isinstance(o.get("id"), str)
                      and o.get("type") != "marking-definition" and not o.get("opencti_operation")}
        refused_for_good: Set[str] = set()
        seen = 0  # the work's errors are cumulative: each round reads only those the previous send added
        for attempt in range(1, RESEND_ROUNDS + 1):
            fresh, seen = progress.errors[seen:], len(progress.errors)
            capped = seen >= WORK_ERRORS_KEPT
            if not fresh and not capped:
                break  # the last send was reported with no error: nothing was dropped
            dropped: Set[str] = set()
            for error in fresh:
                try:
                    item = json.loads(error.get("source") or "")
                except (TypeError, ValueError):
                    continue
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    missing_ref = "MISSING_REFERENCE" in str(error.get("message"))
                    (dropped if missing_ref else refused_for_good).add(item["id"])
            held = self._stored(sorted(candidates))
            if capped and attempt == 1:  # the list hides what it cut: a container may be among it
                dropped.update(i for i, o in candidates.items() if o.get("type") in CONTAINER_TYPES)
            missing = [o for i, o in candidates.items()
                       if (i not in held or i in dropped) and i not in refused_for_good]
            if not missing:
                break
            resent += len(missing)
            self.helper.connector_logger.info("sending again what OpenCTI dropped for a missing reference", {
                "work_id": work_id, "objects": len(missing), "attempt": attempt})
            # a relationship dropped with the indicator it points at must not overtake it again
            for level, objects in enumerate(dependency_levels(missing)):
                bundle = self.sender.send_upserts(objects, work_id, "%s|resend%d.%d" % (seed, attempt, level))
                # on the archive's thread, after what the step submitted before (the index keeps the order)
                self._archive_later(self.archive.record_bundle, bundle, work_id=work_id, **meta).result()
                progress = self.sender.wait(work_id)
            candidates = {o["id"]: o for o in missing}
        return progress, resent

    def _keep_alive_while_waiting(self, connection: Any) -> None:
        """Waits on a work run in the consuming thread, which owns the IRIS queue's connection: they sleep
        with ``connection.sleep`` so its heartbeats go on (RabbitMQ drops a connection silent for two
        heartbeats, and a 10,000-IOC case takes minutes to ingest). Other threads (reconcile) sleep plainly."""
        self._waiting.sleep = connection.sleep

    def _wait_sleep(self, seconds: float) -> None:
        sleep = getattr(self._waiting, "sleep", None) or time.sleep
        sleep(seconds)

    def _end_syncs(self, plans: List[MessagePlan]) -> None:
        """After a step that brought parts of syncs: end each sync whose parts are now all in.

        Its deletions (the case's keys in no part, not changed in IRIS since the sync was taken) go out as
        a step of their own, planned and committed under the case's lock like any message; the sync is
        closed in the same ledger transaction. The part that completed the sync is acknowledged only after
        this, so a crash in between redelivers that part, which finds the sync complete and ends it then.
        """
        seen: Set[Tuple[str, str]] = set()
        for plan in plans:
            for case in plan.cases:
                if not case.sync_part or (case.case_id, case.sync_part[0]) in seen:
                    continue
                seen.add((case.case_id, case.sync_part[0]))
                state = self._io("read the ledger", self.ledger.sync_state, case.case_id, case.sync_part[0])
                if state is None or not state.due:
                    continue
                held = self._hold(True)  # it removes: alone, once the other replicas' steps are done
                try:
                    self._end_sync(case)
                finally:
                    self._release(held)

    def _end_sync(self, case: CasePlan) -> None:
        """One sync's end (see :meth:`_end_syncs`)."""
        assert case.sync_part is not None
        with self.ledger.step_locks(self._leader) as locks:
            if locks is not None:
                locks.take([("case", case.case_id, True)], wait=True)
            state = self._io("read the ledger", self.ledger.sync_state, case.case_id, case.sync_part[0])
            if state is None or not state.due:
                return
            known = self._io("read the ledger", self.ledger.case_map, case.case_id)
            absent = [k for k in known if k not in state.keys and not k.startswith("case:")
                      and k.split(":", 1)[0] in case.covers]
            stamps = self._io("read the ledger", self.ledger.stamps, case.case_id, absent)
            gone = sorted(k for k in absent if stamps.get(k, "") <= state.at)
            if not gone:  # nothing to delete: no work to show, the sync just closes
                self._io("write the ledger", self.ledger.close_sync, case.case_id, state.sync_id)
                self.helper.connector_logger.info("IRIS case #%s: full sync complete (%d parts), nothing "
                                                  "gone" % (case.case_id, state.total))
                return
            envelope = sync_end_envelope(case.case_id, case.case_ref, case.case_name, state.sync_id,
                                         state.at, gone)
            end = self.plan(envelope, LedgerOverlay(self.ledger))
            self._process_step(self._open_step([(envelope, encode(envelope))], [0], [end]))

    # ------------------------------------------------------------- ledger: locks, outages, leadership
    def _lock_targets(self, items: List[Tuple[Dict[str, Any], bytes]], indices: List[int]
                      ) -> Tuple[Dict[int, List[LockTarget]], bool]:
        """The advisory locks each of these messages needs (see ``StepLocks``; none on a SQLite ledger), and
        whether a deletion IRIS handed over by id alone names an object no case holds yet: that step then
        waits until no replica has a step under way (one may be creating that very object: ``StepsLock``), then
        either finds the object in the ledger or leaves a tombstone every later plan sees.

        A whole-case message (a sync, a case event) locks its case alone; any other its case shared and each
        IRIS object it writes alone. A deletion without its case locks the cases the ledger says hold its
        objects (read now: one written meanwhile is caught after planning, in ``_form_step``)."""
        targets: Dict[int, List[LockTarget]] = {}
        unheld = False
        if self._steps is None:
            return targets, unheld
        for index in indices:
            envelope = items[index][0]
            case_id = (envelope.get("case") or {}).get("id")
            keys = set(keys_of(envelope)) | {k for k in envelope.get("produced") or {} if not k.startswith("case:")}
            own: List[LockTarget] = [("key", k, True) for k in keys]
            if case_id is None:
                for key in keys_of(envelope):
                    holders = self._io("read the ledger", self.ledger.cases_holding, key, blame_content=False)
                    own += [("case", c, False) for c in holders]
                    unheld = unheld or not holders
            elif envelope["event"].startswith("case.") or envelope["event"] in COMPLETE_EVENTS:
                own = [("case", str(case_id), True)]
            else:
                own.append(("case", str(case_id), False))
            targets[index] = own
        return targets, unheld

    def _hold(self, alone: bool) -> Optional[Tuple[int, bool]]:
        """The steps lock for the next step (None on a SQLite ledger: one replica). Between slices of the wait
        the AMQP heartbeat goes on, a stop ends it, and a wait longer than ``STEPS_WAIT_WARNING`` is logged
        once."""
        if self._steps is None:
            return None
        started = time.monotonic()
        warned: List[bool] = []

        def between() -> None:
            if self._stop.is_set():
                raise Transient("stopping while waiting for the other replicas' steps")
            waited = time.monotonic() - started
            if not warned and waited >= STEPS_WAIT_WARNING:
                warned.append(True)
                self.helper.connector_logger.warning(
                    "waiting for the steps other replicas have under way (is one stuck on OpenCTI?)",
                    {"seconds": round(waited, 1), "removal": alone})
            self._wait_sleep(0.01)

        return self._io("lock the ledger", self._steps.hold, alone, between, blame_content=False)

    def _release(self, held: Optional[Tuple[int, bool]]) -> None:
        if held is not None and self._steps is not None:
            self._io("unlock the ledger", self._steps.release, held, blame_content=False)

    def _work_in_error(self, work_id: Optional[str], reason: str, name: str = "IRIS: ledger unreachable") -> None:
        try:
            if work_id is None:
                work_id = self._open_work(name)
            self.helper.api.work.to_processed(work_id, reason[:1000], in_error=True)
        except Exception as exc:  # noqa: BLE001 - OpenCTI may be down too; the log still says why
            self.helper.connector_logger.error("could not record the failed work", {"error": str(exc)[:300]})

    # ------------------------------------------------------------------------------------- reconcile
    def reconcile(self, progress: Optional[Progress] = None) -> Dict[str, int]:
        """Compare IRIS with the ledger for every switched-on case (``reconcile.py``)."""
        return self.reconciler.run(progress)

    def reconcile_case(self, export: Dict[str, Any]) -> bool:
        return self.reconciler.case(export)

    # ------------------------------------------------------------------------------------------ run
    def stop(self, *_: Any) -> None:
        self._stop.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        if self.settings.api_key and self.duration not in ("0", "", None):
            thread = threading.Thread(target=self.helper.schedule_iso, args=(self._scheduled_reconcile, self.duration),
                                      name="reconcile", daemon=True)
            thread.start()
        try:
            self.consume()
        finally:
            self._planning.shutdown(wait=True)
            self._archiving.shutdown(wait=True)
            if self._steps is not None:
                self._steps.close()
            self.archive_prune()
            self.sender.push.close()
            self.helper.connector_logger.info("stopping")
            stop_helper(self.helper)

    def _scheduled_reconcile(self) -> None:
        """pycti's scheduler hands any exception to its excepthook, which stops the whole connector: a failed
        reconcile must only be logged (the next period tries again; messages keep flowing meanwhile)."""
        try:
            stats = self.reconcile()
        except Exception as exc:  # noqa: BLE001
            self.helper.connector_logger.error("reconcile failed, will retry next period", {"error": str(exc)[:300]})
            return
        self.helper.connector_logger.info("reconcile done", stats)

    def archive_prune(self) -> None:
        try:
            self.archive.prune()
        except Exception as exc:  # noqa: BLE001 - pruning must never stop the connector
            self.helper.connector_logger.warning("archive prune failed", {"error": str(exc)})


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO)

    def body() -> int:
        try:
            connector = ImportConnector()
            if argv and argv[0] == "reconcile":
                stats = connector.reconcile(Progress(0))  # shown on a terminal only
                print(f"reconciled {stats['cases']} cases, {stats['changed']} changed, "
                      f"{stats['refused']} refused (converted by the module with other settings)")
                stop_helper(connector.helper)
                return 0
            connector.run()
        except LedgerOutage as exc:
            # already logged (and, once registered, recorded as a work in error); the status tells the supervisor
            print(f"iris-opencti-import: {exc}", file=sys.stderr)
            return EXIT_LEDGER_OUTAGE
        return 0

    return run_main("iris-opencti-import", body)


if __name__ == "__main__":
    sys.exit(main())
