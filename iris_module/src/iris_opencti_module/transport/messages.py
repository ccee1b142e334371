"""IRIS events (as export-shaped dicts) → envelopes, with no I/O: shared by the hooks and ``iris-opencti push``.

Two rules live here because every sender must apply them identically:

- the TLP gate: an IOC above the export ceiling is taken out *before* conversion and reported without its
  value, so neither its objects nor its value leave IRIS (the converter's own skip report would carry it);
- the fingerprint: a hash of exactly what the converter exports from an IOC (value, type, description, TLP,
  tags other than ``opencti:*``), so an update that changed nothing exported - typically the enrichment
  connector's tag write-back - is recognised and not sent back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from iris_opencti_module.core.case_records import ID_FIELDS as RECORD_ID_FIELDS
from iris_opencti_module.core.case_records import SECTIONS
from iris_opencti_module.core.convert import ConversionResult, Converter, IocConversion, Skipped, _type_name, case_name
from iris_opencti_module.core.envelope import make_envelope, whole_case_covers


def short(value: Any, limit: int = 60) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def refused_entry(ioc: Dict[str, Any], reason: str) -> Dict[str, Any]:
    """A skip report that says which IOC stayed in IRIS and why, without its value."""
    return {"kind": "IOC", "object_id": ioc.get("ioc_id"), "type": _type_name(ioc), "reason": reason}


def skipped_entries(skipped: Iterable[Skipped]) -> List[Dict[str, Any]]:
    return [s.as_dict() for s in skipped]


def describe_skip(entry: Dict[str, Any]) -> str:
    if "value" in entry:
        return "{} {} ({} {!r}): {}".format(entry.get("kind"), entry.get("object_id"), entry.get("type"),
                                     short(entry.get("value")), entry.get("reason"))
    return "{} {} ({}): {}".format(entry.get("kind"), entry.get("object_id"), entry.get("type"), entry.get("reason"))


@dataclass
class CaseMessage:
    """A whole-case message and what the sender needs to remember about it."""

    envelope: Dict[str, Any]
    result: ConversionResult
    fingerprints: List[Tuple[Any, str]] = field(default_factory=list)
    refused: List[Dict[str, Any]] = field(default_factory=list)
    ioc_count: int = 0
    asset_count: int = 0

    def summary(self) -> str:
        counts = ", ".join("%s %d" % kv for kv in sorted(self.result.counts().items()))
        text = "%d IOCs, %d assets -> %d STIX objects (%s)" % (
            self.ioc_count, self.asset_count, len(self.envelope["bundle"]["objects"]), counts)
        skipped = self.envelope["skipped"]
        if skipped:
            text += "; %d skipped (%d above the TLP ceiling stay in IRIS)" % (len(skipped), len(self.refused))
        return text


def case_message(converter: Converter, case: Dict[str, Any], iocs: List[Dict[str, Any]],
                 assets: List[Dict[str, Any]], event: str = "case.sync", user: Optional[str] = None,
                 records: Optional[Dict[str, List[Dict[str, Any]]]] = None) -> CaseMessage:
    """The whole case: every IOC within the TLP ceiling and every asset, in one bundle.

    With ``records`` (export sections: notes, timeline, tasks, evidences) those go too, and the message says it
    covers them (``covers``): only then may the connector delete such records absent from it.
    """
    screened = converter.screen(iocs)
    refused = [refused_entry(ioc, reason) for ioc, reason in screened.refused]
    result = converter.convert(case, screened.exportable, assets, records=records, tlps=screened.tlps)
    case_id = case.get("case_id")
    skipped = refused + skipped_entries(result.skipped)
    covers = whole_case_covers(converter.config.records if records is not None else ())
    envelope = make_envelope(
        event, case_id, case_name=case_name(case), case_ref=result.case_ref,
        bundle=result.bundle(f"{event}|case:{case_id}"), produced=result.produced,
        ioc_ids=[i.get("ioc_id") for i in iocs], asset_ids=[a.get("asset_id") for a in assets], user=user,
        skipped=skipped, covers=covers, conversion=converter.conversion)
    return CaseMessage(envelope, result, screened.fingerprints, refused, len(iocs), len(assets))


def case_update_message(converter: Converter, case: Dict[str, Any], user: Optional[str] = None
                        ) -> Tuple[Dict[str, Any], ConversionResult]:
    """The case's own fields only: OpenCTI merges it into the existing Case-Incident and keeps its contents."""
    result = converter.convert(case, [], [])
    case_id = case.get("case_id")
    envelope = make_envelope("case.updated", case_id, case_name=case_name(case), case_ref=result.case_ref,
                             bundle=result.bundle(f"case.updated|case:{case_id}"), produced=result.produced,
                             user=user, conversion=converter.conversion)
    return envelope, result


def ioc_message(converter: Converter, case: Dict[str, Any], ioc: Dict[str, Any], event: str,
                user: Optional[str] = None, conversion: Optional[IocConversion] = None
                ) -> Tuple[Dict[str, Any], ConversionResult]:
    """One IOC that may leave IRIS, inside its case; ``conversion`` is the handler's
    :meth:`Converter.convert_ioc` (taken here when absent)."""
    conversion = conversion or converter.convert_ioc(case, ioc)
    if conversion.result is None:
        raise ValueError(f"IOC {ioc.get('ioc_id')} stays in IRIS ({conversion.refusal}): no message")
    result = conversion.result
    case_id = case.get("case_id")
    key = f"{event}|case:{case_id}|ioc:{ioc.get('ioc_id')}|{conversion.fingerprint}"
    envelope = make_envelope(event, case_id, case_name=case_name(case), case_ref=result.case_ref,
                             bundle=result.bundle(key), produced=result.produced, ioc_ids=[ioc.get("ioc_id")],
                             user=user, skipped=skipped_entries(result.skipped), conversion=converter.conversion)
    return envelope, result


