"""The write-back rules: OpenCTI's verdict → IRIS IOC tags."""

from types import SimpleNamespace

import pytest

from iris_opencti_connector.enrichment.writeback import (
    LABEL_MAX,
    Verdict,
    WritebackOptions,
    clean_label,
    describe,
    iris_own_tags,
    merge_tags,
    opencti_tags,
    tlp_change,
    verdict_from_entity,
)

TLP_IDS = {"red": 1, "amber": 2, "green": 3, "clear": 4, "amber+strict": 5}


def test_tags_in_priority_order_with_allow_and_deny():
    verdict = Verdict(score=85, labels=["apt28", "c2", "internal-test", "a,b"], has_indicator=True,
                      seen_elsewhere=3)
    tags = opencti_tags(verdict, WritebackOptions(labels_deny=["internal-*"]))
    assert tags == ["opencti:score=85", "opencti:indicator", "opencti:seen=3", "opencti:label=apt28",
                    "opencti:label=c2", "opencti:label=a b"]
    only = opencti_tags(verdict, WritebackOptions(labels_allow=["apt*"], indicator_tag=False, seen_tag=False))
    assert only == ["opencti:score=85", "opencti:label=apt28"]
    assert opencti_tags(Verdict(score=250), WritebackOptions()) == ["opencti:score=100"]


def test_analyst_tags_kept_previous_writeback_replaced():
    merged, dropped = merge_tags("phishing, opencti:score=10,opencti:label=old,triage",
                                 ["opencti:score=85", "opencti:label=apt28"])
    assert merged == "phishing,triage,opencti:score=85,opencti:label=apt28"
    assert dropped == []


def test_512_character_limit_drops_lowest_priority_labels():
    labels = ["label-%02d-%s" % (i, "x" * 20) for i in range(30)]
    tags = opencti_tags(Verdict(score=50, labels=labels), WritebackOptions())
    merged, dropped = merge_tags("analyst-tag", tags)
    assert len(merged) <= 512
    assert merged.startswith("analyst-tag,opencti:score=50,opencti:label=label-00")
    assert dropped and dropped[-1] == "opencti:label=" + labels[-1]
    assert set(merged.split(",")) | set(dropped) == {"analyst-tag"} | set(tags)
    assert "dropped to fit IRIS's 512-character tag limit" in describe(42, 7, tags, dropped, None)


def test_tlp_never_lowered_unless_configured():
    on = WritebackOptions(write_tlp=True)
    assert tlp_change(3, "amber", TLP_IDS, on) == 2          # green -> amber: raised
    assert tlp_change(2, "green", TLP_IDS, on) is None       # amber -> green: not lowered
    assert tlp_change(2, "green", TLP_IDS, WritebackOptions(write_tlp=True, allow_lower_tlp=True)) == 3
    assert tlp_change(3, "red", TLP_IDS, WritebackOptions()) is None  # TLP write-back off by default


def test_verdict_from_pycti_enrichment_entity():
    entity = {
        "x_opencti_score": 85,
        "objectLabel": [{"id": "1", "value": "apt28"}, {"id": "2", "value": "c2"}],
        "objectMarking": [{"definition_type": "TLP", "definition": "TLP:AMBER"},
                          {"definition_type": "statement", "definition": "internal"}],
        "indicators": {"edges": [{"node": {"id": "i"}}]},
        "containers": {"edges": [{"node": {"standard_id": "case-incident--mine"}},
                                 {"node": {"standard_id": "report--other"}}]},
    }
    verdict = verdict_from_entity(entity, case_ref="case-incident--mine")
    assert verdict == Verdict(score=85, labels=["apt28", "c2"], tlp="amber", has_indicator=True, seen_elsewhere=1)
    assert describe(42, 7, opencti_tags(verdict, WritebackOptions()), [], None) == (
        "IOC 42 in case #7: opencti:score=85, opencti:indicator, opencti:seen=1, 2 labels")


