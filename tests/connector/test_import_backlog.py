"""Backlogs and hostile messages queued *before* the import connector starts (real process, simulator, RabbitMQ).

Every other integration test feeds a running connector one message at a time; a real deployment restarts into
a queue that already holds a mix of creates, updates and deletes, or a message nobody can read.
"""

import json
import uuid

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from iris_opencti_module.core import stix_ids
from iris_opencti_module.core.convert import Converter, ConverterConfig
from iris_opencti_module.core.envelope import encode
from iris_opencti_module.transport.messages import (
    asset_message,
    case_deletion_message,
    case_message,
    deletion_message,
    ioc_message,
)
from tests.connector.harness import SIM_TOKEN as TOKEN
from tests.connector.harness import ConnectorProcess, delete_queues, get_all, import_env, publish, queue_depth, wait
from tests.module.samples import load_export, make_ioc
from tests.opencti_sim import OpenCTISimulator

CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))


def _case():
    return dict(load_export()["data"]["case"])


def _case_ref(case):
    return CONVERTER.convert(case, [], []).case_ref


def _domain_id(value):
    return stix_ids.sco_id({"type": "domain-name", "value": value})


def _all_acknowledged(simulator, proc, queue):
    """Once OpenCTI completed every work (the connector acknowledges a step only then), stop the connector:
    anything it still held unacknowledged returns to the queue, which must then be empty."""
    wait(lambda: simulator.works and all(w["status"] == "complete" for w in simulator.works.values()),
         what="every work complete", proc=proc)
    proc.stop()
    return queue_depth(queue) == 0


def test_a_real_backlog_queued_before_start_is_ingested_whole(sim, queue, connector):
    """The sequence seen on IRIS 2.4.20 that deadlocked the connector (a removal inside a group)."""
    case = _case()
    iocs = [make_ioc(700 + n, "domain", "backlog-%d.evil.example" % n) for n in range(8)]
    asset = {**load_export()["data"]["assets"][0], "asset_id": 900, "asset_name": "BACKLOG-HOST",
             "asset_ip": "198.51.100.77", "asset_domain": "backlog-host.corp.example"}
    renamed = dict(iocs[2], ioc_value="renamed-2.evil.example")
    messages = [case_message(CONVERTER, case, [], [], event="case.created").envelope]
    messages += [ioc_message(CONVERTER, case, ioc, "ioc.created")[0] for ioc in iocs]
    messages.append(ioc_message(CONVERTER, case, renamed, "ioc.updated")[0])
    messages.append(deletion_message("ioc", iocs[5]["ioc_id"], case["case_id"], _case_ref(case), case["name"],
                                     value=iocs[5]["ioc_value"]))
    messages.append(asset_message(CONVERTER, case, asset, "asset.created")[0])
    publish(queue, [encode(m) for m in messages])
    assert queue_depth(queue) == len(messages)

    proc = connector()  # default batch size: the whole backlog arrives as one batch
    case_ref = _case_ref(case)
    kept = [_domain_id(i["ioc_value"]) for n, i in enumerate(iocs) if n not in (2, 5)] + [
        _domain_id("renamed-2.evil.example")]
    gone = [_domain_id(iocs[2]["ioc_value"]), _domain_id(iocs[5]["ioc_value"])]
    system = stix_ids.identity_id("BACKLOG-HOST", "system")

    def settled():
        incident = sim.store.get(case_ref)
        refs = set((incident or {}).get("object_refs", []))
        return (set(kept) | {system}) <= refs and not refs & set(gone) and all(sim.store.get(g) is None
                                                                              for g in gone)
    wait(settled, timeout=60, what="the whole backlog in OpenCTI", proc=proc)
    assert all(sim.store.get(k) is not None for k in kept)
    wait(lambda: sim.works and all(w["status"] == "complete" for w in sim.works.values()),
         what="every work complete", proc=proc)
    assert get_all(queue + ".dead") == []
    assert _all_acknowledged(sim, proc, queue), "messages left unacknowledged"


