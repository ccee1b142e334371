"""An OpenCTI stand-in that the real pycti ``OpenCTIConnectorHelper`` / ``OpenCTIApiClient`` run against.

OpenCTI itself cannot run in the test environment; this package answers the GraphQL operations pycti
really sends (parsed and projected onto the exact selection set, so response shapes are the ones pycti
reads), declares and consumes the connector queues on the real RabbitMQ like the platform and its worker,
and stores STIX objects with OpenCTI's upsert/delete semantics.  Tests then assert on what the platform
would hold, and inject failures and latency.

In-process::

    sim = OpenCTISimulator(token="t", amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F")  # amqp_url=None: no broker
    url = sim.start()                      # give url/token to OpenCTIConnectorHelper; sim.stop() at the end
    sim.store / sim.objects_of_type("case-incident") / sim.meta(id) / sim.events / sim.ops / sim.ops_named(n)
    sim.works / sim.work(id) / sim.connectors / sim.connector_state(cid)
    sim.wait_for(predicate, timeout) / sim.wait_for_work(work_id)
    sim.fail_next(n, status, match) / sim.fail_for(seconds, status, match) / sim.delay(seconds, match)
    sim.reset_faults() / sim.reset(...) / sim.ingest_bundle(...) / sim.delete(id)
    sim.request_enrichment(connector_id, entity_id) / sim.reset_connector_state(cid, state)

Strict mode (``workers=3``, see :mod:`strict`): several workers take the push-queue messages out of order
and retry missing references as pycti does; the connector and end-to-end tests run in it
(``strict_options()``, ``OPENCTI_SIM_WORKERS=0`` to run them in queue order instead).

As a process: ``python -m tests.opencti_sim --port 0 --token T`` prints the URL, then serves the same
through the ``/_sim/`` control API (see :mod:`control`).

Modules: :mod:`server` (``OpenCTISimulator``, HTTP), :mod:`graphql_parser` / :mod:`graphql_exec`
(GraphQL), :mod:`graphql_ops` (the root fields), :mod:`views` (entities as GraphQL objects),
:mod:`store` / :mod:`ingestion` (knowledge), :mod:`registry` (connectors, works), :mod:`amqp_worker`
(RabbitMQ), :mod:`faults`, :mod:`keys` (JWKS / JWT), :mod:`control` (``/_sim/`` API), ``__main__``.
"""

from .server import DEFAULT_AMQP_URL, OpenCTISimulator, strict_options

__all__ = ["DEFAULT_AMQP_URL", "OpenCTISimulator", "strict_options"]
