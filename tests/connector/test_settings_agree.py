"""The connectors read TLP names, default the broker and fold STIX objects exactly as the IRIS module does
(the module's side of each rule is in tests/module/test_shared_rules.py)."""

from __future__ import annotations

import pytest

from iris_opencti_connector.enrichment.writeback import tlp_name
from iris_opencti_connector.importer.connector import merge_objects
from iris_opencti_connector.settings import ConfigError, IrisSettings, prepare_config
from iris_opencti_module.core.convert import Converter, ConverterConfig
from iris_opencti_module.core.defaults import DEFAULT_AMQP_URL, DEFAULT_QUEUE
from iris_opencti_module.IrisOpenCTIConfig import settings_from_conf
from tests.module.samples import load_export, make_ioc
from tests.module.test_shared_rules import NOT_TLPS, SPELLINGS

SETTINGS_ENV = ("IRIS_DEFAULT_TLP", "IRIS_MAX_TLP", "IRIS_AMQP_URL", "IRIS_QUEUE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("written", "meant"), SPELLINGS)
def test_the_connector_takes_every_tlp_spelling_the_module_takes(written, meant, monkeypatch):
    module = settings_from_conf({"default_tlp": written, "max_tlp": written})
    from_yaml = IrisSettings.from_config({"iris": {"default_tlp": written, "max_tlp": written}})
    monkeypatch.setenv("IRIS_MAX_TLP", written)
    from_env = IrisSettings.from_config({})
    assert (from_yaml.default_tlp, from_yaml.max_tlp, from_env.max_tlp) == (module.default_tlp, module.max_tlp,
                                                                             meant)
    converter = Converter(from_yaml.converter_config())
    assert (converter.config.default_tlp, converter.config.max_tlp) == (meant, meant)
    assert tlp_name({"definition_type": "TLP", "definition": written}) == meant  # OpenCTI's markings, read back


@pytest.mark.parametrize("bad", [b for b in NOT_TLPS if b])
def test_a_value_that_is_no_tlp_stops_the_connector_at_start_naming_the_setting(bad, monkeypatch):
    with pytest.raises(ConfigError, match=r"^IRIS_MAX_TLP: .* is not a TLP; use clear \(or white\)"):
        prepare_config({"iris": {"max_tlp": bad}})
    monkeypatch.setenv("IRIS_DEFAULT_TLP", bad)
    with pytest.raises(ConfigError, match=r"^IRIS_DEFAULT_TLP: "):
        prepare_config({})


def test_the_connector_s_default_broker_is_the_module_s():
    settings = IrisSettings.from_config({})
    module = settings_from_conf(None)
    assert (settings.amqp_url, settings.queue) == (module.amqp_url, module.queue) == (DEFAULT_AMQP_URL,
                                                                                      DEFAULT_QUEUE)


def test_a_batch_of_messages_folds_as_the_converter_folds_one_case():
    """Two updates of one IOC waiting together reach OpenCTI as the later one, as if sent one by one; and the
    events of a case, folded, are the case converted at once."""
    data = load_export()["data"]
    converter = Converter(ConverterConfig(max_tlp="red"))
    edits = [make_ioc(5, "domain", "edited.example", tags="t1", description="before the edit"),
             make_ioc(5, "domain", "edited.example", tags="t2", description="after the edit")]
    upserts = merge_objects(list(converter.convert(data["case"], [ioc]).objects.values()) for ioc in edits)
    (domain,) = [o for o in upserts if o["type"] == "domain-name"]
    assert domain["x_opencti_description"] == "after the edit" and domain["x_opencti_labels"] == ["t1", "t2"]

    iocs = data["iocs"] + [make_ioc(90, "domain", "one.example", description="a"),
                           make_ioc(91, "domain", "one.example", description="b")]
    events = merge_objects(list(converter.convert(data["case"], [ioc], with_case=False).objects.values())
                           for ioc in iocs)
    whole = converter.convert(data["case"], iocs, with_case=False).objects
    assert {o["id"]: o for o in events} == whole
