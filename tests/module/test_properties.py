"""Property-based: whatever IRIS hands over, the converter never crashes, never emits invalid STIX, and every
rejection names the object and says why."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iris_opencti_module.core.convert import Converter, ConverterConfig
from iris_opencti_module.core.envelope import EnvelopeError, parse_envelope
from iris_opencti_module.core.mapping_tables import Mappings

from .samples import ioc_type_names, load_export, make_ioc, sample_value
from .stixcheck import assert_valid_bundle

CONVERTER = Converter(ConverterConfig(), Mappings())
TYPES = ioc_type_names() + ["", "no-such-type", "ip-dst|port|x"]
VALUES = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FFFF), max_size=50),
    st.sampled_from(["not-an-ip", "999.1.1.1", "::", "a|b|c", "|", "AS", "AS99999999999", "[x:y = 'z']",
                     "\x00\x01", "é" * 10, "x" * 5000, "HKLM\\", "filename|", "|deadbeef"]),
    st.sampled_from(TYPES).map(sample_value),
)
IOCS = st.builds(
    lambda n, t, v, tlp, tags, desc: make_ioc(n, t, v, tlp_id=tlp, tags=tags, description=desc),
    st.integers(1, 10**6), st.sampled_from(TYPES), VALUES,
    st.one_of(st.none(), st.integers(-2, 9)), st.text(max_size=80), st.text(max_size=2000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(IOCS, max_size=6, unique_by=lambda i: i["ioc_id"]))
def test_arbitrary_iocs_never_break_the_case(iocs):
    export = load_export()
    export["data"]["iocs"] = iocs
    result = CONVERTER.convert_export(export)
    assert_valid_bundle(result.bundle("prop"))
    handled = {s.object_id for s in result.skipped if s.kind == "IOC"} | {
        int(k.split(":")[1]) for k in result.produced if k.startswith("ioc:")}
    assert handled == {i["ioc_id"] for i in iocs}, "every IOC is either converted or reported"
    for skipped in result.skipped:
        assert skipped.reason and str(skipped.object_id) in str(skipped)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10) | st.none(),
                                 max_size=6).map(lambda d: json.dumps(d).encode())))
def test_malformed_messages_are_refused_with_a_reason(body):
    try:
        envelope = parse_envelope(body)
    except EnvelopeError as exc:
        assert str(exc)
    else:
        assert envelope["schema"] == 1
