"""The module's parameters as IRIS shows them (Advanced > Modules), and their parsing into :class:`ModuleSettings`.

IRIS renders ``_module_configuration`` as a form grouped by ``section`` and hands the values back through
``module_dict_conf``. That value is not always a clean dict: when the module is first registered IRIS has no
stored configuration yet and returns the raw parameter list (and may even return another module's
parameters, through a shared status object). :func:`settings_from_conf` therefore accepts a dict or a list,
casts booleans itself, and falls back to the defaults below for anything missing or unusable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from iris_opencti_module.core.case_records import COMMENTED_KINDS
from iris_opencti_module.core.case_records import KINDS as RECORD_KINDS
from iris_opencti_module.core.chunks import DEFAULT_MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES
from iris_opencti_module.core.convert import DEFAULT_CONFIDENCE, ConverterConfig
from iris_opencti_module.core.defaults import DEFAULT_AMQP_URL, DEFAULT_QUEUE
from iris_opencti_module.core.markings import TLPError, parse_tlp
from iris_opencti_module.core.yesno import is_yes

SYNC_MODES = ("all", "opt-in", "off")
#: the module's name in IRIS (``_module_name``; Advanced > Modules, and ``/manage/modules/list``)
MODULE_NAME = "IrisOpenCTI"
DEFAULT_SPOOL_DIR = "/var/spool/iris-opencti"


def _param(name: str, human: str, description: str, default: Any, kind: str, section: str,
           mandatory: bool = False) -> Dict[str, Any]:
    return {"param_name": name, "param_human_name": human, "param_description": description, "default": default,
            "mandatory": mandatory, "type": kind, "section": section}


#: (parameter, IRIS hook, manual hook UI name) for every hook the module can register.
#: Delete triggers use both the preload hook (the row can still be read: value and cases) and the postload
#: hook (id only; also the only delete hook some IRIS versions fire).
TRIGGER_HOOKS: Tuple[Tuple[str, str, Optional[str]], ...] = (
    ("trigger_case_create", "on_postload_case_create", None),
    ("trigger_case_update", "on_postload_case_update", None),
    ("trigger_case_delete", "on_postload_case_delete", None),
    ("trigger_ioc_create", "on_postload_ioc_create", None),
    ("trigger_ioc_update", "on_postload_ioc_update", None),
    ("trigger_ioc_delete", "on_preload_ioc_delete", None),
    ("trigger_ioc_delete", "on_postload_ioc_delete", None),
    ("trigger_asset_create", "on_postload_asset_create", None),
    ("trigger_asset_update", "on_postload_asset_update", None),
    ("trigger_asset_delete", "on_postload_asset_delete", None),
    ("trigger_alert_merge", "on_postload_alert_merge", None),
    *(((f"trigger_{kind}"), f"on_postload_{kind}_{action}", None)
      for kind in RECORD_KINDS for action in ("create", "update", "delete")),
    *(("trigger_comment", f"on_postload_{kind}_{action}", None)
      for kind in COMMENTED_KINDS for action in ("commented", "comment_update", "comment_delete")),
    ("trigger_manual", "on_manual_trigger_case", "Sync case to OpenCTI"),
    ("trigger_manual", "on_manual_trigger_ioc", "Push to OpenCTI"),
    ("trigger_manual", "on_manual_trigger_asset", "Push to OpenCTI"),
)

CONFIGURATION: List[Dict[str, Any]] = [
    # --- Connection
    _param("iris_url", "IRIS base URL",
           "Public URL of this IRIS, used for the links from OpenCTI back to each case (e.g. https://iris.example). "
           "Use the same value as the import connector's IRIS_URL.", "https://iris.local", "string", "Connection",
           mandatory=True),
    _param("amqp_url", "RabbitMQ URL",
           "Broker the messages are published to, amqp://user:password@host:5672/vhost (the import connector reads "
           "the same queue). The password is never written to logs.", DEFAULT_AMQP_URL, "sensitive_string",
           "Connection", mandatory=True),
    _param("queue", "Queue name", "Durable queue the import connector consumes (its IRIS_QUEUE).", DEFAULT_QUEUE,
           "string", "Connection", mandatory=True),
    _param("spool_dir", "Spool directory",
           "Where messages wait while RabbitMQ is unreachable (sent oldest first on the next publish, or with "
           "'iris-opencti push --spool DIR'), and where the module keeps its small state database. Must be writable "
           "by, and shared between, IRIS's app and worker containers.", DEFAULT_SPOOL_DIR, "string", "Connection",
           mandatory=True),
    _param("max_message_bytes", "Maximum message size (bytes)",
           "A case larger than this is sent as several parts, which the import connector puts back together "
           "(RabbitMQ 4 refuses messages over 16 MiB by default). At least %d." % MIN_MESSAGE_BYTES,
           DEFAULT_MAX_MESSAGE_BYTES, "int", "Connection"),
    # --- Sync
    _param("author", "Author organisation",
           "Organisation named as author (created_by) of every object in OpenCTI. Same as the connector's "
           "IRIS_AUTHOR.", "DFIR-IRIS", "string", "Sync", mandatory=True),
    _param("default_tlp", "Default TLP", "TLP of cases and assets, and of IOCs without one: clear (or white), "
           "green, amber, amber+strict or red, in any case, with or without TLP:.", "amber", "string", "Sync",
           mandatory=True),
    _param("max_tlp", "Maximum TLP to export",
           "Nothing more restrictive than this leaves IRIS (order: clear < green < amber < amber+strict < red).",
           "amber", "string", "Sync", mandatory=True),
    _param("create_indicators", "Create indicators",
           "Build a STIX Indicator (with a based-on relationship) for each observable.", True, "bool", "Sync"),
    _param("sync_mode", "Per-case mode",
           "all: every case unless tagged opencti:off. opt-in: only cases whose 'Sync to OpenCTI' checkbox custom "
           "attribute is ticked or that are tagged opencti:on. off: nothing is sent.", "all", "string", "Sync",
           mandatory=True),
    _param("confidence", "Confidence",
           "Confidence (0-100) of every object sent to OpenCTI. OpenCTI caps it at the connector user's max "
           "confidence and only updates an object whose confidence is not higher. Same as the connector's "
           "IRIS_CONFIDENCE.", DEFAULT_CONFIDENCE, "int", "Sync", mandatory=True),
    _param("export_content", "Export note, event and comment content",
           "Send the text of notes, timeline events and comments; off, they keep their titles only (their text can "
           "hold what is not to be shared). Same as the connector's IRIS_EXPORT_CONTENT.", True, "bool", "Sync"),
    _param("sync_user", "Sync user",
           "IRIS login (or user id) of the account the enrichment connector writes opencti:* tags back with; IOC "
           "updates made by it are never sent back to OpenCTI.", "", "string", "Sync"),
    # --- Triggers
    _param("trigger_case_create", "On case creation", "Send new cases (with IOCs and assets from alerts).", True,
           "bool", "Triggers"),
    _param("trigger_case_update", "On case update",
           "Send case changes; a case whose switch is turned on is then sent whole.", True, "bool", "Triggers"),
    _param("trigger_case_delete", "On case deletion", "Delete the case-incident in OpenCTI.", True, "bool",
           "Triggers"),
    _param("trigger_ioc_create", "On IOC creation", "Send new IOCs.", True, "bool", "Triggers"),
    _param("trigger_ioc_update", "On IOC update", "Send changed IOCs.", True, "bool", "Triggers"),
    _param("trigger_ioc_delete", "On IOC deletion", "Remove deleted (or unlinked) IOCs from the case in OpenCTI.",
           True, "bool", "Triggers"),
    _param("trigger_asset_create", "On asset creation", "Send new assets.", True, "bool", "Triggers"),
    _param("trigger_asset_update", "On asset update", "Send changed assets.", True, "bool", "Triggers"),
    _param("trigger_asset_delete", "On asset deletion", "Remove deleted assets from the case in OpenCTI.", True,
           "bool", "Triggers"),
    _param("trigger_alert_merge", "On alert merge",
           "Resend a case when an alert is merged into it (IRIS fires no IOC/asset hooks for merged IOCs).", True,
           "bool", "Triggers"),
    _param("trigger_note", "On note changes",
           "Send the case's notes (created, edited, deleted) as STIX notes attached to the case.", True, "bool",
           "Triggers"),
    _param("trigger_event", "On timeline changes",
           "Send timeline events: sightings of their IOCs where their assets are, or notes when they name no IOC.",
           True, "bool", "Triggers"),
    _param("trigger_task", "On task changes", "Send the case's tasks as OpenCTI case tasks.", True, "bool",
           "Triggers"),
    _param("trigger_evidence", "On evidence changes",
           "Send evidences as file observables (name, size, hash; never the file itself).", True, "bool",
           "Triggers"),
    _param("trigger_comment", "On comments",
           "Send comments on IOCs, assets, timeline events, notes, tasks and evidences as STIX notes on what they "
           "comment (their text follows 'Export note, event and comment content').", True, "bool", "Triggers"),
    _param("trigger_manual", "Manual triggers",
           "Offer 'Sync case to OpenCTI' in the case's Processors menu and 'Push to OpenCTI' on IOCs and assets.",
           True, "bool", "Triggers"),
    # --- Mapping
    _param("mappings_path", "Mapping override file",
           "Optional JSON file (on the IRIS worker) overriding entries of the IRIS to STIX mapping tables. Use the "
           "same file for the import connector (IRIS_MAPPINGS).", "", "string", "Mapping"),
]

_DEFAULTS: Dict[str, Any] = {p["param_name"]: p["default"] for p in CONFIGURATION}
_TYPES: Dict[str, str] = {p["param_name"]: p["type"] for p in CONFIGURATION}
_HUMAN: Dict[str, str] = {p["param_name"]: p["param_human_name"] for p in CONFIGURATION}


class ConfigError(ValueError):
    """A parameter value the module cannot work with; the message names the parameter."""


@dataclass(frozen=True)
class ModuleSettings:
    """The parsed configuration of one hook call (IRIS re-reads it every time, so no caching here)."""

    iris_url: str
    amqp_url: str
    queue: str
    spool_dir: str
    author: str
    default_tlp: str
    max_tlp: str
    create_indicators: bool
    confidence: int
    sync_mode: str
    sync_user: str
    mappings_path: Optional[str]
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    triggers: Dict[str, bool] = field(default_factory=dict)
    export_content: bool = True

    def converter_config(self, mappings_path: Optional[str] = None) -> ConverterConfig:
        """How these settings convert (the one builder: the hooks and ``doctor`` use it); ``mappings_path``
        replaces the configured override file's path (the handler passes it resolved)."""
        return ConverterConfig(iris_url=self.iris_url, author_name=self.author, default_tlp=self.default_tlp,
                               max_tlp=self.max_tlp, create_indicators=self.create_indicators,
                               mappings_path=mappings_path or self.mappings_path, confidence=self.confidence,
                               records=self.records, export_content=self.export_content)

    @property
    def records(self) -> Tuple[str, ...]:
        """The record kinds (notes, events, tasks, evidences) whose trigger is on: only those leave IRIS."""
        return tuple(k for k in RECORD_KINDS if self.triggers.get(f"trigger_{k}"))

    def hooks(self) -> List[Tuple[str, Optional[str], bool]]:
        """(hook, manual UI name, wanted) for every hook the module knows."""
        return [(hook, ui, bool(self.triggers.get(param))) for param, hook, ui in TRIGGER_HOOKS]

    def wants(self, hook_name: str) -> bool:
        return any(wanted for hook, _, wanted in self.hooks() if hook == hook_name)


