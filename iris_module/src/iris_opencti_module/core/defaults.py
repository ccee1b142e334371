"""Defaults the IRIS module, ``iris-opencti`` (push, doctor) and both connectors share: one value each.

The broker host is ``rabbitmq``, not ``localhost``: as deployed every part runs in a container (the module in
IRIS's app and worker, the connectors beside OpenCTI), where ``localhost`` is that container and never a
broker, and ``rabbitmq`` is the broker's service name in IRIS's own Compose file (iris-web's
``docker-compose.base.yml``), beside which the module is installed. This repository's ``docker-compose.yml``
runs two brokers, OpenCTI's as ``rabbitmq`` and IRIS's as ``iris-rabbitmq``, and so sets the URL explicitly
for each part. Outside a container, set it (the module's "RabbitMQ URL", ``IRIS_AMQP_URL``).
"""

from __future__ import annotations

#: the RabbitMQ URL when none is configured
DEFAULT_AMQP_URL = "amqp://guest:guest@rabbitmq:5672/%2F"
#: the durable queue the module publishes to and the import connector consumes
DEFAULT_QUEUE = "iris-opencti"
