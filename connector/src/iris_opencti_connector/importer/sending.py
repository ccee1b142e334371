"""Handing bundles to OpenCTI's workers in an order they cannot undo, and knowing when they are done.

OpenCTI's workers do not keep the order of a connector's messages: ``send_stix2_bundle`` splits a bundle into
one message per object, several workers take them from the push queue concurrently, and a missing reference
is only retried a few times before the object is reported in error and dropped (pycti
``OpenCTIStix2.import_item_with_retries``). A deletion sent right behind the upsert that creates its object
can run first and fail, leaving the object in OpenCTI while the ledger says it is gone. So the connector
waits: operations (deletions, case patches) are sent only once the work's upserts were all reported by the
workers, each operations chunk only once the previous one was, and a group of messages is acknowledged (and
the next group planned against OpenCTI) only once its whole work was.

"Done" is OpenCTI's own bookkeeping: a work's ``tracking.import_processed_number`` reaching its
``import_expected_number`` (the ``work`` query pycti's ``OpenCTIApiWork.get_work`` sends). That only means
something if each bundle adds exactly as many expectations as the workers will report, which pycti does not
do for ``no_split`` bundles: ``send_stix2_bundle`` adds one, while the worker's ``import_bundle`` re-splits the
bundle and reports one per element (``opencti-worker/src/push_handler.py``). :meth:`Sender.send_operations`
adds the difference first.

Operations go as ``no_split`` bundles of at most ``max_bytes`` of JSON each: one bundle of 30,000 deletions
would be ~29 MiB, over RabbitMQ 4's 16 MiB message limit (pycti also base64-encodes the bundle, so the
message is about 4/3 of the JSON). The worker's splitter sorts a bundle's elements by their number of
in-bundle dependencies, so a chunk never holds an operation that references another one of the same chunk:
with no dependencies all counts are equal and the sort (stable) keeps the planned order, relationships
first, then indicators, then what they pointed at.

A relationship deletion also needs ``source_ref`` and ``target_ref``: the splitter reads both to decide
whether a relationship is importable (``OpenCTIStix2Splitter.enlist_element``, a ``KeyError`` without them,
which makes the worker discard the whole message), while the deletion itself only uses the id
(``OpenCTIStix2.element_operation_delete``). The ledger keeps ids only, so both point at the connector's
author identity: it always exists and is never in an operations bundle.

Upserts go the same way, as ``no_split`` bundles of at most :data:`UPSERT_CHUNK` objects, not as one bundle
pycti's splitter turns into a message per object. The splitter is quadratic in a container's refs (it keeps
each object's kept refs in a list, ``to_keep`` in ``OpenCTIStix2Splitter.enlist_element``: 200 s for a
50,000-IOC case) and every message it makes costs the broker, the worker and a work report of its own. A
worker imports a ``no_split`` bundle element by element in dependency order, so what one bundle holds never
misses a reference; across bundles, which several workers take at once, the objects go in waves
(:func:`upsert_waves`): what a bundle names is in the bundle itself or in an earlier wave, and a wave is sent
once the work reported the previous one. An IOC's observable, indicator and relationship travel in one bundle,
so a case part needs three waves: the markings and the author, the IOCs, the Case-Incident. A container with
more refs than :data:`CONTAINER_REFS` goes as several copies with the same id and values and a slice of the
refs each (OpenCTI adds refs on upsert, so the copies add up to the whole), one copy per wave (OpenCTI locks
the object while it upserts it), which keeps the worker's splitter fast and every message far under the
broker's limit. A wave holding only what an earlier work already brought into OpenCTI (a case part's
markings and author, which every part upserts again) is not waited for (:meth:`Sender.send_waves`), and the
waves before a step's containers (:attr:`WavePlan.head`) can go on their own: the connector sends a step's
containers behind the next step's head (``ImportConnector.process_group``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from iris_opencti_connector.importer.plan import patch_remove_refs
from iris_opencti_connector.importer.push_queue import PushQueue
from iris_opencti_module.core.stix_ids import bundle_id

DEFAULT_OPERATIONS_MAX_BYTES = 4 * 1024 * 1024
#: objects per upserts bundle (each bundle is one message, imported by one worker)
UPSERT_CHUNK = 1000
#: refs per copy of a container (see the module docstring): pycti's splitter, in the worker, is quadratic in them
CONTAINER_REFS = 2000
DEFAULT_WORK_TIMEOUT = 300.0
_FIRST_POLL = 0.02
#: longest wait between two reads of a work whose workers are not reporting (OpenCTI is asked once a second)
_MAX_POLL = 1.0
#: a wait for at least this many items is long enough for the connector to do its own work meanwhile
LONG_WAIT = 500
#: longest wait between two reads of a work that is progressing: the next read comes when the rate seen so
#: far says the work will be done (a wave read too late costs the whole step that much)
_MAX_POLL_PROGRESSING = 0.25
# '{"type": "bundle", "id": "bundle--<uuid>", "objects": []}' and a margin
_REF_SUFFIXES = ("_ref", "_refs")
_BUNDLE_OVERHEAD = len(json.dumps({"type": "bundle", "id": "bundle--" + "0" * 36, "objects": []})) + 16


class WorkStalled(Exception):
    """OpenCTI's workers stopped reporting on a work before it was complete: something was dropped."""


