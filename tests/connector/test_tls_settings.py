"""TLS verification settings: ``IRIS_VERIFY_SSL`` (bool or CA bundle) and ``OPENCTI_SSL_VERIFY`` (on by default).

The IRIS side is checked against the IRIS API test server serving HTTPS with a certificate of a throw-away CA;
the OpenCTI side by building the real connectors against the OpenCTI simulator and reading what their pycti
API client will pass to ``requests``.
"""

import logging
import os
import subprocess
import sys
import uuid

import certifi
import pytest

from iris_opencti_connector.iris_client import IrisClient, IrisError
from iris_opencti_connector.settings import ConfigError, IrisSettings, prepare_config
from iris_opencti_module.tools.doctor import check_tls, run
from tests.connector.harness import ROOT, import_env
from tests.iris_api import IrisApiServer
from tests.opencti_sim import OpenCTISimulator

KEY = "key-" + uuid.uuid4().hex
TOKEN = "tok-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    """A CA, and a certificate for 127.0.0.1 it signed (what an IRIS behind a private CA looks like)."""
    d = tmp_path_factory.mktemp("ca")

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=iris-opencti test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    (d / "not-a-ca.pem").write_text("hello\n")
    return d


@pytest.fixture(scope="module")
def https_iris(ca):
    server = IrisApiServer(mode="2.4", api_keys={KEY: {"id": 7, "user_name": "sync"}},
                           tls=(str(ca / "server.pem"), str(ca / "server.key")))
    server.start()
    yield server
    server.stop()


def iris_settings(monkeypatch, value):
    monkeypatch.setenv("IRIS_VERIFY_SSL", value)
    return IrisSettings.from_config({})


# --------------------------------------------------------------------------------------------- IRIS_VERIFY_SSL
def test_ca_bundle_path_is_kept_and_verifies_iris(monkeypatch, ca, https_iris):
    # containers often set REQUESTS_CA_BUNDLE, which requests lets override a Session's verify: it must not
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    settings = iris_settings(monkeypatch, str(ca / "ca.pem"))
    assert settings.verify_ssl == str(ca / "ca.pem")  # not False, as any non-true word used to give
    client = IrisClient(https_iris.url, KEY, settings.verify_ssl, retries=0)
    assert client.versions()["iris_current"] == "v2.4.20"
    # the same server is refused with the system's CAs: verification really happens
    with pytest.raises(IrisError, match="unreachable"):
        IrisClient(https_iris.url, KEY, True, retries=0).versions()


@pytest.mark.parametrize("value, expected", [("true", True), ("yes", True), ("1", True), ("on", True),
                                             ("", True), ("false", False), ("No", False), ("0", False),
                                             ("off", False)])
def test_yes_no_words(monkeypatch, value, expected):
    assert iris_settings(monkeypatch, value).verify_ssl is expected


def test_unset_means_verify(monkeypatch):
    monkeypatch.delenv("IRIS_VERIFY_SSL", raising=False)
    assert IrisSettings.from_config({}).verify_ssl is True
    assert IrisSettings.from_config({"iris": {"verify_ssl": False}}).verify_ssl is False


def test_unrecognised_value_is_refused_naming_the_setting(monkeypatch):
    with pytest.raises(ConfigError, match=r"^IRIS_VERIFY_SSL='maybe' is neither a yes/no word"):
        iris_settings(monkeypatch, "maybe")


def test_missing_or_bad_ca_bundle_is_refused_naming_the_path(monkeypatch, ca, tmp_path):
    missing = str(tmp_path / "nowhere" / "ca.pem")
    with pytest.raises(ConfigError, match=f"IRIS_VERIFY_SSL: CA bundle {missing} does not exist"):
        iris_settings(monkeypatch, missing)
    with pytest.raises(ConfigError, match="not-a-ca.pem is not a readable PEM CA bundle"):
        iris_settings(monkeypatch, str(ca / "not-a-ca.pem"))
    assert iris_settings(monkeypatch, str(ca)).verify_ssl == str(ca)  # a directory of CAs, as requests takes


@pytest.mark.parametrize("module", ["importer.connector", "enrichment.connector"])
def test_connectors_stop_at_start_with_one_line(tmp_path, module):
    env = dict(os.environ, PYTHONPATH=ROOT, **import_env("http://127.0.0.1:9", TOKEN, "q-" + uuid.uuid4().hex[:6],
                                                        str(tmp_path), IRIS_API_KEY=KEY, IRIS_VERIFY_SSL="maybe"))
    env.pop("OPENCTI_SSL_VERIFY", None)
    proc = subprocess.run([sys.executable, "-m", "iris_opencti_connector." + module], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "IRIS_VERIFY_SSL='maybe'" in lines[0] and KEY not in proc.stderr and TOKEN not in proc.stderr


def test_doctor_verifies_iris_with_the_ca_bundle(ca, https_iris):
    lines = []
    env = {"IRIS_URL": https_iris.url, "IRIS_API_KEY": KEY, "IRIS_VERIFY_SSL": str(ca / "ca.pem"),
           "IRIS_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F", "OPENCTI_URL": "", "OPENCTI_TOKEN": ""}
    run(env, lines.append)
    iris_line = next(line for line in lines if "IRIS " in line[:10])
    assert iris_line.startswith("ok   IRIS") and "not verified" not in iris_line
    tls_line = next(line for line in lines if line[5:8] == "TLS")
    assert tls_line == "ok   TLS       certificate verification on (CA bundle %s) for IRIS, on for OpenCTI" \
        % (ca / "ca.pem")
    refused = []
    run(dict(env, IRIS_VERIFY_SSL="maybe"), refused.append)
    assert any(line.startswith("FAIL TLS") and "IRIS_VERIFY_SSL='maybe'" in line for line in refused)


# ------------------------------------------------------------------------------------------ OPENCTI_SSL_VERIFY
@pytest.fixture
def sim():
    simulator = OpenCTISimulator(token=TOKEN, amqp_url=None)
    simulator.start()
    yield simulator
    simulator.stop()


def build(kind, monkeypatch, tmp_path, sim, **extra):
    """A connector built the way its entry point builds it: environment only, no config.yml."""
    env = import_env(sim.url, TOKEN, "q-" + uuid.uuid4().hex[:6], str(tmp_path), IRIS_API_KEY=KEY,
                     CONNECTOR_QUEUE_PROTOCOL="api", **extra)
    if kind == "enrich":
        env.pop("CONNECTOR_SCOPE")
        env["CONNECTOR_NAME"] = "DFIR-IRIS enrichment"
    monkeypatch.delenv("OPENCTI_SSL_VERIFY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONNECTOR_CONFIG", str(tmp_path / "absent-config.yml"))
    monkeypatch.chdir(tmp_path)
    if kind == "enrich":
        from iris_opencti_connector.enrichment.connector import EnrichConnector

        return EnrichConnector()
    from iris_opencti_connector.importer.connector import ImportConnector

    return ImportConnector()


def doctor_tls(value=None):
    env = {} if value is None else {"OPENCTI_SSL_VERIFY": value}
    return check_tls(env)[0]


@pytest.mark.parametrize("kind", ["import", "enrich"])
def test_opencti_certificate_checked_by_default_and_doctor_agrees(kind, monkeypatch, tmp_path, sim):
    connector = build(kind, monkeypatch, tmp_path, sim)
    try:
        assert connector.helper.api.ssl_verify is True
        assert connector.helper.api_impersonate.ssl_verify is True
    finally:
        connector.helper.stop()
    check = doctor_tls()
    assert check.ok and check.detail == "certificate verification on for IRIS and OpenCTI"


@pytest.mark.parametrize("kind", ["import", "enrich"])
def test_opencti_verification_off_only_when_asked_and_doctor_says_so(kind, monkeypatch, tmp_path, sim):
    connector = build(kind, monkeypatch, tmp_path, sim, OPENCTI_SSL_VERIFY="false")
    try:
        assert connector.helper.api.ssl_verify is False
    finally:
        connector.helper.stop()
    check = doctor_tls("false")
    assert not check.ok and "off for OpenCTI" in check.detail and "OPENCTI_SSL_VERIFY='false'" in check.detail
    # pycti's own default when the variable is present but empty is off: doctor must not call that "on"
    assert "off for OpenCTI" in doctor_tls("").detail


def test_opencti_config_file_value_still_wins(monkeypatch):
    monkeypatch.delenv("OPENCTI_SSL_VERIFY", raising=False)
    assert prepare_config({"opencti": {"ssl_verify": False}})["opencti"]["ssl_verify"] is False
    assert prepare_config({"opencti": None})["opencti"]["ssl_verify"] is True


@pytest.mark.parametrize("value", ["1", "off", "TRUE"])
def test_opencti_values_pycti_would_take_for_a_path_are_refused(value, monkeypatch, tmp_path, sim):
    """pycti knows only yes/true/True and no/false/False: "1" would reach requests as a CA path."""
    with pytest.raises(ConfigError, match=f"OPENCTI_SSL_VERIFY='{value}'"):
        build("enrich", monkeypatch, tmp_path, sim, OPENCTI_SSL_VERIFY=value)
    with pytest.raises(ConfigError, match=f"OPENCTI_SSL_VERIFY='{value}'"):
        prepare_config({})
    check = doctor_tls(value)
    assert not check.ok and f"OPENCTI_SSL_VERIFY='{value}'" in check.detail


def test_opencti_ca_bundle(monkeypatch, tmp_path, sim, ca):
    connector = build("enrich", monkeypatch, tmp_path, sim, OPENCTI_SSL_VERIFY=str(ca / "ca.pem"))
    try:
        assert connector.helper.api.ssl_verify == str(ca / "ca.pem")
    finally:
        connector.helper.stop()
    assert doctor_tls(str(ca / "ca.pem")).detail == ("certificate verification on for IRIS, on (CA bundle %s) "
                                                     "for OpenCTI" % (ca / "ca.pem"))
    missing = doctor_tls(str(tmp_path / "gone.pem"))
    assert not missing.ok and "CA bundle %s does not exist" % (tmp_path / "gone.pem") in missing.detail


@pytest.mark.parametrize("value, expected", [(None, True), ("false", False), ("CA", "CA")])
def test_archive_replay_verifies_as_the_connectors_do(value, expected, monkeypatch, ca):
    """``iris-opencti-archive replay`` builds its own pycti client: same reading of OPENCTI_SSL_VERIFY."""
    import pycti

    from iris_opencti_connector.store import archive_cli

    seen = {}
    monkeypatch.setattr(pycti, "OpenCTIApiClient", lambda *a, **kw: seen.update(kw))
    monkeypatch.setenv("OPENCTI_URL", "https://opencti.example")
    monkeypatch.setenv("OPENCTI_TOKEN", TOKEN)
    if value is None:
        monkeypatch.delenv("OPENCTI_SSL_VERIFY", raising=False)
    else:
        monkeypatch.setenv("OPENCTI_SSL_VERIFY", str(ca / "ca.pem") if value == "CA" else value)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        archive_cli._opencti_sender({"sent": 0, "rejected": 0})
    finally:  # the sender installs its one-line log handler on the root logger
        root.handlers[:] = handlers
        root.setLevel(level)
    assert seen["ssl_verify"] == (str(ca / "ca.pem") if expected == "CA" else expected)


def test_doctor_says_when_a_url_is_plain_http():
    """Seen on a real IRIS served over http://: the line said verification was on, which meant nothing."""
    plain = check_tls({"IRIS_URL": "http://127.0.0.1:8024", "OPENCTI_URL": "https://opencti.example"})[0]
    assert plain.ok and "no TLS to IRIS (plain http://" in plain.detail and "OpenCTI" not in plain.detail.split(";")[1]
    both = check_tls({"IRIS_URL": "HTTP://iris", "OPENCTI_URL": "http://opencti:8080"})[0]
    assert "no TLS to IRIS and OpenCTI" in both.detail
    assert check_tls({"IRIS_URL": "https://iris", "OPENCTI_URL": "https://opencti"})[0].detail == \
        "certificate verification on for IRIS and OpenCTI"
