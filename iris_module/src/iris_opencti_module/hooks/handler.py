"""What each IRIS hook sends, decided with the per-case switch, the TLP gate, the no-loop rules and the state.

One :class:`Shipper` serves one hook call. It reads IRIS objects only through :mod:`iris_adapter`, builds
envelopes with :mod:`messages`, publishes through the process's :class:`~.publisher.Publisher` (which spools
when RabbitMQ is away) and records in :class:`~.state.State` what was sent, so the next hooks can tell a
switch turned on from one already on, an unchanged IOC from a changed one, and where a deleted id belonged.
Every decision, including each thing not sent, is one readable line in :attr:`Shipper.logs`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from iris_opencti_module.core.case_records import COMMENTED_ID_FIELDS, COMMENTED_KINDS, event_asset_name, kind_label
from iris_opencti_module.core.case_records import ID_FIELDS as RECORD_ID_FIELDS
from iris_opencti_module.core.case_switch import switch_state
from iris_opencti_module.core.convert import Converter, _type_name, case_name
from iris_opencti_module.core.envelope import encode, part_label
from iris_opencti_module.hooks import iris_adapter as iris
from iris_opencti_module.hooks.opencti_tab import with_tab
from iris_opencti_module.hooks.state import State
from iris_opencti_module.IrisOpenCTIConfig import ModuleSettings
from iris_opencti_module.transport.case_sync import CaseSync
from iris_opencti_module.transport.messages import (
    asset_message,
    case_deletion_message,
    case_update_message,
    comment_message,
    deletion_message,
    describe_skip,
    ioc_message,
    ioc_retraction_message,
    records_message,
    short,
)
from iris_opencti_module.transport.publisher import Outcome, Publisher


class Shipper:
    """The decisions and messages of one hook call."""

    def __init__(self, settings: ModuleSettings, converter: Converter, state: State, publisher: Publisher,
                 log: Optional[Callable[[str], None]] = None) -> None:
        self.settings = settings
        self.converter = converter
        self.state = state
        self.publisher = publisher
        self.logs: List[str] = []
        self._echo = log
        self.sent = 0
        self.spooled = 0
        self.failed = False

    # ---------------------------------------------------------------------------------------- helpers
    def log(self, line: str) -> None:
        self.logs.append(line)
        if self._echo is not None:
            self._echo(line)

    def _ship(self, envelope: Dict[str, Any], what: str) -> Outcome:
        body = encode(envelope)
        outcome = self.publisher.publish(body)
        objects = len((envelope.get("bundle") or {}).get("objects") or [])
        size = "%d STIX objects, %d bytes" % (objects, len(body))
        event = envelope["event"]
        if outcome.status == "sent":
            self.sent += 1
            line = f"{what}: {event} sent to queue {self.settings.queue!r} ({size})"
        elif outcome.status == "spooled":
            self.spooled += 1
            line = ("%s: %s spooled, RabbitMQ unavailable (%s); %d message(s) wait in %s and go out first at the "
                    "next successful publish" % (what, event, outcome.detail, outcome.waiting,
                                                 os.path.dirname(outcome.path or "")))
        else:
            self.failed = True
            line = f"{what}: {event} refused by RabbitMQ for good ({outcome.detail}); kept in {outcome.path}"
        if outcome.drained:
            line += "; %d spooled message(s) were sent before it" % outcome.drained
        self.log(line)
        return outcome

    def _case_enabled(self, case_dict: Dict[str, Any], what: str) -> bool:
        enabled, why = switch_state(case_dict, self.settings.sync_mode)
        if not enabled:
            self.log("{}: not sent: case #{} is not synced ({})".format(what, case_dict.get("case_id"), why))
        return enabled

    def _is_sync_user(self, user: Tuple[Optional[int], Optional[str], Optional[str]]) -> Optional[str]:
        """The sync user's name when ``user`` (id, login, name) is it: the enrichment connector's write-back."""
        wanted = self.settings.sync_user.strip().lower()
        if not wanted:
            return None
        user_id, login, name = user
        if wanted.isdigit():
            return wanted if user_id is not None and str(user_id) == wanted else None
        for candidate in (login, name):
            if candidate and candidate.strip().lower() == wanted:
                return candidate
        return None

    def _opencti_tab(self, ioc: Any, label: str) -> None:
        """Render the OpenCTI context the enrichment connector left in ``ioc_enrichment`` as the IOC's OpenCTI
        tab, in place: IRIS commits the hook's objects after it returns (see opencti_tab.py)."""
        attributes = with_tab(getattr(ioc, "custom_attributes", None), getattr(ioc, "ioc_enrichment", None))
        if attributes is not None:
            ioc.custom_attributes = attributes
            self.log(f"{label}: OpenCTI tab updated from the enrichment connector's context")

    def _remember_case(self, case_dict: Dict[str, Any], case_ref: Optional[str]) -> None:
        self.state.set_case_ref(case_dict["case_id"], case_ref, case_name(case_dict))

    # -------------------------------------------------------------------------------------------- IOCs
    def ioc_changed(self, ioc: Any, event: str, forced: bool = False) -> None:
        """``ioc.created`` / ``ioc.updated`` into every synced case the IOC belongs to."""
        ioc_dict = iris.ioc_to_dict(ioc)
        label = "IOC {} ({} {!r})".format(ioc_dict["ioc_id"], _type_name(ioc_dict), short(ioc_dict.get("ioc_value")))
        user = iris.user_of(ioc)
        login = user[1]
        if event == "ioc.updated":
            self._opencti_tab(ioc, label)
        if event == "ioc.updated" and not forced:
            sync_user = self._is_sync_user(user)
            if sync_user:
                self.log(f"{label}: not sent: last written by the sync user {sync_user!r} "
                         "(the enrichment connector's write-back)")
                return
        cases = iris.cases_of_ioc(ioc)
        if not cases:
            self.log(f"{label}: not sent: it belongs to no case")
            return
        verdict = self.converter.judge(ioc_dict)  # the same in every case: TLP read once, fingerprint taken once
        refusal, fingerprint = verdict.refusal, verdict.fingerprint
        for case in cases:
            case_dict = iris.case_to_dict(case)
            case_id = case_dict["case_id"]
            what = f"{label} in case #{case_id}"
            if not self._case_enabled(case_dict, what):
                continue
            if refusal:
                if self.state.was_shipped("ioc", ioc_dict["ioc_id"], case_id):
                    envelope = ioc_retraction_message(self.converter, case_dict, ioc_dict, refusal, login)
                    outcome = self._ship(envelope, what + f" now stays in IRIS ({refusal}); retraction")
                    if outcome.status != "rejected":
                        self.state.forget_shipped("ioc", ioc_dict["ioc_id"], case_id)
                else:
                    self.log(f"{what}: not sent: {refusal}; it stays in IRIS")
                continue
            if event == "ioc.updated" and not forced and \
                    self.state.fingerprint("ioc", ioc_dict["ioc_id"], case_id) == fingerprint:
                self.log(f"{what}: not sent: nothing exported changed since it was last sent (value, type, "
                         "description, TLP and non-opencti tags are the same)")
                continue
            conversion = self.converter.convert_ioc(case_dict, ioc_dict, verdict)  # only what is sent is converted
            envelope, result = ioc_message(self.converter, case_dict, ioc_dict, event, login, conversion)
            for entry in envelope["skipped"]:
                self.log(f"{what}: skipped by the converter: {describe_skip(entry)}")
            outcome = self._ship(envelope, what + (" (pushed by hand)" if forced else ""))
            if outcome.status != "rejected":
                self.state.record_shipped("ioc", case_id, [(ioc_dict["ioc_id"], fingerprint)])
                self._remember_case(case_dict, result.case_ref)

    def ioc_deleting(self, item: Any) -> None:
        """Preload delete: the row is still there, so the deletion goes with its cases and value."""
        ioc_id = iris.object_id(item, "ioc_id")
        ioc = iris.ioc_by_id(ioc_id)
        if ioc is None:
            self.log(f"IOC {ioc_id}: about to be deleted but not found; the postload hook will send the deletion by id")
            return
        ioc_dict = iris.ioc_to_dict(ioc)
        label = "IOC {} ({} {!r})".format(ioc_id, _type_name(ioc_dict), short(ioc_dict.get("ioc_value")))
        cases = iris.cases_of_ioc(ioc)
        if len(cases) > 1:
            # IRIS 2.4: unlinking from one of several cases fires only this hook; the request names the case
            wanted = iris.request_case_id()
            chosen = [c for c in cases if c.case_id == wanted]
            if not chosen:
                listed = ", ".join(f"#{c.case_id}" for c in cases)
                self.log(f"{label}: deleted from one of cases {listed}, and the request does not say which: nothing "
                         "sent (a 'Sync case to OpenCTI' or the import connector's reconcile will catch up)")
                return
            cases = chosen
        refusal = self.converter.tlp_of(ioc_dict)[1]
        for case in cases:
            case_dict = iris.case_to_dict(case)
            case_id = case_dict["case_id"]
            what = f"{label} deleted from case #{case_id}"
            shipped_before = self.state.was_shipped("ioc", ioc_id, case_id)
            if refusal and not shipped_before:
                self.log(f"{what}: nothing to delete in OpenCTI ({refusal}; it never left IRIS)")
                continue
            if not self._case_enabled(case_dict, what):
                continue
            envelope = deletion_message(
                "ioc", ioc_id, case_id, self.converter.case_incident_ref(case_dict), case_name(case_dict),
                value=None if refusal else ioc_dict.get("ioc_value"), type_name=_type_name(ioc_dict),
                user=iris.user_of(ioc)[1])
            outcome = self._ship(envelope, what)
            if outcome.status != "rejected":
                self.state.forget_shipped("ioc", ioc_id, case_id)
        self.state.mark_deletion_sent("ioc", ioc_id)

    def ioc_deleted(self, item: Any) -> None:
        """Postload delete: only the id is left."""
        self._deleted_by_id("ioc", iris.object_id(item, "ioc_id"))

    # ------------------------------------------------------------------------------------------ assets
    def asset_changed(self, asset: Any, event: str, forced: bool = False) -> None:
        asset_dict = iris.asset_to_dict(asset)
        label = "asset {} ({} {!r})".format(asset_dict["asset_id"], asset_dict.get("type"),
                                            short(asset_dict["asset_name"]))
        case = iris.case_of_asset(asset)
        if case is None:
            self.log("{}: not sent: its case {} was not found".format(label, asset_dict.get("case_id")))
            return
        case_dict = iris.case_to_dict(case)
        what = "{} in case #{}".format(label, case_dict["case_id"])
        if not self._case_enabled(case_dict, what):
            return
        envelope, result = asset_message(self.converter, case_dict, asset_dict, event, iris.user_of(asset)[1])
        for entry in envelope["skipped"]:
            self.log(f"{what}: skipped by the converter: {describe_skip(entry)}")
        outcome = self._ship(envelope, what + (" (pushed by hand)" if forced else ""))
        if outcome.status != "rejected":
            self.state.record_shipped("asset", case_dict["case_id"], [(asset_dict["asset_id"], "")])
            self._remember_case(case_dict, result.case_ref)

    def asset_deleted(self, item: Any) -> None:
        self._deleted_by_id("asset", iris.object_id(item, "asset_id"))

    def _deleted_by_id(self, kind: str, object_id: Any) -> None:
        label = "{} {} deleted".format("IOC" if kind == "ioc" else kind, object_id)
        if self.state.take_deletion_sent(kind, object_id):
            self.log(f"{label}: already sent by the preload hook")
            return
        cases = self.state.cases_of(kind, object_id)
        if not cases:
            envelope = deletion_message(kind, object_id)
            self._ship(envelope, label + " (cases unknown here: the connector finds them in its ledger)")
        for case_id in cases:
            if self.state.case_switch(case_id) is False:
                self.log(f"{label}: not sent to case #{case_id}: its sync is switched off")
                continue
            case_ref, name = self.state.case_ref(case_id)
            envelope = deletion_message(kind, object_id, _as_id(case_id), case_ref, name)
            self._ship(envelope, f"{label} from case #{case_id}")
        self.state.forget_shipped(kind, object_id)

    # ---------------------------------------------------------------------------------------- records
    def record_changed(self, item: Any, kind: str) -> None:
        """A note, timeline event, task or evidence created or edited: every record of that kind in its case
        goes (``records.sync``), so edits and deletions IRIS fires no hook for are caught as well."""
        shown = kind_label(kind)
        label = f"{shown} {iris.record_id(item, kind)}"
        if kind not in self.settings.records:
            self.log(f"{label}: not sent: {shown}s are switched off")
            return
        case = iris.case_by_id(iris.record_case_id(item, kind))
        if case is None:
            self.log(f"{label}: not sent: its case cannot be read")
            return
        case_dict = iris.case_to_dict(case)
        case_id = case_dict["case_id"]
        if not self._case_enabled(case_dict, f"{label} of case #{case_id}"):
            return
        section = iris.records_of(case_id, [kind])
        if section is None:
            self.log(f"{label}: not sent: this IRIS has no export of its {shown}s")
            return
        rows = next(iter(section.values()))
        iocs: List[Dict[str, Any]] = []
        assets: List[Dict[str, Any]] = []
        if kind == "event":  # the IOCs the events link (their indicators) and their assets (where seen)
            linked = [i.get("ioc_id") for row in rows for i in row.get("iocs") or [] if isinstance(i, dict)]
            iocs = [iris.ioc_to_dict(i) for i in iris.iocs_by_ids(linked)]
            named = {event_asset_name(a).lower() for row in rows for a in row.get("assets") or []}
            if named:
                assets = [iris.asset_to_dict(a) for a in iris.case_contents(case)[1]
                          if str(a.asset_name or "").strip().lower() in named]
        elif kind == "note":  # what the notes name by value (only those: a big case is not resent with a note)
            text = " ".join(f"{r.get('note_title') or ''} {r.get('note_content') or ''}" for r in rows).lower()
            ioc_rows, asset_rows = iris.case_contents(case)
            iocs = [d for d in (iris.ioc_to_dict(i) for i in ioc_rows) if _named_in(text, d.get("ioc_value"))]
            assets = [d for d in (iris.asset_to_dict(a) for a in asset_rows) if _named_in(text, d.get("asset_name"))]
        envelope = records_message(self.converter, case_dict, kind, rows, iocs, assets,
                                   user=iris.user_of(item)[1])
        self._ship(envelope, "case #%s: %s (%d %ss in the case)" % (case_id, label, len(rows), shown))
        self._remember_case(case_dict, envelope["case"]["ref"])

    def record_deleted(self, item: Any, kind: str) -> None:
        """IRIS's postload delete hook hands the id alone: the connector finds its case in the ledger."""
        shown = kind_label(kind)
        if kind not in self.settings.records:
            self.log(f"{shown} {item} deleted: not sent: {shown}s are switched off")
            return
        object_id = item if isinstance(item, (int, str)) else iris.record_id(item, kind)
        self._ship(deletion_message(kind, object_id),
                   f"{shown} {object_id} deleted (the connector finds its case in its ledger)")

    # --------------------------------------------------------------------------------------- comments
    def comment_changed(self, item: Any, hook_kind: str) -> None:
        """A comment added (the hook hands ``{"comment": ..., "<kind>": ...}`` dumps) or edited (the hook hands
        the ``Comments`` row: its object is found in IRIS's comment link tables)."""
        if not self.settings.triggers.get("trigger_comment"):
            self.log("comment: not sent: comments are switched off")
            return
        if isinstance(item, dict):
            comment = dict(item.get("comment") or {})
            kind = next((k for k in COMMENTED_KINDS if isinstance(item.get(k), dict)), hook_kind)
            target_id = (item.get(kind) or {}).get(COMMENTED_ID_FIELDS[kind])
        else:
            comment = iris.comment_to_dict(item)
            found = iris.comment_target(comment.get("comment_id"))
            if found is None:
                self.log("comment {}: not sent: IRIS links it to nothing".format(comment.get("comment_id")))
                return
            kind, target_id = found
        shown = kind_label(kind)
        label = "comment {} on {} {}".format(comment.get("comment_id"), shown, target_id)
        if kind in RECORD_ID_FIELDS and kind not in self.settings.records:
            self.log(f"{label}: not sent: {shown}s are switched off, and so are the comments on them")
            return
        case = iris.case_by_id(comment.get("comment_case_id"))
        if case is None or target_id is None:
            self.log(f"{label}: not sent: its case or object cannot be read")
            return
        case_dict = iris.case_to_dict(case)
        if not self._case_enabled(case_dict, "{} in case #{}".format(label, case_dict["case_id"])):
            return
        iocs: List[Dict[str, Any]] = []
        assets: List[Dict[str, Any]] = []
        records = None
        if kind == "ioc":
            ioc = iris.ioc_by_id(target_id)
            iocs = [iris.ioc_to_dict(ioc)] if ioc is not None else []
        elif kind == "asset":
            asset = iris.asset_by_id(target_id)
            assets = [iris.asset_to_dict(asset)] if asset is not None else []
        else:
            section = iris.records_of(case_dict["case_id"], [kind]) or {}
            rows = [r for rows in section.values() for r in rows if r.get(RECORD_ID_FIELDS[kind]) == target_id]
            records = dict.fromkeys(section, rows)
            if kind == "event" and rows:
                linked = [i.get("ioc_id") for i in rows[0].get("iocs") or [] if isinstance(i, dict)]
                iocs = [iris.ioc_to_dict(i) for i in iris.iocs_by_ids(linked)]
        envelope = comment_message(self.converter, case_dict, comment, kind, target_id, iocs, assets, records,
                                   user=(comment.get("user") or {}).get("user_name"))
        if envelope is None:
            self.log(f"{label}: not sent: what it comments does not leave IRIS")
            return
        self._ship(envelope, "case #{}: {}".format(case_dict["case_id"], label))

    def comment_deleted(self, item: Any) -> None:
        if not self.settings.triggers.get("trigger_comment"):
            self.log(f"comment {item} deleted: not sent: comments are switched off")
            return
        self._ship(deletion_message("comment", item), f"comment {item} deleted (the connector finds its case in its "
                   "ledger)")

    # ------------------------------------------------------------------------------------------- cases
    def case_sync(self, case: Any, event: str = "case.sync", why: str = "") -> None:
        """The whole case in one message: the connector treats keys it no longer sees as deleted."""
        case_dict = iris.case_to_dict(case)
        case_id = case_dict["case_id"]
        iocs, assets = iris.case_contents(case)
        records = iris.records_of(case_id, self.settings.records) if self.settings.records else None
        sync = CaseSync(self.converter, case_dict, [iris.ioc_to_dict(i) for i in iocs],
                        [iris.asset_to_dict(a) for a in assets], event, iris.last_editor(case), records=records,
                        max_bytes=self.settings.max_message_bytes)
        for envelope in sync.envelopes():  # converted as they leave: the first part goes before the last is made
            part = envelope.get("part")
            where = " " + part_label(part) if part else ": " + sync.summary()
            outcome = self._ship(envelope, f"case #{case_id}{why}{where}")
            if outcome.status == "rejected":
                sync.close()
                return
        for entry in sync.skipped:
            self.log(f"case #{case_id}: skipped: {describe_skip(entry)}")
        if sync.parts > 1:
            self.log(f"case #{case_id}{why}: {sync.parts} parts: {sync.summary()}")
        self.state.replace_shipped(case_id, sync.fingerprints, [(a.asset_id, "") for a in assets])
        self._remember_case(case_dict, sync.case_ref)
        self.state.set_case_switch(case_id, True)

    def case_created(self, case: Any) -> None:
        case_dict = iris.case_to_dict(case)
        enabled = self._case_enabled(case_dict, "case #{} created".format(case_dict["case_id"]))
        if not enabled:
            self.state.set_case_switch(case_dict["case_id"], False)
            return
        self.case_sync(case, "case.created")

    def case_updated(self, case: Any) -> None:
        """A switch turned on sends the whole case; turned off stops sending (nothing is deleted in OpenCTI)."""
        case_dict = iris.case_to_dict(case)
        case_id = case_dict["case_id"]
        enabled, why = switch_state(case_dict, self.settings.sync_mode)
        previous = self.state.case_switch(case_id)
        if not enabled:
            self.state.set_case_switch(case_id, False)
            if previous:
                self.log(f"case #{case_id}: sync turned off ({why}): nothing more is sent; what OpenCTI already "
                         "holds stays")
            else:
                self.log(f"case #{case_id} updated: not sent: the case is not synced ({why})")
            return
        if previous is not True:
            reason = "sync turned on" if previous is False else "first sight of this case"
            self.case_sync(case, "case.sync", f" ({reason}: {why}, so the whole case is sent)")
            return
        envelope, result = case_update_message(self.converter, case_dict, iris.last_editor(case))
        outcome = self._ship(envelope, f"case #{case_id} updated")
        if outcome.status != "rejected":
            self._remember_case(case_dict, result.case_ref)

    def case_manual(self, case: Any) -> None:
        case_dict = iris.case_to_dict(case)
        if self._case_enabled(case_dict, "case #{}: 'Sync case to OpenCTI'".format(case_dict["case_id"])):
            self.case_sync(case, "case.sync", " (synced by hand)")

    def case_deleted(self, item: Any) -> None:
        case_id = iris.object_id(item, "case_id")
        if self.state.case_switch(case_id) is False:
            self.log(f"case #{case_id} deleted: not sent: its sync was switched off")
            self.state.forget_case(case_id)
            return
        case_ref, name = self.state.case_ref(case_id)
        envelope = case_deletion_message(case_id, case_ref, name)
        outcome = self._ship(envelope, "case #{} deleted{}".format(
            case_id, "" if case_ref else " (its Case-Incident is found in the connector's ledger)"))
        if outcome.status != "rejected":
            self.state.forget_case(case_id)

    def alert_merged(self, alert: Any) -> None:
        """IRIS fires no IOC/asset hooks for what a merge adds: resend the cases the alert went into."""
        cases = iris.cases_of_alert(alert)
        if not cases:
            self.log("alert {} merged: no case found on it".format(getattr(alert, "alert_id", "?")))
        for case in cases:
            case_dict = iris.case_to_dict(case)
            if self._case_enabled(case_dict, "alert {} merged into case #{}".format(
                    getattr(alert, "alert_id", "?"), case_dict["case_id"])):
                self.case_sync(case, "case.sync", " (alert {} merged)".format(getattr(alert, "alert_id", "?")))