def _as_text(value: Any, default: str) -> str:
    if value is None:
        return default
    text = str(value).strip()
    return text if text else default


def raw_values(conf: Union[Mapping[str, Any], List[Any], None]) -> Dict[str, Any]:
    """``module_dict_conf`` as a dict, whether IRIS gave a dict or its raw parameter list."""
    if isinstance(conf, Mapping):
        return dict(conf)
    values: Dict[str, Any] = {}
    if isinstance(conf, (list, tuple)):
        for param in conf:
            if isinstance(param, Mapping) and param.get("param_name"):
                value = param.get("value")
                values[str(param["param_name"])] = param.get("default") if value is None else value
    return values


def settings_from_conf(conf: Union[Mapping[str, Any], List[Any], None]) -> ModuleSettings:
    """Parse and check the configuration; raises :class:`ConfigError` naming the bad parameter."""
    values = raw_values(conf)

    def get(name: str) -> Any:
        value = values.get(name)
        return _DEFAULTS[name] if value is None else value

    triggers = {p["param_name"]: is_yes(get(p["param_name"]), bool(_DEFAULTS[p["param_name"]]))
                for p in CONFIGURATION if _TYPES[p["param_name"]] == "bool" and p["section"] == "Triggers"}
    mode = _as_text(get("sync_mode"), "all").lower().replace("_", "-").replace("optin", "opt-in")
    if mode not in SYNC_MODES:
        raise ConfigError("Per-case mode (sync_mode) {!r} must be one of {}".format(mode, ", ".join(SYNC_MODES)))
    tlps = {}
    for name in ("default_tlp", "max_tlp"):
        try:
            tlps[name] = parse_tlp(_as_text(get(name), "amber"), f"{_HUMAN[name]} ({name})")
        except TLPError as exc:
            raise ConfigError(str(exc)) from None
    amqp_url = _as_text(get("amqp_url"), DEFAULT_AMQP_URL)
    if not amqp_url.lower().startswith(("amqp://", "amqps://")):
        raise ConfigError("RabbitMQ URL (amqp_url) must start with amqp:// or amqps://")
    mappings = _as_text(get("mappings_path"), "")
    try:
        confidence = int(str(get("confidence")).strip())
    except ValueError:
        confidence = -1
    if not 0 <= confidence <= 100:
        raise ConfigError("Confidence (confidence) {!r} must be a whole number from 0 to 100".format(get("confidence")))
    try:
        max_bytes = int(str(get("max_message_bytes")).strip())
    except ValueError:
        max_bytes = -1
    if max_bytes < MIN_MESSAGE_BYTES:
        raise ConfigError("Maximum message size (max_message_bytes) %r must be a whole number of at least %d bytes"
                          % (get("max_message_bytes"), MIN_MESSAGE_BYTES))
    return ModuleSettings(
        max_message_bytes=max_bytes,
        iris_url=_as_text(get("iris_url"), _DEFAULTS["iris_url"]).rstrip("/"),
        amqp_url=amqp_url,
        queue=_as_text(get("queue"), DEFAULT_QUEUE),
        spool_dir=_as_text(get("spool_dir"), DEFAULT_SPOOL_DIR),
        author=_as_text(get("author"), "DFIR-IRIS"),
        default_tlp=tlps["default_tlp"],
        max_tlp=tlps["max_tlp"],
        create_indicators=is_yes(get("create_indicators"), True),
        confidence=confidence,
        sync_mode=mode,
        sync_user=_as_text(get("sync_user"), ""),
        mappings_path=mappings or None,
        triggers=triggers,
        export_content=is_yes(get("export_content"), True),
    )
