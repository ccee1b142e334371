"""IRIS-shaped test data: the real exports shipped under tests/data, and one valid sample value per IOC type."""

from __future__ import annotations

import copy
import csv
import json
import os
from typing import Any, Dict, List

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def load_export(name: str = "case_export_2_4_20.json") -> Dict[str, Any]:
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return json.load(handle)


def ioc_type_names() -> List[str]:
    with open(os.path.join(DATA, "ioc_types.tsv"), encoding="utf-8") as handle:
        return [row[0] for row in list(csv.reader(handle, delimiter="\t"))[1:]]


HEX = "0123456789abcdef" * 8
_HASH_LEN = {"md5": 32, "sha1": 40, "sha224": 56, "sha256": 64, "sha384": 96, "sha512": 128, "sha512/224": 56,
             "sha512/256": 64, "sha3-224": 56, "sha3-256": 64, "sha3-384": 96, "sha3-512": 128, "imphash": 32,
             "pehash": 40, "authentihash": 64, "cdhash": 40, "telfhash": 70}
_FUZZY = {"ssdeep": "3072:Zk3hOdsylKlgxopeiBNhZFGzE+cL3ba:ZkOdsylKlgxopeiBNhZF+E+W",
          "impfuzzy": "48:fDc1lsDQN4Xp+fWJY/1XSuNcFRKS:7c1lsDQN4Xp+fWJY/1XSuNcFRKS",
          "vhash": "024056651d155048z3c",
          "tlsh": "t1" + ("a1b2c3d4e5" * 7)}
SPECIAL = {
    "AS": "AS64500", "account": "svc-backup", "attachment": "invoice.pdf", "btc": "1BoatSLRHtKNngkdXEeobR76b53LETtpyT",
    "campaign-id": "C-2024-17", "campaign-name": "Operation Bitter Frost", "dash": "XpESxaUmonkq8RaLLp46Brx2K39ggQe226",
    "dns-soa-email": "hostmaster@evil.example", "domain": "Evil.Example.", "domain|ip": "evil.example|198.51.100.7",
    "email": "a@evil.example", "email-attachment": "payload.docm", "email-body": "Please open the invoice",
    "email-dst": "victim@corp.example", "email-reply-to": "reply@evil.example", "email-src": "ceo@evil.example",
    "email-subject": "Urgent: invoice", "filename": "dropper.exe", "full-name": "John Doe",
    "github-organisation": "evil-org", "github-username": "evil-dev", "hostname": "c2.evil.example",
    "hostname|port": "c2.evil.example|8443", "iban": "DE89370400440532013000", "ip-any": "2001:db8::7",
    "ip-dst": "192.0.2.45", "ip-dst|port": "192.0.2.45|443", "ip-src": "198.51.100.9",
    "ip-src|port": "[2001:db8::1]|53",
    "jabber-id": "op@jabber.evil.example", "kusto-query": "DeviceProcessEvents | where FileName == 'evil.exe'",
    "link": "https://intel.example/report/1", "mac-address": "00-1A-2B-3C-4D-5E",
    "malware-sample": "sample.bin|" + HEX[:32],
    "mutex": "Global\\evil_mutex", "named pipe": "\\\\.\\pipe\\msagent_12", "file-path": "C:\\Users\\Public\\evil.exe",
    "phone-number": "+1-202-555-0143", "prtn": "+44 909 8790 000", "regkey": "HKLM\\Software\\Evil",
    "regkey|value": "HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\upd|C:\\evil.exe",
    "sigma": "title: Suspicious svchost\nlogsource: {product: windows}\ndetection: {sel: {Image: x}, condition: sel}",
    "snort": "alert tcp any any -> any 443 (msg:\"evil\"; sid:1000001;)",
    "stix2-pattern": "[ipv4-addr:value = '203.0.113.9']", "target-email": "cfo@corp.example",
    "target-external": "Corp Subsidiary", "target-machine": "ws-042.corp.example", "target-org": "Corp Finance",
    "target-user": "jsmith", "threat-actor": "APT-Example", "twitter-id": "evilhandle",
    "url": "http://192.0.2.45/submit.php", "user-agent": "Mozilla/5.0 (evil)", "vulnerability": "CVE-2023-4966",
    "whois-registrant-email": "reg@evil.example", "whois-registrant-org": "Evil Corp",
    "whois-registrant-phone": "+1 202 555 0199", "x509-fingerprint-md5": HEX[:32],
    "x509-fingerprint-sha1": HEX[:40], "x509-fingerprint-sha256": HEX[:64], "xmr": "44AFFq5kSiGBoZ",
    "yara": "rule EvilLoader { strings: $a = \"evil\" condition: $a }", "zeek": "event zeek_init() { print \"x\"; }",
    "gene": "{\"Name\": \"EvilRule\"}",
}


def sample_value(type_name: str) -> str:
    """A value IRIS users would enter for this type, valid for its mapping."""
    if type_name in SPECIAL:
        return SPECIAL[type_name]
    algorithm = type_name.split("|")[-1]
    if algorithm in _FUZZY:
        digest = _FUZZY[algorithm]
    elif algorithm in _HASH_LEN:
        digest = HEX[:_HASH_LEN[algorithm]]
    else:
        return f"sample {type_name} value"
    return "evil.dll|" + digest if type_name.startswith("filename|") else digest


def make_ioc(ioc_id: int, type_name: str, value: str, tlp_id: int = 2, tags: str = "phishing",
             description: str = "", case_id: Any = None) -> Dict[str, Any]:
    """An IOC exactly as IRIS 2.4.20 exports it (2.5 adds case_id)."""
    ioc = copy.deepcopy(load_export()["data"]["iocs"][0])
    ioc.update({"ioc_id": ioc_id, "ioc_value": value, "ioc_tlp_id": tlp_id, "ioc_tags": tags,
                "ioc_description": description, "ioc_uuid": "00000000-0000-4000-8000-%012d" % ioc_id})
    ioc["ioc_type"] = dict(ioc["ioc_type"], type_name=type_name)
    if case_id is not None:
        ioc["case_id"] = case_id
    return ioc


def every_type_case() -> Dict[str, Any]:
    """The real 2.4.20 case with one IOC of every one of IRIS's 160 default types."""
    export = load_export()
    data = export["data"]
    data["iocs"] = [make_ioc(1000 + n, t, sample_value(t)) for n, t in enumerate(ioc_type_names())]
    return export


def case_parts(converter, case, iocs, assets, max_bytes, **kwargs):
    """A whole-case sync as the module ships it (``CaseSync``): every message, parts or one whole message."""
    from iris_opencti_module.transport.case_sync import CaseSync

    return list(CaseSync(converter, case, iocs, assets, max_bytes=max_bytes, **kwargs).envelopes())
