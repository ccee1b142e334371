"""Upserts as ``no_split`` bundles in waves (sending.py): what one bundle holds needs nothing from a bundle of
its own wave, each wave needs only earlier waves, and a big Case-Incident goes as copies of at most
``CONTAINER_REFS`` refs, one per wave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iris_opencti_connector.importer.sending import (
    CONTAINER_REFS,
    UPSERT_CHUNK,
    Sender,
    refs_of,
    upsert_waves,
    wave_plan,
)
from iris_opencti_module.core.case_records import SECTIONS
from iris_opencti_module.core.convert import unwrap_export
from tests.connector.harness import CONVERTER
from tests.connector.test_sending import AUTHOR, Clock, FakeHelper, tracking
from tests.module.samples import load_export, make_ioc

MAX = 4 * 1024 * 1024
REAL = Path(__file__).resolve().parents[1] / "data" / "real"


def case_objects(count: int, assets: bool = False):
    data = unwrap_export(load_export())
    iocs = [make_ioc(70000 + n, "domain", "wave-%05d.evil.example" % n) for n in range(count)]
    return list(CONVERTER.convert(data["case"], iocs, data["assets"] if assets else []).objects.values())


def assert_waves_hold(objects, waves, chunk=UPSERT_CHUNK):
    """Every ref to an object of the list points into an earlier wave or into the same bundle; every object
    goes, once per bundle; the copies of a container add up to its refs."""
    ids = {o["id"] for o in objects}
    earlier = set()
    refs_sent = {}
    for wave in waves:
        this = set()
        for bundle in wave:
            sent = [json.loads(text) for text in bundle]
            names = [o["id"] for o in sent]
            assert len(names) == len(set(names)) and len(sent) <= chunk
            for obj in sent:
                for ref in refs_of(obj):
                    if ref in ids and ref != obj["id"]:
                        assert ref in earlier or ref in names, "%s names %s, sent later or beside" % (obj["id"], ref)
                if "object_refs" in obj:
                    refs_sent.setdefault(obj["id"], []).extend(obj["object_refs"])
            this |= set(names)
        earlier |= this
    assert earlier == ids
    for obj in objects:
        if "object_refs" in obj:
            assert sorted(refs_sent[obj["id"]]) == sorted(obj["object_refs"])


def test_a_single_event_is_one_bundle_the_worker_orders_itself():
    objects = case_objects(1)
    assert upsert_waves(objects, MAX) == [[[json.dumps(o) for o in objects]]]


def test_a_big_step_goes_in_waves_each_ioc_whole_in_one_bundle_each_copy_of_the_case_alone():
    objects = case_objects(3000)
    waves = upsert_waves(objects, MAX)
    assert_waves_hold(objects, waves)
    incident = next(o for o in objects if o["type"] == "case-incident")
    copies_needed = -(-len(incident["object_refs"]) // CONTAINER_REFS)
    assert copies_needed > 1
    # markings and author; the IOCs; then each copy of the Case-Incident on its own: OpenCTI locks an object
    # while it upserts it, so two copies at once would only make a worker sleep and retry
    assert len(waves) == 2 + copies_needed
    first = {json.loads(t)["type"] for t in waves[0][0]}
    assert first <= {"marking-definition", "identity"}
    for bundle in waves[1]:  # an IOC's observable, indicator and relationship travel together
        names = {json.loads(t)["id"] for t in bundle}
        for obj in map(json.loads, bundle):
            if obj["type"] == "relationship":
                assert {obj["source_ref"], obj["target_ref"]} <= names
    assert all(len(wave) == 1 and len(wave[0]) == 1 for wave in waves[2:])
    copies = [json.loads(wave[0][0]) for wave in waves[2:]]
    assert {c["type"] for c in copies} == {"case-incident"}
    assert all(len(c["object_refs"]) <= CONTAINER_REFS for c in copies)
    assert all({k: v for k, v in c.items() if k != "object_refs"} == {
        k: v for k, v in incident.items() if k != "object_refs"} for c in copies), "every copy has every value"


def test_assets_named_by_several_objects_go_before_what_names_them():
    objects = case_objects(3000, assets=True)
    waves = upsert_waves(objects, MAX)
    assert_waves_hold(objects, waves)
    named = {}
    for obj in objects:
        if obj["type"] != "case-incident":
            for ref in set(refs_of(obj)):
                named[ref] = named.get(ref, 0) + 1
    shared = {o["id"] for o in objects if o["type"] == "identity" and o.get("identity_class") == "system"
              and named.get(o["id"], 0) > 1}
    assert shared, "the sample's assets: a system with an IP and a domain, named by two relationships"
    assert shared <= {json.loads(t)["id"] for t in waves[1][0]}  # right after the markings and the author
    assert len(waves) == 3 + -(-len(next(o for o in objects if o["type"] == "case-incident")["object_refs"])
                               // CONTAINER_REFS)


@pytest.mark.parametrize("export", sorted(REAL.glob("*with-records.json")), ids=lambda p: p.name)
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8])
def test_real_cases_with_records_keep_every_ref_before_or_beside_it(export, chunk):
    """Notes, sightings, observed data and tasks name IOCs, assets and the case: with bundles as small as one
    object, whatever an object names still goes before it or in its own bundle."""
    data = unwrap_export(json.loads(export.read_text(encoding="utf-8")))
    objects = list(CONVERTER.convert(data["case"], data["iocs"], data["assets"],
                                     records={s: data.get(s) or [] for s in SECTIONS.values()}).objects.values())
    assert any(o["type"] in ("note", "sighting", "observed-data") for o in objects)
    assert_waves_hold(objects, upsert_waves(objects, MAX, chunk=chunk), chunk)


def test_each_wave_waits_for_the_work_and_a_single_bundle_does_not():
    clock = Clock()
    helper = FakeHelper([tracking(10, 10)])
    sender = Sender(helper, AUTHOR, clock=clock, sleep=clock.sleep)
    sender.send_upserts(case_objects(1), "w1", "one")
    assert [c[0] for c in helper.api.work.calls if c[0] != "add_expectations"] == ["send"]
    helper.api.work.calls.clear()
    objects = case_objects(3000)
    sender.send_upserts(objects, "w2", "big")
    calls = [c[0] for c in helper.api.work.calls if c[0] != "add_expectations"]
    waves = upsert_waves(objects, MAX)
    sends = [n for n, c in enumerate(calls) if c == "send"]
    assert len(sends) == sum(len(w) for w in waves)
    # between the last bundle of a wave and the first of the next, the work was read
    boundaries = [sum(len(w) for w in waves[:k]) for k in range(1, len(waves))]
    for b in boundaries:
        assert "get_work" in calls[sends[b - 1]:sends[b]]
    assert "get_work" not in calls[sends[0]:sends[len(waves[0]) - 1] + 1]


def test_the_head_is_every_wave_before_the_containers():
    objects = case_objects(3000)
    plan = wave_plan(objects, MAX)
    assert plan.waves == upsert_waves(objects, MAX) and len(plan.ids) == len(plan.waves)
    assert 0 < plan.head < len(plan.waves)
    containers = {o["id"] for o in objects if isinstance(o.get("object_refs"), list)}
    assert not containers & plan.held_before(plan.head), "a container in the head"
    assert all(ids <= containers for ids in plan.ids[plan.head:]), "something else behind the containers"
    assert wave_plan(case_objects(1), MAX).head == 0, "one bundle has no head: the worker orders it"


def test_a_wave_of_what_opencti_already_holds_is_not_waited_for():
    """The next step's markings and author came with the step before (reported): its IOCs go without a wait."""
    clock = Clock()
    objects = case_objects(3000)
    plan = wave_plan(objects, MAX)
    first = plan.ids[0]
    for known, waits in ((frozenset(), True), (frozenset(first), False)):
        helper = FakeHelper([tracking(10, 10)])
        sender = Sender(helper, AUTHOR, clock=clock, sleep=clock.sleep)
        sender.send_waves(plan, "w", "seed", 0, 2, known)
        calls = [c[0] for c in helper.api.work.calls if c[0] != "add_expectations"]
        sends = [n for n, c in enumerate(calls) if c == "send"]
        between = calls[sends[len(plan.waves[0]) - 1]:sends[len(plan.waves[0])]]
        assert ("get_work" in between) is waits
