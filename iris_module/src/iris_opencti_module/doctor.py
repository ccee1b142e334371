"""``iris-opencti doctor``: check a deployment end to end and say, one line each, what is wrong and how to fix it.

Checks IRIS's API (reachable, key accepted, version), RabbitMQ (reachable, credentials, the queue present and
consumed), OpenCTI (reachable, token accepted, version) and TLS (certificates verified unless the operator
turned that off). Standard library only, so it runs inside IRIS's images too. Secrets are never printed.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from .publisher import mask_url


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = "%s %-9s %s" % (mark, self.name, self.detail)
        return text + ("  -> fix: " + self.fix if self.fix and not self.ok else "")


def _http(url: str, *, token: Optional[str] = None, body: Optional[Dict[str, Any]] = None, verify: bool = True,
          timeout: float = 10.0) -> Tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, None


def _network_problem(exc: BaseException, what: str, url: str) -> Tuple[str, str]:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(reason):
        return ("TLS certificate of %s not trusted (%s)" % (url, getattr(reason, "verify_message", reason)),
                "install the CA that signed %s's certificate (e.g. REQUESTS_CA_BUNDLE / system store); only for "
                "tests, turn verification off explicitly" % what)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "%s at %s timed out" % (what, url), "check the host/port and any firewall between the two"
    return ("%s unreachable at %s (%s)" % (what, url, reason),
            "check the URL, that %s runs, and DNS/ports from this host" % what)


def check_iris(url: str, key: Optional[str], verify: bool = True) -> Check:
    if not url:
        return Check("IRIS", False, "no IRIS URL configured", "set IRIS_URL (e.g. https://iris.example)")
    if not key:
        return Check("IRIS", False, "no API key configured", "set IRIS_API_KEY (My settings > API key in IRIS)")
    try:
        status, body = _http(url.rstrip("/") + "/api/versions", token=key, verify=verify)
    except (urllib.error.URLError, OSError) as exc:
        detail, fix = _network_problem(exc, "IRIS", url)
        return Check("IRIS", False, detail, fix)
    if status in (401, 403):
        return Check("IRIS", False, "IRIS refused the API key (HTTP %d)" % status,
                     "copy the key of the sync user from IRIS (My settings > API key) into IRIS_API_KEY")
    if status != 200 or not isinstance(body, dict):
        return Check("IRIS", False, "IRIS answered HTTP %d on /api/versions" % status,
                     "check that IRIS_URL points at IRIS itself (not a proxy error page)")
    data = body.get("data") or {}
    version = data.get("iris_current", "?")
    tls = "" if url.startswith("https://") and verify else (" (TLS not verified)" if url.startswith("https")
                                                             else " (plain HTTP)")
    return Check("IRIS", True, "%s reachable, key accepted, IRIS %s%s" % (url, version, tls))


def check_rabbitmq(amqp_url: str, queue: str, connect: Optional[Callable[[str], Any]] = None) -> Check:
    shown = mask_url(amqp_url)
    try:
        import pika

        connection = (connect or (lambda u: pika.BlockingConnection(pika.URLParameters(u))))(amqp_url)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
        name = type(exc).__name__
        if "Credentials" in name or "ProbableAuthentication" in name or "ACCESS_REFUSED" in str(exc):
            return Check("RabbitMQ", False, "%s refused the credentials" % shown,
                         "fix the user/password in the AMQP URL (IRIS module 'RabbitMQ URL', IRIS_AMQP_URL)")
        return Check("RabbitMQ", False, "%s unreachable (%s)" % (shown, name),
                     "check host, port (5672, or 5671 with amqps://), vhost and that RabbitMQ runs")
    try:
        channel = connection.channel()
        try:
            result = channel.queue_declare(queue=queue, durable=True, passive=True)
        except Exception:  # noqa: BLE001 - a missing queue closes the channel
            return Check("RabbitMQ", False, "%s reachable, but queue %r does not exist" % (shown, queue),
                         "start iris-opencti-import once (it declares the queue) or check IRIS_QUEUE on both sides")
        consumers = result.method.consumer_count
        waiting = result.method.message_count
        if not consumers:
            return Check("RabbitMQ", False, "queue %r has %d messages and no consumer" % (queue, waiting),
                         "start iris-opencti-import (docker compose up -d iris-opencti-import)")
        return Check("RabbitMQ", True, "%s reachable, queue %r: %d waiting, %d consumer(s)"
                     % (shown, queue, waiting, consumers))
    finally:
        try:
            connection.close()
        except Exception:  # noqa: BLE001
            pass


def check_opencti(url: str, token: Optional[str], verify: bool = True) -> Check:
    if not url:
        return Check("OpenCTI", False, "no OpenCTI URL configured", "set OPENCTI_URL (e.g. http://opencti:8080)")
    if not token:
        return Check("OpenCTI", False, "no token configured", "set OPENCTI_TOKEN (the connector user's API token)")
    try:
        status, body = _http(url.rstrip("/") + "/graphql", token=token, verify=verify,
                             body={"query": "query IrisOpenCTIDoctor { about { version } me { name } }"})
    except (urllib.error.URLError, OSError) as exc:
        detail, fix = _network_problem(exc, "OpenCTI", url)
        return Check("OpenCTI", False, detail, fix)
    errors = (body or {}).get("errors") if isinstance(body, dict) else None
    if status in (401, 403) or (errors and any("auth" in json.dumps(e).lower() for e in errors)):
        return Check("OpenCTI", False, "OpenCTI refused the token", "copy the token from OpenCTI (Profile > API "
                     "access) of a user with the Connector role into OPENCTI_TOKEN")
    if status != 200 or not isinstance(body, dict) or not (body.get("data") or {}).get("about"):
        return Check("OpenCTI", False, "OpenCTI answered HTTP %d without its version" % status,
                     "check that OPENCTI_URL is the platform's base URL (the one serving /graphql)")
    version = body["data"]["about"].get("version")
    return Check("OpenCTI", True, "%s reachable, token accepted, OpenCTI %s" % (url, version))


def run(env: Optional[Dict[str, str]] = None, print_line: Callable[[str], None] = print) -> int:
    """All checks from the environment (the variables the connectors and ``push`` read); 0 when all pass."""
    env = dict(os.environ if env is None else env)

    def flag(name: str) -> bool:
        return env.get(name, "true").strip().lower() not in ("0", "false", "no", "off")

    checks: List[Check] = [
        check_iris(env.get("IRIS_URL", ""), env.get("IRIS_API_KEY"), flag("IRIS_VERIFY_SSL")),
        check_rabbitmq(env.get("IRIS_AMQP_URL", "amqp://guest:guest@localhost:5672/%2F"),
                       env.get("IRIS_QUEUE", "iris-opencti")),
        check_opencti(env.get("OPENCTI_URL", ""), env.get("OPENCTI_TOKEN"), flag("OPENCTI_SSL_VERIFY")),
    ]
    if not flag("IRIS_VERIFY_SSL") or not flag("OPENCTI_SSL_VERIFY"):
        checks.append(Check("TLS", False, "certificate verification is turned off",
                            "trust the servers' CA and remove IRIS_VERIFY_SSL=false / OPENCTI_SSL_VERIFY=false"))
    else:
        checks.append(Check("TLS", True, "certificate verification on for IRIS and OpenCTI"))
    for check in checks:
        print_line(check.line())
    failed = [c for c in checks if not c.ok]
    print_line("%d of %d checks failed" % (len(failed), len(checks)) if failed else "all %d checks passed"
               % len(checks))
    return 1 if failed else 0
