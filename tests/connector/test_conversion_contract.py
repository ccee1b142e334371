"""The module–connector contract on conversion (core/conversion.py): every module message carries the
settings it was converted with; the connector keeps them per case and refuses to reconcile a case the module
converted otherwise, naming the setting; one IOC event is read and converted in one call."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from iris_opencti_connector.importer.plan import plan_message
from iris_opencti_connector.importer.reconcile import Reconciler
from iris_opencti_connector.settings import IrisSettings
from iris_opencti_module.core.conversion import differences, fingerprint
from iris_opencti_module.core.convert import Converter, ConverterConfig, unwrap_export
from iris_opencti_module.core.envelope import EnvelopeError, encode, parse_envelope
from iris_opencti_module.transport.messages import case_message, deletion_message, ioc_message

EXPORT = Path(__file__).resolve().parents[2] / "examples" / "case-export-2.4.20.json"


def _export() -> Dict[str, Any]:
    return unwrap_export(json.loads(EXPORT.read_text(encoding="utf-8")))


def test_same_settings_same_fingerprint_and_each_difference_is_named() -> None:
    ours = Converter(ConverterConfig(iris_url="https://iris.example/", max_tlp="AMBER")).conversion
    same = Converter(ConverterConfig(iris_url="https://iris.example", max_tlp="tlp:amber")).conversion
    assert ours == same and differences(ours, same) == []  # spellings and a trailing slash do not count
    other = Converter(ConverterConfig(iris_url="https://iris.example", max_tlp="red", author_name="SOC")).conversion
    assert other["fingerprint"] != ours["fingerprint"]
    diffs = differences(ours, other)
    assert len(diffs) == 2
    assert any(d.startswith("max_tlp (IRIS_MAX_TLP, module: 'Maximum TLP to export')") and "'red'" in d
               for d in diffs)
    assert any(d.startswith("author (IRIS_AUTHOR") for d in diffs)
    assert fingerprint(other["settings"]) == other["fingerprint"]


def test_other_mapping_tables_change_the_fingerprint(tmp_path: Path) -> None:
    override = tmp_path / "mappings.json"
    override.write_text(json.dumps({"tlp": {"by_id": {"9": "red"}}}), encoding="utf-8")
    plain = Converter(ConverterConfig()).conversion
    custom = Converter(ConverterConfig(mappings_path=str(override))).conversion
    assert [d.split(" ")[0] for d in differences(plain, custom)] == ["mappings"]


def test_module_messages_carry_the_conversion_and_the_connector_checks_its_shape() -> None:
    data = _export()
    converter = Converter(ConverterConfig(max_tlp="red"))
    whole = case_message(converter, data["case"], data["iocs"], data["assets"]).envelope
    single = ioc_message(converter, data["case"], data["iocs"][0], "ioc.created")[0]
    for envelope in (whole, single):
        assert parse_envelope(encode(envelope))["conversion"] == converter.conversion
    assert "conversion" not in deletion_message("ioc", 1, 1)  # a deletion converts nothing
    broken = dict(single, conversion={"settings": "max_tlp=red"})
    with pytest.raises(EnvelopeError, match="conversion"):
        parse_envelope(encode(broken))


def test_one_ioc_event_reads_its_tlp_once_and_gives_verdict_fingerprint_and_objects(monkeypatch) -> None:
    data = _export()
    converter = Converter(ConverterConfig(max_tlp="amber"))
    calls: List[Any] = []
    real = converter.tlp_of
    monkeypatch.setattr(converter, "tlp_of", lambda ioc: calls.append(ioc) or real(ioc))
    ioc = dict(data["iocs"][0], ioc_tlp_id=None, ioc_tlp_name="green", tlp=None)
    event = converter.convert_ioc(data["case"], ioc)
    assert len(calls) == 1
    assert event.refusal is None and event.tlp == "green" and event.result is not None
    assert event.result.case_ref and any(o["type"] != "identity" for o in event.result.objects.values())
    retagged = dict(ioc, ioc_tags=(ioc.get("ioc_tags") or "") + ",opencti:score=80")
    assert converter.convert_ioc(data["case"], retagged).fingerprint == event.fingerprint
    red = converter.convert_ioc(data["case"], dict(ioc, ioc_tlp_name="red"))
    assert red.result is None and "above the export ceiling" in (red.refusal or "")
    assert red.fingerprint != event.fingerprint


class _Log:
    def __init__(self) -> None:
        self.lines: List[Any] = []

    def info(self, *args: Any) -> None:
        self.lines.append(("info",) + args)

    def warning(self, *args: Any) -> None:
        self.lines.append(("warning",) + args)

    error = warning


class _Client:
    def __init__(self, export: Dict[str, Any]) -> None:
        self.export = export

    def list_cases(self) -> List[Dict[str, Any]]:
        return [{"case_id": self.export["case"]["case_id"]}]

    def export_case_whole(self, case_id: Any) -> Dict[str, Any]:
        return copy.deepcopy(self.export)


def _reconciler(ledger: Any, sent: List[Any], log: _Log, **iris: Any) -> Reconciler:
    settings = IrisSettings.from_config({"iris": dict({"api_key": "k", "url": "https://iris.local"}, **iris)})
    converter = Converter(settings.converter_config())
    return Reconciler(settings, converter, ledger, log, lambda envelope, body: sent.append(envelope) or "ok",
                      client=lambda: _Client(_export()))


def test_reconcile_refuses_a_case_the_module_converted_otherwise_naming_the_setting(ledger) -> None:
    data = _export()
    module = Converter(ConverterConfig(iris_url="https://iris.local", max_tlp="red"))  # the module's settings
    envelope = case_message(module, data["case"], data["iocs"], data["assets"]).envelope
    ledger.apply(plan_message(envelope, ledger, lambda *_: True))
    case_id = data["case"]["case_id"]
    assert ledger.conversion_of(case_id) == module.conversion
    sent: List[Any] = []
    log = _Log()
    stats = _reconciler(ledger, sent, log).run()  # the connector's max TLP: amber
    assert stats == {"cases": 1, "changed": 0, "refused": 1} and sent == []
    reason = next(line[2]["reason"] for line in log.lines if line[0] == "warning")
    assert "max_tlp (IRIS_MAX_TLP" in reason and "'red'" in reason
    # the same settings on both sides: the case is reconciled again
    stats = _reconciler(ledger, sent, _Log(), max_tlp="red").run()
    assert stats["refused"] == 0
    ledger.forget_case(case_id)
    assert ledger.conversion_of(case_id) is None


def test_reconcile_goes_on_for_a_case_no_module_message_described(ledger) -> None:
    sent: List[Any] = []
    stats = _reconciler(ledger, sent, _Log()).run()
    assert stats == {"cases": 1, "changed": 1, "refused": 0}
    assert sent and all(e["event"] == "case.sync" and "conversion" not in e for e in sent)


def test_a_case_synced_in_parts_records_its_conversion_too(ledger) -> None:
    from iris_opencti_module.core.chunks import MIN_MESSAGE_BYTES
    from tests.module.samples import case_parts, make_ioc

    data = _export()
    module = Converter(ConverterConfig(iris_url="https://iris.local", author_name="SOC"))
    iocs = [make_ioc(5000 + n, "domain", f"part-{n}.evil.example") for n in range(400)]
    parts = case_parts(module, data["case"], iocs, [], MIN_MESSAGE_BYTES)
    assert len(parts) > 1
    ledger.apply(plan_message(parts[-1], ledger, lambda *_: True))  # any one part is enough to know
    assert ledger.conversion_of(data["case"]["case_id"]) == module.conversion