def test_deeply_nested_json_is_dead_lettered_and_the_next_message_arrives(sim, queue, connector):
    case = _case()
    nested = b"[" * 200000
    good = case_message(CONVERTER, case, [make_ioc(801, "domain", "after-nested.evil.example")], []).envelope
    publish(queue, [nested, encode(good)])
    proc = connector()
    wait(lambda: sim.store.get(_domain_id("after-nested.evil.example")), what="the valid message", proc=proc)
    dead = wait(lambda: get_all(queue + ".dead"), what="the dead letter", proc=proc)
    assert [body for _, body in dead] == [nested]
    assert "nested too deeply" in dead[0][0].headers["x-iris-opencti-error"]
    assert proc.alive()
    assert _all_acknowledged(sim, proc, queue)


def test_valid_json_nested_deep_inside_a_bundle_object_is_dead_lettered(sim, queue, connector):
    """Deep enough for the archive's walk and ``json.dumps`` to fail, not for ``json.loads``: it used to be
    taken for a fault of the archive and retried for ever, blocking the queue."""
    case = _case()
    deep = ioc_message(CONVERTER, case, make_ioc(805, "domain", "deep-inside.evil.example"), "ioc.created")[0]
    observable = next(o for o in deep["bundle"]["objects"] if o["type"] == "domain-name")
    nested: object = "bottom"
    for _ in range(900):
        nested = [nested]
    observable["x_opencti_description"] = nested
    good = ioc_message(CONVERTER, case, make_ioc(806, "domain", "after-deep.evil.example"), "ioc.created")[0]
    publish(queue, [json.dumps(deep).encode(), encode(good)])
    proc = connector()
    wait(lambda: sim.store.get(_domain_id("after-deep.evil.example")), what="the valid message", proc=proc)
    dead = wait(lambda: get_all(queue + ".dead"), what="the dead letter", proc=proc)
    assert len(dead) == 1 and json.loads(dead[0][1])["message_id"] == deep["message_id"]
    reason = dead[0][0].headers["x-iris-opencti-error"]
    assert observable["id"] in reason and "x_opencti_description" in reason and "deeper" in reason
    assert sim.store.get(_domain_id("deep-inside.evil.example")) is None
    assert proc.alive()
    assert _all_acknowledged(sim, proc, queue)


def test_a_type_error_while_sending_is_poison_not_a_retry(tmp_path):
    """A fault of the message's content that only shows inside a call to a service (here pycti's send) fails the
    same way on every retry: the message is poison (dead-lettered by the consumer) and its work closed in error."""
    from iris_opencti_connector.importer.connector import PoisonMessage

    conn = _bare_connector(tmp_path, failures=0)
    envelope = ioc_message(CONVERTER, _case(), make_ioc(807, "domain", "type-error.evil.example"), "ioc.created")[0]

    def send_upserts(objects, work_id, seed):
        raise TypeError("Object of type bytes is not JSON serializable")
    conn.sender.send_upserts = send_upserts
    try:
        conn.process_group([(envelope, encode(envelope))])
    except PoisonMessage as exc:
        assert "send to OpenCTI" in str(exc) and "TypeError" in str(exc)
    else:
        raise AssertionError("a TypeError while sending was not poison")
    (work_id, in_error, _message), = conn.helper.api.work.closed
    assert in_error and work_id == conn.helper.api.work.opened[0]
    assert conn.ledger.case_map(envelope["case"]["id"]) == {}, "a poison step wrote the ledger"


def test_an_object_whose_type_is_not_its_id_prefix_is_poison(tmp_path):
    """Found by the property test: a list as ``type`` passed the check and stopped the worker in pycti's splitter
    (unhashable), so the work never completed and the queue stalled."""
    import pytest

    from iris_opencti_connector.importer.connector import PoisonMessage

    conn = _bare_connector(tmp_path, failures=0)
    envelope = ioc_message(CONVERTER, _case(), make_ioc(808, "domain", "typed.evil.example"), "ioc.created")[0]
    for bad in ([[], "", 0.01], "indicator", "", None, 5, {"a": 1}):
        broken = json.loads(json.dumps(envelope))
        observable = next(o for o in broken["bundle"]["objects"] if o["id"].startswith("domain-name--"))
        observable["type"] = bad
        with pytest.raises(PoisonMessage) as info:
            conn.check(broken)
        assert observable["id"] in str(info.value)
    conn.check(envelope)  # the message as the module wrote it passes


