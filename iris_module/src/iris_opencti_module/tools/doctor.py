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
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from iris_opencti_module.core.case_records import parse_records
from iris_opencti_module.core.conversion import FIELDS, differences
from iris_opencti_module.core.convert import Converter, ConverterConfig
from iris_opencti_module.core.defaults import DEFAULT_AMQP_URL, DEFAULT_QUEUE
from iris_opencti_module.core.masking import mask_url
from iris_opencti_module.core.tls import TLSSettingError, Verify, iris_verify, opencti_verify, ssl_context
from iris_opencti_module.core.tls import describe as describe_tls
from iris_opencti_module.core.yesno import is_yes
from iris_opencti_module.IrisOpenCTIConfig import MODULE_NAME, ConfigError, settings_from_conf


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


def _http(url: str, *, token: Optional[str] = None, body: Optional[Dict[str, Any]] = None, verify: Verify = True,
          timeout: float = 10.0) -> Tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    context = ssl_context(verify)
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
        return ("TLS certificate of {} not trusted ({})".format(url, getattr(reason, "verify_message", reason)),
                f"install the CA that signed {what}'s certificate (e.g. REQUESTS_CA_BUNDLE / system store); only for "
                "tests, turn verification off explicitly")
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"{what} at {url} timed out", "check the host/port and any firewall between the two"
    return (f"{what} unreachable at {url} ({reason})",
            f"check the URL, that {what} runs, and DNS/ports from this host")


def check_iris(url: str, key: Optional[str], verify: Verify = True) -> Check:
    if not url:
        return Check("IRIS", False, "no IRIS URL configured", "set IRIS_URL (e.g. https://iris.example)")
    if not key:
        return Check("IRIS", False, "no API key configured",
                     f"set IRIS_API_KEY to the sync user's API key ({KEY_WHERE})")
    try:
        status, body = _http(url.rstrip("/") + "/api/versions", token=key, verify=verify)
    except (urllib.error.URLError, OSError) as exc:
        detail, fix = _network_problem(exc, "IRIS", url)
        return Check("IRIS", False, detail, fix)
    if status in (401, 403):
        return Check("IRIS", False, "IRIS refused the API key (HTTP %d)" % status,
                     f"copy the sync user's API key into IRIS_API_KEY ({KEY_WHERE})")
    if status != 200 or not isinstance(body, dict):
        return Check("IRIS", False, "IRIS answered HTTP %d on /api/versions" % status,
                     "check that IRIS_URL points at IRIS itself (not a proxy error page)")
    data = body.get("data") or {}
    version = data.get("iris_current", "?")
    if not url.startswith("https://"):
        tls = " (plain HTTP)"
    else:
        tls = " (TLS not verified)" if verify is False else ""
    return Check("IRIS", True, f"{url} reachable, key accepted, IRIS {version}{tls}")