def _named_in(text: str, value: Any) -> bool:
    """Whether ``text`` (lower-cased) names an IOC value or asset name, or one part of a composite value
    (``filename|md5``): the converter then decides, on the STIX values, what a note really mentions."""
    parts = [p.strip().lower() for p in str(value or "").split("|")]
    return any(len(p) >= 4 and p in text for p in parts)


def _as_id(value: str) -> Any:
    """State keeps ids as text; envelopes carry IRIS's integers."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


_CONVERTERS: Dict[Tuple[Any, ...], Converter] = {}


def converter_for(settings: ModuleSettings) -> Converter:
    """A converter per configuration, kept for the process: loading the mapping tables costs more than a hook.

    The override file's modification time is part of the key, so editing it takes effect at the next hook.
    """
    path = settings.mappings_path
    try:
        stamp = os.stat(os.path.expanduser(path)).st_mtime_ns if path else None
    except OSError:
        stamp = None  # let Mappings report the unreadable file with its own message
    key = (settings.iris_url, settings.author, settings.default_tlp, settings.max_tlp, settings.create_indicators,
           settings.confidence, path, stamp, settings.records, settings.export_content)
    converter = _CONVERTERS.get(key)
    if converter is None:
        if len(_CONVERTERS) > 8:
            _CONVERTERS.clear()
        converter = _CONVERTERS[key] = Converter(settings.converter_config(path))
    return converter
