"""Property-based: arbitrary IOCs through the module's hooks, as IRIS hands them over. The hook never fails,
says what it skipped and why, and whatever it publishes is a valid envelope holding valid STIX."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iris_opencti_module.core.envelope import encode, parse_envelope

from .iris_world import TLP_IDS, IrisWorld
from .samples import ioc_type_names, sample_value
from .stixcheck import assert_valid_bundle

IDS = itertools.count(9001)  # a new IOC each example: the module remembers what it shipped per IOC
VALUES = st.one_of(st.text(max_size=200), st.sampled_from(ioc_type_names()).map(sample_value),
                   st.sampled_from(["not-an-ip", "a|b", "\x00", "é" * 300, "x" * 3000]))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(type_name=st.sampled_from(ioc_type_names()), value=VALUES,
       tlp_id=st.one_of(st.sampled_from(sorted(TLP_IDS.values())), st.integers(-1, 99), st.none()),
       tags=st.text(max_size=100), description=st.text(max_size=500))
def test_any_ioc_through_the_create_hook(module, type_name, value, tlp_id, tags, description):
    world = IrisWorld("2.5")
    case = world.case(77)
    ioc_id = next(IDS)
    ioc = world.ioc(ioc_id, value if value.strip() else "x", type_name, [case], tags=tags, description=description)
    ioc.ioc_tlp_id = tlp_id
    status = module.run("on_postload_ioc_create", ioc)
    assert status.is_success(), status.get_logs()
    logs = " ".join(status.get_logs())
    messages = module.messages()
    assert len(messages) <= 1
    for envelope in messages:
        assert parse_envelope(encode(envelope))["event"] == "ioc.created"
        if envelope["bundle"]:
            assert_valid_bundle(envelope["bundle"])
    if not any(k.startswith("ioc:") and v for m in messages for k, v in m["produced"].items()):
        assert "IOC %d" % ioc_id in logs, logs  # a refusal names the IOC and says why
