"""Run the module's preload hooks the way IRIS's web app runs them, in a process of its own.

Usage: ``python tests/module/server_model.py eventlet|gthread AMQP_URL QUEUE SPOOL_DIR``; prints one JSON
object (the facts checked about the process, and each hook's status and logs) and exits 0 when every hook
succeeded.

* ``eventlet`` - IRIS 2.4.20: ``gunicorn app:app --worker-class eventlet`` (eventlet 0.30.2, Python 3.9).
  gunicorn's eventlet worker calls ``eventlet.monkey_patch()`` before it imports the app, so that is the first
  thing done here, before the module (or pika) is imported. Requests are green threads of one OS thread.
* ``gthread`` - IRIS 2.5: ``gunicorn app:app --threads 100 -w 1`` (no worker class, so gunicorn's threaded
  worker; no eventlet; Python 3.12). Requests are OS threads of one process sharing the module's publisher.

In both, an IOC linked to two cases is unlinked from one (the request names it: ``?cid=6``), which fires only
``on_preload_ioc_delete`` in IRIS 2.4, then several single-case IOCs are deleted by concurrent requests.
"""

import sys

MODEL = sys.argv[1] if len(sys.argv) > 1 else ""
if MODEL == "eventlet":
    import eventlet

    eventlet.monkey_patch()

import json  # noqa: E402 - after the monkey-patching, as in gunicorn's eventlet worker
import os  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402
from typing import Any, Callable, Dict, List  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(HERE, "iris_stub"), ROOT]

#: concurrent requests deleting single-case IOCs
REQUESTS = 12


class _Broker:
    """What :class:`ModuleHarness` needs of the test broker: the URL and the queue (the caller reads it)."""

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self._queue = queue

    def new_queue(self) -> str:
        return self._queue


def _facts() -> Dict[str, Any]:
    """What the process really is, so the caller can check that the server model was reproduced."""
    facts: Dict[str, Any] = {"python": "%d.%d" % sys.version_info[:2], "model": MODEL,
                             "eventlet_loaded": "eventlet" in sys.modules,
                             "getaddrinfo_module": getattr(socket.getaddrinfo, "__module__", "")}
    if MODEL == "eventlet":
        import eventlet
        from eventlet import patcher

        facts["eventlet"] = eventlet.__version__
        facts["socket_patched"] = patcher.is_monkey_patched("socket")
        try:  # pika's call: IRIS 2.4's defect was this raising TypeError
            socket.getaddrinfo(host="localhost", port=5672, family=0, type=socket.SOCK_STREAM,
                               proto=socket.IPPROTO_TCP, flags=0)
            facts["keyword_getaddrinfo"] = "ok"
        except TypeError as exc:
            facts["keyword_getaddrinfo"] = f"TypeError: {exc}"
    return facts


def _concurrently(calls: List[Callable[[], None]]) -> None:
    """Run the calls as simultaneous requests: green threads under eventlet, OS threads otherwise."""
    if MODEL == "eventlet":
        import eventlet

        pool = eventlet.GreenPool(len(calls))
        for call in calls:
            pool.spawn(call)
        pool.waitall()
        return
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def main() -> int:
    url, queue, spool_dir = sys.argv[2:5]
    from tests.module.iris_world import IrisWorld, ModuleHarness

    variant = "2.4" if MODEL == "eventlet" else "2.5"
    iris = IrisWorld(variant)
    harness = ModuleHarness(_Broker(url, queue), spool_dir)
    single = iris.case(9)
    iocs = [iris.ioc(100 + n, "192.0.2.%d" % n, cases=[single]) for n in range(REQUESTS)]

    # the web request the preload hook runs in: IRIS 2.4 names the case as ?cid=, 2.5 in the route
    request = types.SimpleNamespace(args={"cid": "6"}, view_args={"case_identifier": 6})
    flask = types.ModuleType("flask")
    flask.has_request_context = lambda: True  # type: ignore[attr-defined]
    flask.request = request  # type: ignore[attr-defined]
    sys.modules["flask"] = flask

    results: List[Dict[str, Any]] = []

    def hook(ioc_id: int) -> None:
        status = harness.run("on_preload_ioc_delete", ioc_id)
        results.append({"ioc_id": ioc_id, "success": status.is_success(), "message": status.get_message(),
                        "logs": status.logs})

    if variant == "2.4":
        shared = iris.ioc(12, "evil.example", "domain", cases=[iris.case(5), iris.case(6)])
        hook(shared.ioc_id)
    else:  # 2.5 links an IOC to one case: unlink is the plain single-case deletion
        hook(iocs[0].ioc_id)
        iocs = iocs[1:]
    request.args, request.view_args = {}, {}  # single-case deletions need no case from the request
    _concurrently([lambda i=ioc.ioc_id: hook(i) for ioc in iocs])
    harness.close()
    print(json.dumps({"facts": _facts(), "results": results}))
    return 0 if results and all(r["success"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
