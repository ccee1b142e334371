"""sending.py without a platform: chunking of operations, expectations, waiting on a work."""

import json
import uuid

import pytest

from iris_opencti_connector.importer.plan import delete_object, patch_remove_refs
from iris_opencti_connector.importer.sending import (
    Sender,
    Stopping,
    WorkStalled,
    chunk_operations,
    with_relationship_ends,
)

AUTHOR = "identity--" + str(uuid.uuid4())
CASE = "case-incident--" + str(uuid.uuid4())
MIB = 1024 * 1024


def ids(kind, n):
    return [f"{kind}--{uuid.UUID(int=i + 1)}" for i in range(n)]


def removal_of(n_iocs):
    """What removing ``n_iocs`` domain IOCs from a case asks: relationships, indicators, observables."""
    ops = [delete_object(i) for i in ids("relationship", n_iocs)]
    ops += [delete_object(i) for i in ids("indicator", n_iocs)]
    ops += [delete_object(i) for i in ids("domain-name", n_iocs)]
    return with_relationship_ends(ops, AUTHOR)


def test_30000_removed_iocs_go_in_chunks_below_the_limit_in_order():
    ops = removal_of(30000)
    whole = len(json.dumps({"type": "bundle", "id": "bundle--x", "objects": ops}))
    assert whole > 16 * MIB, "one bundle would be over RabbitMQ 4's message limit"
    chunks = chunk_operations(ops, 4 * MIB)
    assert len(chunks) >= whole // (4 * MIB)
    for chunk in chunks:
        assert len(json.dumps({"type": "bundle", "id": "bundle--" + str(uuid.uuid4()), "objects": chunk})) <= 4 * MIB
        assert len({o["id"] for o in chunk}) == len(chunk)
    assert [o["id"] for c in chunks for o in c] == [o["id"] for o in ops], "the delete order is kept"


def test_a_huge_case_patch_is_cut_into_patches_of_the_same_case_in_separate_chunks():
    refs = ids("domain-name", 20000)
    chunks = chunk_operations([patch_remove_refs(CASE, refs), delete_object(ids("indicator", 1)[0])], 64 * 1024)
    patches = [o for c in chunks for o in c if o["id"] == CASE]
    assert len(patches) > 1
    assert all(sum(1 for o in c if o["id"] == CASE) <= 1 for c in chunks), "the splitter keeps one element per id"
    removed = [r for p in patches for r in p["opencti_field_patch"][0]["value"]]
    assert sorted(removed) == sorted(refs)
    for p in patches:
        ext = p["extensions"]["extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"]
        assert ext["opencti_field_patch"] == p["opencti_field_patch"] and ext["opencti_operation"] == "patch"
        assert len(json.dumps(p)) <= 64 * 1024
    assert chunks[-1][-1]["id"].startswith("indicator--")


def test_no_operation_shares_a_chunk_with_one_it_references():
    """The worker's splitter sorts by in-bundle dependencies: that would reorder a chunk."""
    observable = ids("domain-name", 1)[0]
    rel = dict(delete_object(ids("relationship", 1)[0]), source_ref=observable, target_ref=AUTHOR)
    chunks = chunk_operations([rel, delete_object(observable)], 4 * MIB)
    assert [[o["id"] for o in c] for c in chunks] == [[rel["id"]], [observable]]


def test_relationship_deletions_get_the_ends_the_splitter_reads():
    from pycti import OpenCTIStix2Splitter

    ops = [delete_object(ids("relationship", 1)[0]), delete_object(ids("indicator", 1)[0])]
    with pytest.raises(KeyError):  # what the worker does with today's pycti: the whole message is discarded
        OpenCTIStix2Splitter().split_bundle_with_expectations({"type": "bundle", "objects": json.loads(
            json.dumps(ops))}, False)
    fixed = with_relationship_ends(ops, AUTHOR)
    assert fixed[0]["source_ref"] == fixed[0]["target_ref"] == AUTHOR and "source_ref" not in fixed[1]
    expected, incompatible, bundles = OpenCTIStix2Splitter().split_bundle_with_expectations(
        {"type": "bundle", "objects": json.loads(json.dumps(fixed))}, False)
    assert expected == 2 and not incompatible
    assert [b["objects"][0]["id"] for b in bundles] == [o["id"] for o in ops], "planned order kept"


