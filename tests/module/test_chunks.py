"""A case too large for one message leaves in parts, each self-contained and under the size ceiling."""

from __future__ import annotations

import json

import pytest

from iris_opencti_module.core.chunks import DEFAULT_MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES, split_case_envelope
from iris_opencti_module.core.convert import Converter, ConverterConfig, unwrap_export
from iris_opencti_module.core.envelope import EnvelopeError, encode, parse_envelope
from iris_opencti_module.IrisOpenCTIConfig import ConfigError, settings_from_conf
from iris_opencti_module.transport.messages import case_message

from .samples import load_export, make_ioc

CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))


def big_case(count: int, with_bad: int = 0):
    export = unwrap_export(load_export("case_export_2_5.json"))
    iocs = [make_ioc(i, "ip-dst", "10.%d.%d.%d" % (i // 65536 % 256, i // 256 % 256, i % 256), tags="phishing,c2")
            for i in range(1, count + 1)]
    iocs += [make_ioc(count + i, "ip-dst", "not-an-ip-%d" % i) for i in range(1, with_bad + 1)]
    return case_message(CONVERTER, export["case"], iocs, export.get("assets") or [])


def refs_of(obj):
    for key, value in obj.items():
        if key.endswith("_ref") and isinstance(value, str):
            yield value
        elif key.endswith("_refs") and isinstance(value, list):
            yield from value


def test_a_case_that_fits_goes_whole():
    message = big_case(50)
    assert split_case_envelope(message.envelope) == [message.envelope]
    assert "part" not in message.envelope


def test_parts_stay_under_the_ceiling_and_together_hold_the_whole_case():
    message = big_case(3000, with_bad=40)
    whole = message.envelope
    limit = 256 * 1024
    assert len(encode(whole)) > 4 * limit
    parts = split_case_envelope(whole, limit)
    assert len(parts) >= 4
    total = len(parts)
    for index, part in enumerate(parts):
        body = encode(part)
        assert len(body) <= limit, "part %d is %d bytes" % (index, len(body))
        parsed = parse_envelope(body)
        assert parsed["part"] == {"sync": whole["message_id"], "index": index, "total": total}
        assert parsed["event"] == "case.sync" and parsed["case"] == whole["case"] and parsed["time"] == whole["time"]
        ids = {o["id"] for o in part["bundle"]["objects"]}
        dangling = {r for o in part["bundle"]["objects"] for r in refs_of(o)} - ids
        assert not dangling, "part %d refers outside itself: %s" % (index, sorted(dangling)[:3])
        incident = [o for o in part["bundle"]["objects"] if o["type"] == "case-incident"]
        assert len(incident) == 1 and incident[0]["id"] == whole["case"]["ref"]
        case_key = "case:{}".format(whole["case"]["id"])
        assert part["produced"][case_key] == whole["produced"][case_key]
        keys = [k for k in part["produced"] if k != case_key]
        assert sorted(f"ioc:{i}" for i in part["iris"]["ioc_ids"]) == sorted(k for k in keys if k.startswith("ioc"))
    # together: every key once, every object, every skip report, every ref of the case
    keys = [k for p in parts for k in p["produced"] if not k.startswith("case:")]
    assert sorted(keys) == sorted(k for k in whole["produced"] if not k.startswith("case:"))
    assert {o["id"] for p in parts for o in p["bundle"]["objects"]} == {o["id"] for o in whole["bundle"]["objects"]}
    assert sum(len(p["skipped"]) for p in parts) == len(whole["skipped"]) >= 40
    whole_refs = next(o for o in whole["bundle"]["objects"] if o["type"] == "case-incident")["object_refs"]
    part_refs = {r for p in parts for o in p["bundle"]["objects"] if o["type"] == "case-incident"
                 for r in o.get("object_refs", [])}
    assert part_refs == set(whole_refs)
    assert len({p["message_id"] for p in parts}) == total


def test_parts_are_deterministic():
    first = split_case_envelope(big_case(1500).envelope, MIN_MESSAGE_BYTES * 2)
    again = split_case_envelope(big_case(1500).envelope, MIN_MESSAGE_BYTES * 2)
    assert [p["message_id"] for p in first] == [p["message_id"] for p in again]
    assert [p["bundle"]["id"] for p in first] == [p["bundle"]["id"] for p in again]
    assert len(first) > 1


def test_a_10000_ioc_case_fits_rabbitmq_4s_limit_in_parts():
    message = big_case(10000)
    assert len(encode(message.envelope)) > 16 * 1024 * 1024 * 0.9
    parts = split_case_envelope(message.envelope)
    assert len(parts) > 1
    assert max(len(encode(p)) for p in parts) <= DEFAULT_MAX_MESSAGE_BYTES


@pytest.mark.parametrize("part, error", [
    ({"sync": "s", "index": 2, "total": 2}, "0 <= i < n"),
    ({"sync": "", "index": 0, "total": 1}, "0 <= i < n"),
    ({"sync": "s", "index": True, "total": 2}, "0 <= i < n"),
    ("0/2", "0 <= i < n"),
])
def test_a_malformed_part_is_refused_naming_the_field(part, error):
    envelope = json.loads(encode(big_case(2).envelope))
    envelope["part"] = part
    with pytest.raises(EnvelopeError, match=f"field 'part'.*{error}"):
        parse_envelope(json.dumps(envelope).encode())


def test_only_whole_case_events_come_in_parts():
    envelope = json.loads(encode(big_case(2).envelope))
    envelope.update(event="ioc.created", part={"sync": "s", "index": 0, "total": 2})
    with pytest.raises(EnvelopeError, match="only case.created and case.sync messages come in parts"):
        parse_envelope(json.dumps(envelope).encode())


def test_the_module_setting_for_the_ceiling():
    assert settings_from_conf({}).max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    assert settings_from_conf({"max_message_bytes": "1048576"}).max_message_bytes == 1048576
    for bad in ("1000", "big", "-5"):
        with pytest.raises(ConfigError, match=r"max_message_bytes.*at least 65536"):
            settings_from_conf({"max_message_bytes": bad})
