"""One STIX object from several copies with the same id: the rule the converter and the import connector share.

Two IRIS objects can yield the same STIX object (two IOCs with one value, an IOC and an asset with one IP), and
the import connector sends several messages' objects in one bundle. Both fold the copies with
:func:`merge_object`, so a case converted at once and the same IOCs sent one event at a time end as the same
objects in OpenCTI.
"""

from __future__ import annotations

from typing import Any, Dict, List

#: reference and label lists: OpenCTI adds to them on upsert and never drops an entry
LIST_PROPS = ("labels", "x_opencti_labels", "object_marking_refs", "object_refs")


def merge_object(known: Dict[str, Any], newer: Dict[str, Any]) -> Dict[str, Any]:
    """Fold ``newer`` into ``known`` (same id), in place, and return ``known``.

    The rule: list properties (:data:`LIST_PROPS`) are the union, ``known``'s entries first; for every other
    property **the later copy wins**, and a property the later copy lacks keeps its value.

    Why the later and not the first: it is what OpenCTI does when it receives the copies one after the other
    (an upsert replaces a scalar when the confidence allows, and both copies carry the same confidence), so it
    is the only rule under which folding changes nothing. The connector folds messages in queue order, where
    the first-wins rule would send an IOC's older description when two of its updates wait in one batch; the
    converter folds IRIS objects in IRIS's order, which is how the module's events for them would arrive.

    Lists are copied, never extended in place: the copies may be shared with a message still to be archived.
    """
    for key, value in newer.items():
        if key in LIST_PROPS and isinstance(value, list):
            current = known.get(key)
            merged: List[Any] = list(current) if isinstance(current, list) else []
            seen = set(merged)
            for item in value:
                if item not in seen:
                    seen.add(item)
                    merged.append(item)
            known[key] = merged
        else:
            known[key] = value
    return known