def test_sighting_deletions_get_the_refs_the_splitter_reads():
    """A deleted timeline event's sightings: without sighting_of_ref and where_sighted_refs pycti's splitter
    sets them aside as "Incompatible element in bundle" and OpenCTI keeps them."""
    from pycti import OpenCTIStix2Splitter

    ops = [delete_object(ids("sighting", 1)[0])]
    _, incompatible, _ = OpenCTIStix2Splitter().split_bundle_with_expectations(
        {"type": "bundle", "objects": json.loads(json.dumps(ops))}, False)
    assert len(incompatible) == 1
    fixed = with_relationship_ends(ops, AUTHOR)
    assert fixed[0]["sighting_of_ref"] == AUTHOR and fixed[0]["where_sighted_refs"] == [AUTHOR]
    expected, incompatible, _ = OpenCTIStix2Splitter().split_bundle_with_expectations(
        {"type": "bundle", "objects": json.loads(json.dumps(fixed))}, False)
    assert expected == 1 and not incompatible


class FakeWork:
    def __init__(self, script):
        self.script = list(script)  # successive get_work answers (the last repeats)
        self.calls = []

    def get_work(self, work_id):
        self.calls.append(("get_work", work_id))
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def add_expectations(self, work_id, n):
        self.calls.append(("add_expectations", n))


class FakeHelper:
    queue_protocol = "amqp"
    bundle_send_to_queue = True

    def __init__(self, script):
        self.api = type("Api", (), {})()
        self.api.work = FakeWork(script)
        self.sent = []

    def send_stix2_bundle(self, text, **kwargs):
        self.api.work.calls.append(("send", len(json.loads(text)["objects"]), kwargs.get("no_split", False)))
        self.sent.append(text)


def tracking(expected, processed, errors=()):
    return {"tracking": {"import_expected_number": expected, "import_processed_number": processed},
            "errors": list(errors)}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_operations_wait_for_the_work_and_add_one_expectation_per_element():
    helper = FakeHelper([tracking(5, 5)])
    clock = Clock()
    sender = Sender(helper, AUTHOR, max_bytes=2048, clock=clock, sleep=clock.sleep)
    ops = removal_of(6)
    chunks = chunk_operations(ops, 2048)
    assert len(chunks) > 2
    sender.send_operations(removal_of(6), "w1", "seed")
    calls = helper.api.work.calls
    sends = [c for c in calls if c[0] == "send"]
    assert [n for _, n, no_split in sends] == [len(c) for c in chunks] and all(s[2] for s in sends)
    for i, call in enumerate(calls):
        if call[0] == "send":
            assert calls[i - 1] == ("add_expectations", call[1] - 1) or call[1] == 1
            before = calls[:i]
            assert ("get_work", "w1") in before[-3:], "each chunk waits for the work first"


def test_wait_returns_when_every_expectation_was_reported():
    clock = Clock()
    helper = FakeHelper([tracking(10, 2), tracking(10, 7), RuntimeError("502"), tracking(10, 10, [{"message": "x"}])])
    progress = Sender(helper, AUTHOR, timeout=30, clock=clock, sleep=clock.sleep).wait("w")
    assert progress.done and progress.errors == [{"message": "x"}]


def test_wait_gives_up_after_the_timeout_without_progress_but_not_while_progressing():
    clock = Clock()
    script = [tracking(100, n) for n in range(0, 50)] + [tracking(100, 50)]
    helper = FakeHelper(script)
    with pytest.raises(WorkStalled, match="50 of 100"):
        Sender(helper, AUTHOR, timeout=5, clock=clock, sleep=clock.sleep).wait("w")
    assert clock.now > 5 + 1, "progress kept it waiting past the timeout; only the stall ended it"


def test_wait_ends_when_the_work_is_gone_or_the_connector_stops():
    clock = Clock()
    with pytest.raises(WorkStalled, match="no longer knows"):
        Sender(FakeHelper([None]), AUTHOR, clock=clock, sleep=clock.sleep).wait("w")
    with pytest.raises(Stopping):
        Sender(FakeHelper([tracking(2, 1)]), AUTHOR, stopping=lambda: True, clock=clock, sleep=clock.sleep).wait("w")


def test_a_progressing_work_is_read_when_its_rate_says_it_is_done_a_stalled_one_less_and_less_often():
    """A wave read late costs its whole step the delay: while the workers report, the next read comes when the
    rate so far says the rest is in (at most 0.25 s on); without progress the reads back off to one a second."""
    clock = Clock()
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        clock.sleep(seconds)

    # 1,000 items, 100 more reported at each read, then nothing for a while, then done
    script = [tracking(1000, n) for n in range(0, 1000, 100)] + [tracking(1000, 900)] * 8 + [tracking(1000, 1000)]
    helper = FakeHelper(script)
    sender = Sender(helper, AUTHOR, clock=clock, sleep=sleep)
    assert sender.wait("w1").done
    assert waits[0] == 0.02
    progressing = waits[1:9]
    assert all(0.02 <= w <= 0.25 for w in progressing), progressing
    stalled = waits[10:]
    assert stalled == sorted(stalled) and stalled[-1] <= 1.0 and stalled[-1] > 0.25, stalled
