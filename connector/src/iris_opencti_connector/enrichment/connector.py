"""``iris-opencti-enrich``: OpenCTI's verdict on an observable, written back onto the IRIS IOCs it came from.

For each observable OpenCTI asks it to enrich, the connector finds every IRIS IOC that produced it (the
import connector's ledger first; else the IRIS case named by the Case-Incident's external reference, matched
by value), merges ``opencti:*`` tags into the IOC's tags through IRIS's REST API, and tells OpenCTI what it
changed. Its write-backs come from the configured sync user, so the IRIS module ships nothing in return.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Dict, List, Optional, Set, Tuple

from pycti import OpenCTIConnectorHelper

from iris_opencti_connector.enrichment.context import (
    CONTEXT_QUERY,
    NOTE_MARK,
    analyst_notes,
    comment_text,
    observable_url,
    related_and_containers,
)
from iris_opencti_connector.enrichment.writeback import (
    WritebackOptions,
    describe,
    iris_own_tags,
    merge_tags,
    opencti_tags,
    tlp_change,
    verdict_from_entity,
)
from iris_opencti_connector.iris_client import IrisAuthError, IrisClient, IrisError, IrisNotFound
from iris_opencti_connector.settings import (
    ConfigError,
    EnrichmentSettings,
    IrisSettings,
    load_config,
    prepare_config,
)
from iris_opencti_connector.startup import open_ledger, run_main
from iris_opencti_module.core.convert import Converter

#: the OpenCTI entity types of the observables the import side produces
DEFAULT_SCOPE = ("IPv4-Addr,IPv6-Addr,Domain-Name,Hostname,Url,StixFile,Email-Addr,Email-Message,Mac-Addr,"
                 "Autonomous-System,Windows-Registry-Key,Mutex,User-Account,User-Agent,Text,Cryptocurrency-Wallet,"
                 "Phone-Number,Bank-Account,X509-Certificate,Directory,Network-Traffic")
DEFAULTS = {"type": "INTERNAL_ENRICHMENT", "name": "DFIR-IRIS enrichment", "scope": DEFAULT_SCOPE,
            "auto": False, "log_level": "info"}
class NotFromIris(Exception):
    """The observable was not produced by any IRIS IOC: a clear message, not an error."""


def writeback_options(section: EnrichmentSettings) -> WritebackOptions:
    """How verdicts become tags, from the ``enrichment`` section (already checked by its model)."""
    return WritebackOptions(label_prefix=section.label_prefix, labels_allow=section.labels_allow,
                            labels_deny=section.labels_deny, write_tlp=section.write_tlp,
                            allow_lower_tlp=section.allow_lower_tlp, indicator_tag=section.indicator_tag,
                            seen_tag=section.seen_tag)


def _value_of(stix_entity: Dict[str, Any], entity: Dict[str, Any]) -> Optional[str]:
    for key in ("value", "name", "key", "account_login", "iban", "number", "path"):
        if stix_entity.get(key) not in (None, ""):
            return str(stix_entity[key])
    hashes = stix_entity.get("hashes") or {}
    if hashes:
        return str(next(iter(hashes.values())))
    return entity.get("observable_value")


class EnrichConnector:
    """Listens for enrichment requests (AMQP by default, or OpenCTI's API listen protocol)."""

    def __init__(self, config: Optional[Dict[str, Any]] = None, *, helper: Any = None, ledger: Any = None,
                 iris: Any = None) -> None:
        """``config`` as ``config.yml`` holds it (read from there when None). ``helper`` (pycti's
        ``OpenCTIConnectorHelper``), ``ledger`` and ``iris`` (the :class:`IrisClient`) are built from it unless
        passed in: unit tests pass small fakes, integration tests the real ones against the simulator."""
        config = config if config is not None else load_config()
        connector = config.setdefault("connector", {})
        for key, value in DEFAULTS.items():
            connector.setdefault(key, value)
        # before the helper: pycti must see the ssl_verify default, and a setting that cannot work stops us
        # unregistered (pycti's excepthook would end the process silently, see startup.py)
        prepare_config(config)
        self.settings = IrisSettings.from_config(config)
        self.enrich = EnrichmentSettings.from_config(config)
        self.options = writeback_options(self.enrich)
        if not self.settings.api_key:
            raise ConfigError("IRIS_API_KEY is required: the enrichment connector writes tags through IRIS's API")
        self.ledger = ledger or open_ledger(self.settings.ledger, self.settings.ledger_outage_timeout)
        self.helper = helper or OpenCTIConnectorHelper(config, playbook_compatible=True)
        self.iris = iris or IrisClient(self.settings.url, self.settings.api_key, self.settings.verify_ssl,
                                       self.settings.timeout)
        #: the identity IRIS's objects are created by (the import side's converter, same settings): containers
        #: it authored are IRIS's own cases and do not count as "seen elsewhere"
        self.iris_author = str(Converter(self.settings.converter_config()).author["id"])
        self._tlp_ids: Optional[Dict[str, int]] = None

    # ------------------------------------------------------------------------------------- lookups
    def _around(self, entity_id: str) -> Dict[str, Any]:
        """The observable's containers, relationships and indicators (context.py), in one query per enrichment:
        the containers find the IRIS cases and count where else it is seen; the rest feeds the OpenCTI tab."""
        answer = self.helper.api.query(CONTEXT_QUERY, {"id": entity_id})
        return (answer.get("data") or {}).get("stixCoreObject") or {}

    def find_iocs(self, standard_id: str, containers: List[Dict[str, Any]], value: Optional[str]
                  ) -> Tuple[List[Tuple[str, str]], Optional[str]]:
        """(case id, IOC id) pairs that produced this observable, and the Case-Incident of the first case."""
        pairs: Set[Tuple[str, str]] = {(c, k.split(":", 1)[1]) for c, k in self.ledger.holders(standard_id)
                                        if k.startswith("ioc:")}
        if pairs:
            first_case = sorted(pairs)[0][0]
            return sorted(pairs), self.ledger.case_ref(first_case)
        # fallback: the IRIS case named by a Case-Incident's external reference, IOC matched by value
        case_ref = None
        for node in containers:
            if node.get("entity_type") != "Case-Incident":
                continue
            for edge in (node.get("externalReferences") or {}).get("edges") or []:
                ref = (edge or {}).get("node") or {}
                if ref.get("source_name") != self.enrich.source_name or not ref.get("external_id"):
                    continue
                case_id = str(ref["external_id"])
                for ioc in self.iris.list_iocs(case_id):
                    if value is not None and str(ioc.get("ioc_value", "")).strip().lower() == value.lower():
                        pairs.add((case_id, str(ioc["ioc_id"])))
                        case_ref = case_ref or node.get("standard_id")
        return sorted(pairs), case_ref

    def tlp_ids(self) -> Dict[str, int]:
        if self._tlp_ids is None:
            self._tlp_ids = self.iris.tlps()
        return self._tlp_ids

    # ------------------------------------------------------------------------------------ write-back
    def write_back(self, case_id: str, ioc_id: str, entity: Dict[str, Any], case_ref: Optional[str],
                   around: Optional[Dict[str, Any]] = None) -> str:
        ioc = self.iris.get_ioc(case_id, ioc_id)
        verdict = verdict_from_entity(entity, case_ref, self.iris_author, self.enrich.source_name)
        # read now, not at export time: the IOC's own tags are what IRIS already shows
        tags = opencti_tags(verdict, self.options, iris_own_tags(ioc.get("ioc_tags")))
        merged, dropped = merge_tags(ioc.get("ioc_tags"), tags)
        changes: Dict[str, Any] = {}
        if merged != (ioc.get("ioc_tags") or ""):
            changes["ioc_tags"] = merged
        new_tlp = tlp_change(ioc.get("ioc_tlp_id"), verdict.tlp, self.tlp_ids() if self.options.write_tlp
                             else {}, self.options)
        if new_tlp is not None:
            changes["ioc_tlp_id"] = new_tlp
        if self.enrich.context_tab:
            enrichment = self._enrichment(ioc.get("ioc_enrichment"), verdict, entity, around or {})
            if enrichment is not None:
                changes["ioc_enrichment"] = enrichment
        if changes:
            self.iris.update_ioc(case_id, ioc_id, changes)
        posted = self._post_notes(case_id, ioc_id, around or {}) if self.enrich.note_comments else 0
        return describe(ioc_id, case_id, tags, dropped, verdict.tlp if new_tlp is not None else None) + (
            "" if changes or posted else " (unchanged)") + (
            ", %d OpenCTI note%s as IRIS comments" % (posted, "" if posted == 1 else "s") if posted else "")

    def _post_notes(self, case_id: str, ioc_id: str, around: Dict[str, Any]) -> int:
        """OpenCTI analysts' notes on the observable as comments on the IOC, each once: a comment starts with
        the note's id, and a note whose id an IOC comment already carries is not posted again. IRIS's comment
        hooks are not the module's, so nothing goes back to OpenCTI."""
        notes = analyst_notes(around, self.iris_author)
        if not notes:
            return 0
        existing = " ".join(str(c.get("comment_text") or "") for c in self.iris.ioc_comments(case_id, ioc_id))
        posted = 0
        for note in notes:
            if NOTE_MARK % note["id"] in existing:
                continue
            self.iris.add_ioc_comment(case_id, ioc_id, comment_text(note))
            posted += 1
        return posted

    def _enrichment(self, current: Any, verdict: Any, entity: Dict[str, Any], obj: Dict[str, Any]
                    ) -> Optional[Dict[str, Any]]:
        """The IOC's ``ioc_enrichment`` with OpenCTI's context under ``opencti`` (the module renders it as the
        IOC's OpenCTI tab: see context.py); None when it already holds exactly that. Other keys are kept."""
        context: Dict[str, Any] = {"score": verdict.score, "labels": list(verdict.labels), "tlp": verdict.tlp,
                                   "url": observable_url(self.helper.opencti_url, obj.get("id") or entity.get("id")),
                                   **related_and_containers(obj, self.iris_author)}
        base = dict(current) if isinstance(current, dict) else {}
        if base.get("opencti") == context:
            return None
        base["opencti"] = context
        return base

    def process(self, data: Dict[str, Any]) -> str:
        entity = data.get("enrichment_entity") or {}
        stix_entity = data.get("stix_entity") or {}
        standard_id = entity.get("standard_id") or stix_entity.get("id") or data.get("entity_id")
        try:
            if not isinstance(standard_id, str) or not standard_id:
                raise NotFromIris("the enrichment request names no entity id")
            around = self._around(entity.get("id") or standard_id)
            containers = [(e or {}).get("node") or {} for e in (around.get("containers") or {}).get("edges") or []]
            entity = dict(entity, containers={"edges": [{"node": n} for n in containers]})
            pairs, case_ref = self.find_iocs(standard_id, containers, _value_of(stix_entity, entity))
            if not pairs:
                raise NotFromIris(f"{standard_id} is not from IRIS: no IRIS IOC produced it")
            messages = []
            for case_id, ioc_id in pairs:
                try:
                    messages.append(self.write_back(case_id, ioc_id, entity, case_ref or self.ledger.case_ref(case_id),
                                                    around))
                except IrisNotFound:
                    messages.append(f"IOC {ioc_id} in case #{case_id}: no longer in IRIS")
            return "; ".join(messages)
        except NotFromIris as exc:
            return str(exc)
        except IrisAuthError:
            raise
        except IrisError as exc:
            raise IrisError(f"IRIS write-back failed after retries: {exc}") from exc
        finally:
            self._send_back(data)

    def _send_back(self, data: Dict[str, Any]) -> None:
        """Playbook-compatible: OpenCTI expects the original bundle back from an enrichment connector."""
        objects = data.get("stix_objects")
        if objects and self.helper.playbook is not None:
            self.helper.send_stix2_bundle(self.helper.stix2_create_bundle(objects))

    def run(self) -> None:
        self.helper.listen(message_callback=self.process)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO)

    def body() -> int:
        EnrichConnector().run()
        return 0

    return run_main("iris-opencti-enrich", body)


if __name__ == "__main__":
    sys.exit(main())
