"""IRIS cases, IOCs and assets → STIX 2.1 objects that OpenCTI ingests natively.

Objects are built as plain dicts with precomputed deterministic ids (see :mod:`stix_ids`): a 10,000-IOC case
converts in a fraction of a second, and the same IRIS data always yields the same bundle, so a replayed
message changes nothing in OpenCTI. The input is IRIS's own JSON shape (``GET /case/export``); the IRIS
module's adapter turns live model objects into that shape first.

One bad IOC never stops a case: a value that fails its type's check is reported as :class:`Skipped`
(object id, type, value, reason) and the rest converts.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Optional, Tuple

from iris_opencti_module.core import stix_ids
from iris_opencti_module.core.case_records import KINDS as RECORD_KINDS
from iris_opencti_module.core.case_records import REFERS_TO_CASE, RecordBuilder, add_records
from iris_opencti_module.core.case_records import SECTIONS as RECORD_SECTIONS
from iris_opencti_module.core.conversion import conversion_settings
from iris_opencti_module.core.mapping_tables import Mappings
from iris_opencti_module.core.markings import marking_for, normalise_tlp, parse_tlp
from iris_opencti_module.core.patterns import comparison, pattern_of
from iris_opencti_module.core.stix_merge import merge_object
from iris_opencti_module.core.tags import export_labels
from iris_opencti_module.core.timestamps import EPOCH, history_bounds, stix_time
from iris_opencti_module.core.values import (
    InvalidValue,
    check_hash,
    check_ip,
    check_port,
    clean_text,
    ip_type,
    normalise,
    split_pair,
)

#: tags the enrichment connector writes back; exporting them would feed OpenCTI's verdicts back as labels
IRIS_SOURCE_NAME = "DFIR-IRIS"


DEFAULT_CONFIDENCE = 75


@dataclass
class ConverterConfig:
    """What an operator chooses; everything else comes from IRIS data and the mapping tables."""

    iris_url: str = "https://iris.local"
    author_name: str = "DFIR-IRIS"
    default_tlp: str = "amber"
    #: nothing more restrictive than this leaves IRIS (clear < green < amber < amber+strict < red)
    max_tlp: str = "amber"
    create_indicators: bool = True
    mappings_path: Optional[str] = None
    #: ``confidence`` of every SDO and relationship (OpenCTI's observables have none). OpenCTI changes an
    #: existing object's fields on upsert only when this, capped by the connector user's max confidence, is
    #: at least the object's confidence: see the README on the connector user.
    confidence: int = DEFAULT_CONFIDENCE
    #: which of the case's notes, timeline events, tasks and evidences leave IRIS (see case_records.py)
    records: Tuple[str, ...] = RECORD_KINDS
    #: notes' and events' text; off, they keep their titles only (their text can hold what is not shared)
    export_content: bool = True


def content_fingerprint(ioc: Dict[str, Any], tlp: Optional[str]) -> str:
    """Hash of what the converter exports from an IOC (value, type, description, TLP, tags other than
    ``opencti:*``, in any order): an update that changed none of these, typically the enrichment connector's
    tag write-back, is recognised and not sent back."""
    payload = [str(ioc.get("ioc_value") or ""), _type_name(ioc), str(ioc.get("ioc_description") or ""),
               tlp or f"id:{ioc.get('ioc_tlp_id')}", sorted(export_labels(ioc.get("ioc_tags")))]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


@dataclass
class Skipped:
    """An IRIS object (or one of its values) that could not be converted, and why."""

    kind: str
    object_id: Any
    ioc_type: str
    value: str
    reason: str

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 80 else self.value[:77] + "..."
        return f"{self.kind} {self.object_id} ({self.ioc_type} {shown!r}): {self.reason}"

    def as_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "object_id": self.object_id, "type": self.ioc_type, "value": self.value,
                "reason": self.reason}


@dataclass
class ConversionResult:
    """The objects of one conversion, which IRIS object produced which ids, and what was skipped."""

    objects: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    produced: Dict[str, List[str]] = field(default_factory=dict)
    skipped: List[Skipped] = field(default_factory=list)
    case_ref: Optional[str] = None

    def bundle(self, key: str = "") -> Dict[str, Any]:
        """A STIX bundle; its id derives from ``key`` and the object ids, so replays are identical."""
        objects = list(self.objects.values())
        seed = key + "|" + ",".join(self.objects)
        return {"type": "bundle", "id": stix_ids.bundle_id(seed), "objects": objects}

    def counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for obj in self.objects.values():
            counts[obj["type"]] = counts.get(obj["type"], 0) + 1
        return counts


@dataclass(frozen=True)
class IocVerdict:
    """What leaving IRIS means for one IOC, whichever case it is in (:meth:`Converter.judge`)."""

    tlp: Optional[str]
    #: why the IOC stays in IRIS (above the TLP ceiling, unknown TLP), or None
    refusal: Optional[str]
    fingerprint: str


@dataclass
class IocConversion:
    """What one IOC event gives (:meth:`Converter.convert_ioc`): its verdict and, unless refused, its objects."""

    tlp: Optional[str]
    #: why the IOC stays in IRIS (above the TLP ceiling, unknown TLP), or None
    refusal: Optional[str]
    fingerprint: str
    #: its STIX objects in its case; None when refused
    result: Optional["ConversionResult"]


@dataclass
class Screened:
    """IOCs through the TLP gate (:meth:`Converter.screen`)."""

    exportable: List[Dict[str, Any]] = field(default_factory=list)
    refused: List[Tuple[Dict[str, Any], str]] = field(default_factory=list)
    tlps: Dict[int, Tuple[Optional[str], Optional[str]]] = field(default_factory=dict)
    fingerprints: List[Tuple[Any, str]] = field(default_factory=list)


def _type_name(ioc: Dict[str, Any]) -> str:
    ioc_type = ioc.get("ioc_type")
    if isinstance(ioc_type, dict):
        return str(ioc_type.get("type_name") or "")
    return str(ioc_type or "")


def case_name(case: Dict[str, Any]) -> str:
    """IRIS stores ``#<id> - <name>``; an object without the prefix gets it, so OpenCTI shows IRIS's name."""
    name = clean_text(case.get("name")).strip()
    prefix = "#{} - ".format(case.get("case_id"))
    return name if name.startswith(prefix) else prefix + name


