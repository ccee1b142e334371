"""The mapping tables: complete for IRIS's 160 default IOC types, readable data, overridable by users."""

import json

import pytest

from iris_opencti_module.core.mapping_tables import KINDS, MappingError, Mappings

from .samples import ioc_type_names


def test_every_default_ioc_type_has_an_explicit_entry():
    names = ioc_type_names()
    assert len(names) == 160
    tables = Mappings()
    missing = [n for n in names if n not in tables.ioc_types]
    assert missing == []
    for name in names:
        entry = tables.ioc_types[name]
        assert entry["kind"] in KINDS, name
        if entry["kind"] == "unsupported":
            assert len(entry["reason"]) > 10, f"{name} needs a reason a user can read"


def test_every_default_asset_type_and_tlp_is_mapped():
    tables = Mappings()
    for name in ("Account", "Firewall", "Linux - Server", "Windows - DC", "Windows Account - AD - krbtgt",
                 "Phone - IOS", "VPN", "WAF"):
        assert tables.asset_types[name]["identity_class"] == "system"
    assert tables.asset_types["Windows Account - AD - Admin"]["account"]["is_privileged"] is True
    assert tables.tlp_by_id == {"1": "red", "2": "amber", "3": "green", "4": "clear", "5": "amber+strict"}
    assert tables.tlp_rank("amber+strict") > tables.tlp_rank("amber") > tables.tlp_rank("green")


def test_override_replaces_entries_and_merges_tlp(tmp_path):
    override = tmp_path / "override.json"
    override.write_text(json.dumps({
        "ioc_types": {"uri": {"kind": "observable", "stix_type": "url", "property": "value"}},
        "tlp": {"by_id": {"6": "green"}},
    }))
    tables = Mappings(str(override))
    assert tables.ioc_types["uri"] == {"kind": "observable", "stix_type": "url", "property": "value"}
    assert tables.ioc_types["md5"]["property"] == "hashes.MD5"  # untouched entries stay
    assert tables.tlp_by_id["6"] == "green" and tables.tlp_by_id["1"] == "red"


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot be read"),
    (json.dumps({"ioc_types": {"md5": {"kind": "guess"}}}), "ioc_types['md5']: 'kind' must be one of"),
    (json.dumps({"ioc_types": {"md5": {"kind": "composite", "split": "a|b"}}}), "split must be one of"),
    (json.dumps({"colours": {}}), "'colours' is not one of the tables"),
])
def test_bad_override_names_file_and_entry(tmp_path, content, message):
    override = tmp_path / "bad.json"
    override.write_text(content)
    with pytest.raises(MappingError) as err:
        Mappings(str(override))
    assert message in str(err.value) and "bad.json" in str(err.value)
