"""A lean async HTTP/1.1 transport for httpx: asyncio streams + h11, keep-alive pooled.

Why it exists: the invoke path runs on the function's event loop, and httpx's default async
transport (httpcore over anyio) costs about 0.5 ms more per call than the sync client run in
a worker thread on this machine (``bench/function_overhead.py`` measures both, side by
side). This transport keeps httpx's API (auth flows such as SigV4 signing, timeouts,
``httpx.Response``) and does the I/O with asyncio's own streams and h11 (which httpx already
depends on), so awaiting an invoke costs less than the thread hop did.

What it does and does not do:

- HTTP/1.1 only, one request per connection at a time; idle connections are kept per
  ``(scheme, host, port)`` and reused, and one the server closed while idle is dropped
  before use (as httpcore does).
- ``https`` with the given :class:`ssl.SSLContext` (default: the system's trust store,
  loaded on the first ``https`` connection, not at import).
- Timeouts: ``connect`` bounds the connection, ``write`` the sending of the request,
  ``read`` the whole response (a deadline, where httpx's default bounds each read).
- No proxies (a function calls its endpoint directly), no HTTP/2, no response streaming:
  the body is read whole (a prediction's answer is bounded by the platform's limit).
- Errors are httpx's own types (``ConnectError``, ``ConnectTimeout``, ``WriteError``,
  ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``), so callers handle them the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from types import TracebackType

import h11
import httpx

_READ_CHUNK = 64 * 1024
MAX_IDLE_PER_HOST = 32


class _Connection:
    """One HTTP/1.1 connection: its streams and its h11 state machine."""

    __slots__ = ("h11", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        """False once the server closed it (EOF seen while idle), sent anything while idle
        (e.g. a 408 before closing: it would be read as the next answer), or it was closed
        here. asyncio has no public "bytes buffered" call, hence ``_buffer``."""
        buffered = len(getattr(self.reader, "_buffer", b""))
        return not (buffered or self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        # RuntimeError: its event loop is closed already; the socket goes with it.
        with contextlib.suppress(RuntimeError):
            self.writer.close()


class AsyncH11Transport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport``: ``httpx.AsyncClient(transport=AsyncH11Transport())``."""

    def __init__(
        self, ssl_context: ssl.SSLContext | None = None, *, max_response_bytes: int | None = None
    ) -> None:
        self._ssl = ssl_context
        self.max_response_bytes = max_response_bytes
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme, host = url.raw_scheme, url.raw_host
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, host, port)
        timeouts = request.extensions.get("timeout", {})
        conn = self._take_idle(key)
        if conn is None:
            conn = await self._connect(request, key, timeouts.get("connect"))
        try:
            response = await self._exchange(conn, request, timeouts)
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
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
            conn.close()
        return None

    def _put_idle(self, key: tuple[bytes, bytes, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < MAX_IDLE_PER_HOST:
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
        while True:
            event = machine.next_event()
            if event is h11.NEED_DATA:
                data = await conn.reader.read(_READ_CHUNK)
                if not data and head is None:
                    raise httpx.RemoteProtocolError(
                        "the server closed the connection without sending a response",
                        request=request,
                    )
                machine.receive_data(data)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
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