def case_created(case: Dict[str, Any]) -> str:
    return stix_time(case.get("initial_date")) or stix_time(case.get("open_date")) or EPOCH


def _severity_name(case: Dict[str, Any]) -> str:
    severity = case.get("severity")
    if isinstance(severity, dict):
        return str(severity.get("severity_name") or "")
    return str(severity or "")


_YARA_RULE = re.compile(r"\brule\s+([A-Za-z0-9_]+)")


def _indicator_name(type_name: str, value: str) -> str:
    """A readable name for a detection rule: the YARA rule name, the Sigma title, or its first line."""
    match = _YARA_RULE.search(value)
    if type_name == "yara" and match:
        return match.group(1)
    for line in value.splitlines():
        line = line.strip()
        if line.lower().startswith("title:"):
            return line[6:].strip()[:250] or type_name
        if line:
            return line[:250]
    return type_name


#: STIX 2.1's object type and property name formats (section 3.1; the OASIS validator holds patterns to them)
_TYPE_NAME = re.compile(r"-?[a-z0-9]+(-[a-z0-9]+)*-?")
_PROPERTY_NAME = re.compile(r"[a-z0-9_]{3,250}")


def _check_pattern_names(pattern: str) -> None:
    """Refuse a pattern whose grammar is right but whose object types or properties are not STIX names
    (``[A:A<0]``): the grammar check lets them through, the OASIS validator and OpenCTI do not."""
    from stix2patterns.v21.pattern import Pattern

    for type_name, comparisons in Pattern(pattern).inspect().comparisons.items():
        if not _TYPE_NAME.fullmatch(type_name) or not 3 <= len(type_name) <= 250:
            raise InvalidValue(f"invalid STIX pattern: {type_name!r} is not a valid observable type name")
        for path, *_ in comparisons:
            if path and isinstance(path[0], str) and not _PROPERTY_NAME.fullmatch(path[0]):
                raise InvalidValue(f"invalid STIX pattern: {path[0]!r} is not a valid observable property name")


