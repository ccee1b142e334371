"""OpenCTI's push queue over one kept-open AMQP connection, with one broker round trip per batch.

pycti's ``send_stix2_bundle`` opens a new AMQP connection for every bundle (~8 ms here, most of a single
event's sending time) and waits for a publisher confirm after every message. :class:`PushQueue` sends what
pycti would send for a ``no_split`` bundle, to the same exchange and routing key, in the same message shape
(``OpenCTIConnectorHelper._send_bundle`` of pycti 7.261026.0: base64 content, ``applicant_id``,
``action_sequence``, ``work_id``, ``no_split``; persistent); only the connection is kept between bundles, a
group of bundles costs one ``add_expectations`` call (one per element of each bundle, which is what the worker
reports, see sending.py), and the messages go in AMQP transactions of up to :data:`BATCH` messages:
``tx.commit`` returns once the broker holds every message of the batch (as a confirm would), and a batch
interrupted by a failure is not published at all, so the caller's retry sends it whole again.

Anything pycti does beyond the plain queue path (workbench validation, drafts, playbooks, shared
organisations, a directory or S3 copy, the API queue protocol) is left to pycti: with any of them configured
each bundle goes through ``send_stix2_bundle(no_split=True)`` unchanged.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

import pika

from iris_opencti_module.core.amqp_logs import pika_quiet

#: messages per AMQP transaction
BATCH = 500
#: seconds between heartbeats asked of the broker; an idle connection is replaced after one interval
HEARTBEAT = 30


def pycti_only(helper: Any) -> Optional[str]:
    """Why this helper's bundles must go through pycti's ``send_stix2_bundle`` (None: the plain queue path)."""
    checks = (
        (getattr(helper, "queue_protocol", "amqp") != "amqp", "queue protocol is not amqp"),
        (not getattr(helper, "bundle_send_to_queue", True), "bundles are not sent to the queue"),
        (bool(getattr(helper, "bundle_send_to_directory", False)), "bundles are also written to a directory"),
        (bool(getattr(helper, "bundle_send_to_s3", False)), "bundles are also sent to S3"),
        (bool(getattr(helper, "connect_validate_before_import", False)), "imports wait for validation"),
        (bool(getattr(helper, "force_validation", False)), "imports wait for validation"),
        (getattr(helper, "playbook", None) is not None, "running in a playbook"),
        (getattr(helper, "enrichment_shared_organizations", None) is not None, "shared organisations"),
        (not isinstance(getattr(helper, "connector_config", None), dict), "no push queue configuration"),
    )
    return next((why for failed, why in checks if failed), None)


class PushQueue:
    """Sends bundles as pycti would, over a connection kept open between bundles (see the module)."""

    def __init__(self, helper: Any, connect: Optional[Callable[[], Any]] = None) -> None:
        self.helper = helper
        self._connect = connect or self._open
        self._connection: Any = None
        self._channel: Any = None
        self._lock = threading.Lock()
        self._used_at = 0.0
        self.connections_opened = 0

    # ------------------------------------------------------------------------------------------ connection
    def _parameters(self) -> pika.ConnectionParameters:
        """The connection pycti's ``send_stix2_bundle`` would open, with the heartbeat kept while idle."""
        from pycti.connector.opencti_connector_helper import create_mq_ssl_context

        conn = self.helper.connector_config["connection"]
        return pika.ConnectionParameters(
            host=conn["host"], port=conn["port"], virtual_host=conn["vhost"],
            credentials=pika.PlainCredentials(conn["user"], conn["pass"]), heartbeat=HEARTBEAT,
            blocked_connection_timeout=120,
            ssl_options=pika.SSLOptions(create_mq_ssl_context(self.helper.config), conn["host"])
            if conn.get("use_ssl") else None)

    def _open(self) -> Any:
        return pika.BlockingConnection(self._parameters())

    def _ready_channel(self) -> Any:
        """The kept channel, after serving the connection's heartbeats; a new one when the old is gone.

        Nothing serves an idle BlockingConnection's heartbeats, so the broker drops it after two intervals (seen
        in a real drill: pika logged the reset as ERROR tracebacks at the next send). Past one interval idle
        it is replaced here, quietly, before it is used.
        """
        if self._connection is not None and time.monotonic() - self._used_at > HEARTBEAT:
            with pika_quiet():
                self.close()
        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.process_data_events(0)
                if self._channel is not None and self._channel.is_open:
                    return self._channel
            except pika.exceptions.AMQPError:
                self.close()
        else:
            self.close()
        self._connection = self._connect()
        self._used_at = time.monotonic()
        self.connections_opened += 1
        self._channel = self._connection.channel()
        self._channel.tx_select()
        return self._channel

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                if connection.is_open:
                    connection.close()
            except Exception:  # noqa: BLE001 - abandoned either way
                pass

    # --------------------------------------------------------------------------------------------- sending
    def send_chunks(self, bundles: Sequence[Tuple[str, int]], work_id: Optional[str]) -> int:
        """``(bundle JSON, elements)`` pairs to OpenCTI's workers as ``no_split`` bundles, one message each;
        returns how many messages were sent. Raises on any failure (nothing of an unfinished batch is
        published; expectations already added stay, as with pycti)."""
        if not bundles:
            return 0
        if pycti_only(self.helper):
            for text, elements in bundles:
                # pycti 7.261026.0 adds one expectation for a no_split bundle (with the amqp queue protocol only)
                if work_id and elements > 1 and getattr(self.helper, "queue_protocol", "amqp") == "amqp" \
                        and getattr(self.helper, "bundle_send_to_queue", True):
                    self.helper.api.work.add_expectations(work_id, elements - 1)
                self.helper.send_stix2_bundle(text, work_id=work_id, no_split=True)
            return len(bundles)
        if work_id:
            self.helper.api.work.add_expectations(work_id, sum(elements for _, elements in bundles))
        with self._lock:
            try:
                self._publish([text for text, _ in bundles], work_id)
            except Exception:
                self.close()  # a failed transaction's channel is not reused
                raise
        return len(bundles)

    def _publish(self, bundles: List[str], work_id: Optional[str]) -> None:
        channel = self._ready_channel()
        exchange = self.helper.connector_config["push_exchange"]
        routing = self.helper.connector_config["push_routing"]
        properties = pika.BasicProperties(delivery_mode=2, content_encoding="utf-8")
        for count, piece in enumerate(bundles, start=1):
            message = {  # each as its own send_stix2_bundle(no_split=True) call: the first of its sequence
                "bundle_type": "QUEUE_BUNDLE", "applicant_id": self.helper.applicant_id, "action_sequence": 1,
                "entities_types": [], "content": base64.b64encode(piece.encode("utf-8", "escape")).decode("utf-8"),
                "update": False, "draft_id": getattr(self.helper, "draft_id", None), "no_split": True,
            }
            if work_id is not None:
                message["work_id"] = work_id
            channel.basic_publish(exchange=exchange, routing_key=routing, body=json.dumps(message),
                                  properties=properties)
            if count % BATCH == 0:
                channel.tx_commit()
        channel.tx_commit()
        self._used_at = time.monotonic()