def check_rabbitmq(amqp_url: str, queue: str, connect: Optional[Callable[[str], Any]] = None) -> Check:
    shown = mask_url(amqp_url)
    try:
        import pika

        connection = (connect or (lambda u: pika.BlockingConnection(pika.URLParameters(u))))(amqp_url)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
        name = type(exc).__name__
        if "Credentials" in name or "ProbableAuthentication" in name or "ACCESS_REFUSED" in str(exc):
            return Check("RabbitMQ", False, f"{shown} refused the credentials",
                         "fix the user/password in the AMQP URL (IRIS module 'RabbitMQ URL', IRIS_AMQP_URL)")
        return Check("RabbitMQ", False, f"{shown} unreachable ({name})",
                     "check host, port (5672, or 5671 with amqps://), vhost and that RabbitMQ runs")
    try:
        channel = connection.channel()
        try:
            result = channel.queue_declare(queue=queue, durable=True, passive=True)
        except Exception:  # noqa: BLE001 - a missing queue closes the channel
            return Check("RabbitMQ", False, f"{shown} reachable, but queue {queue!r} does not exist",
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


def check_opencti(url: str, token: Optional[str], verify: Verify = True) -> Check:
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
    return Check("OpenCTI", True, f"{url} reachable, token accepted, OpenCTI {version}")


CONFIDENCE_QUERY = "query IrisOpenCTIDoctorConfidence { me { effective_confidence_level { max_confidence } } }"


def check_confidence(url: str, token: Optional[str], verify: Verify, wanted: str) -> Check:
    """The connector user's max confidence level against ``IRIS_CONFIDENCE``.

    OpenCTI caps what a user writes at its level and updates an object only when that level reaches the
    object's confidence (``src/utils/confidence-level.ts``); a user with no level at all cannot create anything,
    and OpenCTI's workers retry its objects for ever.
    """
    try:
        level = int(str(wanted).strip())
    except ValueError:
        return Check("Confidence", False, f"IRIS_CONFIDENCE={wanted!r} is not a whole number",
                     "set IRIS_CONFIDENCE to a number from 0 to 100 (default 75), as the module's Confidence")
    try:
        status, body = _http(url.rstrip("/") + "/graphql", token=token, verify=verify,
                             body={"query": CONFIDENCE_QUERY})
    except (urllib.error.URLError, OSError) as exc:
        return Check("Confidence", False, _network_problem(exc, "OpenCTI", url)[0])
    me = ((body or {}).get("data") or {}).get("me") if isinstance(body, dict) else None
    if status != 200 or not isinstance(me, dict) or "effective_confidence_level" not in me:
        return Check("Confidence", True, "the connector user's max confidence level could not be read (OpenCTI "
                     "older than 6?): make sure it is at least IRIS_CONFIDENCE=%d" % level)
    effective = me.get("effective_confidence_level") or {}
    have = effective.get("max_confidence")
    fix = ("give the connector user's group a max confidence level of at least %d (Settings > Security > Groups)"
           % level)
    if have is None:
        return Check("Confidence", False, "the connector user has no max confidence level: OpenCTI refuses "
                     "everything it sends", fix)
    if have < level:
        return Check("Confidence", False, "the connector user's max confidence is %d, below IRIS_CONFIDENCE=%d: "
                     "objects arrive at %d and IRIS's updates stop on anything held above it" % (have, level, have),
                     fix)
    return Check("Confidence", True, "the connector user's max confidence %d covers IRIS_CONFIDENCE=%d"
                 % (have, level))


#: where an IRIS administrator finds another user's API key: a service account cannot log in to "My settings"
KEY_WHERE = ("Advanced > Access control > Users > the user; IRIS shows a new user's key once, when it is created, "
             "and 'Renew API key' there gives a new one")


def check_tls(env: Dict[str, str]) -> Tuple[Check, Verify, Verify]:
    """The TLS line, from what the connectors will really do, and the ``verify`` values the other checks use.

    ``IRIS_VERIFY_SSL`` as the connectors parse it; ``OPENCTI_SSL_VERIFY`` as pycti parses it (unset: on, the
    connectors' default; empty: off, pycti's). A value the connectors would refuse at start is a failure here
    too, and the other checks then verify certificates (never less than the connectors would).
    """
    verifies: Dict[str, Verify] = {}
    errors: List[str] = []
    for name, parse in (("IRIS_VERIFY_SSL", iris_verify), ("OPENCTI_SSL_VERIFY", opencti_verify)):
        try:
            verifies[name] = parse(env.get(name))
        except TLSSettingError as exc:
            verifies[name] = True
            errors.append(str(exc))
    iris, opencti = verifies["IRIS_VERIFY_SSL"], verifies["OPENCTI_SSL_VERIFY"]
    if errors:
        check = Check("TLS", False, "; ".join(errors), "set it to true, false or the path of a PEM CA bundle "
                      "(the connectors refuse to start with this value)")
    elif iris is False or opencti is False:
        off = [n for n, v in (("IRIS", iris), ("OpenCTI", opencti)) if v is False]
        names = [n for n, v in verifies.items() if v is False]
        settings = ", ".join(f"{n}={env.get(n, '')!r}" for n in names)
        check = Check("TLS", False, f"certificate verification is off for {' and '.join(off)} ({settings})",
                      "trust the servers' CA (or point the setting at a CA bundle) and set "
                      "{}=true".format(" / ".join(names)))
    elif iris is True and opencti is True:
        check = Check("TLS", True, "certificate verification on for IRIS and OpenCTI")
    else:
        check = Check("TLS", True, f"certificate verification {describe_tls(iris)} for IRIS, {describe_tls(opencti)} "
                                   "for OpenCTI")
    plain = [n for n, var in (("IRIS", "IRIS_URL"), ("OpenCTI", "OPENCTI_URL"))
             if str(env.get(var) or "").strip().lower().startswith("http://")]
    if plain and check.ok:  # verification "on" means nothing without TLS: say so rather than reassure
        check = Check("TLS", True, "{}; no TLS to {} (plain http://: nothing to verify, keys cross the network "
                      "in clear)".format(check.detail, " and ".join(plain)))
    return check, iris, opencti


def connector_converter(env: Dict[str, str]) -> Converter:
    """The converter the connectors build from the same ``IRIS_*`` variables (their ``iris:`` section), whose
    defaults are the converter's own."""
    base = ConverterConfig()
    records = parse_records(env.get("IRIS_RECORDS", ",".join(base.records)), "IRIS_RECORDS")
    return Converter(replace(
        base, iris_url=env.get("IRIS_URL", base.iris_url), author_name=env.get("IRIS_AUTHOR", base.author_name),
        default_tlp=env.get("IRIS_DEFAULT_TLP", base.default_tlp), max_tlp=env.get("IRIS_MAX_TLP", base.max_tlp),
        create_indicators=is_yes(env.get("IRIS_CREATE_INDICATORS"), base.create_indicators),
        mappings_path=env.get("IRIS_MAPPINGS") or None,
        confidence=int(env.get("IRIS_CONFIDENCE") or base.confidence), records=records,
        export_content=is_yes(env.get("IRIS_EXPORT_CONTENT"), base.export_content)))


def check_settings(url: str, key: Optional[str], verify: Verify, env: Dict[str, str]) -> Check:
    """The module (its parameters in IRIS, read through ``GET /manage/modules/list``) and the connectors (the
    ``IRIS_*`` variables here) must convert alike (``core.conversion``), or reconcile refuses their cases."""
    try:
        ours = connector_converter(env).conversion
    except (ValueError, OSError) as exc:
        return Check("Settings", False, f"the connectors' settings are refused: {exc}", "fix that IRIS_* variable")
    if not url or not key:
        return Check("Settings", True, "not compared (no IRIS URL or key)")
    try:
        status, body = _http(url.rstrip("/") + "/manage/modules/list", token=key, verify=verify)
    except (urllib.error.URLError, OSError) as exc:
        return Check("Settings", False, _network_problem(exc, "IRIS", url)[0])
    by_hand = ", ".join(variable for _, variable in FIELDS.values())
    if status in (401, 403):
        return Check("Settings", True, f"not compared: IRIS shows modules' parameters to administrators only; "
                                       f"check by hand that the module's parameters match {by_hand}")
    modules = body.get("data") if status == 200 and isinstance(body, dict) else None
    mine = [m for m in modules or [] if isinstance(m, dict) and m.get("module_human_name") == MODULE_NAME]
    if not mine:
        return Check("Settings", False, f"IRIS lists no module {MODULE_NAME!r} (HTTP {status})",
                     "add the module in IRIS (Advanced > Modules > Add module: iris_opencti_module)")
    try:
        module = settings_from_conf(mine[0].get("module_config") or [])
    except ConfigError as exc:
        return Check("Settings", False, f"the module's parameters in IRIS are refused: {exc}")
    unseen = module.mappings_path and not os.path.isfile(module.mappings_path)
    config = module.converter_config()
    theirs = Converter(replace(config, mappings_path=None) if unseen else config).conversion
    diffs = differences(ours, theirs, "connectors", "module")
    if unseen:  # the module's override file is in IRIS's containers, not here: its content cannot be compared
        diffs = [d for d in diffs if not d.startswith("mappings ")]
    if diffs:
        return Check("Settings", False, "the module and the connectors convert differently: " + "; ".join(diffs),
            "set both sides alike (the module's parameters in IRIS, the connectors' IRIS_* variables)")
    note = f" (the module's mapping file {module.mappings_path} is not on this host: not compared)" if unseen else ""
    return Check("Settings", True, f"the module and the connectors convert alike{note}")


def run(env: Optional[Dict[str, str]] = None, print_line: Callable[[str], None] = print) -> int:
    """All checks from the environment (the variables the connectors and ``push`` read); 0 when all pass."""
    env = dict(os.environ if env is None else env)
    tls, iris_tls, opencti_tls = check_tls(env)
    opencti = check_opencti(env.get("OPENCTI_URL", ""), env.get("OPENCTI_TOKEN"), opencti_tls)
    checks: List[Check] = [
        check_iris(env.get("IRIS_URL", ""), env.get("IRIS_API_KEY"), iris_tls),
        check_rabbitmq(env.get("IRIS_AMQP_URL", DEFAULT_AMQP_URL), env.get("IRIS_QUEUE", DEFAULT_QUEUE)),
        opencti,
    ]
    if opencti.ok:  # only once OpenCTI answers: one problem, one line
        checks.append(check_confidence(env["OPENCTI_URL"], env.get("OPENCTI_TOKEN"), opencti_tls,
                                       env.get("IRIS_CONFIDENCE", "75")))
    checks.append(check_settings(env.get("IRIS_URL", ""), env.get("IRIS_API_KEY"), iris_tls, env))
    checks.append(tls)
    for check in checks:
        print_line(check.line())
    failed = [c for c in checks if not c.ok]
    print_line("%d of %d checks failed" % (len(failed), len(checks)) if failed else "all %d checks passed"
               % len(checks))
    return 1 if failed else 0
