"""Overload: a request the full queue would refuse anyway is refused before its body is read.

Under open-loop overload most requests are refused; reading, parsing and validating each of
them took the event loop's time (and the GIL) from the forward pass (``bench/overload.py``).
The server now lets a request in before reading its body only while the requests in (being
read, queued or computed) are fewer than what fills the queue and the batches in flight
(:mod:`aiaas.runtime.door`): otherwise it waits at the door, unread, and is answered 503
``overloaded`` with ``Retry-After`` after ``queue_wait_ms`` (at once when the door is full,
504 at its caller's deadline) without any of its body ever being read.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from conftest import ServerProcess

from aiaas.bundle import BuiltBundle
from aiaas.runtime.batcher import Batcher

StartServer = Callable[..., ServerProcess]


def _gauge(url: str, name: str) -> float:
    """A gauge of the probe model from the server's /metrics."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f'{name}{{model="probe"}} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _request(path: str, body: bytes, *, declared: int | None = None) -> bytes:
    """A keep-alive POST; ``declared`` overrides the Content-Length (to send less)."""
    length = len(body) if declared is None else declared
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """Read one HTTP response: status, headers (lower-case names), JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before an answer"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside an answer"
        rest += chunk
    return int(lines[0].split()[1]), headers, json.loads(rest[:length])


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


class TestRefusedBeforeTheBody:
    def test_a_full_queue_and_door_refuse_without_reading_the_body(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        server = start_server(
            probe_bundle.path, "--max-queue-size", "1", "--max-batch-size", "1",
            "--queue-wait-ms", "60000",
        )  # fmt: skip
        url = server.url
        one = json.dumps({"inputs": [{"value": 1}]}).encode()
        invocations = url + "/invocations"

        async def fill() -> tuple[list[str], list[httpx.Response]]:
            async with httpx.AsyncClient(timeout=60.0) as client:
                post = client.post
                running = asyncio.create_task(
                    post(invocations, json={"inputs": [{"value": 1, "sleep_ms": 6000}]})
                )
                quick = {"inputs": [{"value": 1}]}
                queued = [asyncio.create_task(post(invocations, json=quick))]
                # the slow one in the inference thread, a quick one in the queue. The two may
                # reach the server in either order: a quick one that ran first is answered at
                # once, so another is sent until one stays queued behind the slow one.
                deadline = time.monotonic() + 30
                while True:
                    assert time.monotonic() < deadline, "never one running and one queued"
                    depth = await asyncio.to_thread(_gauge, url, "aiaas_queue_depth")
                    if queued[-1].done():
                        queued.append(asyncio.create_task(post(invocations, json=quick)))
                    elif depth == 1:
                        await asyncio.sleep(0.3)  # a quick one running now is done by then
                        if not queued[-1].done():
                            break
                    else:
                        await asyncio.sleep(0.01)
                assert await asyncio.to_thread(_gauge, url, "aiaas_door_waiting") == 0
                waiting = asyncio.create_task(post(invocations, json={"inputs": [{"value": 1}]}))
                await asyncio.to_thread(
                    _until,
                    lambda: _gauge(url, "aiaas_door_waiting") == 1,
                    "the third never waited at the door",
                )
                # it waits unread: not in the batcher's waiting room, which holds read bodies
                assert await asyncio.to_thread(_gauge, url, "aiaas_queue_waiting") == 0
                refused = await asyncio.to_thread(self._refused_at_once, url, one)
                return refused, [await running, *[await q for q in queued], await waiting]

        refusals, served = asyncio.run(fill())
        # nothing was lost: the three let in were served
        assert {r.status_code for r in served} == {200} and len(served) >= 3
        assert refusals == ["invocations", "oip", "keep-alive"]

    def test_a_request_at_the_door_is_refused_after_the_wait_or_at_its_deadline_unread(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        server = start_server(
            probe_bundle.path, "--max-queue-size", "1", "--max-batch-size", "1",
            "--queue-wait-ms", "400",
        )  # fmt: skip
        url = server.url
        one = json.dumps({"inputs": [{"value": 1}]}).encode()
        slow = json.dumps({"inputs": [{"value": 1, "sleep_ms": 2000}]}).encode()
        # Two slow ones fill the door's two places (one running, one queued), whichever runs
        # first; what comes next waits at the door.
        holders = [_connect(url) for _ in range(2)]
        try:
            for sock in holders:
                sock.sendall(_request("/invocations", slow))
            _until(lambda: _gauge(url, "aiaas_queue_depth") == 1, "never one running, one queued")
            with _connect(url) as sock:
                # a body announced but never sent: a read would wait for it until the test fails
                started = time.monotonic()
                sock.sendall(_request("/invocations", one[:5], declared=len(one)))
                status, headers, body = _answer(sock)
                waited = time.monotonic() - started
            assert (status, headers["retry-after"]) == (503, "1"), body
            assert body["error"]["code"] == "overloaded"
            assert waited >= 0.35, f"refused after {waited:.2f} s, not after its wait"
            with _connect(url) as sock:
                # the caller's deadline comes before the door's wait ends: 504, still unread
                head = _request("/invocations", one[:5], declared=len(one))
                sock.sendall(head.replace(b"\r\n\r\n", b"\r\nX-Aiaas-Timeout-Ms: 100\r\n\r\n", 1))
                status, _, body = _answer(sock)
            assert status == 504 and body["error"]["code"] == "deadline_exceeded", body
            assert "caller's deadline" in body["error"]["message"]
            for sock in holders:  # nothing let in was lost
                status, _, body = _answer(sock)
                assert status == 200, body
        finally:
            for sock in holders:
                sock.close()

    def test_requests_let_in_hand_their_place_back_whatever_their_answer(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        # Two places (a queue of 1, batches of 1) and a 60 s wait at the door: a place kept
        # by a request that failed after it was let in would hold the good ones below until
        # their sockets time out.
        server = start_server(
            probe_bundle.path, "--max-queue-size", "1", "--max-batch-size", "1",
            "--queue-wait-ms", "60000", "--max-body-bytes", "2048", "--body-timeout-s", "0.5",
        )  # fmt: skip
        url = server.url
        one = json.dumps({"inputs": [{"value": 1}]}).encode()
        for body, code in [
            (b'{"inputs": [', "bad_request"),
            (b'{"inputs": [{"value": "x"}]}', "invalid_input"),
            (b"x" * 4096, "payload_too_large"),
            (b"{}", "bad_request"),
        ]:
            with _connect(url) as sock:
                sock.sendall(_request("/invocations", body))
                status, _, answer = _answer(sock)
            assert answer["error"]["code"] == code, answer
        with _connect(url) as sock:  # a client gone halfway through its body
            sock.sendall(_request("/invocations", one[:5], declared=len(one)))
        with _connect(url) as sock:  # a body that stalls: 408 once body_timeout_s is up
            started = time.monotonic()
            sock.sendall(_request("/invocations", one[:5], declared=len(one)))
            status, _, answer = _answer(sock)
            waited = time.monotonic() - started
        assert status == 408 and answer["error"]["code"] == "request_timeout", answer
        assert "server.body_timeout_s" in answer["error"]["message"]
        assert waited >= 0.45, waited
        _until(lambda: _gauge(url, "aiaas_door_waiting") == 0, "someone still waits")
        slow = json.dumps({"inputs": [{"value": 1, "sleep_ms": 300}]}).encode()
        both = [_connect(url) for _ in range(2)]
        try:
            for sock in both:  # both places at once, as soon as they are asked for
                sock.settimeout(10)
                sock.sendall(_request("/invocations", slow))
            assert [_answer(sock)[0] for sock in both] == [200, 200]
        finally:
            for sock in both:
                sock.close()

    def test_the_servers_own_timeout_counts_the_wait_at_the_door(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        server = start_server(
            probe_bundle.path, "--max-queue-size", "1", "--max-batch-size", "1",
            "--queue-wait-ms", "60000", "--request-timeout", "1.2",
        )  # fmt: skip
        url = server.url
        holders = [_connect(url) for _ in range(2)]
        try:
            # one running, then one queued behind it (or the other way round)
            for sock, sleep_ms in zip(holders, (800, 0), strict=True):
                body = json.dumps({"inputs": [{"value": 1, "sleep_ms": sleep_ms}]}).encode()
                sock.sendall(_request("/invocations", body))
                time.sleep(0.05)
            # Let in when the slow one is answered (about 0.75 s from now), then 0.6 s to
            # compute: over the 1.2 s counted from its arrival, within it from its entry.
            late = json.dumps({"inputs": [{"value": 1, "sleep_ms": 600}]}).encode()
            with _connect(url) as sock:
                sock.sendall(_request("/invocations", late))
                status, _, answer = _answer(sock)
            assert status == 504 and "server.request_timeout_s" in answer["error"]["message"]
            assert [_answer(sock)[0] for sock in holders] == [200, 200]
        finally:
            for sock in holders:
                sock.close()

    @staticmethod
    def _refused_at_once(url: str, one: bytes) -> list[str]:
        """With the queue and the door full: requests refused before their bodies."""
        done = []
        # 1. a body announced but not sent (a read would wait for it until the test fails)
        with _connect(url) as sock:
            sock.sendall(_request("/invocations", one[:5], declared=len(one)))
            status, headers, body = _answer(sock)
        assert status == 503, body
        assert headers["retry-after"] == "1"
        assert body["error"]["code"] == "overloaded"
        assert "queue is full" in body["error"]["message"]
        done.append("invocations")
        # 2. OIP: malformed JSON, never parsed (it would be a 400); the OIP error shape
        with _connect(url) as sock:
            sock.sendall(_request("/v2/models/probe/infer", b'{"inputs": ['))
            status, headers, body = _answer(sock)
        assert status == 503, body
        assert headers["retry-after"] == "1"
        assert body["code"] == "overloaded" and "queue is full" in body["error"]
        done.append("oip")
        # 3. a whole body left unread: the connection still serves the next request
        with _connect(url) as sock:
            sock.sendall(_request("/invocations", one))
            status, headers, body = _answer(sock)
            assert (status, headers["retry-after"]) == (503, "1"), body
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: test\r\n\r\n")
            status, _, body = _answer(sock)
            assert (status, body["ready"]) == (200, True), body
        done.append("keep-alive")
        return done

    def test_room_in_the_waiting_room_still_reads_validates_and_answers(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        # Not overloaded: the body is read and validated as before (400 for malformed JSON).
        server = start_server(probe_bundle.path, "--max-queue-size", "1")
        with _connect(server.url) as sock:
            sock.sendall(_request("/invocations", b'{"inputs": ['))
            status, _, body = _answer(sock)
        assert status == 400 and body["error"]["code"] == "bad_request", body


class Gate:
    """A batch function that blocks until released."""

    def __init__(self) -> None:
        import threading

        self.open = threading.Event()

    def __call__(self, items: list[int]) -> Sequence[int]:
        self.open.wait(timeout=30)
        return items


def test_refuses_now_only_when_a_request_of_one_item_would_be_refused_at_once() -> None:
    gate = Gate()

    async def run() -> list[bool]:
        seen = []
        b = Batcher(gate, max_batch_size=1, max_delay_ms=0, max_queue_size=2, queue_wait_ms=60_000)
        b.start()
        try:
            seen.append(b.refuses_now())  # empty
            first = asyncio.ensure_future(b.submit([1]))
            await asyncio.sleep(0)
            await asyncio.to_thread(_until, lambda: b.queue_depth == 0, "never taken")
            queued = [asyncio.ensure_future(b.submit([i])) for i in (2, 3)]
            await asyncio.sleep(0)
            seen.append(b.refuses_now())  # queue full, waiting room empty: one would wait
            waiters = [asyncio.ensure_future(b.submit([i])) for i in (4, 5)]
            await asyncio.sleep(0)
            assert b.waiting_items == 2
            seen.append(b.refuses_now())  # queue and waiting room full
            gate.open.set()
            results = [await first, *[await f for f in queued], *[await w for w in waiters]]
            assert results == [[1], [2], [3], [4], [5]]  # nothing refused, nothing lost
            seen.append(b.refuses_now())
        finally:
            gate.open.set()
            await b.stop()
        return seen

    assert asyncio.run(run()) == [False, False, True, False]


def test_refuses_now_without_waiting_is_a_full_queue() -> None:
    gate = Gate()

    async def run() -> list[bool]:
        b = Batcher(gate, max_batch_size=1, max_delay_ms=0, max_queue_size=1)  # no waiting
        b.start()
        try:
            first = asyncio.ensure_future(b.submit([1]))
            await asyncio.sleep(0)
            await asyncio.to_thread(_until, lambda: b.queue_depth == 0, "never taken")
            before = b.refuses_now()
            queued = asyncio.ensure_future(b.submit([2]))
            await asyncio.sleep(0)
            full = b.refuses_now()
            gate.open.set()
            assert [await first, await queued] == [[1], [2]]
            return [before, full]
        finally:
            gate.open.set()
            await b.stop()

    assert asyncio.run(run()) == [False, True]
