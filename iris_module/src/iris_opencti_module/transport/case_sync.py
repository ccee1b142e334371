"""A whole case as messages under the broker's limit, converted and sent as it goes (see ``core/chunks.py``).

A case that fits in ``max_bytes`` leaves as the one message :func:`~.messages.case_message` builds. A larger
one is converted a batch of IOCs at a time; each batch's objects join the part being filled, and a full part
leaves as soon as the next one has filled too (which says it was not the last). So converting and shipping a
100,000-IOC case holds two parts and a light index of the case (ids, and the values records look for), not
the 300,000 objects of the whole, and the import connector starts on the first part while the module is
still converting the rest (a 50,000-IOC case's first part used to wait 4 s for the whole conversion).

Every part names the sync and its place in it (``part = {sync, index}``); the last one also names the total
(``total``), which only the end of the conversion tells: the connector knows a sync is complete once it
holds the part that names the total and every index below it. The sync id is derived from what is converted
(the event, the case, its IOCs, assets and records as IRIS gives them, and the conversion settings), so a case
pushed twice unchanged gives the same sync, and a push cut short and run again completes the same sync.

An object two IRIS objects of the case both yield (one value in two IOCs) goes, as the whole conversion merges
it, in the part of its first IOC; a later part holding the second IOC carries that IOC's own version of it
(OpenCTI adds the labels and refs of both on upsert, as with two single events).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
from typing import Any, Dict, Iterator, List, Optional, Set

from iris_opencti_module.core.chunks import DEFAULT_MAX_MESSAGE_BYTES, ENVELOPE_ROOM, json_size, key_cost, part_budget
from iris_opencti_module.core.convert import ConversionResult, Converter, case_name
from iris_opencti_module.core.envelope import make_envelope, whole_case_covers
from iris_opencti_module.core.markings import TLP_MARKINGS
from iris_opencti_module.core.stix_ids import NAMESPACE, bundle_id
from iris_opencti_module.core.stix_merge import merge_object
from iris_opencti_module.transport.messages import CaseMessage, case_message, refused_entry, skipped_entries

#: IOCs converted at a time
BATCH = 500
#: what records read of the IOC and asset objects they point at (``case_records``)
_CONTEXT_FIELDS = ("type", "value", "name", "identity_class")
#: object types that name the case themselves and are not among its refs (``case_records.REFERS_TO_CASE``)
_NOT_IN_CASE = frozenset({"marking-definition", "note", "task"})


def _original(key: str, others: Dict[str, Any]) -> Any:
    """The IRIS id behind ``ioc:12`` / ``asset:12``: as IRIS gave it (an integer, or what ``others`` holds)."""
    if key in others:
        return others[key]
    text = key.split(":", 1)[1]
    return int(text) if text.lstrip("-").isdigit() else text


def sync_id(event: str, case: Dict[str, Any], iocs: List[Dict[str, Any]], assets: List[Dict[str, Any]],
            records: Optional[Dict[str, List[Dict[str, Any]]]], conversion: Dict[str, Any]) -> str:
    """The id of a whole-case sync, from what it converts: equal inputs and settings give equal messages."""
    digest = hashlib.sha256()
    # item by item: one JSON text of 100,000 IOCs would be the biggest thing the push holds
    for group in ([event, case, conversion.get("fingerprint")], iocs, assets,
                  [(k, r) for k, rows in sorted((records or {}).items()) for r in rows]):
        for item in group:
            digest.update(json.dumps(item, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return str(uuid.uuid5(NAMESPACE, "case sync|%s|%s" % (case.get("case_id"), digest.hexdigest())))


class CaseSync:
    """One whole-case event (``case.sync``, ``case.created``): its messages and what the sender remembers.

    Built with the case; :meth:`envelopes` converts as it gives the messages, one part (or the whole message)
    at a time. Once they were all given, ``summary()``, ``skipped`` and ``parts`` describe the whole;
    ``fingerprints``, ``case_ref`` and ``sync_id`` are known from the start.
    """

    def __init__(self, converter: Converter, case: Dict[str, Any], iocs: List[Dict[str, Any]],
                 assets: List[Dict[str, Any]], event: str = "case.sync", user: Optional[str] = None,
                 records: Optional[Dict[str, List[Dict[str, Any]]]] = None,
                 max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, batch: int = BATCH) -> None:
        self.converter = converter
        self.case = case
        self.event = event
        self.user = user
        self.max_bytes = int(max_bytes)
        self.ioc_count = len(iocs)
        self.asset_count = len(assets)
        self._iocs, self._assets, self._records_given = iocs, assets, records
        self._batch = max(1, batch)
        self._whole: Optional[CaseMessage] = None
        self._ready: List[Dict[str, Any]] = []  # full parts not given yet
        self._counts: Dict[str, int] = {}
        self._screened = converter.screen(iocs)
        self.fingerprints = self._screened.fingerprints
        self.refused = [refused_entry(ioc, reason) for ioc, reason in self._screened.refused]
        self.skipped: List[Dict[str, Any]] = []
        head = converter.convert(case, [], [])  # the Case-Incident without refs, the author, the default marking
        self.case_ref = str(head.case_ref)
        self._incident = head.objects[self.case_ref]
        self._head = list(head.objects.values())
        #: every marking the case's objects use (the TLPs): each part carries those its objects name
        self._markings = {m["id"]: m for m in TLP_MARKINGS.values()}
        case_id = case.get("case_id")
        self._case_key = f"case:{case_id}"
        #: the ids' hashes, not the ids: the summary counts distinct objects, and 300,000 ids kept alive for that
        #: were the part of the push's memory that grew with the case (a collision would only miscount one)
        self._seen: Set[int] = set()
        self._ioc_ids = [i.get("ioc_id") for i in iocs]
        self._asset_ids = [a.get("asset_id") for a in assets]
        shared = json_size(converter.author) + json_size(self._incident) + sum(
            json_size(m) for m in self._markings.values())
        self._budget = part_budget(self.max_bytes, shared + json_size(converter.conversion) + ENVELOPE_ROOM
                                   + 2 * len(self._case_key))
        self._part: Dict[str, Dict[str, Any]] = {}
        self._part_keys: Dict[str, List[str]] = {}
        self._part_skipped: List[Dict[str, Any]] = []
        self._used = 0
        self._context: Optional[ConversionResult] = None
        self.sync_id = sync_id(event, case, iocs, assets, records, converter.conversion)
        #: the time of the picture: IRIS's objects were read before the conversion began
        self._time = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.total: Optional[int] = None
        self._originals: Optional[Dict[str, Any]] = None

    # ----------------------------------------------------------------------------------------- converting
    def _parts(self) -> Iterator[Dict[str, Any]]:
        """Every object, in the whole conversion's order (IOCs, assets, records), ``batch`` IOCs at a time;
        gives each part as soon as it is full, the last one at the end."""
        converter, case, screened, records = self.converter, self.case, self._screened, self._records_given
        if records and any(records.values()) and converter.config.records:
            self._context = ConversionResult()  # what records look up in the IOCs and assets converted before
        self._take_skipped(list(self.refused))
        for start in range(0, len(screened.exportable), self._batch):
            chunk = screened.exportable[start:start + self._batch]
            self._take(converter.convert(case, chunk, [], with_case=False, tlps=screened.tlps))
            yield from self._drain()
        if self._assets:
            self._take(converter.convert(case, [], self._assets, with_case=False))
        if records and self._context is not None:
            self._take(converter.convert_records(case, records, self._context))
        self._context = None
        self._flush()
        for obj in self._head:  # what the whole conversion adds last: the default marking, the author, the case
            self._note(obj)
        yield from self._drain()

    def _drain(self) -> Iterator[Dict[str, Any]]:
        while self._ready:
            yield self._ready.pop(0)

    def _note(self, obj: Dict[str, Any]) -> None:
        """An object of the whole conversion, seen for the first time or again (the counts)."""
        key = hash(obj["id"])
        if key not in self._seen:
            self._seen.add(key)
            self._counts[obj["type"]] = self._counts.get(obj["type"], 0) + 1

    def _take(self, result: ConversionResult) -> None:
        """One batch's objects, key by key, into the part being filled (a full part is put aside first)."""
        for obj in result.objects.values():  # the whole conversion's order: markings where first used
            self._note(obj)
            if obj["type"] == "marking-definition":
                self._markings.setdefault(obj["id"], obj)
        sizes = {i: json_size(o) for i, o in result.objects.items()}
        for key, ids in result.produced.items():
            cost = key_cost(key, [i for i in ids if i in sizes and i not in self._part], sizes)
            if self._part_keys and self._used + cost > self._budget:
                self._flush()
                cost = key_cost(key, [i for i in ids if i in sizes], sizes)
            for stix_id in ids:
                item = result.objects.get(stix_id)
                if item is None:
                    continue
                known = self._part.get(stix_id)
                if known is None:
                    self._part[stix_id] = item
                elif known is not item:
                    merge_object(known, item)
                if self._context is not None and key.startswith(("ioc:", "asset:")) \
                        and not stix_id.startswith(("relationship--", "sighting--")):  # records never name these
                    self._context.objects.setdefault(stix_id, {f: item[f] for f in _CONTEXT_FIELDS if f in item})
            if self._context is not None and key.startswith(("ioc:", "asset:")):
                self._context.produced[key] = list(ids)
            self._part_keys[key] = list(ids)
            self._used += cost
        self._take_skipped(skipped_entries(result.skipped))

    def _take_skipped(self, entries: List[Dict[str, Any]]) -> None:
        self.skipped.extend(entries)
        for entry in entries:
            cost = json_size(entry) + 1
            if (self._part_keys or self._part_skipped) and self._used + cost > self._budget:
                self._flush()
            self._part_skipped.append(entry)
            self._used += cost

    def _flush(self) -> None:
        """The part being filled is full (or the conversion is over): put aside; the next part starts empty."""
        if not self._part_keys and not self._part_skipped:
            return
        self._ready.append({"objects": list(self._part.values()), "keys": self._part_keys,
                            "skipped": self._part_skipped})
        self._part, self._part_keys, self._part_skipped, self._used = {}, {}, [], 0

    # ------------------------------------------------------------------------------------------- sending
    def envelopes(self) -> Iterator[Dict[str, Any]]:
        """The messages in order, converted as they are given: a part leaves once the next one is full too
        (it was not the last), the last one names the total; a case that fits leaves whole."""
        parts = self._parts()
        held = next(parts, None)
        following = next(parts, None)
        if following is None:  # it all fits: the whole message, exactly as for a small case
            self._whole = case_message(self.converter, self.case, self._iocs, self._assets, self.event, self.user,
                                       records=self._records_given)
            self.skipped = self._whole.envelope["skipped"]
            yield self._whole.envelope
            return
        index = 0
        while following is not None:
            assert held is not None
            yield self._envelope(held, index, None)
            held, following, index = following, next(parts, None), index + 1
        assert held is not None
        self.total = index + 1
        yield self._envelope(held, index, self.total)

    def _envelope(self, part: Dict[str, Any], index: int, total: Optional[int]) -> Dict[str, Any]:
        """Part ``index`` as a message (``total`` on the last one only)."""
        case_id = self.case.get("case_id")
        if self._originals is None:  # IRIS's own ids by key (IRIS's are integers: no map needed for those)
            self._originals = {f"{kind}:{i}": i for kind, ids in (("ioc", self._ioc_ids), ("asset", self._asset_ids))
                               for i in ids if not isinstance(i, int) or isinstance(i, bool)}
        originals = self._originals
        covers = whole_case_covers(self.converter.config.records if self._records_given is not None else ())
        objects: List[Dict[str, Any]] = part["objects"]
        used = {m for o in objects for m in o.get("object_marking_refs") or []}
        used.update(self._incident.get("object_marking_refs") or [])
        incident = dict(self._incident)
        refs = [o["id"] for o in objects
                if o["type"] not in _NOT_IN_CASE and o["id"] != self.converter.author["id"]]
        if refs:
            incident["object_refs"] = refs
        bundle = {"type": "bundle", "id": bundle_id("%s|part %d" % (self.sync_id, index)),
                  "objects": [self._markings[m] for m in sorted(used) if m in self._markings]
                  + [self.converter.author, incident] + objects}
        keys: Dict[str, List[str]] = part["keys"]
        produced = {self._case_key: [self.case_ref]}
        produced.update(keys)
        envelope = make_envelope(
            self.event, case_id, case_name=case_name(self.case), case_ref=self.case_ref, user=self.user,
            time=self._time, skipped=part["skipped"], bundle=bundle, produced=produced, covers=covers,
            conversion=self.converter.conversion,
            ioc_ids=[_original(k, originals) for k in keys if k.startswith("ioc:")],
            asset_ids=[_original(k, originals) for k in keys if k.startswith("asset:")])
        envelope["part"] = {"sync": self.sync_id, "index": index}
        if total is not None:
            envelope["part"]["total"] = total
        return envelope

    @property
    def parts(self) -> int:
        """How many messages :meth:`envelopes` gave."""
        return 1 if self._whole is not None else (self.total or 0)

    def summary(self) -> str:
        if self._whole is not None:
            return self._whole.summary()
        counts = ", ".join("%s %d" % kv for kv in sorted(self._counts.items()))
        text = "%d IOCs, %d assets -> %d STIX objects (%s)" % (
            self.ioc_count, self.asset_count, sum(self._counts.values()), counts)
        if self.skipped:
            text += "; %d skipped (%d above the TLP ceiling stay in IRIS)" % (len(self.skipped), len(self.refused))
        return text

    def close(self) -> None:
        """Drop the parts not given yet (a sender that stopped early)."""
        self._ready = []
        self._part, self._part_keys, self._part_skipped = {}, {}, []
