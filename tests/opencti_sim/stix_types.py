"""What OpenCTI's schema says about STIX types, reduced to what the simulator answers with.

OpenCTI does not expose STIX types: each object has an ``entity_type`` (``IPv4-Addr``, ``StixFile``,
``Case-Incident``, ``Organization`` ...), a GraphQL type named after it (``IPv4Addr``, ``CaseIncident``)
and a set of interfaces (``StixCyberObservable``, ``Container`` ...) that decide which inline fragments
of pycti's queries apply.  pycti picks its reader from ``entity_type`` (``get_reader``) and exports back
to STIX with ``entity_type.lower()``, so these names have to be the platform's.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Dict, List, Optional

OCTI_EXT = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"
OCTI_SCO_EXT = "extension-definition--f93e2c80-4231-4f9a-af8b-95c9bd566a82"

SCO_ENTITY_TYPES: Dict[str, str] = {
    "autonomous-system": "Autonomous-System",
    "directory": "Directory",
    "domain-name": "Domain-Name",
    "email-addr": "Email-Addr",
    "email-message": "Email-Message",
    "email-mime-part-type": "Email-Mime-Part-Type",
    "artifact": "Artifact",
    "file": "StixFile",
    "x509-certificate": "X509-Certificate",
    "ipv4-addr": "IPv4-Addr",
    "ipv6-addr": "IPv6-Addr",
    "mac-addr": "Mac-Addr",
    "mutex": "Mutex",
    "network-traffic": "Network-Traffic",
    "process": "Process",
    "software": "Software",
    "url": "Url",
    "user-account": "User-Account",
    "windows-registry-key": "Windows-Registry-Key",
    "windows-registry-value-type": "Windows-Registry-Value-Type",
    "hostname": "Hostname",
    "cryptographic-key": "Cryptographic-Key",
    "cryptocurrency-wallet": "Cryptocurrency-Wallet",
    "text": "Text",
    "user-agent": "User-Agent",
    "bank-account": "Bank-Account",
    "phone-number": "Phone-Number",
    "credential": "Credential",
    "tracking-number": "Tracking-Number",
    "payment-card": "Payment-Card",
    "media-content": "Media-Content",
    "persona": "Persona",
    "ssh-key": "SSH-Key",
    "ai-prompt": "AI-Prompt",
    "imei": "IMEI",
    "iccid": "ICCID",
    "imsi": "IMSI",
}

SDO_ENTITY_TYPES: Dict[str, str] = {
    "attack-pattern": "Attack-Pattern",
    "campaign": "Campaign",
    "course-of-action": "Course-Of-Action",
    "grouping": "Grouping",
    "incident": "Incident",
    "indicator": "Indicator",
    "infrastructure": "Infrastructure",
    "intrusion-set": "Intrusion-Set",
    "malware": "Malware",
    "malware-analysis": "Malware-Analysis",
    "note": "Note",
    "observed-data": "Observed-Data",
    "opinion": "Opinion",
    "report": "Report",
    "tool": "Tool",
    "vulnerability": "Vulnerability",
    "channel": "Channel",
    "narrative": "Narrative",
    "language": "Language",
    "event": "Event",
    "data-component": "Data-Component",
    "x-mitre-data-component": "Data-Component",
    "data-source": "Data-Source",
    "x-mitre-data-source": "Data-Source",
    "case-incident": "Case-Incident",
    "x-opencti-case-incident": "Case-Incident",
    "case-rfi": "Case-Rfi",
    "x-opencti-case-rfi": "Case-Rfi",
    "case-rft": "Case-Rft",
    "x-opencti-case-rft": "Case-Rft",
    "feedback": "Feedback",
    "x-opencti-feedback": "Feedback",
    "task": "Task",
    "x-opencti-task": "Task",
    "security-coverage": "Security-Coverage",
}

IDENTITY_CLASSES = {
    "organization": "Organization",
    "individual": "Individual",
    "system": "System",
    "class": "Sector",
    "securityplatform": "SecurityPlatform",
}
CONTAINER_ENTITY_TYPES = {
    "Report", "Note", "Opinion", "Observed-Data", "Grouping", "Case-Incident", "Case-Rfi", "Case-Rft",
    "Feedback", "Task",
}
CASE_ENTITY_TYPES = {"Case-Incident", "Case-Rfi", "Case-Rft", "Feedback"}
# Properties OpenCTI stores under another name (GraphQL reserved words or clashes).
RENAMED_ATTRIBUTES = {"key": "attribute_key", "date": "attribute_date", "abstract": "attribute_abstract",
                      "count": "attribute_count"}

TLP_MARKINGS: List[Dict[str, Any]] = [
    {"definition": "TLP:CLEAR", "id": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
     "color": "#ffffff", "order": 1, "stix": {"tlp": "white"}},
    {"definition": "TLP:GREEN", "id": "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
     "color": "#2e7d32", "order": 2, "stix": {"tlp": "green"}},
    {"definition": "TLP:AMBER", "id": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
     "color": "#d84315", "order": 3, "stix": {"tlp": "amber"}},
    {"definition": "TLP:AMBER+STRICT", "id": "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37",
     "color": "#d84315", "order": 3, "stix": {"tlp": "amber+strict"}},
    {"definition": "TLP:RED", "id": "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
     "color": "#c62828", "order": 4, "stix": {"tlp": "red"}},
]


def builtin_markings() -> List[Dict[str, Any]]:
    """The TLP marking definitions every OpenCTI platform has from its first start."""
    result = []
    for tlp in TLP_MARKINGS:
        result.append({
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": tlp["id"],
            "created": "2017-01-20T00:00:00.000Z",
            "definition_type": "tlp",
            "name": tlp["definition"],
            "definition": dict(tlp["stix"]),
            "x_opencti_definition_type": "TLP",
            "x_opencti_definition": tlp["definition"],
            "x_opencti_color": tlp["color"],
            "x_opencti_order": tlp["order"],
        })
    return result


def ext_attribute(stix: Dict[str, Any], key: str) -> Any:
    """Read an OpenCTI attribute from the OpenCTI extensions, as pycti's ``get_attribute_in_extension``."""
    extensions = stix.get("extensions") or {}
    for ext_id in (OCTI_EXT, OCTI_SCO_EXT):
        ext = extensions.get(ext_id)
        if isinstance(ext, dict) and key in ext:
            return ext[key]
    return None


