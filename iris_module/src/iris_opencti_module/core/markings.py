"""TLP marking definitions as OpenCTI knows them, their order, and the one parser of TLP names.

TLP:CLEAR is OpenCTI's name for the STIX TLP:WHITE object (same id); TLP:AMBER+STRICT is OpenCTI's own
marking definition with a fixed id. Both must be exactly these objects, or OpenCTI creates a look-alike
marking that access rules ignore.

Every TLP name an operator or a system writes (the module's Default/Maximum TLP, the ``iris-opencti``
options, the connectors' ``IRIS_DEFAULT_TLP``/``IRIS_MAX_TLP``, IRIS's TLP names, OpenCTI's marking
definitions) goes through :func:`normalise_tlp`, so they all accept the same spellings.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

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


#: least to most restrictive (the export ceiling, and the write-back's "never lower IRIS's TLP")
TLP_ORDER: Tuple[str, ...] = tuple(TLP_MARKINGS)
#: other names of a TLP: TLP 1.0's WHITE is TLP 2.0's CLEAR (the same STIX marking object)
TLP_ALIASES: Dict[str, str] = {"white": "clear"}
TLP_SPELLINGS = "clear (or white), green, amber, amber+strict or red, in any case, with or without 'TLP:'"


class TLPError(ValueError):
    """A value that is not a TLP name; the message names the setting it came from."""


def normalise_tlp(value: Any) -> Optional[str]:
    """``AMBER``, ``tlp:amber``, `` TLP:Amber `` → ``amber``; ``white`` → ``clear``; not a TLP → None."""
    if value is None or isinstance(value, bool):
        return None
    name = str(value).strip().lower()
    if name.startswith("tlp:"):
        name = name[4:].strip()
    name = TLP_ALIASES.get(name, name)
    return name if name in TLP_MARKINGS else None


def parse_tlp(value: Any, setting: str) -> str:
    """The TLP name of a setting's value; raises :class:`TLPError` naming ``setting`` and the value."""
    name = normalise_tlp(value)
    if name is None:
        raise TLPError(f"{setting}: {value!r} is not a TLP; use {TLP_SPELLINGS}")
    return name


def marking_for(tlp: str) -> Dict[str, Any]:
    """The marking-definition object for a TLP name (``clear``, ``green``, ``amber``, ``amber+strict``, ``red``)."""
    return TLP_MARKINGS[tlp]
