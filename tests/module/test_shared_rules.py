"""Rules every part applies the same way: TLP names, the broker's default URL, and how two copies of one STIX
object fold into one (the connector's side of each is in tests/connector/test_settings_agree.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from iris_opencti_module.core.convert import Converter, ConverterConfig
from iris_opencti_module.core.defaults import DEFAULT_AMQP_URL, DEFAULT_QUEUE
from iris_opencti_module.core.mapping_tables import Mappings
from iris_opencti_module.core.markings import TLP_ORDER, TLPError, normalise_tlp, parse_tlp
from iris_opencti_module.core.stix_merge import merge_object
from iris_opencti_module.IrisOpenCTIConfig import ConfigError, settings_from_conf
from iris_opencti_module.tools import doctor
from iris_opencti_module.tools.cli import build_parser

from .samples import DATA, load_export, make_ioc

EXAMPLE = os.path.join(os.path.dirname(DATA), "..", "examples", "case-export-2.4.20.json")
TABLES = Mappings()

#: (what an operator may write, the TLP it means)
SPELLINGS = [
    ("amber", "amber"), ("AMBER", "amber"), ("TLP:AMBER", "amber"), ("tlp:amber", "amber"), (" Amber ", "amber"),
    ("white", "clear"), ("WHITE", "clear"), ("TLP:WHITE", "clear"), ("clear", "clear"), ("TLP:CLEAR", "clear"),
    ("green", "green"), ("amber+strict", "amber+strict"), ("AMBER+STRICT", "amber+strict"),
    ("TLP:AMBER+STRICT", "amber+strict"), ("red", "red"), ("TLP: RED", "red"),
]
NOT_TLPS = ["purple", "TLP:", "amber strict", "tlp-amber", "4", ""]


@pytest.mark.parametrize(("written", "meant"), SPELLINGS)
def test_every_tlp_spelling_means_the_same_tlp_in_the_parser_the_module_and_the_converter(written, meant):
    assert normalise_tlp(written) == parse_tlp(written, "x") == meant
    settings = settings_from_conf({"default_tlp": written, "max_tlp": written})
    assert (settings.default_tlp, settings.max_tlp) == (meant, meant)
    converter = Converter(ConverterConfig(default_tlp=written, max_tlp=written), TABLES)
    assert (converter.config.default_tlp, converter.config.max_tlp) == (meant, meant)


@pytest.mark.parametrize("bad", NOT_TLPS)
def test_a_value_that_is_no_tlp_is_refused_naming_the_setting(bad):
    assert normalise_tlp(bad) is None
    with pytest.raises(TLPError, match=r"^IRIS_MAX_TLP: .* is not a TLP; use clear \(or white\), green"):
        parse_tlp(bad, "IRIS_MAX_TLP")
    if bad:  # the module takes an empty field for its default, as IRIS shows one
        with pytest.raises(ConfigError, match=r"^Maximum TLP to export \(max_tlp\): "):
            settings_from_conf({"max_tlp": bad})
        with pytest.raises(ConfigError, match=r"^Default TLP \(default_tlp\): "):
            settings_from_conf({"default_tlp": bad})
    with pytest.raises(ValueError, match="maximum TLP"):
        Converter(ConverterConfig(max_tlp=bad), TABLES)


def test_the_order_is_the_marking_order():
    assert TLP_ORDER == ("clear", "green", "amber", "amber+strict", "red")
    assert [TABLES.tlp_rank(name) for name in TLP_ORDER] == [0, 1, 2, 3, 4]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "iris_opencti_module", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, **(env or {})))


def test_the_cli_takes_the_module_s_tlp_spellings_and_names_the_option_it_refuses(tmp_path):
    out = tmp_path / "b.json"
    proc = run_cli("export", EXAMPLE, "-o", str(out), "--max-tlp", "TLP:RED", "--default-tlp", "WHITE")
    assert proc.returncode == 0, proc.stderr
    assert "0 IOCs skipped" in proc.stdout  # IOC 31 is TLP:RED: under a red ceiling it leaves IRIS
    proc = run_cli("export", EXAMPLE, "-o", str(out), env={"IRIS_MAX_TLP": "Amber+Strict"})
    assert proc.returncode == 0, proc.stderr
    assert "TLP:RED is above the export ceiling TLP:AMBER+STRICT" in proc.stderr
    proc = run_cli("export", EXAMPLE, "-o", str(out), "--max-tlp", "purple")
    assert proc.returncode == 2
    assert proc.stderr.startswith("iris-opencti: error: --max-tlp (env IRIS_MAX_TLP): 'purple' is not a TLP")


def test_one_default_broker_url_for_the_module_push_and_doctor(monkeypatch):
    for name in ("IRIS_AMQP_URL", "IRIS_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    assert urlsplit(DEFAULT_AMQP_URL).hostname == "rabbitmq"
    settings = settings_from_conf(None)
    assert (settings.amqp_url, settings.queue) == (DEFAULT_AMQP_URL, DEFAULT_QUEUE)
    args = build_parser().parse_args(["push", "case.json"])
    assert (args.amqp_url, args.queue) == (DEFAULT_AMQP_URL, DEFAULT_QUEUE)
    asked = []

    def check_rabbitmq(url, queue):
        asked.append((url, queue))
        return doctor.Check("RabbitMQ", True, "stub")

    monkeypatch.setattr(doctor, "check_rabbitmq", check_rabbitmq)
    doctor.run(env={}, print_line=lambda line: None)
    assert asked == [(DEFAULT_AMQP_URL, DEFAULT_QUEUE)]


def two_iocs_one_value():
    export = load_export()
    data = export["data"]
    data["iocs"] = [make_ioc(1, "domain", "one.example", tags="first", description="said first"),
                    make_ioc(2, "domain", "one.example", tags="second", description="said second")]
    return data


def test_two_iris_objects_one_stix_object_the_later_s_values_win_and_lists_add_up():
    data = two_iocs_one_value()
    result = Converter(ConverterConfig(), TABLES).convert(data["case"], data["iocs"], with_case=False)
    (domain,) = [o for o in result.objects.values() if o["type"] == "domain-name"]
    assert domain["x_opencti_description"] == "said second"
    assert domain["x_opencti_labels"] == ["first", "second"]
    (indicator,) = [o for o in result.objects.values() if o["type"] == "indicator"]
    assert indicator["description"] == "said second" and indicator["labels"] == ["first", "second"]


def test_a_case_converted_at_once_equals_its_iocs_converted_one_event_at_a_time_and_folded():
    data = two_iocs_one_value()
    data["iocs"] += load_export()["data"]["iocs"]
    converter = Converter(ConverterConfig(max_tlp="red"), TABLES)
    whole = converter.convert(data["case"], data["iocs"], with_case=False).objects
    folded = {}
    for ioc in data["iocs"]:
        for obj in converter.convert(data["case"], [ioc], with_case=False).objects.values():
            if obj["id"] in folded:
                merge_object(folded[obj["id"]], obj)
            else:
                folded[obj["id"]] = obj
    assert json.dumps(folded, sort_keys=True) == json.dumps(whole, sort_keys=True)


def test_folding_copies_lists_and_keeps_what_the_later_copy_lacks():
    first_labels = ["a"]
    known = {"id": "x--1", "labels": first_labels, "name": "old", "description": "kept"}
    later = {"id": "x--1", "labels": ["b", "a"], "name": "new"}
    assert merge_object(known, later) is known
    assert known == {"id": "x--1", "labels": ["a", "b"], "name": "new", "description": "kept"}
    assert first_labels == ["a"] and later["labels"] == ["b", "a"]