def octi_attribute(stix: Dict[str, Any], key: str) -> Any:
    """An ``x_opencti_<key>`` custom property, else ``<key>`` inside the OpenCTI extensions."""
    value = stix.get(f"x_opencti_{key}")
    return value if value is not None else ext_attribute(stix, key)


def entity_type_of(stix: Dict[str, Any]) -> str:
    """OpenCTI's ``entity_type`` for a STIX object."""
    kind = stix.get("type", "")
    if kind in SCO_ENTITY_TYPES:
        return SCO_ENTITY_TYPES[kind]
    if kind == "identity":
        explicit = octi_attribute(stix, "type")
        if explicit:
            return str(explicit)
        return IDENTITY_CLASSES.get(str(stix.get("identity_class", "")).lower(), "Organization")
    if kind == "location":
        explicit = stix.get("x_opencti_location_type") or ext_attribute(stix, "location_type")
        if explicit:
            return str(explicit)
        for prop, name in (("city", "City"), ("country", "Country"), ("region", "Region")):
            if stix.get(prop):
                return name
        return "Position"
    if kind == "threat-actor":
        return str(octi_attribute(stix, "type") or "Threat-Actor-Group")
    if kind == "relationship":
        return str(stix.get("relationship_type", "related-to"))
    if kind == "sighting":
        return "stix-sighting-relationship"
    if kind == "marking-definition":
        return "Marking-Definition"
    if kind in SDO_ENTITY_TYPES:
        return SDO_ENTITY_TYPES[kind]
    return "-".join(part.capitalize() for part in kind.split("-"))


def graphql_typename(entity_type: str) -> str:
    """GraphQL type for an entity type, with the platform's ``__resolveType`` rule."""
    return re.sub(r"(?:^|-|_)(\w)", lambda m: m.group(1).upper(), entity_type)