def test_refs_that_are_not_stix_ids_are_poison(tmp_path):
    """Found by the property test once upserts went as ``no_split`` bundles: ``object_refs: [{}, [null]]`` on an
    observable reached OpenCTI's worker, whose splitter hashes each ref and fails on the whole message (before,
    the connector's own split failed on it)."""
    import pytest

    from iris_opencti_connector.importer.connector import PoisonMessage

    conn = _bare_connector(tmp_path, failures=0)
    envelope = ioc_message(CONVERTER, _case(), make_ioc(809, "domain", "refs.evil.example"), "ioc.created")[0]
    for field, bad in (("object_refs", [{}, [None]]), ("object_refs", "marking-definition--x"),
                       ("created_by_ref", ["identity--x"]), ("x_opencti_created_by_ref", {"id": 1}),
                       ("external_references", ["https://x.example"]), ("kill_chain_phases", {"a": 1})):
        broken = json.loads(json.dumps(envelope))
        observable = next(o for o in broken["bundle"]["objects"] if o["id"].startswith("domain-name--"))
        observable[field] = bad
        with pytest.raises(PoisonMessage, match=field) as info:
            conn.check(broken)
        assert observable["id"] in str(info.value)
    broken = json.loads(json.dumps(envelope))
    relationship = next(o for o in broken["bundle"]["objects"] if o["type"] == "relationship")
    del relationship["target_ref"]
    with pytest.raises(PoisonMessage, match="needs 'source_ref' and 'target_ref'"):
        conn.check(broken)
    conn.check(envelope)


def test_wrong_types_in_skipped_are_poison_and_do_not_block_the_good_message(sim, queue, connector):
    case = _case()
    good = ioc_message(CONVERTER, case, make_ioc(802, "domain", "good-neighbour.evil.example"), "ioc.created")[0]
    bad_list = case_message(CONVERTER, case, [make_ioc(803, "domain", "oops.evil.example")], []).envelope
    bad_list["skipped"] = ["oops"]
    bad_int = dict(bad_list, skipped=5, message_id=str(uuid.uuid4()))
    publish(queue, [encode(bad_list), encode(good), encode(bad_int)])
    proc = connector()
    wait(lambda: sim.store.get(_domain_id("good-neighbour.evil.example")), what="the good message", proc=proc)
    dead = []  # get_all takes the messages off the queue: gather them as they come
    wait(lambda: dead.extend(get_all(queue + ".dead")) or len(dead) == 2, what="two dead letters", proc=proc)
    assert all("skipped" in props.headers["x-iris-opencti-error"] for props, _ in dead)
    assert sim.store.get(_domain_id("oops.evil.example")) is None, "a poison message's bundle reached OpenCTI"
    wait(lambda: sim.works and all(w["status"] == "complete" for w in sim.works.values()),
         what="every work complete, none left in progress", proc=proc)
    assert _all_acknowledged(sim, proc, queue)


class _FakeWork:
    def __init__(self):
        self.opened, self.closed = [], []

    def initiate_work(self, connector_id, name, is_multipart=True):
        self.opened.append("work-%d" % len(self.opened))
        return self.opened[-1]

    def to_processed(self, work_id, message, in_error=False):
        self.closed.append((work_id, in_error, message))


class _FakeHelper:
    """What :class:`ImportConnector` uses of pycti's helper; the first ``failures`` sends fail as OpenCTI can."""

    def __init__(self, failures):
        self.connect_id = "connector-under-test"
        self.api = type("Api", (), {})()
        self.api.work = _FakeWork()
        self.connector_logger = type("Log", (), {"info": print, "warning": print, "error": print})()
        self.failures = failures
        self.sent = []

    def send_stix2_bundle(self, text, work_id=None, **_):
        self.sent.append(work_id)
        if self.failures:
            self.failures -= 1
            raise ValueError("OpenCTI answered 500")
        return [text]


