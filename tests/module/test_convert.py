"""IRIS → STIX conversion, on the real IRIS exports and on a case holding every default IOC type."""

import json

import pytest
import stix2

from iris_opencti_module.core import stix_ids
from iris_opencti_module.core.convert import Converter, ConverterConfig, unwrap_export
from iris_opencti_module.core.mapping_tables import Mappings
from iris_opencti_module.core.markings import TLP_MARKINGS

from .samples import every_type_case, ioc_type_names, load_export, make_ioc
from .stixcheck import assert_valid_bundle

TABLES = Mappings()


def convert(case_export, **config):
    return Converter(ConverterConfig(iris_url="https://iris.example", **config), TABLES).convert_export(case_export)


def produced_objects(result, ioc_id):
    return [result.objects[i] for i in result.produced[f"ioc:{ioc_id}"]]


@pytest.mark.parametrize("export_name", ["case_export_2_4_20.json", "case_export_2_5.json"])
def test_real_exports_convert_to_valid_bundles(export_name):
    export = load_export(export_name)
    result = convert(export)
    bundle = result.bundle("t")
    assert_valid_bundle(bundle)
    case = export["data"]["case"]
    incident = result.objects[result.case_ref]
    assert incident["type"] == "case-incident"
    assert incident["name"] == case["name"]
    assert incident["external_references"] == [{
        "source_name": "DFIR-IRIS", "url": "https://iris.example/case?cid={}".format(case["case_id"]),
        "external_id": str(case["case_id"])}]
    assert incident["description"].startswith("Credential phishing")
    assert incident["severity"] == "low" and incident["priority"] == "P4"  # where pycti reads them
    assert "extensions" not in incident
    assert incident["created_by_ref"] == stix_ids.identity_id("DFIR-IRIS", "organization")
    assert incident["object_marking_refs"] == [TLP_MARKINGS["amber"]["id"]]
    assert incident["created"] == "2026-11-28T06:{}".format(case["initial_date"][14:23]) + "Z"
    # object_refs lists everything the case holds: all objects but the author and the markings
    expected = {o["id"] for o in bundle["objects"]
                if o["type"] != "marking-definition" and o["id"] != incident["created_by_ref"]
                and o["id"] != incident["id"]}
    assert set(incident["object_refs"]) == expected
    # the TLP:RED sha1 IOC stays in IRIS, reported with its id
    assert [(s.object_id, s.ioc_type) for s in result.skipped] == [(export["data"]["iocs"][2]["ioc_id"], "sha1")]
    assert "TLP:RED is above the export ceiling TLP:AMBER" in str(result.skipped[0])
    # OpenCTI's confidence control applies to domain objects and relationships; observables have none
    for obj in bundle["objects"]:
        expected_confidence = None if obj["type"] == "marking-definition" or "created" not in obj else 75
        assert obj.get("confidence") == expected_confidence, obj["id"]
    assert {o["confidence"] for o in convert(export, confidence=40).objects.values() if "confidence" in o} == {40}


def test_case_with_every_default_ioc_type():
    export = every_type_case()
    result = convert(export)
    assert_valid_bundle(result.bundle("every-type"))
    skipped = {s.ioc_type: s.reason for s in result.skipped}
    for n, type_name in enumerate(ioc_type_names()):
        entry = TABLES.ioc_types[type_name]
        key = "ioc:%d" % (1000 + n)
        if entry["kind"] == "unsupported":
            assert skipped[type_name].startswith("unsupported type: "), type_name
            assert key not in result.produced
            continue
        assert type_name not in skipped, (type_name, skipped.get(type_name))
        objects = produced_objects(result, 1000 + n)
        types = {o["type"] for o in objects}
        if entry["kind"] == "observable":
            expected = entry["stix_type"]
            if expected == "ip":
                expected = "ipv6-addr" if ":" in objects[0]["value"] else "ipv4-addr"
            assert objects[0]["type"] == expected, type_name
            prop = entry["property"].split(".")
            assert prop[0] in objects[0], type_name
            if entry.get("label"):
                assert entry["label"] in objects[0]["x_opencti_labels"]
            if entry.get("indicator", True):
                assert "indicator" in types and "relationship" in types, type_name
            else:
                assert "indicator" not in types, type_name
        elif entry["kind"] == "indicator":
            assert objects[0]["type"] == "indicator"
            assert objects[0]["pattern_type"] == entry["pattern_type"]
        elif entry["kind"] == "sdo":
            assert objects[0]["type"] == entry["stix_type"], type_name
        # every IOC lands in the case
        incident = result.objects[result.case_ref]
        assert all(o["id"] in incident["object_refs"] for o in objects)


