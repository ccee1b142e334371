"""Property-based: any message that passes the envelope check is either resolved or refused as poison (never an
unexpected exception that would retry it forever), and write-back tags always fit IRIS."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from iris_opencti_connector.enrichment.writeback import Verdict, WritebackOptions, merge_tags, opencti_tags
from iris_opencti_connector.importer.plan import plan_message
from iris_opencti_connector.store.ledger import Ledger
from iris_opencti_module.core.envelope import EVENTS, EnvelopeError, parse_envelope

POISON = (KeyError, TypeError, ValueError, AttributeError)  # what the connector dead-letters
LEDGER = Ledger(":memory:")
LEDGER.record(1, {"ioc:1": ["domain-name--a", "indicator--b"], "case:1": ["case-incident--c"]},
              case_ref="case-incident--c")
JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=10)
ENVELOPES = st.fixed_dictionaries({
    "schema": st.just(1), "event": st.sampled_from(sorted(EVENTS)),
    "case": st.fixed_dictionaries({"id": st.one_of(st.none(), st.integers(0, 3), st.text(max_size=5))},
                                  optional={"ref": JUNK, "name": JUNK}),
    "iris": st.one_of(JUNK, st.fixed_dictionaries({"ioc_ids": st.lists(st.integers(0, 3) | st.text(max_size=3))})),
    "produced": st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=12), max_size=3), max_size=3),
    "deleted": st.lists(JUNK, max_size=2),
    "bundle": st.one_of(st.none(), st.fixed_dictionaries({"type": st.just("bundle"), "id": st.just("bundle--x"),
                                                          "objects": st.lists(JUNK, max_size=3)})),
})


@settings(max_examples=300, deadline=None)
@given(ENVELOPES)
def test_any_accepted_message_is_resolved_or_poison(envelope):
    try:
        checked = parse_envelope(json.dumps(envelope).encode())
    except EnvelopeError:
        return
    try:
        plan = plan_message(checked, LEDGER, lambda *_: True)
    except POISON:
        return
    for op in plan.operations():
        assert op["opencti_operation"] in ("delete", "patch") and "--" in op["id"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600), st.lists(st.text(max_size=80), max_size=40), st.one_of(st.none(), st.integers()))
def test_writeback_tags_always_fit_and_keep_analyst_tags(current, labels, score):
    tags = opencti_tags(Verdict(score=score, labels=labels), WritebackOptions())
    merged, dropped = merge_tags(current, tags)
    analyst = [t.strip() for t in current.split(",") if t.strip() and not t.strip().lower().startswith("opencti:")]
    kept = merged.split(",") if merged else []
    assert kept[:len(analyst)] == analyst
    if len(",".join(analyst)) <= 512:
        assert len(merged) <= 512 or not tags
    assert set(kept[len(analyst):]) | set(dropped) == set(tags)