class _DirectSender:
    """The connector's sender reduced to pycti's send (the fake helper's), every work complete at once."""

    def __init__(self, helper):
        self.helper = helper

    def send_upserts(self, objects, work_id, seed):
        text = json.dumps({"type": "bundle", "objects": objects})
        self.helper.send_stix2_bundle(text, work_id=work_id)
        return text

    def send_operations(self, operations, work_id, seed, on_sent):
        text = json.dumps({"type": "bundle", "objects": operations})
        self.helper.send_stix2_bundle(text, work_id=work_id, no_split=True)
        on_sent(text)

    def wait(self, work_id):
        from iris_opencti_connector.importer.sending import WorkProgress

        return WorkProgress(1, 1, [])


def _bare_connector(tmp_path, failures):

    from iris_opencti_connector.importer.connector import ImportConnector
    from iris_opencti_connector.store.archive import Archive
    from iris_opencti_connector.store.ledger import Ledger

    conn = ImportConnector({"iris": {"url": "https://iris.example"}}, helper=_FakeHelper(failures),
                           ledger=Ledger(str(tmp_path / "ledger.sqlite")),
                           archive=Archive(str(tmp_path / "archive"), 0))
    conn.sender = _DirectSender(conn.helper)
    return conn


def test_a_failed_step_is_retried_in_a_new_work_and_the_failed_work_is_closed(tmp_path):
    from iris_opencti_connector.importer.connector import Transient

    conn = _bare_connector(tmp_path, failures=1)
    envelope = ioc_message(CONVERTER, _case(), make_ioc(804, "domain", "retry.evil.example"), "ioc.created")[0]
    items = [(envelope, encode(envelope))]
    try:
        conn.process_group(items)
    except Transient as exc:
        assert "send to OpenCTI" in str(exc) and "500" in str(exc)
    else:
        raise AssertionError("a failed send must raise Transient")
    assert conn.ledger.case_map(_case()["case_id"]) == {}, "the ledger changed although OpenCTI failed"
    conn.process_group(items)
    work = conn.helper.api.work
    assert conn.helper.sent == work.opened == ["work-0", "work-1"], "one send per work, a new work per attempt"
    assert [(w, err) for w, err, _ in work.closed] == [("work-0", True), ("work-1", False)]
    assert "will retry" in work.closed[0][2]
    assert "ioc:804" in conn.ledger.case_map(_case()["case_id"])


def test_a_backlog_with_a_removal_in_the_middle_is_cut_into_ordered_steps_without_recursion(tmp_path):
    """The deadlock seen on IRIS 2.4.20: a removal that is not the group's last message."""
    conn = _bare_connector(tmp_path, failures=0)
    case = _case()
    created = [ioc_message(CONVERTER, case, make_ioc(810 + n, "domain", "step-%d.evil.example" % n),
                           "ioc.created")[0] for n in range(3)]
    conn.process_group([(e, encode(e)) for e in created])
    conn.may_delete = lambda stix_id, case_ref: True
    deleted = deletion_message("ioc", 811, case["case_id"], _case_ref(case), case["name"])
    later = [ioc_message(CONVERTER, case, make_ioc(820 + n, "domain", "later-%d.evil.example" % n),
                         "ioc.created")[0] for n in range(2)]
    acked = []
    group = [created[0], deleted] + later
    conn.process_group([(e, encode(e)) for e in group], done=acked.append)
    assert acked == [[0], [1], [2, 3]], "steps: the replayed create, the delete alone, then the two creates, each " \
                                        "when done"
    led = conn.ledger.case_map(case["case_id"])
    assert "ioc:811" not in led and {"ioc:810", "ioc:812", "ioc:820", "ioc:821"} <= set(led)
    assert len(conn.helper.api.work.opened) == 1 + 3 and all(not err for _, err, _ in conn.helper.api.work.closed)


