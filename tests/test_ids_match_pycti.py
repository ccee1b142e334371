"""The module computes OpenCTI's ids itself (it cannot depend on pycti); prove they are pycti's ids."""

import json

import pycti  # noqa: F401  (registers OpenCTI's custom observables with stix2)
import stix2
from pycti import CaseIncident, Identity, Indicator, StixCoreRelationship, Vulnerability
from pycti.entities.opencti_campaign import Campaign
from pycti.entities.opencti_threat_actor_group import ThreatActorGroup

from iris_opencti_module.core import stix_ids
from iris_opencti_module.core.convert import Converter, ConverterConfig
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


def test_record_ids_are_pycti_ids():
    """Notes, sightings, observed-data and tasks (case_records.py) get the ids pycti's generators give."""
    from pycti.entities.opencti_note import Note
    from pycti.entities.opencti_observed_data import ObservedData
    from pycti.entities.opencti_stix_sighting_relationship import StixSightingRelationship
    from pycti.entities.opencti_task import Task

    from tests.module.test_case_records import export_with_records

    checked = set()
    for create_indicators in (True, False):
        result = Converter(ConverterConfig(create_indicators=create_indicators)).convert_export(export_with_records())
        for obj in result.objects.values():
            kind = obj["type"]
            if kind == "note":
                assert obj["id"] == Note.generate_id(obj["created"], obj["content"], obj["abstract"])
            elif kind == "sighting":
                assert obj["id"] == StixSightingRelationship.generate_id(
                    obj["sighting_of_ref"], obj["where_sighted_refs"], obj["first_seen"], obj["last_seen"])
            elif kind == "observed-data":
                assert obj["id"] == ObservedData.generate_id(obj["object_refs"])
            elif kind == "task":
                assert obj["id"] == Task.generate_id(obj["name"], obj["created"])
            else:
                continue
            checked.add(kind)
    assert checked == {"note", "sighting", "observed-data", "task"}
