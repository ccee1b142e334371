"""Objects OpenCTI's workers dropped for a missing reference are all sent again, even past the 100 errors a
work keeps (the platform's ``reportExpectation`` stores only the first 100; the simulator does the same), and
in dependency levels so that a relationship does not overtake its ends again."""

from __future__ import annotations

import json
from types import SimpleNamespace

from iris_opencti_connector.importer.connector import ImportConnector
from iris_opencti_connector.importer.sending import WorkProgress, dependency_levels
from tests.connector.harness import CONVERTER
from tests.module.samples import load_export, make_ioc


class FakeOpenCTI:
    """What the connector asks OpenCTI here: which ids it holds (the ``ids`` filter), and a work's figures."""

    def __init__(self, held):
        self.held = set(held)
        self.sent = []

    def query(self, _query, variables):
        ids = variables["filters"]["filters"][0]["values"]
        return {"data": {field: {"edges": [{"node": {"id": i, "standard_id": i, "x_opencti_stix_ids": []}}
                                           for i in ids if i in self.held]}
                         for field in ("stixCoreObjects", "stixCoreRelationships")}}

    def send_upserts(self, objects, _work_id, _seed):
        self.sent.append([o["id"] for o in objects])
        self.held.update(o["id"] for o in objects)  # this time the workers find the references
        return json.dumps({"objects": objects})


def connector_with(fake):
    logger = SimpleNamespace(info=lambda *a, **k: None)
    helper = SimpleNamespace(api=SimpleNamespace(query=fake.query), connector_logger=logger)
    archive = SimpleNamespace(record_bundle=lambda *a, **k: None)
    connector = ImportConnector({"iris": {"url": "https://iris.example"}}, helper=helper,
                                ledger=SimpleNamespace(shared=False), archive=archive)
    connector.sender = SimpleNamespace(send_upserts=fake.send_upserts, wait=lambda _w: WorkProgress(1, 1, []))
    return connector


def test_more_than_100_dropped_objects_are_all_sent_again_in_dependency_levels():
    export = load_export()
    iocs = [make_ioc(1000 + n, "ip-dst", "10.9.%d.%d" % (n // 256, n % 256)) for n in range(150)]
    upserts = list(CONVERTER.convert(export["data"]["case"], iocs).objects.values())
    relationships = {o["id"] for o in upserts if o["type"] == "relationship"}
    indicators = {o["id"] for o in upserts if o["type"] == "indicator"}
    dropped = relationships | set(list(indicators)[:60])
    fake = FakeOpenCTI({o["id"] for o in upserts} - dropped)
    errors = [{"message": "MISSING_REFERENCE_ERROR", "source": json.dumps({"id": i})} for i in sorted(dropped)[:100]]
    case = next(o["id"] for o in upserts if o["type"] == "case-incident")
    _progress, resent = connector_with(fake)._resend_refused(WorkProgress(10, 10, errors), "w", "seed", {}, upserts)
    # past the 100 errors OpenCTI kept; and the case, whose dropped upsert the cut list may hide
    assert resent == len(dropped) + 1 == 211
    assert {i for level in fake.sent for i in level} == dropped | {case}
    level_of = {i: n for n, level in enumerate(fake.sent) for i in level}
    by_id = {o["id"]: o for o in upserts}
    later = [r for r in relationships if any(level_of.get(by_id[r][end], -1) >= level_of[r]
                                             for end in ("source_ref", "target_ref"))]
    assert not later, "a relationship went with or before a dropped end"
    assert len(fake.sent) == 3  # the 60 indicators, then their relationships, then the case that holds them
    assert fake.sent[-1] == [case]


def test_a_held_object_named_in_the_errors_is_sent_again():
    """A case OpenCTI held before the step is "held" though its upsert (adding refs) was dropped."""
    export = load_export()
    upserts = list(CONVERTER.convert(export["data"]["case"], [make_ioc(1, "ip-dst", "10.0.0.1")]).objects.values())
    case = next(o for o in upserts if o["type"] == "case-incident")
    fake = FakeOpenCTI({o["id"] for o in upserts})
    errors = [{"message": "MISSING_REFERENCE_ERROR", "source": json.dumps(case)}]
    _progress, resent = connector_with(fake)._resend_refused(WorkProgress(3, 3, errors), "w", "seed", {}, upserts)
    assert resent == 1 and fake.sent == [[case["id"]]]


def test_objects_refused_for_another_reason_are_not_sent_again():
    export = load_export()
    upserts = list(CONVERTER.convert(export["data"]["case"], [make_ioc(1, "ip-dst", "10.0.0.1")]).objects.values())
    bad = next(o["id"] for o in upserts if o["type"] == "indicator")
    fake = FakeOpenCTI({o["id"] for o in upserts} - {bad})
    errors = [{"message": "Invalid pattern", "source": json.dumps({"id": bad})}]
    _progress, resent = connector_with(fake)._resend_refused(WorkProgress(3, 3, errors), "w", "seed", {}, upserts)
    assert resent == 0 and fake.sent == []


def test_no_error_no_question():
    fake = FakeOpenCTI(set())
    fake.query = None  # would fail if asked
    _progress, resent = connector_with(fake)._resend_refused(WorkProgress(3, 3, []), "w", "s", {}, [{"id": "x--1"}])
    assert resent == 0


def test_dependency_levels_put_references_first():
    objects = [{"id": "relationship--1", "source_ref": "indicator--1", "target_ref": "ipv4-addr--1"},
               {"id": "indicator--1", "created_by_ref": "identity--outside"}, {"id": "ipv4-addr--1"}]
    levels = [[o["id"] for o in level] for level in dependency_levels(objects)]
    assert levels == [["indicator--1", "ipv4-addr--1"], ["relationship--1"]]
