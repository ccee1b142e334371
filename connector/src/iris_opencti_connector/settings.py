"""Connector configuration, the OpenCTI way: ``config.yml`` and environment variables.

pycti reads the ``opencti`` and ``connector`` sections itself; this module reads the ``iris`` section with
pycti's own ``get_config_variable`` (env ``IRIS_*`` first, then ``config.yml``, then the default), so both
connectors behave like every OpenCTI connector.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import yaml
from pycti import get_config_variable

from iris_opencti_module.case_records import KINDS as RECORD_KINDS
from iris_opencti_module.case_records import parse_records
from iris_opencti_module.convert import DEFAULT_CONFIDENCE, ConverterConfig
from iris_opencti_module.defaults import DEFAULT_AMQP_URL, DEFAULT_QUEUE
from iris_opencti_module.markings import TLPError, parse_tlp
from iris_opencti_module.tls import TLSSettingError, iris_verify, opencti_verify


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


def _get(config: Dict[str, Any], key: str, default: Any = None, number: bool = False) -> Any:
    return get_config_variable("IRIS_" + key.upper(), ["iris", key], config, isNumber=number, default=default)


def _verify(config: Dict[str, Any]) -> Union[bool, str]:
    try:
        return iris_verify(_get(config, "verify_ssl", True))
    except TLSSettingError as exc:
        raise ConfigError(str(exc)) from None


def _tlp(config: Dict[str, Any], key: str) -> str:
    """The module's TLP spellings (AMBER, TLP:AMBER, white...), held as the canonical name."""
    try:
        return parse_tlp(_get(config, key, "amber"), "IRIS_" + key.upper())
    except TLPError as exc:
        raise ConfigError(str(exc)) from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _records(config: Dict[str, Any]) -> Tuple[str, ...]:
    """``IRIS_RECORDS``: which of a case's notes, timeline events, tasks and evidences go to OpenCTI."""
    try:
        return parse_records(_get(config, "records", ",".join(RECORD_KINDS)))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class IrisSettings:
    """The ``iris`` section shared by both connectors."""

    url: str
    api_key: Optional[str]
    #: True, False or the path of a CA bundle (``requests``' ``verify=``)
    verify_ssl: Union[bool, str]
    amqp_url: str
    queue: str
    ledger: str
    archive_dir: str
    archive_retention_days: int
    author: str
    default_tlp: str
    max_tlp: str
    create_indicators: bool
    confidence: int
    sync_mode: str
    mappings: Optional[str]
    timeout: int
    ledger_outage_timeout: float = 120.0
    leader_retry: float = 2.0
    #: largest operations bundle (deletions, case patches) in bytes of JSON; more goes in several bundles
    operations_max_bytes: int = 4 * 1024 * 1024
    #: seconds a work may go without any progress reported by OpenCTI's workers before the group is retried
    work_timeout: float = 300.0
    #: the case's notes, timeline events, tasks and evidences that reconcile sends (see case_records.py)
    records: Tuple[str, ...] = RECORD_KINDS
    #: notes' and events' text; off, titles only
    export_content: bool = True

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "IrisSettings":
        return cls(
            url=str(_get(config, "url", "https://iris.local")).rstrip("/"),
            api_key=_get(config, "api_key"),
            verify_ssl=_verify(config),
            amqp_url=str(_get(config, "amqp_url", DEFAULT_AMQP_URL)),
            queue=str(_get(config, "queue", DEFAULT_QUEUE)),
            ledger=str(_get(config, "ledger", "sqlite:///data/iris-opencti-ledger.sqlite")),
            archive_dir=str(_get(config, "archive_dir", "data/archive")),
            archive_retention_days=int(_get(config, "archive_retention_days", 0, number=True) or 0),
            author=str(_get(config, "author", "DFIR-IRIS")),
            default_tlp=_tlp(config, "default_tlp"),
            max_tlp=_tlp(config, "max_tlp"),
            create_indicators=_bool(_get(config, "create_indicators", True)),
            confidence=int(_get(config, "confidence", DEFAULT_CONFIDENCE, number=True)),
            sync_mode=str(_get(config, "sync_mode", "all")),
            mappings=_get(config, "mappings"),
            timeout=int(_get(config, "timeout", 30, number=True) or 30),
            # how long a PostgreSQL ledger may stay unreachable before the connector exits non-zero
            ledger_outage_timeout=float(_get(config, "ledger_outage_timeout", 120) or 120),
            # how often a standby replica tries to become the one that consumes
            leader_retry=float(_get(config, "leader_retry", 2) or 2),
            operations_max_bytes=max(1024, int(_get(config, "operations_max_bytes", 4 * 1024 * 1024, number=True)
                                               or 4 * 1024 * 1024)),
            work_timeout=float(_get(config, "work_timeout", 300) or 300),  # seconds, fractions allowed
            records=_records(config),
            export_content=_bool(_get(config, "export_content", True)),
        )

    def converter_config(self) -> ConverterConfig:
        """The connector must convert exactly as the IRIS module does, or ids would differ."""
        return ConverterConfig(iris_url=self.url, author_name=self.author, default_tlp=self.default_tlp,
                               max_tlp=self.max_tlp, create_indicators=self.create_indicators,
                               mappings_path=self.mappings, confidence=self.confidence, records=self.records,
                               export_content=self.export_content)
