"""Connector configuration, the OpenCTI way: ``config.yml`` and environment variables.

pycti reads the ``opencti`` and ``connector`` sections itself; this module reads the ``iris`` section with
pycti's own ``get_config_variable`` (env ``IRIS_*`` first, then ``config.yml``, then the default), so both
connectors behave like every OpenCTI connector.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import yaml
from pycti import get_config_variable

from iris_opencti_module.convert import ConverterConfig


def load_config(path: Optional[str] = None) -> Dict[str, Any]:
    """``config.yml`` beside the working directory (or ``CONNECTOR_CONFIG``/``path``); empty when absent."""
    path = path or os.environ.get("CONNECTOR_CONFIG") or os.path.join(os.getcwd(), "config.yml")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle) or {}
    return {}


def _get(config: Dict[str, Any], key: str, default: Any = None, number: bool = False) -> Any:
    return get_config_variable("IRIS_" + key.upper(), ["iris", key], config, isNumber=number, default=default)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass
class IrisSettings:
    """The ``iris`` section shared by both connectors."""

    url: str
    api_key: Optional[str]
    verify_ssl: bool
    amqp_url: str
    queue: str
    ledger: str
    archive_dir: str
    archive_retention_days: int
    author: str
    default_tlp: str
    max_tlp: str
    create_indicators: bool
    sync_mode: str
    mappings: Optional[str]
    timeout: int

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "IrisSettings":
        return cls(
            url=str(_get(config, "url", "https://iris.local")).rstrip("/"),
            api_key=_get(config, "api_key"),
            verify_ssl=_bool(_get(config, "verify_ssl", True)),
            amqp_url=str(_get(config, "amqp_url", "amqp://guest:guest@localhost:5672/%2F")),
            queue=str(_get(config, "queue", "iris-opencti")),
            ledger=str(_get(config, "ledger", "sqlite:///data/iris-opencti-ledger.sqlite")),
            archive_dir=str(_get(config, "archive_dir", "data/archive")),
            archive_retention_days=int(_get(config, "archive_retention_days", 0, number=True) or 0),
            author=str(_get(config, "author", "DFIR-IRIS")),
            default_tlp=str(_get(config, "default_tlp", "amber")),
            max_tlp=str(_get(config, "max_tlp", "amber")),
            create_indicators=_bool(_get(config, "create_indicators", True)),
            sync_mode=str(_get(config, "sync_mode", "all")),
            mappings=_get(config, "mappings"),
            timeout=int(_get(config, "timeout", 30, number=True) or 30),
        )

    def converter_config(self) -> ConverterConfig:
        """The connector must convert exactly as the IRIS module does, or ids would differ."""
        return ConverterConfig(iris_url=self.url, author_name=self.author, default_tlp=self.default_tlp,
                               max_tlp=self.max_tlp, create_indicators=self.create_indicators,
                               mappings_path=self.mappings)
