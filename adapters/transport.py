"""A lean async HTTP/1.1 transport for httpx: asyncio streams + h11, keep-alive pooled.

Why it exists: the invoke path runs on the function's event loop, and httpx's default async
transport (httpcore over anyio) costs 0.3-0.4 ms more per call at p50 through the Lambda
handler on this machine (``bench/transport.py`` measures both in one run; docs/benchmarks.md,
"Transport decision (issue 15)": kept while that is 0.2 ms or more). This transport keeps
httpx's API (auth flows such as SigV4 signing, timeouts, ``httpx.Response``) and does the I/O
with asyncio's own streams and h11 (which httpx already depends on).
``AIAAS_HTTP_TRANSPORT=httpx`` switches an invoke path back to httpx's own transport
(:class:`adapters.http_invoker.HttpClients`).

What it does and does not do:

- HTTP/1.1 only, one request per connection at a time; idle connections are kept per
  ``(scheme, host, port)`` for ``keepalive_expiry_s`` (5 s, as httpcore) and reused. Before
  reuse a connection is dropped when the server closed it or sent anything while it was idle,
  seen either by the event loop or, where the loop was not running (a frozen Lambda), by
  probing the socket for readability (as httpcore does).
- A *reused* connection that fails before any byte of the answer arrived (the server closed
  it as the request went out) is retried once on a new connection: a keep-alive race, not an
  answer. A prediction has no side effects, so a request the server may have read is safe to
  send again; a new connection that fails so is not retried.
- At most ``max_connections`` (64) connections at once; a request waits for a free one up to
  the ``pool`` timeout (then ``httpx.PoolTimeout``, which callers treat as never sent).
- A response body over ``max_response_bytes`` (when set) is refused
  (:class:`ResponseTooLarge`, an ``httpx.RemoteProtocolError``), from its ``content-length``
  when it has one, else as it arrives.
- ``https`` with the given :class:`ssl.SSLContext` (default: the system's trust store,
  loaded on the first ``https`` connection, not at import).
- Timeouts: ``connect`` bounds the connection, ``write`` the sending of the request,
  ``read`` the whole response (a deadline, where httpx's default bounds each read).
- No proxies itself: :class:`adapters.http_invoker.HttpClients` mounts httpx's own transport
  for the URLs the proxy variables send through a proxy. No HTTP/2, no response streaming:
  the body is read whole (a prediction's answer is bounded by the platform's limit).
- Errors are httpx's own types (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``,
  ``WriteError``, ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``), so callers
  handle them the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import ssl
import time
from collections.abc import AsyncIterator
from types import TracebackType

import h11
import httpx

_READ_CHUNK = 64 * 1024
MAX_IDLE_PER_HOST = 32
MAX_CONNECTIONS = 64
KEEPALIVE_EXPIRY_S = 5.0


class ResponseTooLarge(httpx.RemoteProtocolError):
    """The response body is over the transport's ``max_response_bytes``."""


class _ClosedBeforeAnswer(Exception):
    """A reused connection failed before any byte of the answer: worth one more try."""


class _Connection:
    """One HTTP/1.1 connection: its streams and its h11 state machine."""

    __slots__ = ("h11", "idle_since", "reader", "received", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.received = 0  # bytes of the current answer

    def reusable(self, now: float, expiry_s: float) -> bool:
        """False once idle longer than ``expiry_s``, when the server closed it (EOF seen
        while idle) or sent anything while idle (e.g. a 408 before closing: it would be read
        as the next answer), or it was closed here. What the event loop has read is in the
        reader (asyncio has no public "bytes buffered" call, hence ``_buffer``); what arrived
        while the loop did not run (a frozen Lambda) is still in the socket: probed."""
        if now - self.idle_since > expiry_s:
            return False
        buffered = len(getattr(self.reader, "_buffer", b""))
        if buffered or self.reader.at_eof() or self.writer.is_closing():
            return False
        sock = self.writer.get_extra_info("socket")
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):  # closed under us
            return False
        return not readable

    def close(self) -> None:
        # RuntimeError: its event loop is closed already; the socket goes with it.
        with contextlib.suppress(RuntimeError):
            self.writer.close()


