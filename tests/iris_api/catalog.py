"""Reference data of a fresh IRIS install: version strings per mode, TLPs, IOC types.

Values come from iris-web's source (v2.4.20 tag, develop branch for 2.5), so clients are tested against what
a real server answers rather than against what we would like it to answer:

* ``source/app/configuration.py``: ``IRIS_VERSION`` is ``"v2.4.20"`` on 2.4.20 and still ``"v2.4.18"`` on the
  2.5 development branch; ``API_MIN_VERSION`` / ``API_MAX_VERSION`` are ``"2.0.4"`` / ``"2.0.5"`` on both.
  ``/api/versions`` returns only those three values (``blueprints/api/api_routes.py``).
* ``source/app/post_init.py``: the five TLPs and their bootstrap colours, created in this order (ids 1..5).
* IOC types: created in ``tests/data/ioc_types.tsv`` order, so the type id is the 1-based row number (the
  real exports confirm it: domain 20, ip-dst 77, sha1 111 ...).  ``create_safe_limited`` keeps only
  ``type_name`` and ``type_description``, so a fresh install has *no* taxonomy and *no* validation regex
  (the exports show ``null`` even for sha1): IRIS does not validate IOC values by type in practice.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

MODES = ("2.4", "2.5")

VERSIONS: Dict[str, Dict[str, str]] = {
    "2.4": {"iris_current": "v2.4.20", "api_min": "2.0.4", "api_current": "2.0.5"},
    # The 2.5 development branch was never bumped: clients must not trust this string to detect 2.5.
    "2.5": {"iris_current": "v2.4.18", "api_min": "2.0.4", "api_current": "2.0.5"},
}

# (tlp_id, tlp_name, tlp_bscolor) as post_init.py creates them.
DEFAULT_TLPS: Tuple[Tuple[int, str, str], ...] = (
    (1, "red", "danger"),
    (2, "amber", "warning"),
    (3, "green", "success"),
    (4, "clear", "black"),
    (5, "amber+strict", "warning"),
)

IOC_TYPES_TSV = Path(__file__).resolve().parent.parent / "data" / "ioc_types.tsv"


@dataclass(frozen=True)
class IocType:
    """One row of IRIS's ``ioc_type`` table."""

    type_id: int
    type_name: str
    type_description: Optional[str]
    type_taxonomy: Optional[str] = None
    type_validation_regex: Optional[str] = None
    type_validation_expect: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        """The nested ``ioc_type`` object of an IOC, as ``IocTypeSchema`` dumps it."""
        return {
            "type_name": self.type_name,
            "type_description": self.type_description,
            "type_taxonomy": self.type_taxonomy,
            "type_validation_regex": self.type_validation_regex,
            "type_validation_expect": self.type_validation_expect,
            "type_id": self.type_id,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "IocType":
        """Read the nested ``ioc_type`` of an exported IOC (seeds may carry types a test defined)."""
        return cls(int(data["type_id"]), str(data["type_name"]), data.get("type_description"),
                   data.get("type_taxonomy"), data.get("type_validation_regex"), data.get("type_validation_expect"))


@functools.lru_cache(maxsize=None)
def _load_ioc_types(path: str) -> Tuple[IocType, ...]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    # Regexes in the file are what post_init *asks* for; a fresh install stores none of them (see module doc).
    return tuple(IocType(index, row["type_name"], row.get("description") or None)
                 for index, row in enumerate(rows, start=1))


def default_ioc_types(path: Path = IOC_TYPES_TSV) -> Dict[int, IocType]:
    """``type_id → IocType`` of a fresh install (a new dict each call: servers add types from their seeds)."""
    return {t.type_id: t for t in _load_ioc_types(str(path))}
