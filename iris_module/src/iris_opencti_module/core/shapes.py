"""The shapes the two sides exchange, as TypedDicts: IRIS's case export (what the converter reads) and the
envelope (what the module sends and the import connector reads).

They document the contract and are checked against real data: ``tests/module/test_shapes.py`` fails if a real
IRIS 2.4.20 or 2.5 export, or a message recorded on a real IRIS, holds a key not declared here, or if the
envelope builder writes one. IRIS's own values are loosely typed (ids as ints or strings, tags as a comma
string or a list, TLPs as ids or names), hence the ``Any``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict


class IrisCase(TypedDict, total=False):
    """``data.case`` of ``GET /case/export?cid=N`` (``CaseDetailsSchema``)."""

    case_id: int
    case_uuid: str
    name: str
    description: str
    soc_id: str
    open_date: str
    initial_date: str
    close_date: Optional[str]
    closing_note: Optional[str]
    severity: Any
    severity_id: int
    classification: Any
    classification_id: Optional[int]
    client: Any
    client_id: int
    owner: Any
    owner_id: int
    reviewer: Any
    reviewer_id: Optional[int]
    review_status: Any
    review_status_id: Optional[int]
    state: Any
    state_id: int
    status_id: int
    status_name: str
    user: Any
    user_id: int
    tags: Any
    alerts: List[Any]
    protagonists: List[Any]
    note_directories: List[Any]
    custom_attributes: Optional[Dict[str, Any]]
    modification_history: Optional[Dict[str, Any]]


class IrisIoc(TypedDict, total=False):
    """One of ``data.iocs`` (``IocSchema``); 2.5 adds ``case_id``. The module's adapter adds ``tlp`` /
    ``ioc_tlp_name`` when it reads the row itself."""

    ioc_id: int
    ioc_uuid: str
    ioc_value: str
    ioc_type: Any
    ioc_type_id: int
    ioc_description: Optional[str]
    ioc_tags: Any
    ioc_tlp_id: Optional[int]
    ioc_tlp_name: str
    tlp: Any
    ioc_misp: Any
    ioc_enrichment: Any
    case_id: int
    user_id: int
    custom_attributes: Optional[Dict[str, Any]]
    modification_history: Optional[Dict[str, Any]]


class IrisAsset(TypedDict, total=False):
    """One of ``data.assets`` (``CaseAssetsSchema``, with its type's name under ``type``)."""

    asset_id: int
    asset_uuid: str
    asset_name: str
    asset_description: Optional[str]
    light_asset_description: Optional[str]
    type: Any
    asset_domain: Optional[str]
    asset_ip: Optional[str]
    asset_info: Optional[str]
    asset_tags: Any
    asset_ioc: Any
    asset_compromise_status: Any
    asset_compromise_status_id: Optional[int]
    analysis_status: Any
    date_added: Optional[str]
    custom_attributes: Optional[Dict[str, Any]]


class CaseExport(TypedDict, total=False):
    """``data`` of ``GET /case/export?cid=N``: the case and what it holds."""

    case: IrisCase
    iocs: List[IrisIoc]
    assets: List[IrisAsset]
    notes: List[Dict[str, Any]]
    timeline: List[Dict[str, Any]]
    tasks: List[Dict[str, Any]]
    evidences: List[Dict[str, Any]]
    comments: List[Dict[str, Any]]
    export_date: str


class EnvelopeCase(TypedDict):
    id: Any
    name: Optional[str]
    #: the Case-Incident's STIX id, when the module knows it
    ref: Optional[str]


class EnvelopePart(TypedDict, total=False):
    """A whole-case message in parts (``chunks.py``): which sync, which part, of how many."""

    sync: str
    index: int
    total: int
    #: the connector's own closing message of a sync
    end: bool


class Conversion(TypedDict):
    """How the bundle was converted (``conversion.py``)."""

    fingerprint: str
    settings: Dict[str, Any]


class _EnvelopeKeys(TypedDict):
    """The keys every envelope has."""

    schema: int
    message_id: str
    #: ``<kind>.<action>``: one of ``envelope.EVENTS``
    event: str
    case: EnvelopeCase
    #: the IRIS ids concerned, by kind: ``ioc_ids``, ``asset_ids``, ``note_ids``...
    iris: Dict[str, List[Any]]
    user: Optional[str]
    time: str
    bundle: Optional[Dict[str, Any]]
    #: IRIS key (``ioc:12``) -> the STIX ids it produced
    produced: Dict[str, List[str]]
    deleted: List[Dict[str, Any]]
    skipped: List[Dict[str, Any]]


class Envelope(_EnvelopeKeys, total=False):
    """One message on IRIS's queue (``envelope.make_envelope``, checked by ``envelope.parse_envelope``)."""

    #: whole-case messages: the kinds of IRIS objects they hold all of
    covers: List[str]
    conversion: Conversion
    part: EnvelopePart
