"""A case too large for one message leaves in parts, each under the size ceiling, converted as it goes
(``transport.case_sync``), and together the very case the whole conversion gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iris_opencti_module.core.case_records import SECTIONS
from iris_opencti_module.core.chunks import DEFAULT_MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES
from iris_opencti_module.core.convert import Converter, ConverterConfig, unwrap_export
from iris_opencti_module.core.envelope import EnvelopeError, encode, parse_envelope
from iris_opencti_module.IrisOpenCTIConfig import ConfigError, settings_from_conf
from iris_opencti_module.transport.case_sync import CaseSync
from iris_opencti_module.transport.messages import case_message

from .samples import load_export, make_ioc

REAL = Path(__file__).resolve().parents[1] / "data" / "real"

CONVERTER = Converter(ConverterConfig(iris_url="https://iris.example"))


def big_iocs(count: int, with_bad: int = 0, first_id: int = 1):
    iocs = [make_ioc(first_id + i, "ip-dst", "10.%d.%d.%d" % (i // 65536 % 256, i // 256 % 256, i % 256),
                     tags="phishing,c2") for i in range(count)]
    return iocs + [make_ioc(first_id + count + i, "ip-dst", "not-an-ip-%d" % i) for i in range(with_bad)]


def big_case(count: int, with_bad: int = 0):
    export = unwrap_export(load_export("case_export_2_5.json"))
    return case_message(CONVERTER, export["case"], big_iocs(count, with_bad), export.get("assets") or [])


def big_sync(count: int, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, with_bad: int = 0, **kwargs) -> CaseSync:
    export = unwrap_export(load_export("case_export_2_5.json"))
    return CaseSync(CONVERTER, export["case"], big_iocs(count, with_bad), export.get("assets") or [],
                    max_bytes=max_bytes, **kwargs)


def refs_of(obj):
    for key, value in obj.items():
        if key.endswith("_ref") and isinstance(value, str):
            yield value
        elif key.endswith("_refs") and isinstance(value, list):
            yield from value


def test_a_case_that_fits_goes_whole_as_the_whole_message():
    message = big_case(50)
    sync = big_sync(50)
    [envelope] = list(sync.envelopes())
    assert sync.parts == 1 and "part" not in envelope
    assert dict(envelope, time=None) == dict(message.envelope, time=None)


def test_parts_stay_under_the_ceiling_and_together_hold_the_whole_case():
    message = big_case(3000, with_bad=40)
    whole = message.envelope
    limit = 256 * 1024
    assert len(encode(whole)) > 4 * limit
    sync = big_sync(3000, limit, with_bad=40)
    parts = list(sync.envelopes())
    assert sync.summary() == message.summary()  # known once every part was given
    assert len(parts) == sync.parts >= 4
    total = len(parts)
    for index, part in enumerate(parts):
        body = encode(part)
        assert len(body) <= limit, "part %d is %d bytes" % (index, len(body))
        parsed = parse_envelope(body)
        assert parsed["part"] == dict({"sync": sync.sync_id, "index": index},
                                      **({"total": total} if index == total - 1 else {}))
        assert parsed["event"] == "case.sync" and parsed["case"] == whole["case"]
        assert parsed["time"] == parts[0]["time"] and parsed["conversion"] == whole["conversion"]
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


def test_the_sync_id_follows_what_is_converted():
    """Pushed twice unchanged, a case is the same sync (a push cut short and run again completes it); any
    change in IRIS, or in the conversion settings, makes it another."""
    data = unwrap_export(load_export())
    iocs = big_iocs(40)
    ids = {CaseSync(CONVERTER, data["case"], iocs, []).sync_id for _ in range(2)}
    assert len(ids) == 1
    changed = [dict(iocs[0], ioc_description="edited in IRIS")] + iocs[1:]
    assert CaseSync(CONVERTER, data["case"], changed, []).sync_id not in ids
    other = Converter(ConverterConfig(iris_url="https://iris.example", confidence=40))
    assert CaseSync(other, data["case"], iocs, []).sync_id not in ids


def test_parts_are_deterministic():
    first = list(big_sync(1500, MIN_MESSAGE_BYTES * 2).envelopes())
    again = list(big_sync(1500, MIN_MESSAGE_BYTES * 2).envelopes())
    assert [p["message_id"] for p in first] == [p["message_id"] for p in again]
    assert [p["bundle"]["id"] for p in first] == [p["bundle"]["id"] for p in again]
    assert len(first) > 1


def test_a_10000_ioc_case_fits_rabbitmq_4s_limit_in_parts():
    message = big_case(10000)
    assert len(encode(message.envelope)) > 16 * 1024 * 1024 * 0.9
    parts = list(big_sync(10000).envelopes())
    assert len(parts) > 1
    assert max(len(encode(p)) for p in parts) <= DEFAULT_MAX_MESSAGE_BYTES


@pytest.mark.parametrize("export", sorted(REAL.glob("*case-export-with-records.json")), ids=lambda p: p.name)
def test_a_big_case_with_records_in_parts_is_the_whole_conversion(export):
    """Real exports with notes, timeline, tasks and evidences, and 1,500 more IOCs: the records, converted
    after the last batch of IOCs, point at the objects of IOCs in earlier parts as the whole conversion does."""
    data = unwrap_export(json.loads(export.read_text(encoding="utf-8")))
    iocs = list(data["iocs"]) + big_iocs(1500, first_id=100000)  # ids of their own: not IRIS's
    records = {s: data.get(s) or [] for s in SECTIONS.values()}
    whole = case_message(CONVERTER, data["case"], iocs, data["assets"], records=records).envelope
    parts = list(CaseSync(CONVERTER, data["case"], iocs, data["assets"], records=records,
                          max_bytes=MIN_MESSAGE_BYTES * 2).envelopes())
    assert len(parts) > 3
    assert len({p["part"]["sync"] for p in parts}) == 1
    assert all(p["covers"] == whole["covers"] for p in parts)
    produced = {}
    for part in parts:
        produced.update(part["produced"])
    assert produced == whole["produced"]
    by_id = {o["id"]: o for o in whole["bundle"]["objects"]}
    sent = {o["id"]: o for p in parts for o in p["bundle"]["objects"] if o["type"] != "case-incident"}
    assert set(sent) | {whole["case"]["ref"]} == set(by_id)
    records_keys = [k for k in whole["produced"] if k.split(":")[0] in ("note", "event", "task", "evidence")]
    assert records_keys, "the export has records"
    for key in records_keys:  # a record's objects, with the refs to IOCs of other parts, as in the whole
        for stix_id in whole["produced"][key]:
            assert sent[stix_id] == by_id[stix_id], key
    seen = set()
    for part in parts:  # what a part names is in it or in an earlier part (OpenCTI holds it by then)
        ids = {o["id"] for o in part["bundle"]["objects"]}
        assert {r for o in part["bundle"]["objects"] for r in refs_of(o)} <= ids | seen
        seen |= ids


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
