"""core/shapes.py declares what IRIS's export and the envelope hold; real data and the builders keep it true."""

import json
from pathlib import Path
from typing import Any, Dict, Iterable, Set

import pytest

from iris_opencti_module.core import shapes
from iris_opencti_module.core.convert import Converter, ConverterConfig, unwrap_export
from iris_opencti_module.core.envelope import encode, parse_envelope
from iris_opencti_module.transport.messages import case_message, deletion_message, ioc_message
from tests.module.samples import case_parts

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
EXPORTS = sorted(REAL.glob("*case-export*.json"))


def all_keys(rows: Iterable[Dict[str, Any]]) -> Set[str]:
    return set().union(*[set(r) for r in rows]) if rows else set()


def test_envelope_keys_are_the_required_and_the_optional_ones():
    assert set(shapes.Envelope.__required_keys__) == {"schema", "message_id", "event", "case", "iris", "user", "time",
                                                      "bundle", "produced", "deleted", "skipped"}
    assert set(shapes.Envelope.__optional_keys__) == {"covers", "conversion", "part"}


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_real_exports_hold_only_declared_keys(path):
    data = unwrap_export(json.loads(path.read_text(encoding="utf-8")))
    assert set(data) <= set(shapes.CaseExport.__annotations__)
    assert set(data["case"]) <= set(shapes.IrisCase.__annotations__)
    assert all_keys(data.get("iocs") or []) <= set(shapes.IrisIoc.__annotations__)
    assert all_keys(data.get("assets") or []) <= set(shapes.IrisAsset.__annotations__)


@pytest.mark.parametrize("path", sorted(REAL.glob("*messages.jsonl")), ids=lambda p: p.name)
def test_messages_recorded_on_a_real_iris_hold_only_declared_keys(path):
    declared = set(shapes.Envelope.__annotations__)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines
    for envelope in lines:
        assert set(envelope) <= declared and set(shapes.Envelope.__required_keys__) <= set(envelope)
        assert set(envelope["case"]) == set(shapes.EnvelopeCase.__annotations__)


def test_the_builders_write_only_declared_keys():
    data = unwrap_export(json.loads(EXPORTS[0].read_text(encoding="utf-8")))
    converter = Converter(ConverterConfig())
    whole = case_message(converter, data["case"], data["iocs"], data["assets"]).envelope
    built = [whole, ioc_message(converter, data["case"], data["iocs"][0], "ioc.created")[0],
             deletion_message("ioc", 1, 1)] + case_parts(converter, data["case"], data["iocs"], data["assets"],
                                                         20_000)
    parts = [e for e in built if "part" in e]
    assert parts and all(p["conversion"] == converter.conversion for p in parts)  # every part says how
    declared = set(shapes.Envelope.__annotations__)
    for envelope in built:
        envelope = parse_envelope(encode(envelope))
        assert set(envelope) <= declared, set(envelope) - declared
        assert set(shapes.Envelope.__required_keys__) <= set(envelope)
        assert set(envelope.get("part") or {}) <= set(shapes.EnvelopePart.__annotations__)
        assert set(envelope.get("conversion") or {}) <= set(shapes.Conversion.__annotations__)