def ioc_retraction_message(converter: Converter, case: Dict[str, Any], ioc: Dict[str, Any], reason: str,
                           user: Optional[str] = None) -> Dict[str, Any]:
    """An IOC sent earlier now lies above the TLP ceiling: it produces nothing any more, so the connector takes
    what it produced out of the case (and deletes what nothing else holds)."""
    result = converter.convert(case, [], [])
    case_id = case.get("case_id")
    return make_envelope("ioc.updated", case_id, case_name=case_name(case), case_ref=result.case_ref,
                         bundle=result.bundle("ioc.retracted|case:{}|ioc:{}".format(case_id, ioc.get("ioc_id"))),
                         produced=result.produced, ioc_ids=[ioc.get("ioc_id")], user=user,
                         skipped=[refused_entry(ioc, reason)], conversion=converter.conversion)


def asset_message(converter: Converter, case: Dict[str, Any], asset: Dict[str, Any], event: str,
                  user: Optional[str] = None) -> Tuple[Dict[str, Any], ConversionResult]:
    result = converter.convert(case, [], [asset])
    case_id = case.get("case_id")
    key = "{}|case:{}|asset:{}".format(event, case_id, asset.get("asset_id"))
    envelope = make_envelope(event, case_id, case_name=case_name(case), case_ref=result.case_ref,
                             bundle=result.bundle(key), produced=result.produced, asset_ids=[asset.get("asset_id")],
                             user=user, skipped=skipped_entries(result.skipped), conversion=converter.conversion)
    return envelope, result


def deletion_message(kind: str, object_id: Any, case_id: Any = None, case_ref: Optional[str] = None,
                     case_name_: Optional[str] = None, value: Optional[str] = None, type_name: Optional[str] = None,
                     user: Optional[str] = None) -> Dict[str, Any]:
    """``ioc.deleted`` / ``asset.deleted``: with its case when known, else by id alone (the connector's ledger
    knows which cases hold it)."""
    entry: Dict[str, Any] = {"kind": kind, "id": object_id}
    if value is not None:
        entry["value"] = value
    if type_name:
        entry["type"] = type_name
    ids = [object_id]
    return make_envelope(f"{kind}.deleted", case_id, case_name=case_name_, case_ref=case_ref,
                         ioc_ids=ids if kind == "ioc" else (), asset_ids=ids if kind == "asset" else (),
                         user=user, deleted=[entry],
                         record_ids={kind: ids} if kind not in ("ioc", "asset") else None)


def records_message(converter: Converter, case: Dict[str, Any], kind: str, records: List[Dict[str, Any]],
                    iocs: Iterable[Dict[str, Any]] = (), assets: Iterable[Dict[str, Any]] = (),
                    user: Optional[str] = None) -> Dict[str, Any]:
    """``records.sync``: every record of one kind of the case (notes, timeline events, tasks or evidences),
    sent whole after any change to one of them, so that a record deleted or changed in IRIS is resolved like
    an IOC (``covers`` is that kind alone: nothing else of the case is deleted). ``iocs`` and ``assets`` are
    those the records point at (an event's IOCs, the case's for the notes that name them), within the TLP
    ceiling: they go too, so a sighting's indicator is in the bundle."""
    exportable = converter.screen(iocs).exportable
    result = converter.convert(case, exportable, list(assets), records={SECTIONS[kind]: list(records)})
    case_id = case.get("case_id")
    return make_envelope(
        "records.sync", case_id, case_name=case_name(case), case_ref=result.case_ref,
        bundle=result.bundle(f"records.sync|{kind}|case:{case_id}"), produced=result.produced,
        ioc_ids=[i.get("ioc_id") for i in exportable], user=user,
        skipped=skipped_entries(result.skipped), covers=[kind],
        record_ids={kind: [r.get(RECORD_ID_FIELDS[kind]) for r in records]}, conversion=converter.conversion)


def case_deletion_message(case_id: Any, case_ref: Optional[str], name: Optional[str],
                          user: Optional[str] = None) -> Dict[str, Any]:
    return make_envelope("case.deleted", case_id, case_name=name, case_ref=case_ref, user=user,
                         deleted=[{"kind": "case", "id": case_id}])


def comment_message(converter: Converter, case: Dict[str, Any], comment: Dict[str, Any], kind: str, target_id: Any,
                    iocs: Iterable[Dict[str, Any]] = (), assets: Iterable[Dict[str, Any]] = (),
                    records: Optional[Dict[str, List[Dict[str, Any]]]] = None,
                    user: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """``comment.updated``: one comment as a STIX note on what it comments (created or edited alike: the ledger
    key ``comment:<id>`` resolves an edit, whose new text is a new note); None when the commented object does
    not leave IRIS (an IOC above the TLP ceiling), so the comment stays too."""
    exportable = converter.screen(iocs).exportable
    result = converter.convert_comment(case, comment, kind, f"{kind}:{target_id}", exportable, list(assets),
                                       records)
    if result is None:
        return None
    case_id = case.get("case_id")
    comment_id = comment.get("comment_id")
    return make_envelope("comment.updated", case_id, case_name=case_name(case), case_ref=result.case_ref,
                         bundle=result.bundle(f"comment|{comment_id}|case:{case_id}"),
                         produced=result.produced, user=user, record_ids={"comment": [comment_id]},
                         conversion=converter.conversion)