def one(type_name, value, **kwargs):
    export = load_export()
    export["data"]["iocs"] = [make_ioc(7, type_name, value, **kwargs)]
    export["data"]["assets"] = []
    result = convert(export)
    assert_valid_bundle(result.bundle("one"))
    return result


def by_type(result, stix_type):
    return [o for o in result.objects.values() if o["type"] == stix_type]


@pytest.mark.parametrize("type_name, algorithm", [
    ("filename|md5", "MD5"), ("filename|sha1", "SHA-1"), ("filename|sha256", "SHA-256"),
    ("filename|sha512", "SHA-512"), ("filename|sha3-256", "SHA3-256"), ("filename|imphash", "IMPHASH"),
    ("filename|ssdeep", "SSDEEP"), ("filename|tlsh", "TLSH"), ("filename|sha512/256", "SHA-512-256"),
    ("malware-sample", "MD5")])
def test_filename_hash_becomes_one_file_with_name_and_hash(type_name, algorithm):
    from .samples import sample_value

    name, digest = sample_value(type_name).rsplit("|", 1)
    result = one(type_name, sample_value(type_name).replace(digest, digest.upper()) if algorithm != "SSDEEP"
                 else sample_value(type_name))
    files = by_type(result, "file")
    assert len(files) == 1
    assert files[0]["name"] == name
    expected = digest if algorithm == "SSDEEP" else digest.lower()
    if algorithm == "TLSH":
        expected = expected[2:]  # STIX keeps the 70 digits without the "T1" version prefix
    assert files[0]["hashes"] == {algorithm: expected}
    indicator = by_type(result, "indicator")[0]
    assert f"file:name = '{name}'" in indicator["pattern"]


@pytest.mark.parametrize("type_name, value, side, address_type", [
    ("ip-dst|port", "192.0.2.45|443", "dst", "ipv4-addr"),
    ("ip-src|port", "198.51.100.9|53", "src", "ipv4-addr"),
    ("ip-dst|port", "2001:db8::5|8443", "dst", "ipv6-addr"),
])
def test_ip_port_keeps_the_port_on_network_traffic(type_name, value, side, address_type):
    result = one(type_name, value)
    address = by_type(result, address_type)[0]
    traffic = by_type(result, "network-traffic")[0]
    assert traffic[side + "_ref"] == address["id"]
    assert traffic[side + "_port"] == int(value.rsplit("|", 1)[1])
    pattern = by_type(result, "indicator")[0]["pattern"]
    assert "network-traffic:{}_port = {}".format(side, value.rsplit("|", 1)[1]) in pattern


def test_hostname_port_and_domain_ip_and_regkey_value():
    traffic = by_type(one("hostname|port", "c2.evil.example|8443"), "network-traffic")[0]
    assert traffic["dst_port"] == 8443 and traffic["dst_ref"].startswith("domain-name--")
    result = one("domain|ip", "Evil.Example|198.51.100.7")
    domain, address = by_type(result, "domain-name")[0], by_type(result, "ipv4-addr")[0]
    assert domain["value"] == "evil.example" and address["value"] == "198.51.100.7"
    rel = [r for r in by_type(result, "relationship") if r["relationship_type"] == "resolves-to"][0]
    assert (rel["source_ref"], rel["target_ref"]) == (domain["id"], address["id"])
    key = by_type(one("regkey|value", "HKLM\\Run\\upd|C:\\evil.exe"), "windows-registry-key")[0]
    assert key["key"] == "HKEY_LOCAL_MACHINE\\Run\\upd" and key["values"] == [{"data": "C:\\evil.exe"}]


def test_ip_family_detection_and_normalisation():
    assert by_type(one("ip-any", "2001:DB8::7"), "ipv6-addr")[0]["value"] == "2001:db8::7"
    assert by_type(one("ip-dst", " 192.0.2.1 "), "ipv4-addr")[0]["value"] == "192.0.2.1"
    assert by_type(one("AS", "AS64500"), "autonomous-system")[0]["number"] == 64500
    assert by_type(one("md5", "D41D8CD98F00B204E9800998ECF8427E"), "file")[0]["hashes"] == {
        "MD5": "d41d8cd98f00b204e9800998ecf8427e"}
    assert by_type(one("mac-address", "00-1A-2B-3C-4D-5E"), "mac-addr")[0]["value"] == "00:1a:2b:3c:4d:5e"


