"""The function app's edge under hostile requests, over real sockets against real uvicorn:
bodies refused on their declared length or while streaming (413), too many items refused
before any validation, bounded error bodies, and 415 for a body that is not JSON."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import serve_asgi

from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from functions.app import FunctionApp
from functions.auth import KeyChecker, create_key

API_KEY, RECORD = create_key()
AUTH = {"authorization": f"Bearer {API_KEY}"}
BODY_LIMIT = 64 * 1024


class CountingApp:
    """Wraps the real ASGI app and counts the request-body bytes it was handed: the
    server-side measure of how much of an upload the function read."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.body_bytes = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            self.body_bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@pytest.fixture(scope="module")
def provider(
    probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalProvider]:
    local = LocalProvider(state_dir=str(tmp_path_factory.mktemp("state")))
    local.deploy(probe_bundle.path)
    try:
        yield local
    finally:
        local.delete("probe")


@pytest.fixture(scope="module")
def served(provider: LocalProvider, probe_bundle: BuiltBundle) -> Iterator[tuple[str, CountingApp]]:
    app = FunctionApp(
        provider.invoker,
        probe_bundle.manifest,
        keys=KeyChecker({RECORD.key_id: RECORD}),
        max_body_bytes=BODY_LIMIT,
    ).asgi()
    counting = CountingApp(app)
    with serve_asgi(counting) as url:
        yield url, counting


