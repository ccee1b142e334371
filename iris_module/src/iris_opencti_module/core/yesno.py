"""Yes/no settings as every part of the bridge reads them: IRIS's module form, config.yml, environment variables.

IRIS hands booleans back as bools or strings depending on the version and on whether the form was ever saved;
environment variables are always strings. One set of words for all of them, so ``IRIS_CREATE_INDICATORS=y``
means the same to the module and to the connectors.
"""

from __future__ import annotations

from typing import Any

TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n"})


def is_yes(value: Any, default: bool = False) -> bool:
    """``value`` as a bool: a bool or number as is, a yes-word as True, unset or empty as ``default``,
    anything else as False."""
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        return bool(value)
    return str(value).strip().lower() in TRUE_WORDS
