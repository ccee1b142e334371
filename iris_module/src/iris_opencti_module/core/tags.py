"""IRIS tags: how they are read, which leave IRIS as labels, and the ``opencti:`` prefix the bridge owns.

Tags starting with ``opencti:`` belong to the bridge: the enrichment connector writes ``opencti:score=…`` and
friends back onto IOCs, and ``opencti:on`` / ``opencti:off`` switch a case. They never leave IRIS as labels, so
the write-back cannot echo into OpenCTI and loop.
"""

from __future__ import annotations

from typing import Any, Iterable, List

from iris_opencti_module.core.values import clean_text

PREFIX = "opencti:"
TAG_ON = PREFIX + "on"
TAG_OFF = PREFIX + "off"


def is_bridge_tag(tag: str) -> bool:
    """A tag the bridge wrote or reads as a switch (``opencti:*``, in any case)."""
    return tag.lower().startswith(PREFIX)


def tag_list(tags: Any) -> List[str]:
    """IRIS tags arrive as a comma string (IOCs, assets), a list of strings, or a list of tag dicts (cases)."""
    if not tags:
        return []
    if isinstance(tags, str):
        items: Iterable[Any] = tags.split(",")
    else:
        items = tags
    out: List[str] = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("tag_title") or item.get("name") or ""
        text = clean_text(item).strip()
        if text and text not in out:
            out.append(text)
    return out


def export_labels(tags: Any) -> List[str]:
    """Tags that leave IRIS as labels: everything except the bridge's own ``opencti:*`` tags."""
    return [t for t in tag_list(tags) if not is_bridge_tag(t)]
