"""The invoke paths' async HTTP transport (adapters/transport.py) against real servers on
127.0.0.1: scripted raw-socket servers for the edge cases a well-behaved server never shows
(closing idle connections, no answer, slow answers), and TLS with a test CA."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
import trustme

from adapters.transport import AsyncH11Transport

Script = Callable[[socket.socket, list[int]], None]


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
    port: int, n: int = 1, timeout: float = 5.0, scheme: str = "http", **kw: object
) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=AsyncH11Transport(**kw), timeout=timeout) as client:  # type: ignore[arg-type]
            return [
                await client.post(
                    f"{scheme}://127.0.0.1:{port}/invocations", content=b'{"i": %d}' % i
                )
                for i in range(n)
            ]

    return asyncio.run(run())


def test_keep_alive_reuses_one_connection(
    raw_server: Callable[[Script], tuple[int, list[int]]],
) -> None:
    def echo(conn: socket.socket, _: list[int]) -> None:
        with conn:
            while request := _read_request(conn):
                conn.sendall(_answer(request.partition(b"\r\n\r\n")[2]))

    port, accepted = raw_server(echo)
    answers = _post(port, n=3)
    assert [r.content for r in answers] == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}']
    assert len(accepted) == 1


def test_a_connection_the_server_closed_while_idle_is_not_reused(
    raw_server: Callable[[Script], tuple[int, list[int]]],
) -> None:
    def one_then_close(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(_answer(b"{}"))  # keep-alive advertised, then closed anyway

    port, accepted = raw_server(one_then_close)

    async def run() -> list[int]:
        async with httpx.AsyncClient(transport=AsyncH11Transport()) as client:
            first = await client.post(f"http://127.0.0.1:{port}/x", content=b"1")
            await asyncio.sleep(0.2)  # the close reaches the idle connection
            second = await client.post(f"http://127.0.0.1:{port}/x", content=b"2")
            return [first.status_code, second.status_code]

    assert asyncio.run(run()) == [200, 200]
    assert len(accepted) == 2


def test_connection_close_and_chunked_answers(
    raw_server: Callable[[Script], tuple[int, list[int]]],
) -> None:
    def chunked_then_close(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )

    port, accepted = raw_server(chunked_then_close)
    assert [r.content for r in _post(port, n=2)] == [b"hello world"] * 2
    assert len(accepted) == 2  # "connection: close" is honoured


def test_errors_are_httpx_types(raw_server: Callable[[Script], tuple[int, list[int]]]) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(httpx.ConnectError):
        _post(port)

    def hang_up(conn: socket.socket, _: list[int]) -> None:
        _read_request(conn)
        conn.close()

    port, _ = raw_server(hang_up)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        _post(port)

    def too_slow(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            threading.Event().wait(2.0)

    port, _ = raw_server(too_slow)
    with pytest.raises(httpx.ReadTimeout):
        _post(port, timeout=0.3)

    def garbage(conn: socket.socket, _: list[int]) -> None:
        with conn:
            _read_request(conn)
            conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    port, _ = raw_server(garbage)
    with pytest.raises(httpx.RemoteProtocolError):
        _post(port)


def test_https_with_the_given_trust(raw_server: Callable[[Script], tuple[int, list[int]]]) -> None:
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
    answers = _post(port, n=2, scheme="https", ssl_context=client_ctx)
    assert [r.content for r in answers] == [b'{"i": 0}', b'{"i": 1}']
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _post(port, scheme="https", ssl_context=ssl.create_default_context())


def test_an_answer_sent_while_idle_is_not_taken_for_the_next_one(
    raw_server: Callable[[Script], tuple[int, list[int]]],
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
        async with httpx.AsyncClient(transport=AsyncH11Transport()) as client:
            first = await client.post(f"http://127.0.0.1:{port}/x", content=b"1")
            await asyncio.sleep(0.3)
            second = await client.post(f"http://127.0.0.1:{port}/x", content=b"2")
            return [first.content, second.content]

    assert asyncio.run(run()) == [b'"first"', b'"first"']  # the 408 was never an answer
    assert len(accepted) == 2


def test_a_header_h11_refuses_is_an_httpx_error(
    raw_server: Callable[[Script], tuple[int, list[int]]],
) -> None:
    port, _ = raw_server(lambda conn, _: conn.close())

    async def run() -> None:
        async with httpx.AsyncClient(transport=AsyncH11Transport()) as client:
            await client.post(f"http://127.0.0.1:{port}/x", headers={"x-bad": "a\x00b"})

    with pytest.raises(httpx.LocalProtocolError):
        asyncio.run(run())
