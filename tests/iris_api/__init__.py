"""A stand-in IRIS REST API (2.4.20 or the 2.5 development branch) for the connector's tests.

Real IRIS needs PostgreSQL, RabbitMQ and a Celery worker; the enrichment write-back and the reconcile only
talk to its REST API, so this package answers the routes they use with IRIS's real payloads, status codes and
quirks (read from iris-web's source; each module names the files it follows), seeded from real case exports.

In-process::

    server = IrisApiServer(mode="2.4", api_keys={"k": {"id": 3, "user_name": "sync"}}, seed=[export_data])
    url = server.start()                   # http://127.0.0.1:<port>; server.stop() at the end
    server.iocs(case_id) / server.ioc(ioc_id) / server.case(case_id) / server.cases() / server.export(case_id)
    server.add_case(...) / server.add_ioc(case_id, value, type, ...) / server.edit_ioc(id, **fields)
    server.link_ioc(id, case_id) / server.delete_ioc(id, case_id) / server.delete_case(case_id) / server.seed(export)
    server.add_api_key(key, {"id": 4, "user_name": "viewer", "access": "read"}) / server.remove_api_key(key)
        (user fields: access "full"|"read"|"none", case_access {cid: level}, standard_user, active, administrator)
    server.requests / server.requests_to("POST", "/case/ioc/update") / server.clear_requests()
    server.fail_next(n, status, match) / server.fail_for(seconds, status, match) / server.delay(seconds, match)
    server.down(seconds=None) / server.up() / server.is_up / server.wait_for(predicate, timeout) / server.reset()

As a process: ``python -m tests.iris_api --mode 2.5 --port 0 --key K --seed tests/data/case_export_2_5.json``
prints the URL once it accepts requests, then serves the same through ``/_test/`` (see :mod:`control`).

Modules: :mod:`server` (``IrisApiServer``, HTTP, log, faults, down/up), :mod:`routes` (URL rules),
:mod:`legacy_routes` (2.4 API), :mod:`v2_routes` (2.5 v2 API), :mod:`views` (payload shapes),
:mod:`state` (cases and IOCs), :mod:`updates` (update validation), :mod:`auth` (keys, access),
:mod:`responses` (envelopes, error pages), :mod:`catalog` (versions, TLPs, IOC types), :mod:`faults`,
:mod:`control` (``/_test/`` API), ``__main__``.
"""

from .auth import ApiUser
from .catalog import DEFAULT_TLPS, VERSIONS
from .server import DEFAULT_API_KEY, IrisApiServer
from .updates import IOC_TAGS_MAX

__all__ = ["DEFAULT_API_KEY", "DEFAULT_TLPS", "IOC_TAGS_MAX", "VERSIONS", "ApiUser", "IrisApiServer"]
