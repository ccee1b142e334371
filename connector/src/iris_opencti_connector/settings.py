"""Connector configuration, the OpenCTI way: ``config.yml`` and environment variables.

pycti reads the ``opencti`` and ``connector`` sections itself; this module reads the ``iris`` section (both
connectors) and the ``enrichment`` section (the enrichment connector) with pycti's own ``get_config_variable``
(env ``IRIS_*`` / ``ENRICHMENT_*`` first, then ``config.yml``, then the default), so both connectors behave like
every OpenCTI connector. Each section is a pydantic model, as in OpenCTI's connector templates: one typed field
per key, described as ``config.yml.sample`` describes it, and checked once, at start, by the model's validators.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Dict, FrozenSet, Optional, Tuple, Type, TypeVar, Union

import yaml
from pycti import get_config_variable
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from iris_opencti_module.core.case_records import parse_records
from iris_opencti_module.core.convert import ConverterConfig
from iris_opencti_module.core.defaults import DEFAULT_AMQP_URL, DEFAULT_QUEUE
from iris_opencti_module.core.markings import parse_tlp
from iris_opencti_module.core.tags import PREFIX as BRIDGE_TAG_PREFIX
from iris_opencti_module.core.tls import TLSSettingError, iris_verify, opencti_verify
from iris_opencti_module.core.yesno import is_yes


class ConfigError(ValueError):
    """A setting the connector refuses at start; the text is one line naming the setting."""


def load_config(path: Optional[str] = None) -> Dict[str, Any]:
    """``config.yml`` beside the working directory (or ``CONNECTOR_CONFIG``/``path``), with the defaults and
    start-up checks of :func:`prepare_config` applied.

    Both connectors call this only when they start, before registering with OpenCTI, so a refused setting
    (:class:`ConfigError`) ends the process with one line on stderr (``startup.run_main``) rather than a
    traceback after registration.
    """
    path = path or os.environ.get("CONNECTOR_CONFIG") or os.path.join(os.getcwd(), "config.yml")
    config: Dict[str, Any] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
    return prepare_config(config)


def prepare_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """Defaults pycti must see, and the TLS settings checked, before ``OpenCTIConnectorHelper`` is built.

    pycti reads ``OPENCTI_SSL_VERIFY`` / ``opencti.ssl_verify`` with a default of *false*, so a connector
    configured without it would talk to OpenCTI without checking its certificate: the default is set to true
    in the ``opencti`` section pycti reads (the environment still wins, as pycti does). Raises
    :class:`ConfigError` for a verification value neither connector could honour.
    """
    section = config.get("opencti")
    if not isinstance(section, dict):
        section = config["opencti"] = {}
    if section.get("ssl_verify") is None:
        section["ssl_verify"] = True
    opencti_tls(config)
    IrisSettings.from_config(config)
    return config


def opencti_tls(config: Dict[str, Any]) -> Union[bool, str]:
    """What pycti will pass to ``requests`` as ``verify`` for OpenCTI (read exactly as pycti reads it)."""
    value = get_config_variable("OPENCTI_SSL_VERIFY", ["opencti", "ssl_verify"], config, False, False)
    try:
        return opencti_verify(value)
    except TLSSettingError as exc:
        raise ConfigError(str(exc)) from None


def _shown(value: Any) -> str:
    """A refused value as an error shows it: one line, bounded (a setting may be garbage pasted by mistake)."""
    text = " ".join(str(value).split())
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _number(value: Any, kind: Type[Union[int, float]], setting: str) -> Union[int, float]:
    """``value`` as an int or a float, or a ValueError naming ``setting``.

    pycti's ``isNumber`` would raise a bare ``ValueError`` from ``int()``, which is no one-line start-up message,
    so numbers are read as text and converted here. A bool is refused: pycti turns ``yes``/``false`` into bools,
    and ``confidence: yes`` meaning 1 would be a silent surprise.
    """
    what = "a whole number" if kind is int else "a number"
    if isinstance(value, bool):
        raise ValueError(f"{setting}: {_shown(value)} is not {what}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{setting}: {_shown(value)} is not {what}") from None


_Section = TypeVar("_Section", bound="ConfigSection")


class ConfigSection(BaseModel):
    """One ``config.yml`` section, typed: each field is read as ``<ENV_PREFIX><FIELD>`` or ``<section>.<field>``.

    Reading stays pycti's ``get_config_variable`` (environment first, then ``config.yml``; an empty value is unset)
    so the connectors behave like every OpenCTI connector; the model then checks and converts every value once,
    in its validators, and :meth:`from_config` turns pydantic's report into the one-line :class:`ConfigError`
    that ``startup.run_main`` prints, each problem starting with the environment variable's name.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    #: the ``config.yml`` section, and the prefix of the environment variables
    section: ClassVar[str] = ""
    env_prefix: ClassVar[str] = ""

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of a field: ``max_tlp`` → ``IRIS_MAX_TLP``."""
        return f"{cls.env_prefix}{field.upper()}"

    @classmethod
    def from_config(cls: Type[_Section], config: Dict[str, Any]) -> _Section:
        """The section from the environment and ``config``; raises :class:`ConfigError` naming what is refused."""
        values: Dict[str, Any] = {}
        for name in cls.model_fields:
            value = get_config_variable(cls.env_name(name), [cls.section, name], config, default=None)
            if value is not None:  # unset, empty or null: the field's default
                values[name] = value
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(cls._problems(exc)) from None

    @classmethod
    def _problems(cls, exc: ValidationError) -> str:
        """pydantic's errors as one line, each naming its environment variable (``IRIS_MAX_TLP: ...``).

        A validator's own message (the module's TLP, TLS and records parsers) already names the setting and the
        value, and is kept word for word; pydantic's (a wrong type) gets the name put in front.
        """
        problems = []
        for error in exc.errors():
            setting = cls.env_name(str(error["loc"][0])) if error["loc"] else cls.env_prefix.rstrip("_")
            cause = (error.get("ctx") or {}).get("error")
            text = str(cause) if isinstance(cause, ValueError) else str(error["msg"])
            if not text.startswith(setting):
                text = f"{setting}: {text}"
            problems.append(" ".join(text.split()))
        return "; ".join(problems)

    @classmethod
    def _default(cls, field: Optional[str]) -> Any:
        return cls.model_fields[str(field)].default

    @classmethod
    def _setting(cls, info: ValidationInfo) -> str:
        return cls.env_name(str(info.field_name))

    @classmethod
    def _yes(cls, value: Any, info: ValidationInfo) -> bool:
        """The bridge's one reading of yes/no words (``yesno.is_yes``), so the module and connectors agree."""
        return is_yes(value, bool(cls._default(info.field_name)))


