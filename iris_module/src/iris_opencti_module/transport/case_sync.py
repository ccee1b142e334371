"""A whole case as messages under the broker's limit, converted and cut as it goes (see ``core/chunks.py``).

A case that fits in ``max_bytes`` leaves as the one message :func:`~.messages.case_message` builds. A larger
one is converted a batch of IOCs at a time; each batch's objects join the part being filled, and a full part
is written to a temporary file and forgotten. So converting and shipping a 100,000-IOC case holds one part and
a light index of the case (ids, and the values records look for), not the 300,000 objects of the whole: the
module's peak memory no longer grows with the case's objects, only with IRIS's own list of IOCs.

Every part names the sync and its place in it (``part = {sync, index, total}``): the total is known once the
last batch is converted, which is why parts go out only then, read back one at a time. The sync id is the id
the whole message would have had (the bundle's id is hashed as the objects come, in the order the whole
conversion gives them), so a case pushed twice gives the same sync, split or not.

An object two IRIS objects of the case both yield (one value in two IOCs) goes, as the whole conversion merges
it, in the part of its first IOC; a later part holding the second IOC carries that IOC's own version of it
(OpenCTI adds the labels and refs of both on upsert, as with two single events).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from typing import IO, Any, Dict, Iterator, List, Optional, Set

from iris_opencti_module.core.chunks import DEFAULT_MAX_MESSAGE_BYTES, ENVELOPE_ROOM, json_size, key_cost, part_budget
from iris_opencti_module.core.convert import ConversionResult, Converter, Screened, case_name
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


class _IdHash:
    """``bundle_id(key + "|" + ",".join(ids))`` (what ``ConversionResult.bundle`` computes) fed one id at a time:
    ``uuid5`` is the SHA-1 of the namespace and the name."""

    def __init__(self, key: str) -> None:
        self._sha = hashlib.sha1(NAMESPACE.bytes + (key + "|").encode("utf-8"))  # uuid5 is SHA-1
        self._first = True

    def add(self, stix_id: str) -> None:
        self._sha.update(((",", "")[self._first] + stix_id).encode("utf-8"))
        self._first = False

    def bundle_id(self) -> str:
        return "bundle--" + str(uuid.UUID(bytes=self._sha.digest()[:16], version=5))


class CaseSync:
    """One whole-case event (``case.sync``, ``case.created``): its messages and what the sender remembers.

    Built with the case, it converts at once (parts wait in temporary files); :meth:`envelopes` then gives the
    messages one at a time. ``summary()``, ``skipped``, ``fingerprints`` and ``case_ref`` describe the whole.
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
        self._whole: Optional[CaseMessage] = None
        self._files: List[IO[bytes]] = []
        self._counts: Dict[str, int] = {}
        screened = converter.screen(iocs)
        self.fingerprints = screened.fingerprints
        self.refused = [refused_entry(ioc, reason) for ioc, reason in screened.refused]
        self.skipped: List[Dict[str, Any]] = []
        self._records = records is not None
        head = converter.convert(case, [], [])  # the Case-Incident without refs, the author, the default marking
        self.case_ref = str(head.case_ref)
        self._incident = head.objects[self.case_ref]
        self._head = list(head.objects.values())
        #: every marking the case's objects use (the TLPs): each part carries those its objects name
        self._markings = {m["id"]: m for m in TLP_MARKINGS.values()}
        case_id = case.get("case_id")
        self._case_key = f"case:{case_id}"
        self._ids = _IdHash(f"{event}|case:{case_id}")
        self._seen: Set[str] = set()
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
        self._convert(screened, assets, records, max(1, batch))
        if not self._files:  # it all fits: the whole message, exactly as for a small case
            self._part = {}
            self._whole = case_message(converter, case, iocs, assets, event, user, records=records)
            self.skipped = self._whole.envelope["skipped"]
            return
        self._flush()
        for obj in self._head:  # what the whole conversion adds last: the default marking, the author, the case
            self._note(obj)
        self.total = len(self._files)
        whole = make_envelope(event, case_id, bundle={"id": self._ids.bundle_id()}, ioc_ids=self._ioc_ids,
                              asset_ids=self._asset_ids)
        self.sync_id = whole["message_id"]
        self._bundle_id = whole["bundle"]["id"]
        self._time = whole["time"]

    # ------------------------------------------------------------------------------------------- phase 1
    def _convert(self, screened: Screened, assets: List[Dict[str, Any]],
                 records: Optional[Dict[str, List[Dict[str, Any]]]], batch: int) -> None:
        """Everything, in the whole conversion's order (IOCs, assets, records), ``batch`` IOCs at a time."""
        converter, case = self.converter, self.case
        if records and any(records.values()) and converter.config.records:
            self._context = ConversionResult()  # what records look up in the IOCs and assets converted before
        self._take_skipped(list(self.refused))
        for start in range(0, len(screened.exportable), batch):
            chunk = screened.exportable[start:start + batch]
            self._take(converter.convert(case, chunk, [], with_case=False, tlps=screened.tlps))
        if assets:
            self._take(converter.convert(case, [], assets, with_case=False))
        if records and self._context is not None:
            self._take(converter.convert_records(case, records, self._context))
        self._context = None

    def _note(self, obj: Dict[str, Any]) -> None:
        """An object of the whole conversion, seen for the first time or again (the bundle's id, the counts)."""
        if obj["id"] not in self._seen:
            self._seen.add(obj["id"])
            self._ids.add(obj["id"])
            self._counts[obj["type"]] = self._counts.get(obj["type"], 0) + 1

    def _take(self, result: ConversionResult) -> None:
        """One batch's objects, key by key, into the part being filled (a full part goes to its file first)."""
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
        """The part being filled to a temporary file; the next part starts empty."""
        if not self._part_keys and not self._part_skipped:
            return
        handle = tempfile.TemporaryFile(prefix="iris-opencti-part-")
        handle.write(json.dumps({"objects": list(self._part.values()), "keys": self._part_keys,
                                 "skipped": self._part_skipped}, separators=(",", ":"),
                                ensure_ascii=False).encode("utf-8"))
        self._files.append(handle)
        self._part, self._part_keys, self._part_skipped, self._used = {}, {}, [], 0

    # ------------------------------------------------------------------------------------------- phase 2
    def envelopes(self) -> Iterator[Dict[str, Any]]:
        """The messages in order, one in memory at a time; the temporary files go as they are read."""
        if self._whole is not None:
            yield self._whole.envelope
            return
        case_id = self.case.get("case_id")
        originals = {f"ioc:{i}": i for i in self._ioc_ids}
        originals.update({f"asset:{i}": i for i in self._asset_ids})
        covers = whole_case_covers(self.converter.config.records if self._records else ())
        for index, handle in enumerate(self._files):
            handle.seek(0)
            part = json.loads(handle.read().decode("utf-8"))
            handle.close()
            objects: List[Dict[str, Any]] = part["objects"]
            used = {m for o in objects for m in o.get("object_marking_refs") or []}
            used.update(self._incident.get("object_marking_refs") or [])
            incident = dict(self._incident)
            refs = [o["id"] for o in objects
                    if o["type"] not in _NOT_IN_CASE and o["id"] != self.converter.author["id"]]
            if refs:
                incident["object_refs"] = refs
            bundle = {"type": "bundle", "id": bundle_id("%s|part %d/%d" % (self._bundle_id, index, self.total)),
                      "objects": [self._markings[m] for m in sorted(used) if m in self._markings]
                      + [self.converter.author, incident] + objects}
            keys: Dict[str, List[str]] = part["keys"]
            produced = {self._case_key: [self.case_ref]}
            produced.update(keys)
            envelope = make_envelope(
                self.event, case_id, case_name=case_name(self.case), case_ref=self.case_ref, user=self.user,
                time=self._time, skipped=part["skipped"], bundle=bundle, produced=produced, covers=covers,
                conversion=self.converter.conversion,
                ioc_ids=[originals.get(k, k.split(":", 1)[1]) for k in keys if k.startswith("ioc:")],
                asset_ids=[originals.get(k, k.split(":", 1)[1]) for k in keys if k.startswith("asset:")])
            envelope["part"] = {"sync": self.sync_id, "index": index, "total": self.total}
            yield envelope
        self._files = []

    @property
    def parts(self) -> int:
        """How many messages :meth:`envelopes` gives."""
        return 1 if self._whole is not None else self.total

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
        for handle in self._files:
            handle.close()
        self._files = []

