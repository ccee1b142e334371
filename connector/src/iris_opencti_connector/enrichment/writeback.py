"""OpenCTI's verdict on an observable → the ``opencti:*`` tags written back onto IRIS IOCs.

Pure functions, so the rules an analyst relies on are easy to test: analyst tags are kept as they are,
previous ``opencti:*`` tags are replaced (never accumulated), labels that came from IRIS are not echoed back,
every label becomes one short line of plain text, and IRIS's 512-character limit on ``ioc_tags`` is respected
by dropping the lowest-priority tags (labels last), with a note saying which.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Iterable, List, Optional, Sequence, Tuple

from iris_opencti_module.core.markings import TLP_ORDER, normalise_tlp
from iris_opencti_module.core.tags import PREFIX, is_bridge_tag

IRIS_TAGS_MAX = 512
#: longest label text written (after the prefix): a tag is a badge in IRIS's IOC table, not a paragraph, and
#: one long label must not push the score and the other labels out of the 512 characters
LABEL_MAX = 64
_MARKUP = re.compile(r"<[^<>]*>")


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
            raise ValueError(f"label prefix {self.label_prefix!r} must start with {PREFIX!r} (the IRIS module skips "
                             "only those tags)")


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


def clean_label(label: Any) -> str:
    """An OpenCTI label as one IRIS tag: one line of printable text, no markup, at most :data:`LABEL_MAX` chars.

    IRIS stores ``ioc_tags`` as one comma-separated string and its IOC table shows one badge per comma, so a
    comma would split a label in two (it becomes a space). Newlines, NUL and other control or format
    characters (including zero-width and bidi controls, which make a tag look like another) become spaces,
    runs of spaces one space. Markup is removed rather than escaped: IRIS's table escapes it, but the tag is
    also read by other tools (exports, reports, the tag filter) that may not, and ``<script>`` is never a
    meaningful verdict. Longer labels are cut and end with an ellipsis.
    """
    text = _MARKUP.sub(" ", str(label or ""))
    chars = []
    for char in text:
        category = unicodedata.category(char)
        if char in ",<>" or category[0] in "CZ":
            chars.append(" ")
        else:
            chars.append(char)
    clean = " ".join("".join(chars).split())
    if len(clean) > LABEL_MAX:
        clean = clean[:LABEL_MAX - 1].rstrip() + "\u2026"
    return clean


def iris_own_tags(tags: Optional[str]) -> Collection[str]:
    """The IOC's tags that are not write-back tags, compared case-insensitively: these left IRIS as labels."""
    return {clean_label(t).casefold() for t in split_tags(tags) if not is_bridge_tag(t)}


def _label_allowed(label: str, options: WritebackOptions) -> bool:
    if options.labels_allow and not any(fnmatch.fnmatch(label, p) for p in options.labels_allow):
        return False
    return not any(fnmatch.fnmatch(label, p) for p in options.labels_deny)


def opencti_tags(verdict: Verdict, options: WritebackOptions, iris_tags: Iterable[str] = ()) -> List[str]:
    """The write-back tags, highest priority first (score, indicator, seen, then labels in OpenCTI's order).

    ``iris_tags`` (see :func:`iris_own_tags`): labels equal to one of the IOC's own IRIS tags are skipped. The
    import side exports every IRIS tag as a label, so without this an IOC tagged ``analyst:keep`` would come
    back tagged ``opencti:label=analyst:keep`` too: IRIS already says it, OpenCTI adds nothing.
    """
    own = {t.casefold() for t in iris_tags}
    tags: List[str] = []
    if verdict.score is not None:
        tags.append("%sscore=%d" % (PREFIX, max(0, min(100, int(verdict.score)))))
    if options.indicator_tag and verdict.has_indicator:
        tags.append(PREFIX + "indicator")
    if options.seen_tag and verdict.seen_elsewhere:
        tags.append("%sseen=%d" % (PREFIX, verdict.seen_elsewhere))
    for label in verdict.labels:
        clean = clean_label(label)
        if clean and clean.casefold() not in own and _label_allowed(clean, options):
            tag = options.label_prefix + clean
            if tag not in tags:
                tags.append(tag)
    return tags


def merge_tags(current: Optional[str], new_tags: List[str], limit: int = IRIS_TAGS_MAX) -> Tuple[str, List[str]]:
    """Analyst tags + new write-back tags within IRIS's limit; returns (tags, dropped write-back tags)."""
    kept = [t for t in split_tags(current) if not is_bridge_tag(t)]
    chosen = list(new_tags)
    dropped: List[str] = []
    while chosen and len(",".join(kept + chosen)) > limit:
        dropped.insert(0, chosen.pop())
    return ",".join(kept + chosen), dropped


def tlp_name(marking: Dict[str, Any]) -> Optional[str]:
    """``TLP:AMBER+STRICT`` marking (OpenCTI's objectMarking entry) → ``amber+strict``."""
    if str(marking.get("definition_type", "")).upper() != "TLP":
        return None
    return normalise_tlp(marking.get("definition"))


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


def _node_ids(node: Optional[Dict[str, Any]]) -> Tuple[Any, ...]:
    return (node.get("id"), node.get("standard_id")) if isinstance(node, dict) else ()


def from_iris(node: Dict[str, Any], iris_author: Optional[str], iris_source: Optional[str]) -> bool:
    """Whether a container is IRIS's own: created by IRIS's author identity, or a Case-Incident whose external
    reference names an IRIS case (``source_name`` of the import side, e.g. one created under another author)."""
    if iris_author and iris_author in _node_ids(node.get("createdBy")):
        return True
    if iris_source and node.get("entity_type") == "Case-Incident":
        refs = node.get("externalReferences")
        edges = refs.get("edges") if isinstance(refs, dict) else refs
        for edge in edges or []:
            ref = (edge or {}).get("node", edge) if isinstance(edge, dict) else {}
            if isinstance(ref, dict) and ref.get("source_name") == iris_source:
                return True
    return False


def verdict_from_entity(entity: Dict[str, Any], case_ref: Optional[str] = None, iris_author: Optional[str] = None,
                        iris_source: Optional[str] = None) -> Verdict:
    """Read score, labels, TLP, indicators and other containers from pycti's ``enrichment_entity``.

    ``opencti:seen`` counts what OpenCTI knows *besides IRIS*: the IOC's own case (``case_ref``) and every
    other container IRIS produced (see :func:`from_iris`) are left out. On IRIS 2.4 one IOC is shared by all
    the cases that hold its value, so counting those would tell an analyst "seen elsewhere" about IRIS itself.
    """
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
        seen = sum(1 for n in nodes if n.get("standard_id") != case_ref and n.get("id") != case_ref
                   and not from_iris(n, iris_author, iris_source))
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
    text = "IOC {} in case #{}: {}".format(ioc_id, case_id, ", ".join(parts) or "no OpenCTI verdict")
    if dropped:
        text += " (dropped to fit IRIS's 512-character tag limit: {})".format(", ".join(dropped))
    return text