def test_steps_take_every_case_at_once_and_keep_each_case_in_order(tmp_path):
    """A removal holds back its own case's later messages only; another case's message that upserts what a
    removal of the step deletes waits for it (the upserts go out first and the deletion would take it)."""
    conn = _bare_connector(tmp_path, failures=0)
    first = _case()
    second = dict(first, case_id=first["case_id"] + 1, name="#%d - Other" % (first["case_id"] + 1))
    shared = make_ioc(830, "domain", "shared-830.evil.example")
    conn.process_group([(e, encode(e)) for e in [ioc_message(CONVERTER, first, shared, "ioc.created")[0]]])
    conn.may_delete = lambda stix_id, case_ref: True
    group = [
        deletion_message("ioc", 830, first["case_id"], _case_ref(first), first["name"]),  # 0: deletes the value
        ioc_message(CONVERTER, first, make_ioc(831, "domain", "a.evil.example"), "ioc.created")[0],  # 1: after 0
        ioc_message(CONVERTER, second, make_ioc(832, "domain", "b.evil.example"), "ioc.created")[0],  # 2: free
        ioc_message(CONVERTER, second, dict(shared, ioc_id=833), "ioc.created")[0],  # 3: upserts what 0 deletes
        ioc_message(CONVERTER, second, make_ioc(834, "domain", "c.evil.example"), "ioc.created")[0],  # 4: after 3
    ]
    acked = []
    conn.process_group([(e, encode(e)) for e in group], done=acked.append)
    assert acked == [[0, 2], [1, 3, 4]], acked
    assert set(conn.ledger.case_map(second["case_id"])) >= {"ioc:832", "ioc:833", "ioc:834"}
    assert "ioc:830" not in conn.ledger.case_map(first["case_id"])


def test_other_cases_events_go_with_the_first_part_of_a_big_case(tmp_path, monkeypatch):
    """A step holds at most STEP_OBJECTS objects: the big case's other parts wait for later steps, and the
    events of another case queued behind them fill the first step instead of waiting for the whole case."""
    from bench.convert import synthetic_case
    from iris_opencti_connector.importer import connector as import_connector
    from tests.module.samples import case_parts

    data = synthetic_case(300, 0)["data"]
    parts = case_parts(CONVERTER, data["case"], data["iocs"], [], 120000)
    assert len(parts) >= 3
    monkeypatch.setattr(import_connector, "STEP_OBJECTS", max(len(p["bundle"]["objects"]) for p in parts) + 20)
    conn = _bare_connector(tmp_path, failures=0)
    other = dict(_case(), case_id=77, name="#77 - Small")
    events = [ioc_message(CONVERTER, other, make_ioc(840 + n, "domain", "small-%d.evil.example" % n),
                          "ioc.created")[0] for n in range(3)]
    acked = []
    conn.process_group([(e, encode(e)) for e in parts + events], done=acked.append)
    n = len(parts)
    assert acked[0] == [0, n, n + 1, n + 2], acked
    assert acked[1:] == [[i] for i in range(1, n)], "each further part its own step, in order"
    assert {"ioc:840", "ioc:841", "ioc:842"} <= set(conn.ledger.case_map(77))


# ----------------------------------------------------------------------------------------- property-based
JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                max_size=3), max_leaves=8)
FIELDS = ("schema", "message_id", "event", "case", "iris", "user", "time", "bundle", "produced", "deleted",
          "skipped")
#: nested fields (a path from the envelope) a hostile message may hold junk in
SUBFIELDS = (("case", "id"), ("case", "ref"), ("case", "name"), ("iris", "ioc_ids"), ("iris", "asset_ids"),
             ("bundle", "objects"), ("bundle", "objects", 0, "id"), ("bundle", "objects", 0, "type"),
             ("bundle", "objects", 1, "object_refs"), ("bundle", "objects", 2, "object_marking_refs"),
             ("bundle", "objects", 3, "value"), ("bundle", "type"), ("part",))


