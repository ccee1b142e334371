"""STIX patterns for the Indicators built from IOCs.

Values are escaped as STIX patterning requires (backslash and single quote), so an IOC such as
``\\.\\pipe\\x`` or ``O'Brien`` still yields a valid pattern.
"""

from __future__ import annotations

from typing import Any, Dict, List


def quote(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'{}'".format(str(value).replace("\\", "\\\\").replace("'", "\\'"))


def comparison(stix_type: str, path: str, value: Any) -> str:
    return f"{stix_type}:{path} = {quote(value)}"


def pattern_of(stix_type: str, props: Dict[str, Any]) -> str:
    """``[type:prop = 'v' AND ...]`` over the identifying properties of an observable built from an IOC."""
    terms: List[str] = []
    for key, value in props.items():
        if key == "hashes":
            for algorithm, digest in value.items():
                terms.append(comparison(stix_type, f"hashes.'{algorithm}'", digest))
        elif key in ("values",) or isinstance(value, (list, dict)):
            continue
        elif key in ("is_multipart", "account_type", "is_privileged", "is_service_account"):
            continue
        else:
            terms.append(comparison(stix_type, key, value))
    return "[" + " AND ".join(terms) + "]"
