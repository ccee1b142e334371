"""Secrets out of anything logged or archived: the password of a URL (RabbitMQ, PostgreSQL) masked or removed.

One home for the rule, used by the module's publisher and doctor and by both connectors, so a log line can only
show ``user:***@host``.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import unquote, urlsplit


def mask_url(url: str) -> str:
    """``amqp://user:secret@host/vhost`` → ``amqp://user:***@host/vhost``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    netloc, slash, path = rest.partition("/")
    creds, _, host = netloc.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def _password(url: str) -> Optional[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def redact(text: str, url: str) -> str:
    """``text`` with ``url`` masked and its password removed wherever it appears (error messages quote both)."""
    text = text.replace(url, mask_url(url))
    secret = _password(url)
    if secret and len(secret) >= 3:
        text = text.replace(secret, "***")
        raw = url.split("://", 1)[-1].rpartition("@")[0].partition(":")[2]
        if raw and raw != secret:
            text = text.replace(raw, "***")
    return text