@st.composite
def hostile_message(draw):
    """Arbitrary bytes, arbitrary JSON, deep JSON (unterminated, or valid and deep inside a bundle object), a huge
    value, or a real envelope with one field, top-level or nested, replaced by junk."""
    kind = draw(st.sampled_from(["bytes", "json", "deep", "deep-valid", "huge", "envelope", "subfield"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JUNK)).encode()
    if kind == "deep":
        depth = draw(st.integers(900, 30000))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth
    n = draw(st.integers(0, 50))
    envelope = ioc_message(CONVERTER, _case(), make_ioc(1000 + n, "domain", "prop-%d.evil.example" % n),
                           "ioc.created")[0]
    envelope = json.loads(json.dumps(envelope))  # a copy: the converter's cached objects (markings) stay whole
    envelope["message_id"] = str(uuid.uuid4())  # each message's fate is told apart by its id
    if kind == "deep-valid":
        nested: object = 1
        for _ in range(draw(st.integers(33, 990))):
            nested = draw(st.sampled_from([[nested], {"a": nested}]))
        draw(st.sampled_from(envelope["bundle"]["objects"]))["x_nested"] = nested
        return json.dumps(envelope).encode()
    if kind == "huge":
        observable = next(o for o in envelope["bundle"]["objects"] if o["type"] == "domain-name")
        observable["x_opencti_description"] = "x" * draw(st.integers(1 << 20, 2 << 20))
        return encode(envelope)  # valid: it must be ingested, not refused
    if kind == "subfield":
        path = draw(st.sampled_from(SUBFIELDS))
        target = envelope
        for key in path[:-1]:
            target = target[key] if not isinstance(key, int) else target[min(key, len(target) - 1)]
        target[path[-1]] = draw(JUNK)
        return json.dumps(envelope).encode()
    field = draw(st.sampled_from(FIELDS))
    envelope[field] = draw(JUNK)
    return encode(envelope)


def _message_id(body):
    try:
        message_id = json.loads(body).get("message_id")
    except (ValueError, RecursionError, AttributeError):
        return None
    return message_id if isinstance(message_id, str) else None


class _Consumer:
    """One connector process for every example: it must survive all of them."""

    def __init__(self, tmp_path):
        self.sim = OpenCTISimulator(token=TOKEN)
        self.sim.start()
        self.queue = "iris-opencti-prop-" + uuid.uuid4().hex[:8]
        env = import_env(self.sim.url, TOKEN, self.queue, str(tmp_path))
        self.proc = ConnectorProcess("iris_opencti_connector.importer.connector", str(tmp_path), env).start()
        wait(lambda: self.sim.ops_named("PingConnector"), what="start", proc=self.proc)
        self.dead = 0
        self.archived = set()
        self.index = tmp_path / "archive" / "index.jsonl"

    def archived_messages(self):
        """Ids of the messages the connector took into OpenCTI (it archives each one it processes; one that
        turns out poison later is archived and dead-lettered, one retried is archived twice)."""
        if not self.index.exists():
            return set()
        entries = (json.loads(line) for line in self.index.read_text().splitlines())
        return {e["message_id"] for e in entries if e["kind"] == "message"}

    def close(self):
        self.proc.stop()
        self.sim.stop()
        delete_queues(self.queue, self.queue + ".dead")


def test_arbitrary_messages_never_end_the_consumer_and_each_is_ingested_or_dead_lettered(tmp_path):
    consumer = _Consumer(tmp_path)
    try:
        # no shrinking: the examples share one long-lived process, so a shrunk example replays a different history
        @settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.reuse, Phase.generate])
        @given(st.lists(hostile_message(), min_size=1, max_size=6))
        def run(bodies):
            marker = f"marker-{uuid.uuid4().hex[:8]}.evil.example"
            good = ioc_message(CONVERTER, _case(), make_ioc(1999, "domain", marker), "ioc.created")[0]
            publish(consumer.queue, bodies + [encode(good)])
            wait(lambda: consumer.sim.store.get(_domain_id(marker)), timeout=60, what="the marker after junk",
                 proc=consumer.proc)
            wait(lambda: queue_depth(consumer.queue) == 0, what="an empty queue", proc=consumer.proc)
            dead = get_all(consumer.queue + ".dead")
            dead_ids = {_message_id(body) for _, body in dead} - {None}
            archived = consumer.archived_messages()
            ingested = archived - consumer.archived - dead_ids
            assert len(ingested) + len(dead) == len(bodies) + 1, "a message was neither ingested nor kept"
            consumer.dead += len(dead)
            consumer.archived = archived
            assert consumer.proc.alive()

        run()
        assert consumer.dead > 0, "no example was refused: the strategy does not exercise the dead-letter path"
        assert "consumer failed" not in consumer.proc.log(), "a message escaped the per-message handling"
    finally:
        consumer.close()


