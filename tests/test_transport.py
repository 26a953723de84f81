"""The invoke paths' async HTTP transport (adapters/transport.py) against real servers on
127.0.0.1: scripted raw-socket servers for the edge cases a well-behaved server never shows
(closing idle connections, no answer, slow answers), and TLS with a test CA. The behaviour
tests run against httpx's own transport too (``AIAAS_HTTP_TRANSPORT=httpx``, the switch
back), so the two stay interchangeable; the hardening only the hand-written one needs (idle
expiry, the keep-alive race retried once, the connection cap, the response cap) is tested
against it alone."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import trustme

from adapters.transport import AsyncH11Transport, ResponseTooLarge

Script = Callable[[socket.socket, list[int]], None]
Make = Callable[..., httpx.AsyncBaseTransport]


def _httpx_transport(ssl_context: ssl.SSLContext | None = None) -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(verify=ssl_context or True)


@pytest.fixture(params=["h11", "httpx"])
def make(request: pytest.FixtureRequest) -> Make:
    """A transport factory taking ``ssl_context``: the hand-written one, or httpx's own."""
    return AsyncH11Transport if request.param == "h11" else _httpx_transport


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest


def _answer(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


@pytest.fixture
def raw_server() -> Iterator[Callable[[Script], tuple[int, list[int]]]]:
    """Start a raw server on 127.0.0.1 running ``script(conn, counter)`` per connection; the
    counter list gets one entry per accepted connection."""
    sockets: list[socket.socket] = []

    def start(script: Script) -> tuple[int, list[int]]:
        listener = socket.create_server(("127.0.0.1", 0))
        sockets.append(listener)
        accepted: list[int] = []

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                accepted.append(1)
                threading.Thread(target=script, args=(conn, accepted), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return listener.getsockname()[1], accepted

    yield start
    for s in sockets:
        s.close()


def _post(
    port: int,
    n: int = 1,
    timeout: float = 5.0,
    scheme: str = "http",
    make: Make = AsyncH11Transport,
    **kw: Any,
) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=make(**kw), timeout=timeout) as client:
            return [
                await client.post(
                    f"{scheme}://127.0.0.1:{port}/invocations", content=b'{"i": %d}' % i
                )
                for i in range(n)
            ]

    return asyncio.run(run())


def test_keep_alive_reuses_one_connection(
    raw_server: Callable[[Script], tuple[int, list[int]]], make: Make
) -> None:
    def echo(conn: socket.socket, _: list[int]) -> None:
        with conn:
            while request := _read_request(conn):
                conn.sendall(_answer(request.partition(b"\r\n\r\n")[2]))

    port, accepted = raw_server(echo)
    answers = _post(port, n=3, make=make)
    assert [r.content for r in answers] == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}']
    assert len(accepted) == 1