class AsyncH11Transport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport``: ``httpx.AsyncClient(transport=AsyncH11Transport())``."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_response_bytes: int | None = None,
        max_connections: int = MAX_CONNECTIONS,
        keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S,
    ) -> None:
        self._ssl = ssl_context
        self.max_response_bytes = max_response_bytes
        self.max_connections = max_connections
        self.keepalive_expiry_s = keepalive_expiry_s
        self._slots: asyncio.Semaphore | None = None
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme, host = url.raw_scheme, url.raw_host
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, host, port)
        timeouts = request.extensions.get("timeout", {})
        async with self._slot(request, timeouts.get("pool")):
            conn = self._take_idle(key)
            if conn is not None:
                try:
                    return await self._send(conn, key, request, timeouts, reused=True)
                except _ClosedBeforeAnswer:
                    pass  # once more, on a new connection
            conn = await self._connect(request, key, timeouts.get("connect"))
            return await self._send(conn, key, request, timeouts, reused=False)

    @contextlib.asynccontextmanager
    async def _slot(self, request: httpx.Request, timeout: float | None) -> AsyncIterator[None]:
        """One of ``max_connections``, waited for up to ``timeout`` (the pool timeout)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"all {self.max_connections} connections stayed busy", request=request
            ) from None
        try:
            yield
        finally:
            self._slots.release()

    async def _send(
        self,
        conn: _Connection,
        key: tuple[bytes, bytes, int],
        request: httpx.Request,
        timeouts: dict[str, float | None],
        *,
        reused: bool,
    ) -> httpx.Response:
        conn.received = 0
        try:
            response = await self._exchange(conn, request, timeouts)
        except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
            conn.close()
            if reused and conn.received == 0:
                raise _ClosedBeforeAnswer from None
            raise
        except BaseException:
            conn.close()
            raise
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._put_idle(key, conn)
        else:  # "Connection: close", or a body left unread: not reusable
            conn.close()
        return response

    def _take_idle(self, key: tuple[bytes, bytes, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable(now, self.keepalive_expiry_s):
                return conn
            conn.close()
        return None

    def _put_idle(self, key: tuple[bytes, bytes, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < MAX_IDLE_PER_HOST:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()

    async def _connect(
        self, request: httpx.Request, key: tuple[bytes, bytes, int], timeout: float | None
    ) -> _Connection:
        scheme, host, port = key
        tls: ssl.SSLContext | None = None
        if scheme == b"https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        name = host.decode("ascii")
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    name, port, ssl=tls, server_hostname=name if tls else None, limit=_READ_CHUNK
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {name}:{port} timed out", request=request
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return _Connection(reader, writer)

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        body = await request.aread()
        target = request.url.raw_path
        try:
            data = conn.h11.send(
                h11.Request(method=request.method, target=target, headers=request.headers.raw)
            )
            if body:
                data = (data or b"") + (conn.h11.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (conn.h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:  # e.g. a header value with a line break
            raise httpx.LocalProtocolError(str(exc), request=request) from None
        try:
            async with asyncio.timeout(timeouts.get("write")):
                conn.writer.write(data)
                await conn.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("sending the request timed out", request=request) from None
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from None
        try:
            async with asyncio.timeout(timeouts.get("read")):
                return await self._read_response(conn, request)
        except TimeoutError:
            raise httpx.ReadTimeout("reading the response timed out", request=request) from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None

    async def _read_response(self, conn: _Connection, request: httpx.Request) -> httpx.Response:
        machine = conn.h11
        head: h11.Response | None = None
        chunks: list[bytes] = []
        size, cap = 0, self.max_response_bytes
        while True:
            event = machine.next_event()
            if event is h11.NEED_DATA:
                data = await conn.reader.read(_READ_CHUNK)
                if not data and head is None:
                    raise httpx.RemoteProtocolError(
                        "the server closed the connection without sending a response",
                        request=request,
                    )
                conn.received += len(data)
                machine.receive_data(data)
            elif isinstance(event, h11.Response):
                head = event
                length = dict(event.headers).get(b"content-length")
                if cap is not None and length is not None and int(length) > cap:
                    raise ResponseTooLarge(
                        f"the response body of {int(length)} bytes is over {cap}", request=request
                    )
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if cap is not None and size > cap:
                    raise ResponseTooLarge(
                        f"the response body is over {cap} bytes", request=request
                    )
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError(
                    "the connection closed mid-response", request=request
                )
        assert head is not None  # EndOfMessage always follows a Response
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=httpx.ByteStream(b"".join(chunks)),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
            request=request,
        )

    def close_idle(self) -> None:
        """Close the idle connections now, without awaiting (e.g. when their event loop is
        gone and a new one takes over)."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    async def aclose(self) -> None:
        self.close_idle()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()
