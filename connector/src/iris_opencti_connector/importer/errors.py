"""How the import connector classes what goes wrong: the message (poison), a service (transient), or the
ledger for too long (outage: the process exits so that its supervisor restarts it)."""

from __future__ import annotations

import sqlite3
from typing import Tuple, Type

from iris_opencti_connector.store.ledger import LedgerUnavailable


def _ledger_errors() -> Tuple[Type[BaseException], ...]:
    """The database errors a ledger read can raise (psycopg2 is only installed for shared ledgers)."""
    try:
        import psycopg2
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg2.Error)


LEDGER_ERRORS = _ledger_errors()


class PoisonMessage(Exception):
    """A message that no retry can fix: it goes to the dead-letter queue."""


class Transient(Exception):
    """OpenCTI, RabbitMQ or the ledger failed: the same message will work later."""


class LedgerOutage(Exception):
    """The ledger stayed unreachable longer than ``IRIS_LEDGER_OUTAGE_TIMEOUT``: the connector exits
    non-zero (nothing unwritten is acknowledged) so that its supervisor restarts it."""


EXIT_LEDGER_OUTAGE = 3
#: errors of the message's content wherever they surface, even inside a call to a service (see _io)
CONTENT_ERRORS = (TypeError, KeyError, AttributeError, RecursionError, UnicodeError)


def outage_reason(exc: LedgerUnavailable, bound: float) -> str:
    return (f"ledger unreachable for {exc.down_for:.0f} s, longer than IRIS_LEDGER_OUTAGE_TIMEOUT ({bound:g} s): "
            "stopping so that a "
            f"supervisor restarts the connector; unacknowledged messages stay queued ({exc})")
