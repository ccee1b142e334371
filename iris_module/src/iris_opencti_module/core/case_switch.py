"""The per-case switch: which IRIS cases may leave IRIS at all.

IRIS has no per-case module setting, so the switch lives in things analysts already edit on a case:

- mode ``all``: every case, unless it carries the tag ``opencti:off``;
- mode ``opt-in``: only cases whose "Sync to OpenCTI" checkbox custom attribute is ticked (the admin defines it
  under Advanced > Custom attributes, on any tab), or that carry the tag ``opencti:on``;
- mode ``off``: nothing.

``opencti:off`` wins over everything, so one tag always stops a case. The functions take IRIS's export-shaped
case dict (``GET /case/export``), so the import connector's reconcile applies exactly the same rule.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from iris_opencti_module.core.tags import TAG_OFF, TAG_ON, tag_list
from iris_opencti_module.core.yesno import TRUE_WORDS

ATTRIBUTE_NAME = "Sync to OpenCTI"
#: older custom-attribute forms saved a ticked checkbox as text
_TRUE_TEXT = TRUE_WORDS | {"checked"}


def checkbox_value(case: Dict[str, Any], name: str = ATTRIBUTE_NAME) -> Optional[bool]:
    """The checkbox's value on any tab of the case's custom attributes; ``None`` when the case has no such field.

    IRIS stores ``{tab: {field: {"type": ..., "value": ...}}}``; the value is a bool for checkboxes but older
    forms saved strings, so both are read. Field names are matched without regard to case or spacing.
    """
    attributes = case.get("custom_attributes")
    if not isinstance(attributes, dict):
        return None
    wanted = " ".join(name.lower().split())
    for tab in attributes.values():
        if not isinstance(tab, dict):
            continue
        for field_name, field in tab.items():
            if " ".join(str(field_name).lower().split()) != wanted:
                continue
            value = field.get("value") if isinstance(field, dict) else field
            if isinstance(value, str):
                return value.strip().lower() in _TRUE_TEXT
            return bool(value)
    return None


def switch_state(case: Dict[str, Any], mode: str) -> Tuple[bool, str]:
    """(enabled, why) for a case under ``mode``; the reason is written to the hook's logs."""
    tags = {t.lower() for t in tag_list(case.get("tags"))}
    if mode == "off":
        return False, "the module's per-case mode is 'off'"
    if TAG_OFF in tags:
        return False, f"the case is tagged {TAG_OFF}"
    if mode == "all":
        return True, "per-case mode 'all'"
    if TAG_ON in tags:
        return True, f"the case is tagged {TAG_ON}"
    ticked = checkbox_value(case)
    if ticked:
        return True, f"its '{ATTRIBUTE_NAME}' custom attribute is ticked"
    if ticked is None:
        return False, (f"per-case mode 'opt-in' and the case has neither a '{ATTRIBUTE_NAME}' custom attribute nor "
                       f"the tag {TAG_ON}")
    return False, f"per-case mode 'opt-in' and its '{ATTRIBUTE_NAME}' custom attribute is not ticked"


def sync_enabled(case: Dict[str, Any], mode: str) -> bool:
    """True when the case may be sent to OpenCTI under ``mode`` (``all``, ``opt-in`` or ``off``)."""
    return switch_state(case, mode)[0]
