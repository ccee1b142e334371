"""Checks and normalisers for IOC values.

IRIS validates few types (``not-an-ip`` is a valid ``ip-dst`` there), while OpenCTI rejects or mangles bad
observables. Each check returns the cleaned value or raises :class:`InvalidValue` with a reason a human can act
on; the converter turns that into a skipped-IOC report instead of failing the whole case.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Dict, Tuple


class InvalidValue(ValueError):
    """A value that does not fit its IOC type; the message says why."""


_HEX = re.compile(r"^[0-9a-f]+$")
_HEX_LENGTHS = {"MD5": 32, "SHA-1": 40, "SHA-224": 56, "SHA-256": 64, "SHA-384": 96, "SHA-512": 128,
                "SHA-512-224": 56, "SHA-512-256": 64, "SHA3-224": 56, "SHA3-256": 64, "SHA3-384": 96,
                "SHA3-512": 128, "IMPHASH": 32, "PEHASH": 40, "AUTHENTIHASH": 64, "CDHASH": 40,
                "TELFHASH": 70}
# ASCII host names as IDNA 2008 (and so the OASIS validator) accepts them: no "_", no "--" in 3rd-4th position
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?!..--)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!..--)(?!-)[a-z0-9-]{1,63}(?<!-))*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$", re.IGNORECASE)
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}$")
_PHONE = re.compile(r"^\+?[0-9()./\s-]{3,32}$")
_AS = re.compile(r"^(?:AS)?\s*(\d{1,10})$", re.IGNORECASE)
_SSDEEP = re.compile(r"^\d+:[A-Za-z0-9/+]+:[A-Za-z0-9/+.]+$")  # blocksize:hash:hash, within STIX's alphabet
_HIVES = {"HKLM": "HKEY_LOCAL_MACHINE", "HKCU": "HKEY_CURRENT_USER", "HKCR": "HKEY_CLASSES_ROOT",
          "HKU": "HKEY_USERS", "HKCC": "HKEY_CURRENT_CONFIG"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_nonempty(value: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidValue("empty value")
    if _CONTROL.search(value):
        raise InvalidValue("contains control characters")
    return value


def check_ip(value: str) -> str:
    """Return the canonical text of an IPv4/IPv6 address or CIDR block."""
    value = value.strip()
    try:
        if "/" in value:
            return str(ipaddress.ip_network(value, strict=False))
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidValue("not an IPv4 or IPv6 address") from None


def ip_type(value: str) -> str:
    """``ipv6-addr`` or ``ipv4-addr``: IRIS has one ``ip-*`` type for both families."""
    return "ipv6-addr" if ":" in value else "ipv4-addr"


def check_domain(value: str) -> str:
    """A host name as STIX (and the OASIS validator) accept it: ASCII labels, or an IDNA 2008 name."""
    value = value.strip().lower().rstrip(".")
    if not value:
        raise InvalidValue("not a valid domain name")
    if value.isascii() and "--" not in value:
        if not _DOMAIN.match(value):
            raise InvalidValue("not a valid domain name")
        return value
    import idna  # installed with stix2 (through requests); IDNA 2008, as the validator checks

    try:
        idna.encode(value)
    except (idna.IDNAError, UnicodeError, ValueError):
        raise InvalidValue("not a valid internationalised domain name") from None
    return value


def check_email(value: str) -> str:
    value = value.strip()
    if not _EMAIL.match(value):
        raise InvalidValue("not an e-mail address")
    return value


def check_url(value: str) -> str:
    value = value.strip()
    if not _URL.match(value):
        raise InvalidValue("not an absolute URL (scheme://...)")
    return value


def check_mac(value: str) -> str:
    value = value.strip().lower()
    if not _MAC.match(value):
        raise InvalidValue("not a MAC-48 address")
    digits = re.sub(r"[^0-9a-f]", "", value)
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def check_phone(value: str) -> str:
    value = value.strip()
    if not _PHONE.match(value) or not any(c.isdigit() for c in value):
        raise InvalidValue("not a phone number")
    return value


def check_as_number(value: str) -> int:
    """``AS64500``, ``as 64500`` or ``64500`` → 64500 (STIX stores the number)."""
    match = _AS.match(value.strip())
    if not match or int(match.group(1)) > 4294967295:
        raise InvalidValue("not an autonomous system number (ASnnnn)")
    return int(match.group(1))


def check_port(value: str) -> int:
    value = value.strip()
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise InvalidValue(f"port {value!r} is not a number between 0 and 65535")
    return int(value)


def check_hash(algorithm: str, value: str) -> str:
    """Hex hashes are stored lower-case with the right number of digits; fuzzy hashes keep their case."""
    value = value.strip()
    if algorithm in _HEX_LENGTHS or algorithm == "TLSH":
        value = value.lower()
    expected = _HEX_LENGTHS.get(algorithm)
    if expected is not None:
        if len(value) != expected or not _HEX.match(value):
            raise InvalidValue("not a %s hash (%d hex digits expected)" % (algorithm, expected))
    elif algorithm == "TLSH":
        # STIX stores the 70 hex digits; the current TLSH format prefixes them with the version "t1"
        if len(value) == 72 and value.startswith("t1"):
            value = value[2:]
        if len(value) != 70 or not _HEX.match(value):
            raise InvalidValue("not a TLSH hash (70 hex digits, optionally prefixed with T1)")
    elif algorithm == "SSDEEP":
        if len(value) > 128 or not _SSDEEP.match(value):
            raise InvalidValue("not an SSDEEP hash (blocksize:hash:hash)")
    else:
        check_nonempty(value)
    return value


def check_regkey(value: str) -> str:
    """STIX forbids abbreviated hives: ``HKLM\\Run`` → ``HKEY_LOCAL_MACHINE\\Run``."""
    value = check_nonempty(value)
    hive, sep, rest = value.partition("\\")
    full = _HIVES.get(hive.upper())
    if full:
        return full + sep + rest
    return value


def check_stix_pattern(value: str) -> str:
    value = check_nonempty(value)
    if not (value.startswith("[") and value.endswith("]")):
        raise InvalidValue("not a STIX pattern ([object:property = 'value'])")
    return value


#: name used in the mapping tables → check function (returns the normalised value)
CHECKS: Dict[str, Callable[[str], Any]] = {
    "nonempty": check_nonempty,
    "ip": check_ip,
    "domain": check_domain,
    "email": check_email,
    "url": check_url,
    "mac": check_mac,
    "phone": check_phone,
    "as_number": check_as_number,
    "stix_pattern": check_stix_pattern,
    "regkey": check_regkey,
}


def normalise(check: str, value: str) -> Any:
    """Run the named check (unknown names fail loudly: they come from a user's override file)."""
    try:
        func = CHECKS[check]
    except KeyError:
        raise InvalidValue(f"mapping names an unknown check {check!r}") from None
    return func(value)


def split_pair(value: str, what: Tuple[str, str]) -> Tuple[str, str]:
    """Split a composite ``a|b`` value on its last ``|`` (file names may contain one, hashes never do)."""
    left, sep, right = value.rpartition("|")
    if not sep or not left.strip() or not right.strip():
        raise InvalidValue("expected '{}|{}'".format(*what))
    return left.strip(), right.strip()


def clean_text(text: Any) -> str:
    """Free text from IRIS as valid Unicode: a lone surrogate (possible in JSON) would break every encoder."""
    text = "" if text is None else str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