def test_a_connection_the_server_closed_while_idle_is_not_reused(
    raw_server: Callable[[Script], tuple[int, list[int]]], make: Make
) -> None:
    def one_then_close(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(_answer(b"{}"))  # keep-alive advertised, then closed anyway

    port, accepted = raw_server(one_then_close)

    async def run() -> list[int]:
        async with httpx.AsyncClient(transport=make()) as client:
            first = await client.post(f"http://127.0.0.1:{port}/x", content=b"1")
            await asyncio.sleep(0.2)  # the close reaches the idle connection
            second = await client.post(f"http://127.0.0.1:{port}/x", content=b"2")
            return [first.status_code, second.status_code]

    assert asyncio.run(run()) == [200, 200]
    assert len(accepted) == 2


def test_connection_close_and_chunked_answers(
    raw_server: Callable[[Script], tuple[int, list[int]]], make: Make
) -> None:
    def chunked_then_close(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )

    port, accepted = raw_server(chunked_then_close)
    assert [r.content for r in _post(port, n=2, make=make)] == [b"hello world"] * 2
    assert len(accepted) == 2  # "connection: close" is honoured


def test_errors_are_httpx_types(
    raw_server: Callable[[Script], tuple[int, list[int]]], make: Make
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(httpx.ConnectError):
        _post(port, make=make)

    def hang_up(conn: socket.socket, _: list[int]) -> None:
        _read_request(conn)
        conn.close()

    port, _ = raw_server(hang_up)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        _post(port, make=make)  # a new connection: not retried

    def too_slow(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            threading.Event().wait(2.0)

    port, _ = raw_server(too_slow)
    with pytest.raises(httpx.ReadTimeout):
        _post(port, timeout=0.3, make=make)

    def garbage(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    port, _ = raw_server(garbage)
    with pytest.raises(httpx.RemoteProtocolError):
        _post(port, make=make)


def test_https_with_the_given_trust(
    raw_server: Callable[[Script], tuple[int, list[int]]], make: Make
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)

    def tls_echo(conn: socket.socket, _: list[int]) -> None:
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                while request := _read_request(tls):
                    tls.sendall(_answer(request.partition(b"\r\n\r\n")[2]))
        except (ssl.SSLError, OSError):
            return  # the untrusting client hung up in the handshake

    port, _ = raw_server(tls_echo)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    answers = _post(port, n=2, scheme="https", make=make, ssl_context=client_ctx)
    assert [r.content for r in answers] == [b'{"i": 0}', b'{"i": 1}']
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _post(port, scheme="https", make=make, ssl_context=ssl.create_default_context())


def test_an_answer_sent_while_idle_is_not_taken_for_the_next_one(
    raw_server: Callable[[Script], tuple[int, list[int]]], make: Make
) -> None:
    def answer_then_408(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(_answer(b'"first"'))
            threading.Event().wait(0.1)
            conn.sendall(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
            threading.Event().wait(1.0)  # kept open: only the unrequested bytes tell

    port, accepted = raw_server(answer_then_408)

    async def run() -> list[bytes]:
        async with httpx.AsyncClient(transport=make()) as client:
            first = await client.post(f"http://127.0.0.1:{port}/x", content=b"1")
            await asyncio.sleep(0.3)
            second = await client.post(f"http://127.0.0.1:{port}/x", content=b"2")
            return [first.content, second.content]

    assert asyncio.run(run()) == [b'"first"', b'"first"']  # the 408 was never an answer
    assert len(accepted) == 2


def test_a_header_h11_refuses_is_an_httpx_error(
    raw_server: Callable[[Script], tuple[int, list[int]]], make: Make
) -> None:
    port, _ = raw_server(lambda conn, _: conn.close())

    async def run() -> None:
        async with httpx.AsyncClient(transport=make()) as client:
            await client.post(f"http://127.0.0.1:{port}/x", headers={"x-bad": "a\x00b"})

    with pytest.raises(httpx.LocalProtocolError):
        asyncio.run(run())


def _echo(conn: socket.socket, _: list[int]) -> None:
    with conn:
        while request := _read_request(conn):
            conn.sendall(_answer(request.partition(b"\r\n\r\n")[2]))


def test_a_connection_closed_while_the_loop_stood_still_is_not_reused(
    raw_server: Callable[[Script], tuple[int, list[int]]], make: Make
) -> None:
    """A frozen Lambda: the event loop does not run while the server closes the idle
    connection, so the loop never saw the close; the socket is probed before reuse."""

    def one_then_close_later(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(_answer(b"{}"))
            time.sleep(0.1)  # closed once the client's loop has stopped

    port, accepted = raw_server(one_then_close_later)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=make())
    try:
        post = client.post(f"http://127.0.0.1:{port}/x", content=b"1")
        assert loop.run_until_complete(post).status_code == 200
        time.sleep(0.4)  # no loop running: the close waits in the socket
        post = client.post(f"http://127.0.0.1:{port}/x", content=b"2")
        assert loop.run_until_complete(post).status_code == 200
        loop.run_until_complete(client.aclose())
    finally:
        loop.close()
    assert len(accepted) == 2


def test_a_reused_connection_closed_before_any_answer_byte_is_retried_once(
    raw_server: Callable[[Script], tuple[int, list[int]]],
) -> None:
    """The keep-alive race: the server takes the next request on the kept connection, then
    closes it without a byte of answer. Sent again once, on a new connection."""

    def answer_then_drop(conn: socket.socket, accepted: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(_answer(b'"first"'))
            if len(accepted) == 1:  # only the first connection drops the second request
                _read_request(conn)

    port, accepted = raw_server(answer_then_drop)
    answers = _post(port, n=2)
    assert [r.content for r in answers] == [b'"first"', b'"first"']
    assert len(accepted) == 2


def test_an_idle_connection_expires(
    raw_server: Callable[[Script], tuple[int, list[int]]],
) -> None:
    port, accepted = raw_server(_echo)  # keeps every connection open

    async def run() -> None:
        transport = AsyncH11Transport(keepalive_expiry_s=0.2)
        async with httpx.AsyncClient(transport=transport) as client:
            await client.post(f"http://127.0.0.1:{port}/x", content=b"1")
            await client.post(f"http://127.0.0.1:{port}/x", content=b"2")  # reused
            await asyncio.sleep(0.3)
            await client.post(f"http://127.0.0.1:{port}/x", content=b"3")  # a new one

    asyncio.run(run())
    assert len(accepted) == 2


def test_at_most_max_connections_and_the_pool_timeout(
    raw_server: Callable[[Script], tuple[int, list[int]]],
) -> None:
    open_now: list[int] = []
    most: list[int] = [0]

    def slow(conn: socket.socket, _: list[int]) -> None:
        open_now.append(1)
        most[0] = max(most[0], len(open_now))
        with conn:
            while request := _read_request(conn):
                time.sleep(0.2)
                conn.sendall(_answer(request.partition(b"\r\n\r\n")[2]))
        open_now.pop()

    port, _ = raw_server(slow)

    async def run(cap: int, pool: float) -> list[int | str]:
        transport = AsyncH11Transport(max_connections=cap)
        timeout = httpx.Timeout(5.0, pool=pool)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            calls = [client.post(f"http://127.0.0.1:{port}/x", content=b"%d" % i) for i in range(4)]
            done = await asyncio.gather(*calls, return_exceptions=True)
        return [r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for r in done]

    assert asyncio.run(run(cap=2, pool=5.0)) == [200] * 4
    assert most[0] == 2
    assert sorted(map(str, asyncio.run(run(cap=1, pool=0.1)))) == ["200"] + ["PoolTimeout"] * 3


def test_a_response_over_the_cap_is_refused(
    raw_server: Callable[[Script], tuple[int, list[int]]],
) -> None:
    def big(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(_answer(b"x" * 2000))

    port, _ = raw_server(big)
    with pytest.raises(ResponseTooLarge, match="2000 bytes is over 1500"):
        _post(port, max_response_bytes=1500)
    assert _post(port, max_response_bytes=2000)[0].content == b"x" * 2000

    def chunked(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                + (b"400\r\n" + b"y" * 1024 + b"\r\n") * 2
                + b"0\r\n\r\n"
            )

    port, _ = raw_server(chunked)
    with pytest.raises(ResponseTooLarge, match="over 1500 bytes"):
        _post(port, max_response_bytes=1500)
