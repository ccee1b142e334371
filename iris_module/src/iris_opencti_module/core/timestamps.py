"""IRIS timestamps → STIX timestamps (UTC, millisecond precision).

Ids and bundles must be byte-identical when an event is replayed, so every timestamp comes from IRIS data,
never from the clock.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Optional

EPOCH = "1970-01-01T00:00:00.000Z"


def stix_time(value: Any) -> Optional[str]:
    """``datetime``/ISO string/epoch seconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ``; ``None`` when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        moment = _dt.datetime.fromtimestamp(float(value), tz=_dt.timezone.utc)
    elif isinstance(value, _dt.datetime):
        moment = value
    elif isinstance(value, _dt.date):
        moment = _dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            moment = _dt.datetime.fromisoformat(text)
        except ValueError:
            try:
                moment = _dt.datetime.fromtimestamp(float(text), tz=_dt.timezone.utc)
            except ValueError:
                return None
    else:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def history_bounds(history: Any) -> "tuple[Optional[str], Optional[str]]":
    """First and last moment of an IRIS ``modification_history`` (a dict keyed by epoch seconds)."""
    if not isinstance(history, dict) or not history:
        return None, None
    moments = []
    for key in history:
        try:
            moments.append(float(key))
        except (TypeError, ValueError):
            continue
    if not moments:
        return None, None
    return stix_time(min(moments)), stix_time(max(moments))