@pytest.mark.parametrize("type_name, value, reason", [
    ("ip-dst", "not-an-ip", "not an IPv4 or IPv6 address"),
    ("md5", "xyz", "not a MD5 hash"),
    ("AS", "ASX", "not an autonomous system number"),
    ("ip-dst|port", "192.0.2.1|99999", "between 0 and 65535"),
    ("filename|sha256", "nohash", "expected 'filename|hash'"),
    ("url", "just words", "not an absolute URL"),
    ("domain", "bad domain!", "not a valid domain name"),
    ("stix2-pattern", "[ipv4-addr:value = ]", "invalid STIX pattern"),
    # right grammar, no STIX names (found by the property test): the OASIS validator and OpenCTI refuse it
    ("stix2-pattern", "[A:A<0]", "'A' is not a valid observable type name"),
    ("stix2-pattern", "[x-custom:Foo = 1]", "'Foo' is not a valid observable property name"),
    ("nonexistent-type", "x", "has no mapping"),
    ("ip-dst", "", "empty ioc_value"),
])
def test_invalid_value_is_reported_and_the_rest_converts(type_name, value, reason):
    export = load_export()
    good = len(export["data"]["iocs"])
    export["data"]["iocs"].insert(3, make_ioc(99, type_name, value))
    result = convert(export)
    assert_valid_bundle(result.bundle("bad"))
    bad = [s for s in result.skipped if s.object_id == 99]
    assert len(bad) == 1 and reason in bad[0].reason
    assert bad[0].ioc_type == type_name and bad[0].value == value
    assert f"IOC 99 ({type_name} " in str(bad[0])
    assert "ioc:99" not in result.produced
    assert len([k for k in result.produced if k.startswith("ioc:")]) == good - 1  # only the TLP:RED one withheld


def test_tlp_markings_by_iris_id_and_ceiling():
    expected = {1: None, 2: "amber", 3: "green", 4: "clear", 5: None}
    for tlp_id, name in expected.items():
        result = one("domain", "x%d.example" % tlp_id, tlp_id=tlp_id)
        if name is None:
            assert result.produced.get("ioc:7") is None
            continue
        domain = by_type(result, "domain-name")[0]
        assert domain["object_marking_refs"] == [TLP_MARKINGS[name]["id"]]
        assert TLP_MARKINGS[name]["id"] in result.objects
    assert TLP_MARKINGS["clear"]["id"] == "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9"
    # raising the ceiling lets TLP:AMBER+STRICT and TLP:RED through, with OpenCTI's marking objects
    export = load_export()
    export["data"]["iocs"] = [make_ioc(1, "domain", "s.example", tlp_id=5),
                              make_ioc(2, "domain", "r.example", tlp_id=1)]
    result = convert(export, max_tlp="red")
    assert_valid_bundle(result.bundle("tlp"))
    strict = result.objects["marking-definition--826578e1-40ad-459f-bc73-ede076f81f37"]
    assert strict["name"] == "TLP:AMBER+STRICT" and strict["x_opencti_definition"] == "TLP:AMBER+STRICT"
    assert TLP_MARKINGS["red"]["id"] in result.objects
    # an unknown TLP id is treated as the most restrictive: it never leaves IRIS
    result = one("domain", "u.example", tlp_id=42)
    assert "unknown TLP id 42" in result.skipped[0].reason


def test_labels_from_tags_never_include_writeback_tags():
    result = one("domain", "l.example", tags="phishing, opencti:score=80,Opencti:label=apt,c2")
    domain = by_type(result, "domain-name")[0]
    assert domain["x_opencti_labels"] == ["phishing", "c2"]
    assert by_type(result, "indicator")[0]["labels"] == ["phishing", "c2"]


def test_indicator_creation_is_configurable():
    export = load_export()
    result = convert(export, create_indicators=False)
    assert not by_type(result, "indicator")[1:]  # only the sigma rule, which is an indicator by nature
    assert by_type(result, "indicator")[0]["pattern_type"] == "sigma"
    based_on = [r for r in by_type(convert(export), "relationship") if r["relationship_type"] == "based-on"]
    assert len(based_on) >= 8
    for rel in based_on:
        assert rel["source_ref"].startswith("indicator--")