class _Build:
    """State of one conversion: the objects so far and the case-wide context they share."""

    def __init__(self, converter: "Converter", case: Dict[str, Any]) -> None:
        self.conv = converter
        self.case = case
        self.created = case_created(case)
        self.result = ConversionResult()
        #: what records look up (the case's IOC and asset objects, by id and by IRIS key): the result itself,
        #: or, when a big case is converted piece by piece, a light copy of what earlier pieces produced
        self.context = self.result
        self.author = converter.author["id"]
        #: TLP verdicts the caller already has, by ``id()`` of the IOC dict (``Converter.convert(tlps=...)``)
        self.tlps: Dict[int, Tuple[Optional[str], Optional[str]]] = {}

    def add(self, obj: Dict[str, Any]) -> str:
        """Insert an object; a second IRIS object yielding the same one is folded into it (see
        :func:`stix_merge.merge_object`: references and labels add up, other properties are the later's)."""
        known = self.result.objects.get(obj["id"])
        if known is None:
            if "created" in obj and "confidence" not in obj:  # SDOs and relationships, not observables
                obj["confidence"] = self.conv.config.confidence
            self.result.objects[obj["id"]] = obj
        else:
            merge_object(known, obj)
        return obj["id"]


class Converter:
    """Turns IRIS data into STIX; one instance serves single events and whole cases alike."""

    def __init__(self, config: Optional[ConverterConfig] = None, mappings: Optional[Mappings] = None) -> None:
        config = config or ConverterConfig()
        # the spellings every setting accepts (AMBER, TLP:AMBER, white...), held as the canonical names
        self.config = replace(config, default_tlp=parse_tlp(config.default_tlp, "default TLP"),
                              max_tlp=parse_tlp(config.max_tlp, "maximum TLP"))
        self.mappings = mappings or Mappings(self.config.mappings_path)
        confidence = self.config.confidence
        if isinstance(confidence, bool) or not isinstance(confidence, int) or not 0 <= confidence <= 100:
            raise ValueError(f"confidence {confidence!r} is not a whole number from 0 to 100")
        self.author = {
            "type": "identity",
            "spec_version": "2.1",
            "id": stix_ids.identity_id(self.config.author_name, "organization"),
            "created": EPOCH,
            "modified": EPOCH,
            "name": self.config.author_name,
            "identity_class": "organization",
            "confidence": confidence,
        }
        self._max_rank = self.mappings.tlp_rank(self.config.max_tlp)
        #: the envelope's ``conversion``: what the connector must share to convert the same way (core.conversion)
        self.conversion = conversion_settings(
            author=self.config.author_name, iris_url=self.config.iris_url, default_tlp=self.config.default_tlp,
            max_tlp=self.config.max_tlp, create_indicators=self.config.create_indicators, confidence=confidence,
            mappings_digest=self.mappings.digest, records=self.config.records,
            export_content=self.config.export_content)

    # ----------------------------------------------------------------------------------------- public API
    def convert(self, case: Dict[str, Any], iocs: Iterable[Dict[str, Any]] = (),
                assets: Iterable[Dict[str, Any]] = (), with_case: bool = True,
                records: Optional[Dict[str, List[Dict[str, Any]]]] = None,
                tlps: Optional[Dict[int, Tuple[Optional[str], Optional[str]]]] = None) -> ConversionResult:
        """Convert IOCs and assets of ``case``; the Case-Incident lists exactly what this call produced.

        ``tlps``: the :meth:`tlp_of` verdicts the caller already took, by ``id()`` of each IOC dict, so that an
        IOC's TLP is read once per event (:meth:`convert_ioc`, :meth:`screen`).

        OpenCTI merges ``object_refs`` on upsert, so a one-IOC event adds that IOC to the existing case.
        ``records`` holds export sections (``notes``, ``timeline``, ``tasks``, ``evidences``): see
        :mod:`case_records`; they come after the IOCs and assets they point at.
        """
        build = _Build(self, case)
        if tlps:
            build.tlps = tlps
        for ioc in iocs:
            self._convert_ioc(build, ioc)
        for asset in assets:
            self._convert_asset(build, asset)
        if records and self.config.records:
            marking = marking_for(self.config.default_tlp)
            if self.mappings.tlp_rank(self.config.default_tlp) <= self._max_rank:
                self._use_marking(build, marking)
                add_records(build, marking["id"], self.config.export_content, records, set(self.config.records))
        if with_case:
            self._case_incident(build)
        return build.result

    def convert_records(self, case: Dict[str, Any], records: Dict[str, List[Dict[str, Any]]],
                        context: ConversionResult) -> ConversionResult:
        """The case's records alone, pointing at what ``context`` holds: the objects (their ``type``, ``value``,
        ``name`` and ``identity_class`` are enough) and the ``produced`` map of the case's IOCs and assets,
        converted earlier in pieces (see ``transport.case_sync``). Only the records' own objects are returned,
        as :meth:`convert` would have made them."""
        build = _Build(self, case)
        build.context = context
        if self.config.records and self.mappings.tlp_rank(self.config.default_tlp) <= self._max_rank:
            marking = marking_for(self.config.default_tlp)
            self._use_marking(build, marking)
            add_records(build, marking["id"], self.config.export_content, records, set(self.config.records))
        return build.result

    def judge(self, ioc: Dict[str, Any]) -> IocVerdict:
        """The IOC's TLP, read once, with why it may not leave IRIS and its content fingerprint: none depends on
        the case, so a hook decides from them once, before converting anything."""
        tlp, refusal = self.tlp_of(ioc)
        return IocVerdict(tlp, refusal, content_fingerprint(ioc, tlp))

    def convert_ioc(self, case: Dict[str, Any], ioc: Dict[str, Any],
                    verdict: Optional[IocVerdict] = None) -> "IocConversion":
        """One IOC event in one call: the verdict (``verdict``, or :meth:`judge` taken now) and, when the IOC
        may leave IRIS, its STIX objects inside its case, converted without reading its TLP again."""
        verdict = verdict or self.judge(ioc)
        result = None if verdict.refusal else self.convert(case, [ioc], [], tlps={id(ioc): (verdict.tlp, None)})
        return IocConversion(verdict.tlp, verdict.refusal, verdict.fingerprint, result)

    def screen(self, iocs: Iterable[Dict[str, Any]]) -> "Screened":
        """IOCs through the TLP gate, each read once: those that may leave IRIS (with their verdicts and
        fingerprints, for :meth:`convert`'s ``tlps``) and those that stay, with the reason."""
        screened = Screened()
        for ioc in iocs:
            verdict = self.judge(ioc)
            if verdict.refusal:
                screened.refused.append((ioc, verdict.refusal))
            else:
                screened.exportable.append(ioc)
                screened.tlps[id(ioc)] = (verdict.tlp, None)
                screened.fingerprints.append((ioc.get("ioc_id"), verdict.fingerprint))
        return screened

    def convert_comment(self, case: Dict[str, Any], comment: Dict[str, Any], kind: str, target_key: str,
                        iocs: Iterable[Dict[str, Any]] = (), assets: Iterable[Dict[str, Any]] = (),
                        records: Optional[Dict[str, List[Dict[str, Any]]]] = None) -> Optional[ConversionResult]:
        """An IRIS comment on the object ``target_key`` (``ioc:7``, ``note:3``...) as a STIX note pointing at
        that object's STIX objects, with them in the result so the note's refs resolve; None when the object
        itself does not leave IRIS (above the TLP ceiling, invalid), so neither does the comment."""
        build = _Build(self, case)
        for ioc in iocs:
            self._convert_ioc(build, ioc)
        for asset in assets:
            self._convert_asset(build, asset)
        marking = marking_for(self.config.default_tlp)
        if self.mappings.tlp_rank(self.config.default_tlp) > self._max_rank:
            return None
        self._use_marking(build, marking)
        builder = RecordBuilder(build, marking["id"], self.config.export_content)
        if records:
            add_records(build, marking["id"], self.config.export_content, records, {target_key.split(":", 1)[0]})
        targets = [i for i in build.result.produced.get(target_key, []) if not i.startswith("relationship--")]
        if not targets:
            return None
        builder.comment(comment, kind, targets)
        self._case_incident(build)
        return build.result

    def convert_export(self, export: Dict[str, Any]) -> ConversionResult:
        """A whole ``GET /case/export`` document (with or without the ``{"status","data"}`` envelope)."""
        data = unwrap_export(export)
        return self.convert(data["case"], data.get("iocs") or [], data.get("assets") or [],
                            records={s: data.get(s) or [] for s in RECORD_SECTIONS.values()})

    def case_incident_ref(self, case: Dict[str, Any]) -> str:
        return stix_ids.case_incident_id(case_name(case), case_created(case))

    def tlp_of(self, ioc: Dict[str, Any]) -> Tuple[Optional[str], Optional[str]]:
        """(TLP name, reason it may not leave IRIS) for an IOC; unknown ids count as the most restrictive."""
        tlp = ioc.get("tlp")
        name = ioc.get("ioc_tlp_name") or (tlp.get("tlp_name") if isinstance(tlp, dict) else None)
        tlp_id = ioc.get("ioc_tlp_id")
        if not name:
            if tlp_id is None:
                name = self.config.default_tlp
            else:
                name = self.mappings.tlp_by_id.get(str(tlp_id))
                if name is None:
                    return None, f"unknown TLP id {tlp_id!r} (add it to the tlp table)"
        known = normalise_tlp(name)
        if known is None:
            return None, f"unknown TLP {name!r}"
        name = known
        if self.mappings.tlp_rank(name) > self._max_rank:
            return name, f"TLP:{name.upper()} is above the export ceiling TLP:{self.config.max_tlp.upper()}"
        return name, None

    # ------------------------------------------------------------------------------------------- case
    def _case_incident(self, build: _Build) -> None:
        case = build.case
        name = case_name(case)
        refs = [oid for oid, obj in build.result.objects.items()
                if obj["type"] != "marking-definition" and oid != build.author and obj["type"] not in REFERS_TO_CASE]
        marking = marking_for(self.config.default_tlp)
        modified = history_bounds(case.get("modification_history"))[1] or build.created
        if modified < build.created:
            modified = build.created
        obj: Dict[str, Any] = {
            "type": "case-incident",
            "spec_version": "2.1",
            "id": stix_ids.case_incident_id(name, build.created),
            "created": build.created,
            "modified": modified,
            "name": name,
            "created_by_ref": build.author,
            "object_marking_refs": [marking["id"]],
            "external_references": [{
                "source_name": IRIS_SOURCE_NAME,
                "url": "{}/case?cid={}".format(self.config.iris_url.rstrip("/"), case.get("case_id")),
                "external_id": str(case.get("case_id")),
            }],
        }
        if refs:  # STIX forbids an empty list; an event that produced nothing still updates the case
            obj["object_refs"] = refs
        if case.get("description"):
            obj["description"] = clean_text(case["description"])
        # At the top level, where OpenCTI's own export writes them and the only place pycti's
        # CaseIncident.import_from_stix2 reads them (``stix_object["severity"]``). The OASIS validator calls
        # 'severity' a reserved property name; OpenCTI's case-incident is a custom type that already uses
        # it, so our bundle checks let that one error pass for case-incidents only.
        severity = self.mappings.severity.get(_severity_name(case)) or {}
        for key in ("severity", "priority"):
            if severity.get(key):
                obj[key] = severity[key]
        labels = export_labels(case.get("tags"))
        if labels:
            obj["labels"] = labels
        self._use_marking(build, marking)
        build.add(self.author)
        build.add(obj)
        build.result.case_ref = obj["id"]
        build.result.produced["case:{}".format(case.get("case_id"))] = [obj["id"]]

    def _use_marking(self, build: _Build, marking: Dict[str, Any]) -> None:
        if marking["id"] not in build.result.objects:
            build.result.objects[marking["id"]] = marking

    # -------------------------------------------------------------------------------------------- IOC
    def _convert_ioc(self, build: _Build, ioc: Dict[str, Any]) -> None:
        ioc_id = ioc.get("ioc_id")
        type_name = _type_name(ioc)
        raw = ioc.get("ioc_value")
        value = raw if isinstance(raw, str) else ("" if raw is None else str(raw))

        def skip(reason: str) -> None:
            build.result.skipped.append(Skipped("IOC", ioc_id, type_name, value, reason))

        if not value.strip():
            return skip("empty ioc_value")
        if clean_text(value) != value:
            return skip("ioc_value is not valid Unicode (lone surrogate)")
        entry = self.mappings.ioc_types.get(type_name)
        if entry is None:
            return skip(f"IOC type {type_name!r} has no mapping (add it to mappings/ioc_types.json)")
        if entry["kind"] == "unsupported":
            return skip("unsupported type: " + entry["reason"])
        tlp, refusal = build.tlps.get(id(ioc)) or self.tlp_of(ioc)
        if refusal:
            return skip(refusal)
        marking = marking_for(tlp or self.config.default_tlp)
        self._use_marking(build, marking)
        created, modified = history_bounds(ioc.get("modification_history"))
        created = created or build.created
        modified = modified or created
        labels = export_labels(ioc.get("ioc_tags"))
        if entry.get("label") and entry["label"] not in labels:
            labels.append(entry["label"])
        ctx = _IocContext(ioc_id=ioc_id, type_name=type_name, value=value, entry=entry, marking=marking["id"],
                          labels=labels, description=clean_text(ioc.get("ioc_description")),
                          created=created, modified=modified)
        before = len(build.result.objects)
        produced: List[str] = []
        try:
            handler = getattr(self, "_kind_" + entry["kind"])
            produced = handler(build, ctx)
        except InvalidValue as exc:
            # roll back anything half-built for this IOC so a skipped IOC leaves no trace in the bundle
            for oid in list(build.result.objects)[before:]:
                del build.result.objects[oid]
            return skip(str(exc))
        build.result.produced[f"ioc:{ioc_id}"] = produced

    def _sco(self, build: _Build, ctx: "_IocContext", stix_type: str, props: Dict[str, Any],
             describe: bool = True) -> Dict[str, Any]:
        obj: Dict[str, Any] = {"type": stix_type, "spec_version": "2.1"}
        obj.update(props)
        obj["id"] = stix_ids.sco_id(obj)
        obj["object_marking_refs"] = [ctx.marking]
        obj["x_opencti_created_by_ref"] = build.author
        if describe:
            if ctx.description:
                obj["x_opencti_description"] = ctx.description
            if ctx.labels:
                obj["x_opencti_labels"] = list(ctx.labels)
        build.add(obj)
        return build.result.objects[obj["id"]]

    def _relationship(self, build: _Build, ctx: "_IocContext", rel_type: str, source: str, target: str,
                      marking: Optional[str] = None) -> str:
        return build.add({
            "type": "relationship",
            "spec_version": "2.1",
            "id": stix_ids.relationship_id(rel_type, source, target),
            "created": ctx.created,
            "modified": ctx.modified,
            "relationship_type": rel_type,
            "source_ref": source,
            "target_ref": target,
            "created_by_ref": build.author,
            "object_marking_refs": [marking or ctx.marking],
        })

    def _indicator(self, build: _Build, ctx: "_IocContext", pattern: str, pattern_type: str,
                   name: str) -> str:
        obj: Dict[str, Any] = {
            "type": "indicator",
            "spec_version": "2.1",
            "id": stix_ids.indicator_id(pattern),
            "created": ctx.created,
            "modified": ctx.modified,
            "name": name[:250],
            "pattern": pattern,
            "pattern_type": pattern_type,
            "valid_from": ctx.created,
            "created_by_ref": build.author,
            "object_marking_refs": [ctx.marking],
        }
        if ctx.description:
            obj["description"] = ctx.description
        if ctx.labels:
            obj["labels"] = list(ctx.labels)
        return build.add(obj)

    def _with_indicator(self, build: _Build, ctx: "_IocContext", main: Dict[str, Any],
                        pattern: str) -> List[str]:
        """The observable, plus (when configured and sensible) its Indicator and the ``based-on`` link."""
        ids = [main["id"]]
        if self.config.create_indicators and ctx.entry.get("indicator", True):
            ind = self._indicator(build, ctx, pattern, "stix", ctx.value.strip())
            ids += [ind, self._relationship(build, ctx, "based-on", ind, main["id"])]
        return ids

    def _kind_observable(self, build: _Build, ctx: "_IocContext") -> List[str]:
        entry = ctx.entry
        stix_type = entry["stix_type"]
        prop = entry["property"]
        if stix_type == "ip":
            value: Any = check_ip(ctx.value)
            stix_type = ip_type(value)
        elif prop.startswith("hashes."):
            value = check_hash(prop[7:], ctx.value)
        elif entry.get("check"):
            value = normalise(entry["check"], ctx.value)
        else:
            value = ctx.value.strip()
        props: Dict[str, Any] = dict(entry.get("extra") or {})
        if prop.startswith("hashes."):
            props["hashes"] = {prop[7:]: value}
        else:
            props[prop] = value
        for other in entry.get("copy_to") or ():
            props[other] = value
        main = self._sco(build, ctx, stix_type, props)
        return self._with_indicator(build, ctx, main, pattern_of(stix_type, props))

    def _kind_indicator(self, build: _Build, ctx: "_IocContext") -> List[str]:
        pattern = ctx.value.strip()
        if ctx.entry.get("check"):
            pattern = normalise(ctx.entry["check"], pattern)
        if ctx.entry["pattern_type"] == "stix":
            from stix2patterns.validator import validate as validate_pattern

            ok, errors = validate_pattern(pattern, ret_errs=True)
            if not ok:
                raise InvalidValue("invalid STIX pattern: {}".format("; ".join(errors)[:200]))
            _check_pattern_names(pattern)
        return [self._indicator(build, ctx, pattern, ctx.entry["pattern_type"],
                                _indicator_name(ctx.type_name, pattern))]

    def _kind_sdo(self, build: _Build, ctx: "_IocContext") -> List[str]:
        stix_type = ctx.entry["stix_type"]
        name = normalise(ctx.entry.get("check") or "nonempty", ctx.value)
        obj: Dict[str, Any] = {"type": stix_type, "spec_version": "2.1", "created": ctx.created,
                               "modified": ctx.modified, "name": name, "created_by_ref": build.author,
                               "object_marking_refs": [ctx.marking]}
        if stix_type == "identity":
            obj["identity_class"] = ctx.entry.get("identity_class", "organization")
            obj["id"] = stix_ids.identity_id(name, obj["identity_class"])
        elif stix_type == "threat-actor":
            obj["id"] = stix_ids.threat_actor_id(name)
        elif stix_type in ("vulnerability", "campaign"):
            obj["id"] = stix_ids.named_sdo_id(stix_type, name)
        else:
            raise InvalidValue(f"mapping names an SDO type {stix_type!r} the converter cannot build")
        if ctx.description:
            obj["description"] = ctx.description
        if ctx.labels:
            obj["labels"] = list(ctx.labels)
        return [build.add(obj)]

    def _kind_composite(self, build: _Build, ctx: "_IocContext") -> List[str]:
        split = ctx.entry["split"]
        if split == "filename|hash":
            name, digest = split_pair(ctx.value, ("filename", "hash"))
            algorithm = ctx.entry["hash"]
            props = {"name": name, "hashes": {algorithm: check_hash(algorithm, digest)}}
            main = self._sco(build, ctx, "file", props)
            return self._with_indicator(build, ctx, main, pattern_of("file", props))
        if split in ("ip|port", "hostname|port"):
            host, port_text = split_pair(ctx.value, ("address", "port"))
            port = check_port(port_text)
            if split == "ip|port":
                host = check_ip(host.strip("[]"))
                host_obj = self._sco(build, ctx, ip_type(host), {"value": host}, describe=False)
                protocol = "ipv6" if host_obj["type"] == "ipv6-addr" else "ipv4"
            else:
                host = normalise("domain", host)
                host_obj = self._sco(build, ctx, "domain-name", {"value": host}, describe=False)
                protocol = "tcp"
            side = ctx.entry.get("direction", "dst")
            traffic = self._sco(build, ctx, "network-traffic", {
                side + "_ref": host_obj["id"], side + "_port": port, "protocols": [protocol]})
            pattern = "[{} AND {}]".format(
                comparison("network-traffic", side + "_ref.value", host),
                comparison("network-traffic", side + "_port", port))
            return [host_obj["id"]] + self._with_indicator(build, ctx, traffic, pattern)
        if split == "domain|ip":
            domain, address = split_pair(ctx.value, ("domain", "ip"))
            domain = normalise("domain", domain)
            address = check_ip(address)
            domain_obj = self._sco(build, ctx, "domain-name", {"value": domain})
            ip_obj = self._sco(build, ctx, ip_type(address), {"value": address})
            rel = self._relationship(build, ctx, "resolves-to", domain_obj["id"], ip_obj["id"])
            ids = self._with_indicator(build, ctx, domain_obj, pattern_of("domain-name", {"value": domain}))
            return ids + [ip_obj["id"], rel]
        if split == "regkey|value":
            key, sep, data = ctx.value.partition("|")
            if not sep or not key.strip():
                raise InvalidValue("expected 'registry key|value data'")
            props = {"key": normalise("regkey", key), "values": [{"data": data.strip()}]}
            main = self._sco(build, ctx, "windows-registry-key", props)
            pattern = "[{} AND {}]".format(comparison("windows-registry-key", "key", props["key"]),
                                       comparison("windows-registry-key", "values[*].data", data.strip()))
            return self._with_indicator(build, ctx, main, pattern)
        raise InvalidValue(f"unknown composite split {split!r}")

    # ------------------------------------------------------------------------------------------ assets
    def _convert_asset(self, build: _Build, asset: Dict[str, Any]) -> None:
        asset_id = asset.get("asset_id")
        asset_type = asset.get("type") or asset.get("asset_type") or ""
        if isinstance(asset_type, dict):
            asset_type = asset_type.get("asset_name") or ""
        name = clean_text(asset.get("asset_name")).strip()
        if not name:
            build.result.skipped.append(Skipped("asset", asset_id, str(asset_type), "", "empty asset_name"))
            return
        entry = self.mappings.asset_types.get(asset_type) or self.mappings.asset_default
        marking = marking_for(self.config.default_tlp)
        self._use_marking(build, marking)
        created = stix_time(asset.get("date_added")) or build.created
        labels = export_labels(asset.get("asset_tags"))
        status = self.mappings.compromise_status.get(str(asset.get("asset_compromise_status_id")))
        if status:
            labels.append(status)
        identity: Dict[str, Any] = {
            "type": "identity", "spec_version": "2.1",
            "id": stix_ids.identity_id(name, entry.get("identity_class", "system")),
            "created": created, "modified": created, "name": name,
            "identity_class": entry.get("identity_class", "system"),
            "created_by_ref": build.author, "object_marking_refs": [marking["id"]],
        }
        if asset.get("asset_description"):
            identity["description"] = clean_text(asset["asset_description"])
        if labels:
            identity["labels"] = labels
        ids = [build.add(identity)]
        ctx = _IocContext(ioc_id=asset_id, type_name=str(asset_type), value=name, entry={}, marking=marking["id"],
                          labels=[], description="", created=created, modified=created)
        related: List[Dict[str, Any]] = []
        for address in re.split(r"[\s,;]+", str(asset.get("asset_ip") or "").strip()):
            if not address:
                continue
            try:
                address = check_ip(address)
            except InvalidValue as exc:
                build.result.skipped.append(Skipped("asset", asset_id, "asset_ip", address, str(exc)))
                continue
            related.append(self._sco(build, ctx, ip_type(address), {"value": address}, describe=False))
        domain = str(asset.get("asset_domain") or "").strip()
        if domain:
            try:
                related.append(self._sco(build, ctx, "domain-name", {"value": normalise("domain", domain)},
                                         describe=False))
            except InvalidValue as exc:
                build.result.skipped.append(Skipped("asset", asset_id, "asset_domain", domain, str(exc)))
        account = entry.get("account")
        if account:
            props = dict(account)
            props["account_login"] = name
            related.append(self._sco(build, ctx, "user-account", props, describe=False))
        for obj in related:
            ids += [obj["id"], self._relationship(build, ctx, "related-to", obj["id"], identity["id"])]
        build.result.produced[f"asset:{asset_id}"] = ids


@dataclass
class _IocContext:
    ioc_id: Any
    type_name: str
    value: str
    entry: Dict[str, Any]
    marking: str
    labels: List[str]
    description: str
    created: str
    modified: str


def unwrap_export(export: Any) -> Dict[str, Any]:
    """Accept IRIS's ``{"status","message","data":{...}}`` envelope or the bare ``data`` part."""
    if isinstance(export, dict) and isinstance(export.get("data"), dict) and "status" in export:
        export = export["data"]
    if not isinstance(export, dict) or not isinstance(export.get("case"), dict):
        raise ValueError("not an IRIS case export: expected a JSON object with a 'case' object "
                         "(the output of GET /case/export?cid=N)")
    case = export["case"]
    if "case_id" not in case:
        raise ValueError("not an IRIS case export: 'case' has no 'case_id'")
    for key in ("iocs", "assets"):
        if export.get(key) is not None and not isinstance(export[key], list):
            raise ValueError(f"not an IRIS case export: {key!r} must be a list")
    return export
