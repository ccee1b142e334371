"""The rest of an IRIS case - notes, timeline events, tasks, evidences - as STIX objects OpenCTI shows in the case.

Input is the shape of IRIS's case export (``GET /case/export``: ``notes``, ``timeline``, ``tasks``,
``evidences``), which the module's adapter also produces from live model objects. Each IRIS object produces the
ids of one ledger key (``note:<id>``, ``event:<id>``, ``task:<id>``, ``evidence:<id>``), so an update or a
deletion in IRIS is resolved in OpenCTI like an IOC's.

What becomes what:
- a note -> a STIX ``note``: title as ``abstract``, content as ``content``, ``object_refs`` the Case-Incident and
  every IOC and asset of the case the note names by value;
- a timeline event linking IOCs -> a ``sighting`` of each IOC's indicator (an ``observed-data`` of its
  observables where it has none), sighted where the event's assets are (their system identities), or by the
  author when it names no asset; ``first_seen``/``last_seen`` the event's date; an event with no IOC -> a note
  dated at the event. The event's category and tags become labels. Events IRIS keeps out of its summary or graph
  go as well: those flags are about IRIS's own views, not about what was seen;
- a task -> OpenCTI's case task (pycti's custom ``task``: name, description, ``object_refs`` the case), its
  IRIS status as the label ``status:<status>`` and its assignees in the description (OpenCTI assigns tasks to
  its own users, whom IRIS does not know);
- an evidence -> a ``file`` observable with its name, size and hash; its content never leaves IRIS.

Notes and tasks point at the Case-Incident, so the Case-Incident does not list them back (OpenCTI shows a note
or a task in the case through the note's or task's own refs, and a ref cycle would leave OpenCTI's workers
waiting on each other). With ``export_content`` off, notes and events keep their titles only: their text can
hold what the analyst would not share.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from iris_opencti_module.core import stix_ids
from iris_opencti_module.core.timestamps import stix_time

#: IRIS object kinds this module converts, with the export section each comes from
SECTIONS = {"note": "notes", "event": "timeline", "task": "tasks", "evidence": "evidences"}
KINDS = tuple(SECTIONS)
#: the field holding each kind's IRIS id, in the export's rows
ID_FIELDS = {"note": "note_id", "event": "event_id", "task": "id", "evidence": "id"}
#: what IRIS lets analysts comment on, with the id field of each in the comment hooks' data
COMMENTED_KINDS = ("ioc", "asset", "event", "note", "task", "evidence")
COMMENTED_ID_FIELDS = {"ioc": "ioc_id", "asset": "asset_id", **ID_FIELDS}


def kind_label(kind: str) -> str:
    """How logs and work names call a kind: "IOC", "timeline event", "note"..."""
    return {"ioc": "IOC", "event": "timeline event"}.get(kind, kind)


def event_asset_name(entry: Any) -> str:
    """An event's asset as the export names it, ``"<name> (<type>)"``, or an asset dict: the asset's name."""
    if isinstance(entry, dict):
        return _text(entry.get("asset_name"))
    return _text(re.sub(r"\s*\([^()]*\)\s*$", "", str(entry)))


def parse_records(value: Any, setting: str = "IRIS_RECORDS") -> Tuple[str, ...]:
    """Which kinds to send, from ``note,event,task,evidence`` (any order, a list too) or ``none``;
    raises ValueError naming ``setting`` and the word it does not know."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").replace(";", ",").split(",")
    words = [str(i).strip().lower() for i in items if str(i).strip()]
    wanted = [w for w in words if w != "none"]
    unknown = [w for w in wanted if w not in KINDS]
    if unknown:
        raise ValueError("{}: {!r} is not one of {} (or 'none')".format(setting, unknown[0], ", ".join(KINDS)))
    return tuple(k for k in KINDS if k in wanted)
#: STIX types that reference the Case-Incident themselves, so it must not reference them
REFERS_TO_CASE = frozenset({"note", "task"})
#: a value shorter than this is not looked for in a note's text (a port or "a" would match everything)
_MIN_MENTION = 4
_HASH_BY_LENGTH = {32: "MD5", 40: "SHA-1", 64: "SHA-256", 128: "SHA-512"}


def _text(value: Any) -> str:
    from iris_opencti_module.core.values import clean_text  # the converter's one rule for free text

    return clean_text(value).strip()


def _labels(*groups: Any) -> List[str]:
    from iris_opencti_module.core.tags import export_labels

    out: List[str] = []
    for group in groups:
        for label in export_labels(group):
            if label not in out:
                out.append(label)
    return out