def type_info(stix: Dict[str, Any]) -> Dict[str, Any]:
    """``entity_type``, ``parent_types``, ``__typename`` and ``__types`` (type + interfaces)."""
    kind = stix.get("type", "")
    entity_type = entity_type_of(stix)
    if kind == "relationship":
        typename = "StixCoreRelationship"
        parents = ["basic-relationship", "stix-relationship", "stix-core-relationship"]
        interfaces = ["BasicRelationship", "StixRelationship", "StixCoreRelationship"]
    elif kind == "sighting":
        typename = "StixSightingRelationship"
        parents = ["basic-relationship", "stix-relationship"]
        interfaces = ["BasicRelationship", "StixRelationship", "StixSightingRelationship"]
    elif kind == "marking-definition":
        typename = "MarkingDefinition"
        parents = ["Basic-Object", "Stix-Object", "Stix-Meta-Object"]
        interfaces = ["BasicObject", "StixObject", "StixMetaObject"]
    elif kind in SCO_ENTITY_TYPES:
        typename = graphql_typename(entity_type)
        parents = ["Basic-Object", "Stix-Object", "Stix-Core-Object", "Stix-Cyber-Observable"]
        interfaces = ["BasicObject", "StixObject", "StixCoreObject", "StixCyberObservable"]
    else:
        typename = graphql_typename(entity_type)
        parents = ["Basic-Object", "Stix-Object", "Stix-Core-Object", "Stix-Domain-Object"]
        interfaces = ["BasicObject", "StixObject", "StixCoreObject", "StixDomainObject"]
        if kind == "identity":
            parents.append("Identity")
            interfaces.append("Identity")
        elif kind == "location":
            parents.append("Location")
            interfaces.append("Location")
        elif kind == "threat-actor":
            parents.append("Threat-Actor")
            interfaces.append("ThreatActor")
        if entity_type in CONTAINER_ENTITY_TYPES:
            parents.append("Container")
            interfaces.append("Container")
        if entity_type in CASE_ENTITY_TYPES:
            parents.append("Case")
            interfaces.append("Case")
    return {
        "entity_type": entity_type,
        "parent_types": parents,
        "__typename": typename,
        "__types": frozenset([typename, *interfaces]),
    }


def observable_value(stix: Dict[str, Any]) -> Optional[str]:
    """OpenCTI's representative value of an observable (``observable_value``)."""
    kind = stix.get("type")
    if kind == "file":
        if stix.get("name"):
            return str(stix["name"])
        hashes = stix.get("hashes") or {}
        for algo in ("SHA-256", "SHA-1", "MD5", "SHA-512"):
            if hashes.get(algo):
                return str(hashes[algo])
        return next(iter(hashes.values()), None)
    if kind == "autonomous-system":
        return f"AS{stix.get('number')}" if stix.get("number") is not None else None
    if kind == "windows-registry-key":
        return stix.get("key")
    if kind == "email-message":
        return stix.get("subject") or stix.get("body")
    if kind == "network-traffic":
        return str(stix.get("dst_port") or stix.get("src_port") or "") or None
    for prop in ("value", "name", "pattern", "card_number", "iban", "account_login", "user_id", "path",
                 "command_line", "subject", "key_value", "tracking_number", "url", "serial_number", "hash"):
        if stix.get(prop) is not None:
            return str(stix[prop])
    return None


class StandardIds:
    """OpenCTI recomputes an SDO/SRO's ``standard_id`` from its contributing properties.

    The given STIX id, when different, is only kept as an alias (``x_opencti_stix_ids``).  The platform
    and pycti share the algorithm, so the simulator borrows pycti's (``generate_standard_id_from_stix``)
    when pycti is importable; observables keep their STIX id (stix2 already derives it the same way).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._client: Any = None
        self._lock = threading.Lock()

    def _helper(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from pycti import OpenCTIApiClient  # optional, heavy import
                except ImportError:
                    self._client = False
                else:
                    self._client = OpenCTIApiClient("http://127.0.0.1:9", "simulator-standard-ids",
                                                    log_level="error", perform_health_check=False)
            return self._client

    def warm(self) -> None:
        """Import pycti ahead of the first ingestion (its import takes most of a second)."""
        if self.enabled:
            self._helper()

    def compute(self, stix: Dict[str, Any]) -> Optional[str]:
        """The platform's standard id for ``stix``, or None when it keeps the given id."""
        if not self.enabled or stix.get("type") in SCO_ENTITY_TYPES or stix.get("type") == "marking-definition":
            return None
        client = self._helper()
        if not client:
            return None
        try:
            return client.stix2.generate_standard_id_from_stix(dict(stix))
        except Exception:  # noqa: BLE001 - missing contributing properties: OpenCTI falls back to the given id
            return None
