"""Reconcile: IRIS's own view of every switched-on case against the ledger, for what no hook said.

IRIS fires no hook for some changes (an IOC unlinked through the API of another case, an event's links, a
case restored from a backup), and a module may have been off for a while. Reconcile reads each case's export
through IRIS's REST API, converts it with the same ``core`` converter the module uses, and sends only what
differs from the ledger: a case where both agree costs one export and nothing else.

A case that the IRIS module converted with other settings (author, IRIS URL, TLPs, indicators, mappings,
records) is not reconciled: converting it here would give other ids or other markings and flip the case back
and forth between the two. The refusal names the setting that differs (``core.conversion``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from iris_opencti_connector.iris_client import IrisClient, IrisError
from iris_opencti_connector.settings import IrisSettings
from iris_opencti_module.core.case_switch import sync_enabled
from iris_opencti_module.core.chunks import split_case_envelope
from iris_opencti_module.core.conversion import differences
from iris_opencti_module.core.convert import Converter, unwrap_export
from iris_opencti_module.core.envelope import encode, make_envelope, whole_case_covers
from iris_opencti_module.core.progress import Progress
from iris_opencti_module.core.stix_ids import bundle_id


class Reconciler:
    """Everything reconcile needs, passed in: the settings, the converter, the ledger, a logger (pycti's
    ``connector_logger``) and ``process``, the import connector's own path for one message."""

    def __init__(self, settings: IrisSettings, converter: Converter, ledger: Any, logger: Any,
                 process: Callable[[Dict[str, Any], bytes], str],
                 client: Optional[Callable[[], IrisClient]] = None) -> None:
        self.settings = settings
        self.converter = converter
        self.ledger = ledger
        self.logger = logger
        self.process = process
        self.author_id = str(converter.author["id"])
        self._client = client or (lambda: IrisClient(settings.url, settings.api_key or "", settings.verify_ssl,
                                                     settings.timeout))

    def run(self, progress: Optional[Progress] = None) -> Dict[str, int]:
        """Every switched-on case; ``progress`` (the ``reconcile`` command on a terminal) is told of each."""
        stats = {"cases": 0, "changed": 0, "refused": 0}
        if not self.settings.api_key:
            self.logger.info("reconcile skipped: no IRIS_API_KEY configured")
            return stats
        client = self._client()
        try:
            cases = client.list_cases()
        except IrisError as exc:
            self.logger.error("reconcile: cannot list IRIS cases", {"error": str(exc)})
            return stats
        if progress is not None:
            progress.total = len(cases)
        for summary in cases:
            case_id = summary.get("case_id")
            try:
                export = unwrap_export(client.export_case_whole(case_id))
            except (IrisError, ValueError) as exc:
                self.logger.warning("reconcile: case skipped", {"case": case_id, "error": str(exc)})
                if progress is not None:
                    progress.step()
                continue
            if progress is not None:
                progress.step(len(export.get("iocs") or []))
            if not sync_enabled(export["case"], self.settings.sync_mode):
                continue
            stats["cases"] += 1
            refusal = self.refusal(case_id)
            if refusal:
                stats["refused"] += 1
                self.logger.warning("reconcile: case not reconciled", {"case": case_id, "reason": refusal})
                continue
            if self.case(export):
                stats["changed"] += 1
        if progress is not None:
            progress.finish()
        return stats

    def refusal(self, case_id: Any) -> Optional[str]:
        """Why this connector may not reconcile the case, or None: the module's last message about it was
        converted with settings other than this connector's."""
        theirs = self.ledger.conversion_of(case_id)
        if not theirs:
            return None  # nothing from the module yet (or from a module before the contract): ours is the rule
        diffs = differences(self.converter.conversion, theirs, "this connector", "the module")
        if not diffs:
            return None
        return f"converted by the IRIS module with other settings: {'; '.join(diffs)}"

    def case(self, export: Dict[str, Any]) -> bool:
        """One case: nothing is sent when IRIS and the ledger already agree."""
        result = self.converter.convert_export(export)
        case = export["case"]
        if result.case_ref is None:
            raise ValueError(f"IRIS case export of case {case.get('case_id')!r} holds no case the converter could read")
        known = self.ledger.case_map(case["case_id"])
        first_ref = self.ledger.case_ref(case["case_id"]) or result.case_ref  # a renamed case keeps its first id
        changed = {k for k, ids in result.produced.items()
                   if {first_ref if i == result.case_ref else i for i in ids} != known.get(k, set())}
        covers = whole_case_covers(self.converter.config.records)
        gone = {k for k in known if k.split(":", 1)[0] in covers} - set(result.produced)
        if not changed and not gone:
            return False
        keep = {i for k in changed for i in result.produced[k]} | {result.case_ref}
        objects = [o for o in result.objects.values()
                   if o["id"] in keep or o["type"] == "marking-definition" or o["id"] == self.author_id]
        incident = dict(result.objects[result.case_ref])
        refs = [r for r in incident.get("object_refs", []) if r in keep]
        if refs:
            incident["object_refs"] = refs
        else:
            incident.pop("object_refs", None)
        objects = [incident if o["id"] == incident["id"] else o for o in objects]
        bundle = {"type": "bundle", "id": bundle_id(f"reconcile|{case['case_id']}|{','.join(sorted(keep))}"),
                  "objects": objects}
        envelope = make_envelope("case.sync", case["case_id"], case_name=incident["name"], case_ref=result.case_ref,
                                 bundle=bundle, produced=result.produced, user="reconcile",
                                 skipped=[s.as_dict() for s in result.skipped], covers=covers)
        # no ``conversion``: the ledger keeps the module's, which the next reconcile compares with again
        # a big difference goes in parts, as the module sends a big case: bounded steps, deletions at the end
        for part in split_case_envelope(envelope):
            self.process(part, encode(part))
        return True