class Stopping(Exception):
    """The connector is stopping: nothing may be acknowledged."""


@dataclass
class WorkProgress:
    """A work's figures as OpenCTI reports them."""

    expected: int = 0
    processed: int = 0
    errors: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.processed >= self.expected


def refs_of(obj: Dict[str, Any]) -> List[str]:
    """Every id in ``obj``'s ``*_ref`` and ``*_refs`` properties, in order."""
    out: List[str] = []
    for key, value in obj.items():
        if key.endswith(_REF_SUFFIXES):  # one test for most keys (a case part has ~20 per object)
            if key[-1] == "f":
                if isinstance(value, str):
                    out.append(value)
            elif isinstance(value, list):
                out.extend(v for v in value if isinstance(v, str))
    return out


def with_relationship_ends(operations: List[Dict[str, Any]], placeholder: str) -> List[Dict[str, Any]]:
    """Relationship and sighting deletions given the ends the worker's splitter requires.

    pycti's ``OpenCTIStix2Splitter.enlist_element`` drops as "Incompatible element in bundle" a relationship
    without ``source_ref``/``target_ref`` and a sighting without ``sighting_of_ref``/``where_sighted_refs``,
    even when it only carries an ``opencti_operation``: the placeholder (an object OpenCTI holds) satisfies it.
    """
    out = []
    for op in operations:
        if op.get("type") == "relationship" and not (op.get("source_ref") and op.get("target_ref")):
            op = dict(op, source_ref=op.get("source_ref") or placeholder,
                      target_ref=op.get("target_ref") or placeholder)
        elif op.get("type") == "sighting" and not (op.get("sighting_of_ref") and op.get("where_sighted_refs")):
            op = dict(op, sighting_of_ref=op.get("sighting_of_ref") or placeholder,
                      where_sighted_refs=op.get("where_sighted_refs") or [placeholder])
        out.append(op)
    return out


def dependency_levels(objects: List[Dict[str, Any]],
                      known: Optional[Dict[str, List[str]]] = None) -> List[List[Dict[str, Any]]]:
    """Objects in levels: each level references only objects outside the list or in earlier levels (a cycle,
    which STIX allows, goes last as it is). ``known``: each object's :func:`refs_of`, when already read."""
    pending = {o["id"]: o for o in objects}
    refs = {o["id"]: set(known[o["id"]] if known is not None else refs_of(o)) - {o["id"]} for o in objects}
    levels: List[List[Dict[str, Any]]] = []
    while pending:
        waiting = pending.keys()
        ready = [o for i, o in pending.items() if not refs[i] & waiting]
        if not ready:
            levels.append(list(pending.values()))
            break
        levels.append(ready)
        for obj in ready:
            del pending[obj["id"]]
    return levels


def container_copies(obj: Dict[str, Any], limit: int = CONTAINER_REFS) -> List[Dict[str, Any]]:
    """``obj`` as copies of at most ``limit`` ``object_refs`` each, every copy with all its other values (so
    that whichever a worker imports last, the container's values are the same)."""
    refs = obj.get("object_refs")
    if not isinstance(refs, list) or len(refs) <= limit:
        return [obj]
    return [dict(obj, object_refs=refs[start:start + limit]) for start in range(0, len(refs), limit)]


