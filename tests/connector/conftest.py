"""Fixtures for the connector tests: ledgers on SQLite and on this machine's real PostgreSQL."""

import os
import uuid

import pytest

from iris_opencti_connector.ledger import Ledger

PG_ADMIN = os.environ.get("IRIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url():
    """A throw-away database on the real PostgreSQL (created and dropped by the test)."""
    import psycopg2

    name = "iris_opencti_%s" % uuid.uuid4().hex[:10]
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE %s" % name)
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        led = Ledger("sqlite:///" + str(tmp_path / "ledger.sqlite"))
    else:
        led = Ledger(request.getfixturevalue("pg_url"))
    yield led
    led.close()
