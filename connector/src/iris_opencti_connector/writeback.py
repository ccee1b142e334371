"""OpenCTI's verdict on an observable → the ``opencti:*`` tags written back onto IRIS IOCs.

Pure functions, so the rules an analyst relies on are easy to test: analyst tags are kept as they are,
previous ``opencti:*`` tags are replaced (never accumulated), and IRIS's 512-character limit on ``ioc_tags``
is respected by dropping the lowest-priority tags (labels last), with a note saying which.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

PREFIX = "opencti:"
IRIS_TAGS_MAX = 512
#: TLP order, least to most restrictive (TLP:WHITE is OpenCTI's older name for TLP:CLEAR)
TLP_ORDER = ("clear", "green", "amber", "amber+strict", "red")


@dataclass
class WritebackOptions:
    """How verdicts become tags. The label prefix must stay under ``opencti:``: the IRIS module never
    exports those tags, which is what keeps OpenCTI's labels from coming back to OpenCTI as IRIS labels."""

    label_prefix: str = "opencti:label="
    labels_allow: Sequence[str] = ()
    labels_deny: Sequence[str] = ()
    write_tlp: bool = False
    allow_lower_tlp: bool = False
    indicator_tag: bool = True
    seen_tag: bool = True

    def __post_init__(self) -> None:
        if not self.label_prefix.lower().startswith(PREFIX):
            raise ValueError("label prefix %r must start with %r (the IRIS module skips only those tags)"
                             % (self.label_prefix, PREFIX))


@dataclass
class Verdict:
    """What OpenCTI says about one observable, read from the enrichment request."""

    score: Optional[int] = None
    labels: List[str] = field(default_factory=list)
    tlp: Optional[str] = None
    has_indicator: bool = False
    seen_elsewhere: Optional[int] = None


def split_tags(tags: Optional[str]) -> List[str]:
    return [t.strip() for t in (tags or "").split(",") if t.strip()]


def _label_allowed(label: str, options: WritebackOptions) -> bool:
    if options.labels_allow and not any(fnmatch.fnmatch(label, p) for p in options.labels_allow):
        return False
    return not any(fnmatch.fnmatch(label, p) for p in options.labels_deny)


def opencti_tags(verdict: Verdict, options: WritebackOptions) -> List[str]:
    """The write-back tags, highest priority first (score, indicator, seen, then labels in OpenCTI's order)."""
    tags: List[str] = []
    if verdict.score is not None:
        tags.append("%sscore=%d" % (PREFIX, max(0, min(100, int(verdict.score)))))
    if options.indicator_tag and verdict.has_indicator:
        tags.append(PREFIX + "indicator")
    if options.seen_tag and verdict.seen_elsewhere:
        tags.append("%sseen=%d" % (PREFIX, verdict.seen_elsewhere))
    for label in verdict.labels:
        clean = label.replace(",", " ").strip()
        if clean and _label_allowed(clean, options):
            tag = options.label_prefix + clean
            if tag not in tags:
                tags.append(tag)
    return tags


def merge_tags(current: Optional[str], new_tags: List[str], limit: int = IRIS_TAGS_MAX) -> Tuple[str, List[str]]:
    """Analyst tags + new write-back tags within IRIS's limit; returns (tags, dropped write-back tags)."""
    kept = [t for t in split_tags(current) if not t.lower().startswith(PREFIX)]
    chosen = list(new_tags)
    dropped: List[str] = []
    while chosen and len(",".join(kept + chosen)) > limit:
        dropped.insert(0, chosen.pop())
    return ",".join(kept + chosen), dropped


def tlp_name(marking: Dict[str, Any]) -> Optional[str]:
    """``TLP:AMBER+STRICT`` marking (OpenCTI's objectMarking entry) → ``amber+strict``."""
    if str(marking.get("definition_type", "")).upper() != "TLP":
        return None
    name = str(marking.get("definition", "")).split(":", 1)[-1].strip().lower()
    return "clear" if name == "white" else name


def tlp_change(current_tlp_id: Optional[int], verdict_tlp: Optional[str], tlp_ids: Dict[str, int],
               options: WritebackOptions) -> Optional[int]:
    """The IRIS TLP id to set, or None: never lowers IRIS's TLP unless configured to."""
    if not options.write_tlp or not verdict_tlp or verdict_tlp not in tlp_ids:
        return None
    target = tlp_ids[verdict_tlp]
    if current_tlp_id == target:
        return None
    current = next((name for name, tid in tlp_ids.items() if tid == current_tlp_id), None)
    if current in TLP_ORDER and verdict_tlp in TLP_ORDER and not options.allow_lower_tlp:
        if TLP_ORDER.index(verdict_tlp) < TLP_ORDER.index(current):
            return None
    return target


def verdict_from_entity(entity: Dict[str, Any], case_ref: Optional[str] = None) -> Verdict:
    """Read score, labels, TLP, indicators and other containers from pycti's ``enrichment_entity``."""
    labels = [str(lab.get("value")) for lab in entity.get("objectLabel") or [] if isinstance(lab, dict)
              and lab.get("value")]
    markings = [tlp_name(m) for m in entity.get("objectMarking") or [] if isinstance(m, dict)]
    tlps = [m for m in markings if m in TLP_ORDER]
    tlp = max(tlps, key=TLP_ORDER.index) if tlps else None
    indicators = entity.get("indicators")
    if isinstance(indicators, dict):
        indicators = indicators.get("edges")
    containers = entity.get("containers")
    seen: Optional[int] = None
    if isinstance(containers, dict):
        nodes = [(e or {}).get("node") or {} for e in containers.get("edges") or []]
        seen = sum(1 for n in nodes if n.get("standard_id") != case_ref and n.get("id") != case_ref)
    score = entity.get("x_opencti_score")
    return Verdict(score=int(score) if isinstance(score, (int, float)) else None, labels=labels, tlp=tlp,
                   has_indicator=bool(indicators), seen_elsewhere=seen)


def describe(ioc_id: Any, case_id: Any, tags: List[str], dropped: List[str], tlp_set: Optional[str]) -> str:
    """The work message an analyst reads: "IOC 42 in case #7: opencti:score=85, 2 labels"."""
    parts = [t for t in tags if not t.startswith(PREFIX + "label=")]
    n_labels = len(tags) - len(parts)
    if n_labels:
        parts.append("%d label%s" % (n_labels, "" if n_labels == 1 else "s"))
    if tlp_set:
        parts.append("TLP:" + tlp_set.upper())
    text = "IOC %s in case #%s: %s" % (ioc_id, case_id, ", ".join(parts) or "no OpenCTI verdict")
    if dropped:
        text += " (dropped to fit IRIS's 512-character tag limit: %s)" % ", ".join(dropped)
    return text