def _components(objects: List[Dict[str, Any]], known: Dict[str, List[str]]) -> List[List[Dict[str, Any]]]:
    """``objects`` grouped so that every ref from one of them to another falls inside its group (in the
    objects' order, each group in the order of its first object); ``known``: each one's :func:`refs_of`."""
    index = {o["id"]: n for n, o in enumerate(objects)}
    parent = list(range(len(objects)))

    def root(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n, obj in enumerate(objects):
        for ref in known[obj["id"]]:
            other = index.get(ref)
            if other is not None:
                a, b = root(n), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: Dict[int, List[Dict[str, Any]]] = {}
    for n, obj in enumerate(objects):
        groups.setdefault(root(n), []).append(obj)
    return list(groups.values())


@dataclass
class WavePlan:
    """A step's upserts as waves of bundles (:func:`wave_plan`); the first ``head`` waves hold no container
    and nothing that names one, so the rest (the containers) can go later, behind another step's head."""

    waves: List[List[List[str]]]
    head: int = 0
    #: the ids each wave holds
    ids: List[FrozenSet[str]] = field(default_factory=list)

    def held_before(self, stop: int) -> Set[str]:
        """The ids of the waves before ``stop``."""
        return set().union(*self.ids[:stop])


def _plan_waves(objects: List[Dict[str, Any]], chunk: int,
                container_refs: int) -> Tuple[List[Tuple[bool, List[List[Dict[str, Any]]]]], int]:
    """Waves of groups of objects (see :func:`upsert_waves`), each with whether its groups may be cut (a
    dependency level: none of its objects names another).

    - first what many others name (the markings, the author, an asset's identity a sighting and a relationship
      both name), with what those name in turn, in dependency levels;
    - then everything else that is not a container, in groups that hold every ref between their members (an
      IOC's observable, indicator and relationship go together): the worker orders a group itself, and two
      groups never wait for each other, so they all go in one wave;
    - last the containers (``object_refs``: the Case-Incident, notes, observed data), in dependency levels;
      a container with more than ``container_refs`` refs goes as copies (:func:`container_copies`), one per
      wave: OpenCTI locks an object while it upserts it, so two copies taken at once by two workers would
      only make one of them sleep and retry (pycti ``import_item_with_retries`` on a lock error).
    A group larger than ``chunk`` is split along its dependency levels into waves of its own. Also returns
    how many waves come before the containers'.
    """
    known = {o["id"]: refs_of(o) for o in objects}  # read once: the passes below each need them
    held = {o["id"] for o in objects if isinstance(o.get("object_refs"), list)}
    grown = True
    while grown:  # what names a container goes with the containers (a sighting of observed data)
        grown = False
        for obj in objects:
            if obj["id"] not in held and not held.isdisjoint(known[obj["id"]]):
                held.add(obj["id"])
                grown = True
    containers = [o for o in objects if o["id"] in held]
    rest = [o for o in objects if o["id"] not in held]
    ids = {o["id"] for o in rest}
    named: Dict[str, int] = {}
    for obj in rest:
        for ref in set(known[obj["id"]]) - {obj["id"]}:
            if ref in ids:
                named[ref] = named.get(ref, 0) + 1
    shared = {i for i, count in named.items() if count > 1}
    pending = list(shared)
    while pending:  # what a shared object names must be in before it
        for ref in known[pending.pop()]:
            if ref in ids and ref not in shared:
                shared.add(ref)
                pending.append(ref)
    waves: List[Tuple[bool, List[List[Dict[str, Any]]]]] = [
        (True, [level]) for level in dependency_levels([o for o in rest if o["id"] in shared], known)]
    groups: List[List[Dict[str, Any]]] = []
    for group in _components([o for o in rest if o["id"] not in shared], known):
        if len(group) <= chunk:
            groups.append(group)
        else:
            waves.extend((True, [level]) for level in dependency_levels(group, known))
    if groups:
        waves.append((False, groups))
    head = len(waves)
    for level in dependency_levels(containers, known):
        copies = [container_copies(obj, container_refs) for obj in level]
        for n in range(max(len(c) for c in copies)):
            waves.append((True, [[c[n] for c in copies if n < len(c)]]))
    return waves, head


def upsert_waves(objects: List[Dict[str, Any]], max_bytes: int, chunk: int = UPSERT_CHUNK,
                 container_refs: int = CONTAINER_REFS) -> List[List[List[str]]]:
    """``objects`` as JSON texts in waves of bundles (:func:`wave_plan`)."""
    return wave_plan(objects, max_bytes, chunk, container_refs).waves


def wave_plan(objects: List[Dict[str, Any]], max_bytes: int, chunk: int = UPSERT_CHUNK,
              container_refs: int = CONTAINER_REFS) -> WavePlan:
    """``objects`` as JSON texts in waves of bundles (:func:`_plan_waves`): a wave's bundles may be imported
    in any order and at once; each holds at most ``chunk`` objects and ``max_bytes`` of JSON (as far as one
    object allows), an id at most once (the worker's splitter keeps one element per id), and every group
    whole. A list that fits one bundle is one wave of one bundle (no head): the worker orders it itself."""
    budget = max(1024, int(max_bytes) - _BUNDLE_OVERHEAD)
    texts = {id(o): json.dumps(o) for o in objects}
    if len(objects) <= chunk and sum(len(t) + 2 for t in texts.values()) <= budget and not any(
            isinstance(o.get("object_refs"), list) and len(o["object_refs"]) > container_refs for o in objects):
        return WavePlan([[[texts[id(o)] for o in objects]]] if objects else [], 0,
                        [frozenset(o["id"] for o in objects)] if objects else [])
    waves: List[List[List[str]]] = []
    wave_ids: List[FrozenSet[str]] = []
    planned, head = _plan_waves(objects, chunk, container_refs)
    for splittable, groups in planned:
        wave_ids.append(frozenset(piece["id"] for group in groups for piece in group))
        bundles: List[List[str]] = []
        current: List[str] = []
        ids: set = set()
        size = 0
        for group in groups:
            pieces = [(piece, texts.get(id(piece)) or json.dumps(piece)) for piece in group]
            whole = sum(len(t) + 2 for _, t in pieces)
            if not splittable and current and (len(current) + len(pieces) > chunk or size + whole > budget):
                bundles.append(current)
                current, ids, size = [], set(), 0
            for piece, text in pieces:
                if current and splittable and (len(current) >= chunk or size + len(text) + 2 > budget
                                               or piece["id"] in ids):
                    bundles.append(current)
                    current, ids, size = [], set(), 0
                current.append(text)
                ids.add(piece["id"])
                size += len(text) + 2
        if current:
            bundles.append(current)
        waves.append(bundles)
    return WavePlan(waves, head, wave_ids)


def bundle_text(bundle_key: str, texts: List[str]) -> str:
    """A bundle's JSON from its objects' JSON texts (each object is serialised once)."""
    return '{"type": "bundle", "id": "%s", "objects": [%s]}' % (bundle_id(bundle_key), ", ".join(texts))


def chunk_operations(operations: List[Dict[str, Any]], max_bytes: int) -> List[List[Dict[str, Any]]]:
    """Operations in order, cut into bundles of at most ``max_bytes`` of JSON (as far as one object allows).

    A case patch too big on its own is cut into several patches of the same container (removals commute).
    An id appears at most once per chunk (the worker's splitter keeps a single element per id, so two patches
    of one case in one bundle would lose all but the last), and no operation references another one of its
    chunk (the splitter would reorder them).
    """
    budget = max(1024, int(max_bytes) - _BUNDLE_OVERHEAD)
    pieces: List[Dict[str, Any]] = []
    for op in operations:
        pieces.extend(_split_patch(op, budget))
    chunks: List[List[Dict[str, Any]]] = []
    current: List[Dict[str, Any]] = []
    ids: set = set()
    referenced: set = set()
    size = 0
    for op in pieces:
        cost = len(json.dumps(op)) + 2
        refs = set(refs_of(op))
        if current and (size + cost > budget or op["id"] in ids or op["id"] in referenced or refs & ids):
            chunks.append(current)
            current, ids, referenced, size = [], set(), set(), 0
        current.append(op)
        ids.add(op["id"])
        referenced |= refs
        size += cost
    if current:
        chunks.append(current)
    return chunks


def _split_patch(op: Dict[str, Any], budget: int) -> List[Dict[str, Any]]:
    if op.get("opencti_operation") != "patch":
        return [op]
    patches = op.get("opencti_field_patch") or []
    if len(patches) != 1 or patches[0].get("key") != "objects" or patches[0].get("operation") != "remove" \
            or len(json.dumps(op)) <= budget:
        return [op]
    refs = list(patches[0].get("value") or [])
    # the refs are listed twice (top level and OpenCTI's extension)
    per_ref = 2 * (max(len(json.dumps(r)) for r in refs) + 2) if refs else 1
    fixed = len(json.dumps(patch_remove_refs(op["id"], [])))
    step = max(1, (budget - fixed) // per_ref)
    return [patch_remove_refs(op["id"], refs[i:i + step]) for i in range(0, len(refs), step)]


class Sender:
    """Sends one work's bundles and waits for OpenCTI's workers to have reported them."""

    def __init__(self, helper: Any, author_id: str, max_bytes: int = DEFAULT_OPERATIONS_MAX_BYTES,
                 timeout: float = DEFAULT_WORK_TIMEOUT, stopping: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        """
        :param author_id: the connector's author identity (see the module docstring).
        :param max_bytes: largest operations bundle, in bytes of JSON.
        :param timeout: seconds without any progress on a work after which :meth:`wait` gives up.
        :param stopping: true once the connector must stop (a wait then ends with :class:`Stopping`).
        :param sleep: how to wait; the consuming thread passes its connection's ``sleep`` so that heartbeats go
            on during the waits and during long sends (pycti publishes 30,000 messages in a minute or more).
        """
        self.helper = helper
        self.push = PushQueue(helper)
        self.author_id = author_id
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.stopping = stopping
        self.clock = clock
        self.sleep = sleep
        #: ``(objects, plan)``: the waves of exactly this list, cut ahead of time (importer/ahead.py)
        self.prepared: Optional[Tuple[List[Dict[str, Any]], WavePlan]] = None
        #: called once, when a wait starts with at least :data:`LONG_WAIT` items to go: work started any
        #: earlier would slow the waits before it (the thread polling OpenCTI shares the interpreter with it)
        self.on_long_wait: Optional[Callable[[], object]] = None

    def send_upserts(self, objects: List[Dict[str, Any]], work_id: str, seed: str) -> Dict[str, Any]:
        """``objects`` in waves of ``no_split`` bundles (:func:`upsert_waves`), each wave once the work reported
        the previous one; returns them as one bundle, for the archive."""
        self.send_waves(self.plan_for(objects), work_id, seed)
        return self.as_bundle(objects, seed)

    def plan_for(self, objects: List[Dict[str, Any]]) -> WavePlan:
        """The waves of ``objects``: those cut ahead of time for this very list, or cut now."""
        prepared, self.prepared = self.prepared, None
        if prepared is not None and prepared[0] is objects:
            return prepared[1]
        return wave_plan(objects, self.max_bytes)

    @staticmethod
    def as_bundle(objects: List[Dict[str, Any]], seed: str) -> Dict[str, Any]:
        """A step's upserts as one bundle, for the archive."""
        return {"type": "bundle", "id": bundle_id("upserts|" + seed), "objects": objects}

    def send_waves(self, plan: WavePlan, work_id: str, seed: str, start: int = 0, stop: Optional[int] = None,
                   known: FrozenSet[str] = frozenset()) -> None:
        """Waves ``start`` to ``stop`` of ``plan``, each once the work reported everything before it, but
        where the waves before it in this call hold only ``known`` ids (objects OpenCTI's workers already
        reported in an earlier work: a case part's markings and author, upserted again by every part)."""
        in_opencti = True  # every wave sent so far in this call holds only known ids
        for n in range(start, len(plan.waves) if stop is None else min(stop, len(plan.waves))):
            if n and not (in_opencti and n > start):
                self.wait(work_id)
            in_opencti = in_opencti and n < len(plan.ids) and plan.ids[n] <= known
            bundles = [(bundle_text("upserts|%s|%d.%d" % (seed, n, k) if n or k else "upserts|" + seed, texts),
                        len(texts)) for k, texts in enumerate(plan.waves[n])]
            self._publish(bundles, work_id)

    def _publish(self, bundles: List[Any], work_id: str) -> None:
        """``(bundle JSON, elements)`` pairs to OpenCTI's push queue as ``no_split`` bundles
        (:meth:`~.push_queue.PushQueue.send_chunks`: as pycti's ``send_stix2_bundle``, over a kept connection)
        in a thread of its own while this one keeps sleeping with :attr:`sleep`."""
        failure: List[BaseException] = []

        def publish() -> None:
            try:
                self.push.send_chunks(bundles, work_id)
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                failure.append(exc)

        thread = threading.Thread(target=publish, name="iris-opencti-send", daemon=True)
        thread.start()
        thread.join(0.02)  # most sends are done by then
        pause = 0.005  # a wave waits for its send: a late look costs the whole step that much
        while thread.is_alive():
            self.sleep(pause)
            thread.join(0.001)
            pause = min(0.2, pause * 2)
        if failure:
            raise failure[0]

    def send_operations(self, operations: List[Dict[str, Any]], work_id: str, seed: str,
                        on_sent: Callable[[str], object] = lambda _text: None) -> WorkProgress:
        """Each chunk once the work is complete so far (the upserts before it, the previous chunk)."""
        progress = WorkProgress()
        operations = with_relationship_ends(operations, self.author_id)
        for n, chunk in enumerate(chunk_operations(operations, self.max_bytes)):
            progress = self.wait(work_id)
            text = json.dumps({"type": "bundle", "id": bundle_id("ops|%s|%d" % (seed, n) if n else "ops|" + seed),
                               "objects": chunk})
            self._publish([(text, len(chunk))], work_id)
            on_sent(text)
        return progress

    def progress(self, work_id: str) -> Optional[WorkProgress]:
        """The work's figures (None when OpenCTI no longer knows the work)."""
        work = self.helper.api.work.get_work(work_id)
        if not work:
            return None
        tracking = work.get("tracking") or {}
        return WorkProgress(int(tracking.get("import_expected_number") or 0),
                            int(tracking.get("import_processed_number") or 0), list(work.get("errors") or []))

    def wait(self, work_id: str) -> WorkProgress:
        """Until every expectation of the work was reported; :class:`WorkStalled` after ``timeout`` seconds
        without progress (a dropped message never completes a work, and the connector must not hang on it)."""
        delay = _FIRST_POLL
        last_processed = -1
        last_change = self.clock()
        last_error = ""
        first: Optional[Tuple[float, int]] = None  # (when, processed) at the first read
        while True:
            try:
                progress = self.progress(work_id)
            except Exception as exc:  # OpenCTI unreachable for a moment: keep waiting
                progress, last_error = None, f"{type(exc).__name__}: {exc}"
                delay = min(_MAX_POLL, delay * 1.5)
                if self.clock() - last_change > self.timeout:
                    raise WorkStalled(f"cannot read work {work_id}: {last_error}") from exc
            else:
                if progress is None:
                    raise WorkStalled(f"OpenCTI no longer knows work {work_id}")
                if progress.done:
                    return progress
                if self.on_long_wait is not None and progress.expected - progress.processed >= LONG_WAIT:
                    cue, self.on_long_wait = self.on_long_wait, None
                    cue()
                now = self.clock()
                if first is None:
                    first = (now, progress.processed)
                done, elapsed = progress.processed - first[1], now - first[0]
                if progress.processed != last_processed:
                    last_processed, last_change = progress.processed, now
                    if done > 0 and elapsed > 0:  # progressing: read when the rate so far says it is done
                        left = (progress.expected - progress.processed) * elapsed / done
                        delay = min(_MAX_POLL_PROGRESSING, max(_FIRST_POLL, left))
                else:
                    delay = min(_MAX_POLL, delay * 1.5)
                    if now - last_change > self.timeout:
                        raise WorkStalled("work %s: %d of %d items reported, no progress for %.0f s" % (
                            work_id, progress.processed, progress.expected, self.timeout))
            if self.stopping():
                raise Stopping(f"stopping while waiting for work {work_id}")
            self.sleep(delay)
