"""The module computes OpenCTI's ids itself (it cannot depend on pycti); prove they are pycti's ids."""

import json

import pycti  # noqa: F401  (registers OpenCTI's custom observables with stix2)
import stix2
from pycti import CaseIncident, Identity, Indicator, StixCoreRelationship, Vulnerability
from pycti.entities.opencti_campaign import Campaign
from pycti.entities.opencti_threat_actor_group import ThreatActorGroup

from iris_opencti_module import stix_ids
from iris_opencti_module.convert import Converter, ConverterConfig
from tests.module.samples import every_type_case


def test_sdo_and_sro_ids_are_pycti_ids():
    result = Converter(ConverterConfig(max_tlp="red")).convert_export(every_type_case())
    checked = set()
    for obj in result.objects.values():
        kind = obj["type"]
        if kind == "case-incident":
            assert obj["id"] == CaseIncident.generate_id(obj["name"], obj["created"])
        elif kind == "indicator":
            assert obj["id"] == Indicator.generate_id(obj["pattern"])
        elif kind == "identity":
            assert obj["id"] == Identity.generate_id(obj["name"], obj["identity_class"])
        elif kind == "relationship":
            assert obj["id"] == StixCoreRelationship.generate_id(
                obj["relationship_type"], obj["source_ref"], obj["target_ref"])
        elif kind == "vulnerability":
            assert obj["id"] == Vulnerability.generate_id(obj["name"])
        elif kind == "campaign":
            assert obj["id"] == Campaign.generate_id(obj["name"])
        elif kind == "threat-actor":
            assert obj["id"] == ThreatActorGroup.generate_id(obj["name"])
        else:
            continue
        checked.add(kind)
    assert checked == {"case-incident", "indicator", "identity", "relationship", "vulnerability", "campaign",
                       "threat-actor"}


def test_opencti_custom_observable_ids_are_stix2_ids():
    result = Converter(ConverterConfig()).convert_export(every_type_case())
    custom = {"text", "hostname", "user-agent", "cryptocurrency-wallet", "phone-number", "bank-account"}
    seen = set()
    for obj in result.objects.values():
        if obj["type"] in custom:
            rebuilt = stix2.parse(json.loads(json.dumps({k: v for k, v in obj.items() if k != "id"})),
                                  allow_custom=True)
            assert rebuilt.id == obj["id"] == stix_ids.sco_id(obj)
            seen.add(obj["type"])
    assert seen == custom