def test_conversion_is_deterministic_and_timestamps_come_from_iris():
    first = json.dumps(convert(load_export()).bundle("k"), sort_keys=True)
    second = json.dumps(convert(load_export()).bundle("k"), sort_keys=True)
    assert first == second
    stamps = {o.get("created") for o in json.loads(first)["objects"] if o.get("created")}
    assert stamps <= {"2026-11-28T06:40:10.969Z", "2026-11-28T06:40:11.613Z", "2026-11-28T06:40:11.552Z",
                      "2026-11-28T06:40:11.585Z", "1970-01-01T00:00:00.000Z", "2017-01-20T00:00:00.000Z",
                      "2022-10-01T00:00:00.000Z"}
    export = load_export()
    export["data"]["iocs"][0]["modification_history"] = {"1700000000.5": {"action": "created"},
                                                         "1700000100.25": {"action": "updated"}}
    result = convert(export)
    indicator = [o for o in produced_objects(result, 29) if o["type"] == "indicator"][0]
    assert indicator["created"] == "2023-11-14T22:13:20.500Z" and indicator["modified"] == "2023-11-14T22:15:00.250Z"


def test_single_ioc_event_uses_same_ids_as_the_full_case():
    export = load_export()
    full = convert(export)
    converter = Converter(ConverterConfig(iris_url="https://iris.example"), TABLES)
    data = unwrap_export(export)
    single = converter.convert(data["case"], [data["iocs"][0]])
    assert single.case_ref == full.case_ref
    assert single.produced["ioc:29"] == full.produced["ioc:29"]
    assert set(single.objects[single.case_ref]["object_refs"]) == set(single.produced["ioc:29"])


def test_assets_become_systems_with_related_observables():
    result = convert(load_export())
    systems = {o["name"]: o for o in by_type(result, "identity") if o["identity_class"] == "system"}
    assert set(systems) == {"FW-EDGE", "BUILD-07", "jenkins"}
    assert "compromise:compromised" in systems["BUILD-07"]["labels"]
    assert "compromise:not-compromised" in systems["FW-EDGE"]["labels"]
    assert systems["BUILD-07"]["description"] == "Jenkins build server"
    related = {(r["source_ref"], r["target_ref"]) for r in by_type(result, "relationship")
               if r["relationship_type"] == "related-to"}
    ip = stix_ids.sco_id({"type": "ipv4-addr", "value": "10.1.2.3"})
    domain = stix_ids.sco_id({"type": "domain-name", "value": "build.example"})
    assert (ip, systems["BUILD-07"]["id"]) in related and (domain, systems["BUILD-07"]["id"]) in related
    account = [o for o in by_type(result, "user-account") if o["account_login"] == "jenkins"][0]
    assert account["account_type"] == "unix"
    assert (account["id"], systems["jenkins"]["id"]) in related


def test_asset_with_bad_ip_keeps_the_asset():
    export = load_export()
    export["data"]["assets"][0]["asset_ip"] = "not-an-ip, 203.0.113.5"
    result = convert(export)
    assert [(s.kind, s.ioc_type, s.value) for s in result.skipped if s.kind == "asset"] == [
        ("asset", "asset_ip", "not-an-ip")]
    assert "asset:12" in result.produced
    assert stix_ids.sco_id({"type": "ipv4-addr", "value": "203.0.113.5"}) in result.produced["asset:12"]


def test_observable_ids_match_stix2_library():
    result = convert(every_type_case())
    checked = 0
    for obj in result.objects.values():
        if obj["type"] in stix_ids.SCO_ID_PROPERTIES and obj["type"] in stix2.v21.OBJ_MAP_OBSERVABLE:
            rebuilt = stix2.parse({k: v for k, v in obj.items() if k != "id"}, allow_custom=True)
            assert rebuilt.id == obj["id"], obj
            checked += 1
    assert checked >= 25


def test_not_an_export_is_rejected_with_a_clear_message():
    for bad in ({}, {"status": "success", "data": []}, {"case": {"name": "x"}}, [1, 2]):
        with pytest.raises(ValueError) as err:
            unwrap_export(bad)
        assert "not an IRIS case export" in str(err.value)
