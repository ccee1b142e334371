"""How the two TLS verification settings are read, in one place for the connectors and ``doctor``.

``IRIS_VERIFY_SSL`` is ours: a yes/no word, or the path of a CA bundle (a PEM file, or a directory of hashed
certificates) for IRIS's API, as ``requests``' ``verify=`` takes it. Anything else is refused instead of
silently turning verification off, which is what a typo such as ``IRIS_VERIFY_SSL=/etc/ssl/iris.pem`` did.

``OPENCTI_SSL_VERIFY`` is read by pycti, not by us, and pycti only knows ``yes``/``true``/``True`` and
``no``/``false``/``False``; every other string goes to ``requests`` as a CA bundle path (so ``1`` or ``off``
would fail at the first request with an obscure error). :func:`opencti_verify` says what pycti will do with a
value, so the connectors can refuse a bad one at start and ``doctor`` can report the real behaviour.

Standard library only: ``doctor`` runs inside IRIS's images.
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Union

from iris_opencti_module.core.yesno import FALSE_WORDS, TRUE_WORDS

Verify = Union[bool, str]

#: the only strings pycti's ``get_config_variable`` turns into booleans (case-sensitive)
PYCTI_TRUE = ("yes", "true", "True")
PYCTI_FALSE = ("no", "false", "False")
_PATH_SUFFIXES = (".pem", ".crt", ".cer", ".ca-bundle")


class TLSSettingError(ValueError):
    """A verification setting that is neither a yes/no word nor a usable CA bundle; the text names the setting."""


def _shown(text: str) -> str:
    """The value as an error shows it: one line, bounded (a setting is no secret, but may be garbage)."""
    one_line = " ".join(text.split())
    return repr(one_line if len(one_line) <= 80 else one_line[:77] + "...")


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith((".", "~")) or text.lower().endswith(_PATH_SUFFIXES)


def ca_bundle(name: str, text: str) -> str:
    """The CA bundle path, checked now: a missing or unreadable bundle would otherwise fail every request later."""
    path = os.path.expanduser(text)
    if not os.path.exists(path):
        raise TLSSettingError(f"{name}: CA bundle {path} does not exist")
    if os.path.isdir(path):
        return path
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TLSSettingError(f"{name}: {path} is not a readable PEM CA bundle ({type(exc).__name__})") from None
    return path


def iris_verify(value: Any, name: str = "IRIS_VERIFY_SSL") -> Verify:
    """``IRIS_VERIFY_SSL`` (or ``iris.verify_ssl``) → True, False or a CA bundle path; unset/empty is True."""
    if value is None or isinstance(value, bool):
        return True if value is None else value
    text = str(value).strip()
    if not text or text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    if os.path.exists(os.path.expanduser(text)) or _looks_like_path(text):
        return ca_bundle(name, text)
    raise TLSSettingError(f"{name}={_shown(text)} is neither a yes/no word (true, false, yes, no, on, off, 1, 0) nor "
                          "the path of "
                          "a CA bundle")


def opencti_verify(value: Any) -> Verify:
    """What pycti hands to ``requests`` for ``OPENCTI_SSL_VERIFY`` read as pycti reads it (``None``: unset).

    Unset means True because both connectors default ``opencti.ssl_verify`` to true; an empty environment
    variable means False because pycti then falls back to its own default, which is off.
    """
    name = "OPENCTI_SSL_VERIFY"
    if value is None or isinstance(value, bool):
        return True if value is None else value
    if not isinstance(value, str):
        raise TLSSettingError(f"{name}={_shown(str(value))} is neither true nor false nor a CA bundle path")
    if value == "":
        return False
    if value in PYCTI_TRUE:
        return True
    if value in PYCTI_FALSE:
        return False
    if value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        raise TLSSettingError(f"{name}={_shown(value)}: pycti understands only yes/true/True and no/false/False, and "
                              "would take "
                              "this for a CA bundle path")
    if os.path.exists(value) or _looks_like_path(value):
        return ca_bundle(name, value)
    raise TLSSettingError(f"{name}={_shown(value)} is neither true nor false nor the path of a CA bundle")


def describe(verify: Verify) -> str:
    """``on``, ``off`` or ``on (CA bundle /path)``, for ``doctor``'s TLS line."""
    if verify is True:
        return "on"
    if verify is False:
        return "off"
    return f"on (CA bundle {verify})"


def ssl_context(verify: Verify) -> ssl.SSLContext:
    """The ``urllib`` context matching a ``requests`` ``verify=`` value."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()
