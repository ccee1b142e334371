"""Deterministic STIX identifiers, computed the way OpenCTI and the ``stix2`` library compute them.

The module must run inside IRIS images without pycti, and building ``stix2`` objects is an order of
magnitude too slow for 10,000-IOC cases, so the few id rules we need are reproduced here. The test-suite
checks every one of them against pycti's ``generate_id`` functions and against ``stix2``'s own SCO ids, so a
drift in either library shows up as a failing test rather than as duplicated objects in OpenCTI.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Dict, List, Optional

#: Namespace used both by OpenCTI (SDO/SRO ids) and by STIX 2.1 (SCO ids).
NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")

#: Properties that contribute to an SCO's id (STIX 2.1 section 6, and OpenCTI's custom SCOs).
SCO_ID_PROPERTIES: Dict[str, tuple] = {
    "autonomous-system": ("number",),
    "bank-account": ("iban",),
    "cryptocurrency-wallet": ("value",),
    "directory": ("path",),
    "domain-name": ("value",),
    "email-addr": ("value",),
    "email-message": ("from_ref", "subject", "body"),
    "file": ("hashes", "name", "extensions", "parent_directory_ref"),
    "hostname": ("value",),
    "ipv4-addr": ("value",),
    "ipv6-addr": ("value",),
    "mac-addr": ("value",),
    "mutex": ("name",),
    "network-traffic": ("start", "end", "src_ref", "dst_ref", "src_port", "dst_port", "protocols", "extensions"),
    "phone-number": ("value",),
    "text": ("value",),
    "url": ("value",),
    "user-account": ("account_type", "user_id", "account_login"),
    "user-agent": ("value",),
    "windows-registry-key": ("key", "values"),
    "x509-certificate": ("hashes", "serial_number"),
}

_PREFERRED_HASHES = ("MD5", "SHA-1", "SHA-256", "SHA-512")


def canonical_json(data: Any) -> str:
    """RFC 8785 canonical form for the plain values our ids are made of (strings, ints, lists, dicts)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _uuid5(data: Dict[str, Any]) -> str:
    return str(uuid.uuid5(NAMESPACE, canonical_json(data)))


def _one_hash(hashes: Dict[str, str]) -> Dict[str, str]:
    """STIX uses a single hash for a file's id, preferring MD5, then SHA-1, SHA-256, SHA-512."""
    for name in _PREFERRED_HASHES:
        if name in hashes:
            return {name: hashes[name]}
    first = next(iter(hashes))
    return {first: hashes[first]}


def sco_id(obj: Dict[str, Any]) -> str:
    """The id ``stix2`` gives this cyber-observable: uuid5 over its id-contributing properties."""
    stix_type = obj["type"]
    contributing: Dict[str, Any] = {}
    for prop in SCO_ID_PROPERTIES[stix_type]:
        if prop in obj:
            value = obj[prop]
            contributing[prop] = _one_hash(value) if prop == "hashes" else value
    return f"{stix_type}--{_uuid5(contributing)}"


def case_incident_id(name: str, created: str) -> str:
    """OpenCTI's standard id of a Case-Incident: lower-cased name plus creation time."""
    return "case-incident--" + _uuid5({"name": name.lower().strip(), "created": created})


def indicator_id(pattern: str) -> str:
    """OpenCTI's Indicator id depends on the pattern only, so one value shared by two cases is one Indicator."""
    return "indicator--" + _uuid5({"pattern": pattern.strip()})


def identity_id(name: str, identity_class: str) -> str:
    return "identity--" + _uuid5({"name": name.lower().strip(), "identity_class": identity_class.lower()})


def relationship_id(relationship_type: str, source_ref: str, target_ref: str) -> str:
    return "relationship--" + _uuid5(
        {"relationship_type": relationship_type, "source_ref": source_ref, "target_ref": target_ref}
    )


def named_sdo_id(stix_type: str, name: str) -> str:
    """Vulnerability and Campaign ids depend on the lower-cased name only."""
    return "{}--{}".format(stix_type, _uuid5({"name": name.lower().strip()}))


def threat_actor_id(name: str) -> str:
    return "threat-actor--" + _uuid5({"name": name.lower().strip(), "opencti_type": "Threat-Actor-Group"})


def note_id(content: str, created: Optional[str], abstract: Optional[str] = None) -> str:
    """pycti's ``Note.generate_id``: the content, the creation time and the abstract."""
    data: Dict[str, Any] = {"content": content.strip()}
    if created is not None:
        data["created"] = created
    if abstract is not None and abstract.strip():
        data["attribute_abstract"] = abstract.strip()
    return "note--" + _uuid5(data)


def sighting_id(sighting_of_ref: str, where_sighted_refs: List[str], first_seen: Optional[str] = None,
                last_seen: Optional[str] = None) -> str:
    """pycti's ``StixSightingRelationship.generate_id``."""
    data: Dict[str, Any] = {"type": "sighting", "sighting_of_ref": sighting_of_ref,
                            "where_sighted_refs": where_sighted_refs}
    if first_seen is not None:
        data["first_seen"] = first_seen
        if last_seen is not None:
            data["last_seen"] = last_seen
    return "sighting--" + _uuid5(data)


def observed_data_id(object_refs: List[str]) -> str:
    """pycti's ``ObservedData.generate_id``: the observed objects only."""
    return "observed-data--" + _uuid5({"objects": object_refs})


def task_id(name: str, created: str) -> str:
    """pycti's ``Task.generate_id``: lower-cased name plus creation time."""
    return "task--" + _uuid5({"name": name.lower().strip(), "created": created})


def bundle_id(key: str) -> str:
    """A bundle's id is derived from what it carries, so a replayed event produces the very same bundle."""
    return "bundle--" + str(uuid.uuid5(NAMESPACE, key))
