"""The HTTP(S) side every emulated cloud shares: a threaded HTTP/1.1 server on 127.0.0.1.

Keep-alive (clients reuse connections, as they do with the clouds' front ends), Nagle off
(headers and body go out in two writes: with Nagle on, the body waits for the client's
delayed ACK of the headers, 40 ms on Linux), idle connections closed after
``idle_timeout_s``, and optional TLS with a throwaway certificate authority (trustme) for
clouds whose SDKs insist on HTTPS (Azure's ARM): its CA file is :attr:`HttpServer.ca_file`.
"""

from __future__ import annotations

import contextlib
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class KeepAliveHandler(BaseHTTPRequestHandler):
    """A request handler for emulators: HTTP/1.1 keep-alive, quiet, and small helpers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = (
        30.0  # an idle keep-alive connection is closed after this (per server: idle_timeout_s)
    )

    def setup(self) -> None:
        """Count the connection (:attr:`HttpServer.connections`), then as the base does."""
        counter = getattr(self.server, "counter", None)
        if counter is not None:
            counter()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: emulators record calls instead of an access log."""

    def body(self) -> bytes:
        """The request body (``Content-Length`` bytes)."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        """One whole answer; a client that went away meanwhile is not an error."""
        with contextlib.suppress(OSError):
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


class HttpServer:
    """Serve ``handler`` on 127.0.0.1 (a free port) on a background thread."""

    def __init__(
        self,
        handler: type[KeepAliveHandler],
        *,
        name: str,
        idle_timeout_s: float = 30.0,
        tls: bool = False,
    ) -> None:
        self.handler: type[KeepAliveHandler] = type(
            handler.__name__, (handler,), {"timeout": idle_timeout_s}
        )
        self.name = name
        self.tls = tls
        self.ca_file: Path | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._count_lock = threading.Lock()
        self.connections = 0  # connections accepted so far

    @property
    def idle_timeout_s(self) -> float:
        """After how long an idle keep-alive connection is closed (from the next
        connection on: an open one keeps the timeout it started with)."""
        return float(self.handler.timeout or 0.0)

    @idle_timeout_s.setter
    def idle_timeout_s(self, seconds: float) -> None:
        self.handler.timeout = seconds

    def _count(self) -> None:
        with self._count_lock:
            self.connections += 1

    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        server.daemon_threads = True
        server.counter = self._count  # type: ignore[attr-defined]
        if self.tls:
            server.socket = self._tls_context().wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=self.name, daemon=True)
        self._thread.start()

    def _tls_context(self) -> ssl.SSLContext:
        import trustme  # only where an emulator serves HTTPS

        authority = trustme.CA()
        certificate = authority.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        self._tmp = tempfile.TemporaryDirectory(prefix="aiaas-emulator-ca-")
        self.ca_file = Path(self._tmp.name) / "ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        return context

    def stop(self) -> None:
        """Stop serving and close the socket (idle keep-alive connections time out)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()
        self._server, self._thread, self._tmp = None, None, None

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:<port>``."""
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"