def test_a_renamed_case_stays_one_case_incident_under_its_first_id(sim, queue, connector):
    case = _case()
    first_ref = _case_ref(case)
    proc = connector()
    publish(queue, [encode(case_message(CONVERTER, case, [make_ioc(830, "domain", "before-rename.evil.example")],
                                        [], event="case.created").envelope)])
    wait(lambda: sim.store.get(first_ref), what="the case", proc=proc)
    renamed = dict(case, name="#10 - Renamed after triage")
    assert _case_ref(renamed) != first_ref, "the id follows the name: this is what the connector must undo"
    publish(queue, [encode(case_message(CONVERTER, renamed, [], [], event="case.updated").envelope),
                    encode(ioc_message(CONVERTER, renamed, make_ioc(831, "domain", "after-rename.evil.example"),
                                       "ioc.created")[0])])
    wait(lambda: _domain_id("after-rename.evil.example") in sim.store.get(first_ref).get("object_refs", []),
         what="the new IOC in the first Case-Incident", proc=proc)
    incidents = sim.objects_of_type("case-incident")
    assert len(incidents) == 1 and incidents[0]["name"] == "#10 - Renamed after triage"
    assert _domain_id("before-rename.evil.example") in incidents[0]["object_refs"]
    publish(queue, [encode(case_deletion_message(case["case_id"], _case_ref(renamed), renamed["name"]))])
    wait(lambda: not sim.objects_of_type("case-incident"), what="the renamed case deleted", proc=proc)


def test_objects_dropped_for_a_missing_reference_are_sent_again_in_the_same_work(tmp_path):
    """OpenCTI's workers drop an object whose reference another worker had not stored yet; once the work is
    complete the reference is there, so the connector sends the dropped objects again (and only those)."""
    from iris_opencti_connector.importer.sending import WorkProgress

    conn = _bare_connector(tmp_path, failures=0)
    envelope = ioc_message(CONVERTER, _case(), make_ioc(840, "domain", "dropped.evil.example"), "ioc.created")[0]
    relationship = next(o for o in envelope["bundle"]["objects"] if o["type"] == "relationship")
    invalid = {"id": "indicator--00000000-0000-4000-8000-000000000001", "type": "indicator"}
    waits = [WorkProgress(6, 6, [
        {"message": str({"name": "MISSING_REFERENCE_ERROR", "error_message": "Element(s) not found"}),
         "source": json.dumps(relationship)},
        {"message": str({"name": "VALIDATION_ERROR", "error_message": "invalid pattern"}),
         "source": json.dumps(invalid)}])]

    class Sender:
        sent = []

        def send_upserts(self, objects, work_id, seed):
            self.sent.append((work_id, [o["id"] for o in objects]))
            return json.dumps({"type": "bundle", "objects": objects})

        def send_operations(self, *args, **kwargs):
            raise AssertionError("no operations in a create")

        def wait(self, work_id):
            return waits.pop(0) if waits else WorkProgress(7, 7, [])

    conn.sender = Sender()
    stored = {o["id"] for o in envelope["bundle"]["objects"]} - {relationship["id"]}

    def query(_query, variables):  # which ids OpenCTI holds: all but the dropped relationship
        ids = variables["filters"]["filters"][0]["values"]
        return {"data": {f: {"edges": [{"node": {"standard_id": i}} for i in ids if i in stored]}
                         for f in ("stixCoreObjects", "stixCoreRelationships")}}
    conn.helper.api.query = query
    conn.process_group([(envelope, encode(envelope))])
    (first_work, first), (again_work, again) = Sender.sent
    assert again_work == first_work and again == [relationship["id"]], "only the missing-reference drop, same work"
    assert relationship["id"] in first
