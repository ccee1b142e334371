"""Validation of an IOC update body, as ``IocSchema().load(data, instance=ioc, partial=True)`` does it.

Source: ``IocSchema`` in ``source/app/schema/marshables.py`` and ``update`` / ``iocs_update`` in
``source/app/business/iocs.py`` (v2.4.20 and develop).  What matters to clients:

* ``ioc_tags`` is a ``String(512)`` column, so marshmallow-sqlalchemy adds ``Length(max=512)``: a longer value
  is a 400 ``"Data error"`` with ``{"ioc_tags": ["Longer than maximum length 512."]}`` and nothing is saved.
* Errors raised in ``pre_load`` (``verify_data``) stop at the first one; field errors are collected.
* Anything else that goes wrong (a non-string ``ioc_tags`` that ``verify_data`` calls ``.split`` on, a TLP id
  that violates the foreign key, a null or unknown type id after loading, a body that is not an object) is
  caught by ``except Exception`` and re-raised as ``BusinessProcessingError('Unexpected error server-side', e)``;
  the route then fails to JSON-encode ``e`` and Flask answers a bare HTTP 500.
* Unknown keys are ignored (``unknown = EXCLUDE``); ``ioc_id`` / ``case_id`` / ``user_id`` are set by IRIS.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, List, Mapping

IOC_TAGS_MAX = 512
POSTGRES_INT_MAX = 2147483647
UPDATABLE_FIELDS = ("ioc_value", "ioc_description", "ioc_tags", "ioc_tlp_id", "ioc_type_id", "ioc_misp",
                    "custom_attributes", "ioc_enrichment", "ioc_uuid")


class DataError(Exception):
    """A marshmallow ``ValidationError``: IRIS answers 400 ``"Data error"`` with these messages."""

    def __init__(self, messages: Dict[str, List[str]]) -> None:
        super().__init__(messages)
        self.messages = messages


class ServerError(Exception):
    """Something IRIS turns into an HTTP 500; the text says why (for the request log, never sent)."""


def _int_or_none(value: Any) -> Any:
    """marshmallow ``Integer`` (non-strict) deserialisation; raises ValueError when invalid."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(value)


def _pre_load(changes: Mapping[str, Any], known_type_ids: Any) -> None:
    """``IocSchema.verify_data``: type id must exist, TLP id must be an int in range, tags must split."""
    if changes.get("ioc_type_id"):
        try:
            type_id = _int_or_none(changes["ioc_type_id"])
        except ValueError:
            raise DataError({"ioc_type_id": ["Invalid data type"]}) from None
        if type_id not in known_type_ids:
            raise DataError({"ioc_type_id": ["Invalid IOC type ID"]})
    tlp_id = changes.get("ioc_tlp_id")
    if tlp_id:
        if isinstance(tlp_id, int) and not isinstance(tlp_id, bool) and tlp_id > POSTGRES_INT_MAX:
            raise DataError({"ioc_tlp_id": ["Invalid data - max value exceeded"]})
        try:
            _int_or_none(tlp_id)
        except ValueError:
            raise DataError({"ioc_tlp_id": ["Invalid data type"]}) from None
    tags = changes.get("ioc_tags")
    if tags and not isinstance(tags, str):
        raise ServerError(f"ioc_tags must be a string, got {type(tags).__name__}: IocSchema.verify_data "
                          "calls .split(',') on it (AttributeError)")


def _load_field(name: str, value: Any) -> Any:
    """One field as marshmallow deserialises it; raises ValueError(message) when invalid."""
    if name in ("ioc_tlp_id", "ioc_type_id"):
        try:
            return _int_or_none(value)
        except ValueError:
            raise ValueError("Not a valid integer.") from None
    if name in ("custom_attributes", "ioc_enrichment"):
        return value
    if name == "ioc_uuid":
        if value is None:
            raise ValueError("Field may not be null.")
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise ValueError("Not a valid UUID.") from None
    if value is None:
        if name == "ioc_value":
            raise ValueError("Field may not be null.")
        return None
    if not isinstance(value, str):
        raise ValueError("Not a valid string.")
    if name == "ioc_value" and len(value) < 1:
        raise ValueError("Shorter than minimum length 1.")
    if name == "ioc_tags" and len(value) > IOC_TAGS_MAX:
        raise ValueError(f"Longer than maximum length {IOC_TAGS_MAX}.")
    return value


def validate_update(changes: Any, known_type_ids: Any) -> Dict[str, Any]:
    """The fields to write, deserialised; raises :class:`DataError` (400) or :class:`ServerError` (500)."""
    if not isinstance(changes, dict):
        raise ServerError(f"the body is {type(changes).__name__}, not a JSON object: "
                          "request_data['ioc_id'] = ... raises TypeError")
    _pre_load(changes, known_type_ids)
    errors: Dict[str, List[str]] = {}
    clean: Dict[str, Any] = {}
    for name in UPDATABLE_FIELDS:
        if name in changes:
            try:
                clean[name] = _load_field(name, changes[name])
            except ValueError as err:
                errors[name] = [str(err)]
    if errors:
        raise DataError(errors)
    return clean
