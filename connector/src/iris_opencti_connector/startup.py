"""Start-up of both connectors: everything that cannot work stops them at once, in one line.

pycti's helper replaces ``sys.excepthook`` with a hook that sends SIGTERM to the process and prints nothing
(``killProgramHook`` in ``pycti/connector/opencti_connector_helper.py``), so an exception raised while a
connector starts ends it without a trace, or leaves it registered but consuming nothing. The stores are
therefore opened *before* the helper, and ``main`` turns any start-up failure into one line on stderr and a
non-zero exit status that a supervisor sees.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable, TypeVar

from iris_opencti_connector.settings import ConfigError
from iris_opencti_connector.store.archive import Archive
from iris_opencti_connector.store.ledger import Ledger, LedgerUnavailable, sqlite_path
from iris_opencti_module.core.gc_tuning import tune_for_bulk
from iris_opencti_module.core.masking import mask_url

T = TypeVar("T")


def open_ledger(url: str, outage_timeout: float = 0.0) -> Ledger:
    """The ledger, its directory created when missing (the default is relative to the working directory).

    A PostgreSQL ledger that stays unreachable for ``outage_timeout`` raises :class:`LedgerUnavailable` (an
    outage, for the caller to report); anything else that fails is a setting to fix.
    """
    path = sqlite_path(url)
    where = os.path.abspath(path) if path and path != ":memory:" else mask_url(url)
    try:
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return Ledger(url, outage_timeout=outage_timeout)
    except LedgerUnavailable:
        raise
    except Exception as exc:  # whatever the driver raises, the setting is what to fix
        raise ConfigError(f"IRIS_LEDGER: cannot open the ledger at {where}: {_reason(exc)}") from exc


def open_archive(path: str, retention_days: int) -> Archive:
    """The audit archive, its directory created when missing and checked writable."""
    where = os.path.abspath(path)
    try:
        archive = Archive(path, retention_days)
        probe = os.path.join(where, ".write-check")
        with open(probe, "w", encoding="utf-8") as handle:
            handle.write("ok")
        os.unlink(probe)
        return archive
    except OSError as exc:
        raise ConfigError(f"IRIS_ARCHIVE_DIR: cannot write the archive at {where}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def run_main(program: str, body: Callable[[], int]) -> int:
    """Run a connector's ``main``: a start-up failure is one line on stderr and exit status 2 (settings) or 1."""
    tune_for_bulk()
    try:
        return body()
    except ConfigError as exc:
        print(f"{program}: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - pycti's excepthook would end the process silently
        traceback.print_exc(file=sys.stderr)
        print(f"{program}: cannot start: {type(exc).__name__}: {_reason(exc)}", file=sys.stderr)
        return 1


def stop_helper(helper: Any) -> None:
    """Stop pycti's threads (queue listener, ping) without unregistering the connector from OpenCTI.

    pycti 7.261026.0's ``OpenCTIConnectorHelper.stop()`` ends with ``api.connector.unregister`` (OpenCTI's
    ``deleteConnector``). Every process sharing the connector id - a replica, ``iris-opencti-import reconcile``,
    the old process of a restart - would delete the registration the running ones use: seen on a real run, the
    running connector then failed every ping and every work with "No connector found with the specified ID".
    A stopped connector shows as inactive on OpenCTI's connectors page and keeps its works; deleting it is an
    administrator's choice.
    """
    for name in ("listen_queue", "ping"):
        thread = getattr(helper, name, None)
        if thread is not None:
            try:
                thread.stop()
            except Exception:  # noqa: BLE001 - stopping; nothing left to save
                pass
