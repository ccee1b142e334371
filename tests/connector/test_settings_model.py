"""The connectors' settings models (settings.py): config.yml.sample documents exactly their fields, every field is
described, a refused value stops the connector with one line naming its environment variable, and the
environment wins over config.yml as pycti's ``get_config_variable`` decides."""

from __future__ import annotations

import os
from typing import Any, Dict, Type

import pytest
import yaml

from iris_opencti_connector.enrichment.connector import writeback_options
from iris_opencti_connector.settings import (
    ConfigError,
    ConfigSection,
    EnrichmentSettings,
    IrisSettings,
    prepare_config,
)
from iris_opencti_module.core.case_records import KINDS

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "config.yml.sample")
MODELS = [IrisSettings, EnrichmentSettings]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: a developer's IRIS_* or ENRICHMENT_* would otherwise win over every config."""
    for name in list(os.environ):
        if name.startswith(("IRIS_", "ENRICHMENT_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def sample() -> Dict[str, Any]:
    with open(SAMPLE, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


# ------------------------------------------------------------------------------------ documented and described
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.section)
def test_the_sample_documents_exactly_the_model_s_fields(model: Type[ConfigSection], sample: Dict[str, Any]) -> None:
    keys = set(sample[model.section])
    fields = set(model.model_fields)
    assert fields - keys == set(), f"fields missing from config.yml.sample's {model.section}: section"
    assert keys - fields == set(), f"keys of config.yml.sample's {model.section}: section no setting reads"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.section)
def test_every_field_is_described(model: Type[ConfigSection]) -> None:
    undescribed = [name for name, field in model.model_fields.items() if not (field.description or "").strip()]
    assert undescribed == []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.section)
def test_the_sample_itself_is_accepted(model: Type[ConfigSection], sample: Dict[str, Any]) -> None:
    """A copied sample must start: its values pass the same validators as anyone's."""
    settings = model.from_config(sample)
    assert set(settings.model_dump()) == set(model.model_fields)


def test_the_sample_s_values_are_read_as_the_connector_uses_them(sample: Dict[str, Any]) -> None:
    iris = IrisSettings.from_config(sample)
    assert (iris.url, iris.verify_ssl, iris.max_tlp, iris.confidence, iris.records, iris.mappings) == (
        "https://iris.example", True, "amber", 75, KINDS, None)  # mappings: '' is unset
    enrichment = EnrichmentSettings.from_config(sample)
    assert (enrichment.labels_allow, enrichment.write_tlp, enrichment.seen_tag) == ((), False, True)