def _raw(url: str, head: bytes, timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.sendall(head)
    return sock, b""


def _read_status(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_declared_length_over_the_limit_is_refused_at_once(
    served: tuple[str, CountingApp],
) -> None:
    url, _ = served
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {API_KEY}\r\n".encode()
        + b"Content-Length: 1000000000000\r\n\r\n"
    )
    started = time.monotonic()
    sock, _ = _raw(url, head)
    with sock:
        answer = _read_status(sock)  # no body is ever sent: only the declared length counts
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 2.0


def test_a_chunked_body_over_the_limit_is_not_read_to_its_end(
    served: tuple[str, CountingApp],
) -> None:
    url, counting = served
    counting.body_bytes = 0
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {API_KEY}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = 64 * 1024
    chunk = f"{piece:x}\r\n".encode() + b"x" * piece + b"\r\n"
    total = 50 * 1024 * 1024  # 50 MB offered; the function must stop near 64 KiB
    sock, _ = _raw(url, head, timeout=10.0)
    sent = 0
    with sock:
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += piece
        except OSError:  # the server answered and closed: it stopped reading
            pass
        answer = _read_status(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert counting.body_bytes <= BODY_LIMIT + 2 * piece, counting.body_bytes
    # The connection is closed after the 413, so the rest of the 50 MB is never taken in
    # (what was sent is what the kernel's socket buffers held).
    assert sent < total / 2, sent


def test_too_many_items_are_refused_before_validation_with_a_small_answer(
    provider: LocalProvider, probe_bundle: BuiltBundle
) -> None:
    app_limit = 6 * 1024 * 1024
    body = b'{"inputs":[' + b",".join([b"1"] * 1_000_000) + b"]}"  # ~2 MB, all invalid
    assert len(body) < app_limit
    app = FunctionApp(provider.invoker, probe_bundle.manifest, keys=None, max_body_bytes=app_limit)
    with serve_asgi(app.asgi()) as url:
        started = time.process_time()  # the app runs in this process
        r = httpx.post(url + "/predict", content=body, timeout=30)
        cpu = time.process_time() - started
    assert r.status_code == 413, r.text[:300]
    assert len(r.content) < 1024 and "at most 512" in r.json()["error"]["message"]
    # CPU time, not the wall clock, which a busy machine stretches by whatever else runs:
    # the client and the app together spend ~0.1 s; validating the million items, seconds
    assert cpu < 1.0, cpu


def test_many_invalid_items_under_the_limit_get_a_bounded_error(
    served: tuple[str, CountingApp],
) -> None:
    url, _ = served
    body = {"inputs": [{"value": "x"}] * 300}
    r = httpx.post(url + "/predict", json=body, headers=AUTH)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["message"].startswith("inputs[0].value:") and "(and 299 more)" in err["message"]
    assert len(err["details"]) == 10 and len(r.content) < 4096


def test_a_body_that_is_not_json_is_415_naming_the_accepted_types(
    served: tuple[str, CountingApp],
) -> None:
    url, _ = served
    r = httpx.post(
        url + "/predict", content=b"1,2,3\n", headers={**AUTH, "content-type": "text/csv"}
    )
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert "application/json" in r.json()["error"]["message"]
    ok = httpx.post(
        url + "/predict",
        content=b'{"inputs": [{"value": 1}]}',
        headers={**AUTH, "content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200, ok.text


def test_the_lambda_limit_counts_the_body_as_lambda_sends_it() -> None:
    from functions.edge import ResponseTooLarge, check_response_size

    limit = 6 * 1024 * 1024
    json = "application/json"
    check_response_size(b"1" * 5_000_000, limit, escaped=True, content_type=json)  # fits
    quotes = b'"' * 4_000_000  # 4 MB raw, 8 MB once escaped in Lambda's JSON envelope
    check_response_size(quotes, limit, escaped=False)  # a platform that sends bytes as is
    with pytest.raises(ResponseTooLarge, match="4000000 bytes"):
        check_response_size(quotes, limit, escaped=True, content_type=json)


async def _asgi_call(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """One request straight into the ASGI app, as Mangum or Azure's ``AsgiFunctionApp``
    would make it (neither checks header values; uvicorn would refuse this one itself)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("x", 443),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize(
    ("path", "header"),
    [
        ("/predict", b"content-length"),
        ("/v2/models/probe/infer", b"inference-header-content-length"),
    ],
)
@pytest.mark.parametrize("value", [b"\xb2", b"\xd9\xa3", b"12x", b"-1"])  # ², ٣ (UTF-8), junk
def test_a_length_header_that_is_not_ascii_digits_is_400_naming_it(
    provider: LocalProvider, probe_bundle: BuiltBundle, path: str, header: bytes, value: bytes
) -> None:
    """Before: ``"²".isdigit()`` is true, ``int("²")`` raised, and the answer was a 500."""
    import anyio
    import orjson

    app = FunctionApp(
        provider.invoker, probe_bundle.manifest, keys=KeyChecker({RECORD.key_id: RECORD})
    )
    body = b'{"inputs": [{"value": 1}]}'
    if "infer" in path:
        body = b'{"inputs": [{"name": "value", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {API_KEY}".encode()),
        (header, value),
    ]
    if header != b"content-length":
        headers.append((b"content-length", str(len(body)).encode()))
    status, answer = anyio.run(_asgi_call, app.asgi(), path, headers, body)
    assert status == 400, answer[:300]
    error = orjson.loads(answer)["error"]
    message = error if isinstance(error, str) else error["message"]
    expected = (
        "Content-Length" if header == b"content-length" else "Inference-Header-Content-Length"
    )
    assert message.startswith(expected) and "byte count" in message, message


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"1" * 5_020_000, "application/octet-stream"),  # binary BYTES: base64 is 6.69 MB
        (bytes(range(256)) * 6_500, "application/octet-stream"),  # random FP32: not escaped
        (b'"\xc3\xa9' * 1_000_000, "application/json"),  # JSON text: escaped
        (b"\xff" * 1_100_000, "application/json"),  # not UTF-8: Mangum sends it base64
        (b"x" * 1_100_000, "text/plain; charset=utf-8"),
    ],
)
def test_the_lambda_limit_counts_what_mangum_sends(body: bytes, content_type: str) -> None:
    """Exactly the length of the body string in Mangum's answer, whichever way it goes.
    Before: binary bodies were counted as escaped UTF-8 (a 1.6 MB FP32 answer as 5.9 MB, a
    5.02 MB BYTES answer as 5.02 MB) instead of base64."""
    import json

    from mangum.adapter import DEFAULT_TEXT_MIME_TYPES
    from mangum.handlers.utils import handle_base64_response_body

    from functions.edge import LAMBDA_TEXT_TYPES, response_size

    assert list(LAMBDA_TEXT_TYPES) == DEFAULT_TEXT_MIME_TYPES
    sent, _ = handle_base64_response_body(
        body, {"content-type": content_type}, DEFAULT_TEXT_MIME_TYPES
    )
    assert response_size(body, True, content_type) == len(json.dumps(sent))