#: the conversion settings' defaults are the converter's own: the module and the connectors then agree unset
_CONVERSION = ConverterConfig()


class IrisSettings(ConfigSection):
    """The ``iris`` section shared by both connectors (``IRIS_*``); the descriptions are ``config.yml.sample``'s."""

    section: ClassVar[str] = "iris"
    env_prefix: ClassVar[str] = "IRIS_"
    #: numbers for which 0 means the default (a timeout or a period of 0 would spin or never wait)
    zero_is_default: ClassVar[FrozenSet[str]] = frozenset(
        {"timeout", "ledger_outage_timeout", "leader_retry", "operations_max_bytes", "work_timeout"})

    url: str = Field(default=_CONVERSION.iris_url,
                     description="IRIS base URL (links back to cases, and the REST API)")
    # repr=False: a settings object in a log line or a traceback must not show the key or the passwords
    api_key: Optional[str] = Field(default=None, repr=False, description="IRIS API key: for reconcile (read "
                                   "cases) and the enrichment write-back; optional for the import, never logged")
    verify_ssl: Union[bool, str] = Field(default=True, description="TLS certificate checks on IRIS's API: true, "
                                         "false, or the path of a CA bundle (PEM file or c_rehash directory)")
    amqp_url: str = Field(default=DEFAULT_AMQP_URL, repr=False, description="the broker the IRIS module publishes to")
    queue: str = Field(default=DEFAULT_QUEUE, description="durable queue of IRIS messages (dead letters: "
                       "<queue>.dead)")
    ledger: str = Field(default="sqlite:///data/iris-opencti-ledger.sqlite", repr=False,
                        description="the ledger: sqlite:///path, or postgresql://user:pass@host/db for replicas")
    archive_dir: str = Field(default="data/archive", description="audit archive of every message and bundle")
    archive_retention_days: int = Field(default=0, description="days the archive keeps; 0 keeps everything")
    author: str = Field(default=_CONVERSION.author_name, description="organisation set as author of every object")
    default_tlp: str = Field(default=_CONVERSION.default_tlp,
                             description="TLP of cases and assets, and of IOCs without one")
    max_tlp: str = Field(default=_CONVERSION.max_tlp, description="nothing above this TLP leaves IRIS")
    create_indicators: bool = Field(default=_CONVERSION.create_indicators,
                                    description="a STIX Indicator (based-on) for each observable")
    confidence: int = Field(default=_CONVERSION.confidence, description="confidence of every SDO and relationship; the "
                            "connector user's max confidence in OpenCTI must be at least this")
    sync_mode: str = Field(default="all", description="all | opt-in | off (as in the IRIS module), for reconcile")
    mappings: Optional[str] = Field(default=None, description="mapping override file (the IRIS module's)")
    timeout: int = Field(default=30, description="seconds per IRIS API call (0: the default)")
    ledger_outage_timeout: float = Field(default=120.0, description="seconds a PostgreSQL ledger may stay "
                                         "unreachable (reconnecting meanwhile) before the connector exits 3")
    replica_mode: str = Field(default="active", description="replicas on a PostgreSQL ledger: active (all consume "
                              "side by side) | standby (one consumes, the others wait to take over)")
    leader_retry: float = Field(default=2.0, description="seconds between a standby replica's tries to lead")
    operations_max_bytes: int = Field(default=4 * 1024 * 1024, description="largest deletions/patches bundle "
                                      "(bytes of JSON, at least 1024); more goes in several bundles")
    work_timeout: float = Field(default=300.0, description="seconds without progress on a work before the group "
                                "is closed in error and processed again (never acknowledged)")
    records: Tuple[str, ...] = Field(default=_CONVERSION.records, description="which of a case's notes, timeline "
                                     "events, tasks and evidences reconcile sends ('none': only the case, IOCs, "
                                     "assets)")
    export_content: bool = Field(default=_CONVERSION.export_content,
                                 description="notes' and events' text; false keeps their titles")

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> str:
        """Without the trailing slash: links and API paths are joined to it with one."""
        return str(value).rstrip("/")

    @field_validator("amqp_url", "queue", "ledger", "archive_dir", "author", "sync_mode", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        """As text: YAML may hand a number, and pycti a bool for yes/no words."""
        return str(value)

    @field_validator("api_key", "mappings", mode="before")
    @classmethod
    def _optional_text(cls, value: Any) -> Optional[str]:
        return None if value is None else str(value)

    @field_validator("verify_ssl", mode="before")
    @classmethod
    def _verify(cls, value: Any, info: ValidationInfo) -> Union[bool, str]:
        """True, False or a CA bundle checked now (``tls.iris_verify``), not at the first request."""
        return iris_verify(value, cls._setting(info))

    @field_validator("default_tlp", "max_tlp", mode="before")
    @classmethod
    def _tlp(cls, value: Any, info: ValidationInfo) -> str:
        """The module's TLP spellings (AMBER, TLP:AMBER, white...), held as the canonical name, or the ids of the
        objects would differ between the module and the connector."""
        return parse_tlp(value, cls._setting(info))

    @field_validator("create_indicators", "export_content", mode="before")
    @classmethod
    def _bool(cls, value: Any, info: ValidationInfo) -> bool:
        return cls._yes(value, info)

    @field_validator("archive_retention_days", "confidence", "timeout", "operations_max_bytes", mode="before")
    @classmethod
    def _whole(cls, value: Any, info: ValidationInfo) -> int:
        number = int(_number(value, int, cls._setting(info)))
        return int(cls._default(info.field_name)) if number == 0 and info.field_name in cls.zero_is_default \
            else number

    @field_validator("ledger_outage_timeout", "leader_retry", "work_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: Any, info: ValidationInfo) -> float:
        """Seconds, fractions allowed; 0 is the default."""
        number = float(_number(value, float, cls._setting(info)))
        return float(cls._default(info.field_name)) if number == 0 else number

    @field_validator("operations_max_bytes")
    @classmethod
    def _at_least_1024(cls, value: int) -> int:
        """A bundle smaller than one operation could never be sent."""
        return max(1024, value)

    @field_validator("replica_mode", mode="before")
    @classmethod
    def _replica_mode(cls, value: Any, info: ValidationInfo) -> str:
        text = str(value if value is not None else "").strip().lower() or "active"
        if text not in ("active", "standby"):
            raise ValueError(f"{cls._setting(info)}: {_shown(value)} is neither 'active' nor 'standby'")
        return text

    @field_validator("records", mode="before")
    @classmethod
    def _records(cls, value: Any, info: ValidationInfo) -> Tuple[str, ...]:
        """``note,event,task,evidence`` (any order, a list too) or ``none`` (``case_records.parse_records``)."""
        return parse_records(value, cls._setting(info))

    def converter_config(self) -> ConverterConfig:
        """The connector must convert exactly as the IRIS module does, or ids would differ."""
        return ConverterConfig(iris_url=self.url, author_name=self.author, default_tlp=self.default_tlp,
                               max_tlp=self.max_tlp, create_indicators=self.create_indicators,
                               mappings_path=self.mappings, confidence=self.confidence, records=self.records,
                               export_content=self.export_content)


class EnrichmentSettings(ConfigSection):
    """The ``enrichment`` section of the enrichment connector (``ENRICHMENT_*``): how verdicts become IRIS tags."""

    section: ClassVar[str] = "enrichment"
    env_prefix: ClassVar[str] = "ENRICHMENT_"

    label_prefix: str = Field(default="opencti:label=", description="prefix of the tags made of OpenCTI's labels; "
                              f"must start with {BRIDGE_TAG_PREFIX!r}")
    labels_allow: Tuple[str, ...] = Field(default=(), description="comma list of glob patterns of the labels "
                                          "written (empty: all)")
    labels_deny: Tuple[str, ...] = Field(default=(), description="comma list of glob patterns of the labels "
                                         "never written")
    write_tlp: bool = Field(default=False, description="set the IOC's TLP from OpenCTI's")
    allow_lower_tlp: bool = Field(default=False, description="with write_tlp, may lower IRIS's TLP")
    indicator_tag: bool = Field(default=True, description="tag opencti:indicator when an indicator is based on "
                                "the observable")
    seen_tag: bool = Field(default=True, description="tag opencti:seen=<n>, the OpenCTI containers not from IRIS "
                           "holding it")
    context_tab: bool = Field(default=True, description="OpenCTI's context (related entities, reports, cases) for "
                              "the IOC's OpenCTI tab")
    note_comments: bool = Field(default=True, description="OpenCTI analysts' notes on the observable as IOC "
                                "comments (each once)")
    source_name: str = Field(default="DFIR-IRIS", description="source name of the external references naming "
                             "IRIS cases")

    @field_validator("label_prefix", mode="before")
    @classmethod
    def _label_prefix(cls, value: Any, info: ValidationInfo) -> str:
        """The IRIS module never exports ``opencti:*`` tags: another prefix would send OpenCTI's labels back to
        OpenCTI as IRIS labels."""
        text = str(value)
        if not text.lower().startswith(BRIDGE_TAG_PREFIX):
            raise ValueError(f"{cls._setting(info)}: {_shown(text)} must start with {BRIDGE_TAG_PREFIX!r} (the IRIS "
                             "module skips only those tags)")
        return text

    @field_validator("source_name", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return str(value)

    @field_validator("labels_allow", "labels_deny", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Tuple[str, ...]:
        """A comma list (environment) or a YAML list, without blanks."""
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())

    @field_validator("write_tlp", "allow_lower_tlp", "indicator_tag", "seen_tag", "context_tab", "note_comments",
                     mode="before")
    @classmethod
    def _bool(cls, value: Any, info: ValidationInfo) -> bool:
        return cls._yes(value, info)