# ----------------------------------------------------------------------------------------------- refused values
@pytest.mark.parametrize(("key", "bad", "message"), [
    ("max_tlp", "purple", r"^IRIS_MAX_TLP: 'purple' is not a TLP; use "),
    ("default_tlp", "TLP:BLUE", r"^IRIS_DEFAULT_TLP: 'TLP:BLUE' is not a TLP"),
    ("verify_ssl", "maybe", r"^IRIS_VERIFY_SSL='maybe' is neither a yes/no word"),
    ("records", "note,comment", r"^IRIS_RECORDS: 'comment' is not one of note, event, task, evidence"),
    ("confidence", "high", r"^IRIS_CONFIDENCE: 'high' is not a whole number$"),
    ("confidence", "7.5", r"^IRIS_CONFIDENCE: '7.5' is not a whole number$"),
    ("timeout", "soon", r"^IRIS_TIMEOUT: 'soon' is not a whole number$"),
    ("work_timeout", "5m", r"^IRIS_WORK_TIMEOUT: '5m' is not a number$"),
])
@pytest.mark.parametrize("source", ["env", "yaml"])
def test_a_bad_value_is_refused_naming_the_env_var(key: str, bad: str, message: str, source: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config: Dict[str, Any] = {"iris": {key: bad}}
    if source == "env":
        monkeypatch.setenv(IrisSettings.env_name(key), bad)
        config = {}
    with pytest.raises(ConfigError, match=message):
        IrisSettings.from_config(config)
    with pytest.raises(ConfigError, match=message):  # the check both connectors run before registering
        prepare_config(config)


def test_a_number_from_yes_no_words_is_refused() -> None:
    """pycti turns ``yes`` into True; ``confidence: yes`` must not become a confidence of 1."""
    with pytest.raises(ConfigError, match=r"^IRIS_CONFIDENCE: 'True' is not a whole number"):
        IrisSettings.from_config({"iris": {"confidence": "yes"}})


def test_several_bad_values_are_all_named_on_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        IrisSettings.from_config({"iris": {"max_tlp": "purple", "confidence": "high", "records": "all"}})
    text = str(caught.value)
    assert "\n" not in text and text.startswith("IRIS_MAX_TLP: ")
    assert "; IRIS_CONFIDENCE: 'high'" in text and "; IRIS_RECORDS: 'all'" in text


def test_a_label_prefix_outside_opencti_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The IRIS module skips only ``opencti:*`` tags: another prefix would loop OpenCTI's labels back."""
    monkeypatch.setenv("ENRICHMENT_LABEL_PREFIX", "cti:")
    with pytest.raises(ConfigError, match=r"^ENRICHMENT_LABEL_PREFIX: 'cti:' must start with 'opencti:'"):
        EnrichmentSettings.from_config({})


def test_settings_are_frozen() -> None:
    settings = IrisSettings.from_config({})
    with pytest.raises(ValueError, match="frozen"):
        settings.max_tlp = "red"


def test_secrets_stay_out_of_the_repr() -> None:
    settings = IrisSettings.from_config({"iris": {"api_key": "s3cr3t-key", "ledger": "postgresql://u:pw@db/x"}})
    assert settings.api_key == "s3cr3t-key"
    assert "s3cr3t-key" not in repr(settings) and "pw@db" not in repr(settings)


# ------------------------------------------------------------------------------- numbers, floors and defaults
@pytest.mark.parametrize(("key", "written", "read"), [
    ("timeout", 0, 30), ("timeout", "", 30), ("timeout", None, 30), ("timeout", "12", 12),
    ("operations_max_bytes", 10, 1024), ("operations_max_bytes", 0, 4 * 1024 * 1024),
    ("operations_max_bytes", "4096", 4096),
    ("work_timeout", 0, 300.0), ("work_timeout", "2.5", 2.5), ("ledger_outage_timeout", "", 120.0),
    ("leader_retry", 0, 2.0), ("archive_retention_days", "", 0), ("archive_retention_days", 7, 7),
    ("confidence", 0, 0), ("confidence", "", 75),
])
def test_numbers_keep_their_floors_and_defaults(key: str, written: Any, read: Any) -> None:
    value = getattr(IrisSettings.from_config({"iris": {key: written}}), key)
    assert value == read and type(value) is type(read)


def test_texts_and_lists_are_read_as_before() -> None:
    iris = IrisSettings.from_config({"iris": {"url": "https://iris.example/", "queue": 12, "records": "none"}})
    assert (iris.url, iris.queue, iris.records) == ("https://iris.example", "12", ())
    assert IrisSettings.from_config({"iris": {"records": "evidence; note"}}).records == ("note", "evidence")
    enrichment = EnrichmentSettings.from_config({"enrichment": {"labels_allow": "apt*, ,fin*",
                                                                "labels_deny": ["internal-*", " "]}})
    assert (enrichment.labels_allow, enrichment.labels_deny) == (("apt*", "fin*"), ("internal-*",))


@pytest.mark.parametrize(("written", "read"), [("y", True), ("on", True), ("0", False), ("No", False),
                                               (False, False), ("", True)])
def test_yes_no_words_are_the_module_s(written: Any, read: bool) -> None:
    """One reading for the module and both connectors (``yesno.is_yes``); empty is the default."""
    assert IrisSettings.from_config({"iris": {"create_indicators": written}}).create_indicators is read
    assert EnrichmentSettings.from_config({"enrichment": {"seen_tag": written}}).seen_tag is read


def test_the_enrichment_defaults_are_the_writeback_defaults() -> None:
    """The model and ``WritebackOptions`` must not disagree on what an unconfigured connector does."""
    from iris_opencti_connector.enrichment.writeback import WritebackOptions

    enrichment = EnrichmentSettings.from_config({})
    assert writeback_options(enrichment) == WritebackOptions()
    assert (enrichment.source_name, enrichment.context_tab, enrichment.note_comments) == ("DFIR-IRIS", True, True)


# ------------------------------------------------------------------------------------------ environment first
def test_the_environment_wins_over_config_yml(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"iris": {"confidence": 90, "max_tlp": "green"}, "enrichment": {"write_tlp": False}}
    assert IrisSettings.from_config(config).confidence == 90
    monkeypatch.setenv("IRIS_CONFIDENCE", "40")
    monkeypatch.setenv("ENRICHMENT_WRITE_TLP", "true")
    iris = IrisSettings.from_config(config)
    assert (iris.confidence, iris.max_tlp) == (40, "green")  # the other keys still come from config.yml
    assert EnrichmentSettings.from_config(config).write_tlp is True
    monkeypatch.setenv("IRIS_CONFIDENCE", "")  # empty: unset, as pycti reads it, so the default (not config.yml)
    assert IrisSettings.from_config(config).confidence == 75