def test_label_prefix_must_stay_under_opencti():
    with pytest.raises(ValueError, match="must start with 'opencti:'"):
        WritebackOptions(label_prefix="cti:")


def test_labels_become_one_short_line_of_plain_text():
    labels = ["two\nlines", "nul\x00byte", "<script>alert(1)</script>", "x" * 500, "a,b,c", "tab\there",
              "zero\u200bwidth", "  ", "<b></b>", "ok-label"]
    tags = opencti_tags(Verdict(labels=labels), WritebackOptions())
    assert tags == ["opencti:label=two lines", "opencti:label=nul byte", "opencti:label=alert(1)",
                    "opencti:label=" + "x" * (LABEL_MAX - 1) + "\u2026", "opencti:label=a b c",
                    "opencti:label=tab here", "opencti:label=zero width", "opencti:label=ok-label"]
    for tag in tags:
        assert tag.isprintable() and "," not in tag and "<" not in tag and ">" not in tag
    assert clean_label("caf\u00e9 \u65e5\u672c") == "caf\u00e9 \u65e5\u672c"  # printable unicode is kept


def test_labels_that_came_from_iris_are_not_echoed_back():
    own = iris_own_tags("phishing, Analyst:Keep,opencti:label=apt28,opencti:score=10")
    tags = opencti_tags(Verdict(score=80, labels=["phishing", "analyst:keep", "apt28", "c2"]), WritebackOptions(),
                        own)
    # apt28 came from OpenCTI last time (an opencti: tag), not from IRIS: it stays
    assert tags == ["opencti:score=80", "opencti:label=apt28", "opencti:label=c2"]


def test_seen_counts_only_containers_not_from_iris():
    author = "identity--iris-author"
    iris_ref = {"edges": [{"node": {"source_name": "DFIR-IRIS", "external_id": "12"}}]}
    entity = {"containers": {"edges": [
        {"node": {"standard_id": "case-incident--mine", "createdBy": {"standard_id": author}}},
        # IRIS 2.4: the same IOC is in another IRIS case
        {"node": {"standard_id": "case-incident--other-iris-case", "entity_type": "Case-Incident",
                  "createdBy": {"id": "internal", "standard_id": author}}},
        # an IRIS case created under an earlier author name: still IRIS's, by its external reference
        {"node": {"standard_id": "case-incident--renamed-author", "entity_type": "Case-Incident",
                  "createdBy": {"standard_id": "identity--old"}, "externalReferences": iris_ref}},
        # IRIS's author on anything else (e.g. a grouping built from IRIS objects)
        {"node": {"standard_id": "grouping--iris", "entity_type": "Grouping", "createdBy": {"standard_id": author}}},
        {"node": {"standard_id": "report--cert", "entity_type": "Report", "createdBy": {"standard_id": "identity--x"},
                  "externalReferences": iris_ref}},
        {"node": {"standard_id": "case-incident--soc", "entity_type": "Case-Incident", "createdBy": None}},
    ]}}
    verdict = verdict_from_entity(entity, "case-incident--mine", iris_author=author, iris_source="DFIR-IRIS")
    assert verdict.seen_elsewhere == 2  # the report and the SOC's own case
    assert verdict_from_entity(entity, "case-incident--mine").seen_elsewhere == 5  # without the rule


def test_an_enrichment_request_without_an_entity_id_is_answered_not_queried():
    """Nothing to look up: the connector says so without asking OpenCTI or IRIS (no helper, no client here)."""
    from iris_opencti_connector.enrichment.connector import EnrichConnector

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("queried")

    nothing = SimpleNamespace(query=refuse, api=SimpleNamespace(query=refuse), connector_logger=SimpleNamespace(
        info=refuse, warning=refuse, error=refuse))  # no OpenCTI, no IRIS: any query fails the test
    connector = EnrichConnector({"iris": {"api_key": "k"}}, helper=nothing, ledger=nothing, iris=nothing)
    for request in ({}, {"enrichment_entity": {"standard_id": ""}}, {"entity_id": 5}):
        assert connector.process(request) == "the enrichment request names no entity id"
