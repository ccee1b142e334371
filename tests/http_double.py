"""The HTTP plumbing both test servers share (the IRIS API server and the OpenCTI simulator).

A test double must add no latency of its own: headers and body leave in two writes, and without TCP_NODELAY
the second waits for the client's delayed ACK (~40 ms per kept-alive request), which real servers do not add
and which would inflate every latency and ratio the benchmarks print.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Mapping, Optional, Tuple, Type


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler with Nagle off, no per-request stderr line, and helpers to read and answer."""

    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # BaseHTTPRequestHandler's signature
        """Silence per-request stderr lines (each server records its requests itself)."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_body(self, status: int, body: bytes, content_type: Optional[str] = "application/json",
                  headers: Optional[Mapping[str, str]] = None) -> None:
        """Status, headers and ``body`` (left out for HEAD, as HTTP wants)."""
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def serve(address: Tuple[str, int], handler: Type[BaseHTTPRequestHandler], name: str,
          attributes: Dict[str, Any], tls: Optional[Tuple[str, str]] = None
          ) -> Tuple[ThreadingHTTPServer, threading.Thread]:
    """A threading HTTP(S) server on ``address`` (port 0: any free port), serving in a daemon thread.

    ``attributes`` are set on the server object, where the handler finds its owner (``self.server.<name>``);
    ``tls`` is ``(certfile, keyfile)``."""
    http = ThreadingHTTPServer(address, handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        http.socket = context.wrap_socket(http.socket, server_side=True)
    http.daemon_threads = True
    for key, value in attributes.items():
        setattr(http, key, value)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"{name}-{http.server_address[1]}", daemon=True)
    thread.start()
    return http, thread