class RecordBuilder:
    """Adds a case's notes, events, tasks and evidences to one conversion (``build``: convert._Build)."""

    def __init__(self, build: Any, marking: str, export_content: bool) -> None:
        self.build = build
        self.marking = marking
        self.export_content = export_content
        self.case_ref = build.conv.case_incident_ref(build.case)

    # ----------------------------------------------------------------------------------------- shared
    def _add(self, key: str, obj: Dict[str, Any]) -> str:
        obj.setdefault("spec_version", "2.1")
        obj["created_by_ref"] = self.build.author
        obj["object_marking_refs"] = [self.marking]
        stix_id = self.build.add(obj)
        self.build.result.produced.setdefault(key, []).append(stix_id)
        return stix_id

    def _main_ids(self, ids: Iterable[str]) -> List[str]:
        """An IRIS object's objects without its relationships (what a note or event can point at)."""
        return [i for i in ids if not i.startswith(("relationship--", "sighting--"))]

    def _mentioned(self, text: str) -> List[str]:
        """Ids of the case's IOCs and assets whose value or name appears in ``text``."""
        if not text:
            return []
        found: List[str] = []
        lowered = text.lower()
        for key, ids in self.build.context.produced.items():
            if not key.startswith(("ioc:", "asset:")):
                continue
            for stix_id in self._main_ids(ids):
                obj = self.build.context.objects.get(stix_id) or {}
                value = str(obj.get("value") or obj.get("name") or "")
                if len(value) >= _MIN_MENTION and value.lower() in lowered and stix_id not in found:
                    found.append(stix_id)
        return sorted(found)

    # ------------------------------------------------------------------------------------------ notes
    def note(self, note: Dict[str, Any]) -> None:
        note_id = note.get("note_id", note.get("id"))
        title = _text(note.get("note_title")) or "Untitled note"
        content = _text(note.get("note_content")) if self.export_content else ""
        created = stix_time(note.get("note_creationdate")) or self.build.created
        modified = stix_time(note.get("note_lastupdate")) or created
        body = content or title
        refs = [self.case_ref] + self._mentioned(content)
        self._add(f"note:{note_id}", {
            "type": "note", "id": stix_ids.note_id(body, created, title), "created": created,
            "modified": max(created, modified), "abstract": title, "content": body, "object_refs": refs,
            "external_references": [self._link("case?cid={}".format(self.build.case.get("case_id")), "note", note_id)],
        })

    def _link(self, path: str, kind: str, object_id: Any) -> Dict[str, str]:
        from iris_opencti_module.core.convert import IRIS_SOURCE_NAME

        return {"source_name": IRIS_SOURCE_NAME, "external_id": f"{kind}-{object_id}",
                "url": "{}/{}".format(self.build.conv.config.iris_url.rstrip("/"), path)}

    # ----------------------------------------------------------------------------------------- events
    def event(self, event: Dict[str, Any]) -> None:
        event_id = event.get("event_id")
        key = f"event:{event_id}"
        title = _text(event.get("event_title")) or "Timeline event"
        content = _text(event.get("event_content")) if self.export_content else ""
        # IRIS stores event_date in UTC; event_date_wtz is the wall time as typed, without its zone (seen on
        # real 2.4.20 and 2.5: 08:10 at +01:00 is event_date 07:10)
        when = stix_time(event.get("event_date")) or self.build.created
        labels = _labels([event.get("category")] if event.get("category") else [], event.get("event_tags"))
        description = title + ("\n\n" + content if content else "")
        ioc_ids = [i.get("ioc_id") for i in event.get("iocs") or [] if isinstance(i, dict)]
        where = self._systems(event.get("assets") or []) or [self.build.author]
        sighted = False
        for ioc_id in ioc_ids:
            ids = self.build.context.produced.get(f"ioc:{ioc_id}")
            if not ids:
                continue  # kept in IRIS (TLP, invalid value) or not in this conversion: nothing to point at
            sighted = True
            indicator = next((i for i in ids if i.startswith("indicator--")), None)
            if indicator is not None:
                obj: Dict[str, Any] = {
                    "type": "sighting", "id": stix_ids.sighting_id(indicator, where, when, when),
                    "created": when, "modified": when, "first_seen": when, "last_seen": when, "count": 1,
                    "sighting_of_ref": indicator, "where_sighted_refs": where, "description": description,
                }
            else:
                observed = self._main_ids(ids)
                obj = {"type": "observed-data", "id": stix_ids.observed_data_id(observed), "created": when,
                       "modified": when, "first_observed": when, "last_observed": when, "number_observed": 1,
                       "object_refs": observed}
            if labels:
                obj["labels"] = list(labels)
            self._add(key, obj)
        if not sighted:  # nothing observable: the event is a dated note of the case
            note: Dict[str, Any] = {
                "type": "note", "id": stix_ids.note_id(description, when, title), "created": when,
                "modified": when, "abstract": title, "content": description, "object_refs": [self.case_ref],
            }
            if labels:
                note["labels"] = list(labels)
            self._add(key, note)

    def _systems(self, assets: List[Any]) -> List[str]:
        """The system identities of an event's assets: the export names them ``"<name> (<type>)"``."""
        out: List[str] = []
        by_name = {str(o.get("name") or "").lower(): i for i, o in self.build.context.objects.items()
                   if o.get("type") == "identity" and o.get("identity_class") == "system"}
        for asset in assets:
            stix_id = by_name.get(event_asset_name(asset).lower())
            if stix_id and stix_id not in out:
                out.append(stix_id)
        return sorted(out)

    # --------------------------------------------------------------------------------------- comments
    def comment(self, comment: Dict[str, Any], kind: str, target_ids: List[str]) -> Optional[str]:
        """An IRIS comment -> a STIX note whose refs hold the commented object (its STIX objects) and the case."""
        comment_id = comment.get("comment_id")
        user: Dict[str, Any] = comment["user"] if isinstance(comment.get("user"), dict) else {}
        author = _text(user.get("user_name") or user.get("user_login") or comment.get("comment_by")) or "an analyst"
        abstract = f"Comment by {author} on an IRIS {kind_label(kind)}"
        text = _text(comment.get("comment_text")) if self.export_content else ""
        created = stix_time(comment.get("comment_date")) or self.build.created
        modified = stix_time(comment.get("comment_update_date")) or created
        body = text or abstract
        return self._add(f"comment:{comment_id}", {
            "type": "note", "id": stix_ids.note_id(body, created, abstract), "created": created,
            "modified": max(created, modified), "abstract": abstract, "content": body,
            "object_refs": [self.case_ref] + sorted(set(target_ids) - {self.case_ref}),
        })

    # ------------------------------------------------------------------------------------------ tasks
    def task(self, task: Dict[str, Any]) -> None:
        task_key = task.get("id", task.get("task_id"))
        name = _text(task.get("task_title")) or "Task"
        created = stix_time(task.get("task_open_date")) or self.build.created
        modified = stix_time(task.get("task_last_update")) or created
        status = task.get("task_status")
        if isinstance(status, dict):
            status = status.get("status_name")
        assignees = [_text(a.get("name") or a.get("user")) for a in task.get("task_assignees") or []
                     if isinstance(a, dict)]
        parts = [_text(task.get("task_description"))] if task.get("task_description") else []
        if assignees:
            parts.append("Assigned in IRIS to: " + ", ".join(a for a in assignees if a))
        obj: Dict[str, Any] = {
            "type": "task", "id": stix_ids.task_id(name, created), "created": created,
            "modified": max(created, modified), "name": name, "object_refs": [self.case_ref],
        }
        if parts:
            obj["description"] = "\n\n".join(parts)
        labels = _labels(task.get("task_tags"), [f"status:{status}"] if status else [])
        if labels:
            obj["labels"] = labels
        self._add(f"task:{task_key}", obj)

    # -------------------------------------------------------------------------------------- evidences
    def evidence(self, evidence: Dict[str, Any]) -> None:
        name = _text(evidence.get("filename"))
        if not name:
            return
        obj: Dict[str, Any] = {"type": "file", "name": name}
        digest = re.sub(r"\s+", "", str(evidence.get("file_hash") or "")).lower()
        algorithm = _HASH_BY_LENGTH.get(len(digest)) if re.fullmatch(r"[0-9a-f]+", digest or "-") else None
        if algorithm:
            obj["hashes"] = {algorithm: digest}
        size = evidence.get("file_size")
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            obj["size"] = size
        obj["id"] = stix_ids.sco_id(dict(obj, spec_version="2.1"))
        obj["x_opencti_created_by_ref"] = self.build.author
        obj["spec_version"] = "2.1"
        obj["object_marking_refs"] = [self.marking]
        stix_id = self.build.add(obj)
        self.build.result.produced.setdefault("evidence:{}".format(evidence.get("id")), []).append(stix_id)


def add_records(build: Any, marking: str, export_content: bool, records: Dict[str, List[Dict[str, Any]]],
                kinds: Optional[Set[str]] = None) -> None:
    """Convert ``records`` (export section name -> list) into ``build``, notes last (they name the others)."""
    builder = RecordBuilder(build, marking, export_content)
    for kind, method in (("evidence", builder.evidence), ("task", builder.task), ("event", builder.event),
                         ("note", builder.note)):
        if kinds is not None and kind not in kinds:
            continue
        for item in records.get(SECTIONS[kind]) or []:
            if isinstance(item, dict):
                method(item)
