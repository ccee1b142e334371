"""TLP marking definitions as OpenCTI knows them.

TLP:CLEAR is OpenCTI's name for the STIX TLP:WHITE object (same id); TLP:AMBER+STRICT is OpenCTI's own
marking definition with a fixed id. Both must be exactly these objects, or OpenCTI creates a look-alike
marking that access rules ignore.
"""

from __future__ import annotations

import json
from typing import Any, Dict

import stix2


def _standard(marking: Any) -> Dict[str, Any]:
    return json.loads(marking.serialize())


TLP_MARKINGS: Dict[str, Dict[str, Any]] = {
    "clear": _standard(stix2.TLP_WHITE),
    "green": _standard(stix2.TLP_GREEN),
    "amber": _standard(stix2.TLP_AMBER),
    "amber+strict": {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37",
        "created": "2022-10-01T00:00:00.000Z",
        "name": "TLP:AMBER+STRICT",
        "definition_type": "statement",
        "definition": {"statement": "TLP:AMBER+STRICT"},
        "x_opencti_definition_type": "TLP",
        "x_opencti_definition": "TLP:AMBER+STRICT",
        "x_opencti_color": "#d84315",
        "x_opencti_order": 3,
    },
    "red": _standard(stix2.TLP_RED),
}


def marking_for(tlp: str) -> Dict[str, Any]:
    """The marking-definition object for a TLP name (``clear``, ``green``, ``amber``, ``amber+strict``, ``red``)."""
    return TLP_MARKINGS[tlp]
