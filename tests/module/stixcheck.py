"""Bundle checks shared by the module's tests: the OASIS validator and ``stix2.parse`` must both accept it."""

from __future__ import annotations

from typing import Any, Dict, List

import stix2
from stix2validator import ValidationOptions, validate_instance

_OPTIONS = ValidationOptions(version="2.1")
#: The validator's schema refuses a property named 'severity' on any object. OpenCTI's custom case-incident
#: carries it at the top level (the platform's export writes it there, pycti's import reads it only there), so
#: this one error is let through for case-incidents, and only for them.
_RESERVED = "Contains a reserved property ('severity'"


def validation_errors(bundle: Dict[str, Any]) -> List[str]:
    """Every error (not warning) the OASIS STIX 2.1 validator reports for the bundle's objects."""
    errors: List[str] = []
    for obj in bundle["objects"]:
        result = validate_instance(obj, _OPTIONS)
        errors += ["{}: {}".format(obj.get("id"), err) for err in result.errors
                   if not (obj.get("type") == "case-incident" and _RESERVED in str(err))]
    return errors


def assert_valid_bundle(bundle: Dict[str, Any]) -> None:
    assert bundle["type"] == "bundle" and bundle["id"].startswith("bundle--")
    errors = validation_errors(bundle)
    assert not errors, "\n".join(errors[:20])
    parsed = stix2.parse(bundle, allow_custom=True)
    assert len(parsed.objects) == len(bundle["objects"])
    ids = [o["id"] for o in bundle["objects"]]
    assert len(ids) == len(set(ids)), "duplicate ids in bundle"
    present = set(ids)
    for obj in bundle["objects"]:
        for key in ("source_ref", "target_ref", "created_by_ref", "x_opencti_created_by_ref",
                    "dst_ref", "src_ref"):
            if key in obj:
                assert obj[key] in present, "{}.{} points outside the bundle".format(obj["id"], key)
        for key in ("object_refs", "object_marking_refs"):
            for ref in obj.get(key, []):
                assert ref in present, "{}.{} -> {} is not in the bundle".format(obj["id"], key, ref)
