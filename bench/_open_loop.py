"""Open-loop load: POST requests at a fixed arrival rate, whatever the answers.

Run as a child of ``overload.py`` (its own process, so its CPU time is counted apart from the
driver's). Request ``i`` is due at ``start + i / rate``; a scheduler sends every request that
is due on an idle keep-alive connection, or on a new one when none is idle, so a slow or
refused answer never delays the next request (no coordinated omission): the offered rate is
held by opening connections, up to ``--max-connections``. Only past that cap would a request
wait for a connection; such requests are counted (``waited_for_connection``) and their send
lag shows in ``send_lag_ms``. Latency is measured from the request's scheduled time.

After ``--duration`` seconds the schedule stops; every request sent is then waited for (up to
``--drain-s``) and counted by status, or as lost (connection closed or reset before its answer,
or no answer in time). Meanwhile one probe request is sent every 100 ms until one is answered
200: its answer time after the end of the load is the recovery time.

The scheduler wakes at most once every ``--tick-ms`` (2 ms; 0: at each request's time) and
sends every request then due, so a request leaves about a tick late at most, plus the timer's
own delay (``send_lag_ms`` shows it). A timer per request (1,200 a second) cost the generator
0.23 cores of the two it shares with the server; with the tick, 0.07 (2026-12-08). Its CPU is
taken from the server's, which a client on another machine would not do, so the less it takes
the closer the figure is to the user's.

Prints ``start`` as the schedule starts, ``end`` as it ends, then one JSON object on its last
line (see :func:`report`). Plain asyncio on uvloop with raw protocols.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import uvloop
from _minilm import SENTENCE

PROBE_EVERY_S = 0.1
RECOVERY_LIMIT_S = 60.0


@dataclass(slots=True)
class Sent:
    """One request: when it was due, sent, answered, and how."""

    due: float
    sent: float = 0.0
    answered: float = 0.0
    status: int = 0  # 0: no answer (yet)
    retry_after: bool = False
    probe: bool = False


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current: Sent | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: Sent, payload: bytes) -> None:
        """Write ``payload`` for ``request`` (the connection is idle)."""
        assert self.transport is not None and self.current is None
        self.current = request
        request.sent = time.monotonic()
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.current is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            keep_alive = True
            retry_after = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    length = int(value)
                elif name == b"retry-after":
                    retry_after = True
                elif name == b"connection" and b"close" in value:
                    keep_alive = False
            if len(self.buffer) < end + 4 + length:
                return
            status = int(head[9:12])
            del self.buffer[: end + 4 + length]
            request, self.current = self.current, None
            request.answered = time.monotonic()
            request.status = status
            request.retry_after = retry_after
            if keep_alive:
                self.load.idle(self)
            else:
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.load.lost_connection(self)

    def close(self) -> None:
        """Close the connection (whatever it carries is then lost)."""
        if self.transport is not None and not self.closed:
            self.transport.close()


@dataclass
class Load:
    """The schedule, the connections and every request sent."""

    host: str
    port: int
    path: str
    max_connections: int
    requests: list[Sent] = field(default_factory=list)
    idle_connections: list[Connection] = field(default_factory=list)
    backlog: collections.deque[tuple[Sent, bytes]] = field(default_factory=collections.deque)
    connections: int = 0  # open or opening
    most_connections: int = 0
    connect_errors: int = 0
    waited_for_connection: int = 0
    lost: int = 0
    outstanding: int = 0

    def payload(self, n: int) -> bytes:
        """Request ``n`` as bytes: one sentence, its own number (like wrk's Lua script)."""
        body = json.dumps({"inputs": [{"text": SENTENCE.format(n)}]}).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def submit(self, request: Sent, payload: bytes) -> None:
        """Send now: on an idle connection, else a new one, else (at the cap) when one frees."""
        self.requests.append(request)
        self.outstanding += 1
        while self.idle_connections:
            conn = self.idle_connections.pop()
            if not conn.closed:
                conn.send(request, payload)
                return
        if self.connections < self.max_connections:
            self.connections += 1
            self.most_connections = max(self.most_connections, self.connections)
            asyncio.get_running_loop().create_task(self._connect_and_send(request, payload))
            return
        self.waited_for_connection += 1
        self.backlog.append((request, payload))

    async def _connect_and_send(self, request: Sent, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.connections -= 1
            self.connect_errors += 1
            self._answer_lost(request)
            return
        conn.send(request, payload)

    def _answer_lost(self, request: Sent) -> None:
        request.answered = time.monotonic()
        self.lost += 1
        self.outstanding -= 1

    def idle(self, conn: Connection) -> None:
        """``conn``'s answer arrived: it carries the next request waiting, or waits."""
        self.outstanding -= 1
        if self.backlog:
            request, payload = self.backlog.popleft()
            conn.send(request, payload)
        else:
            self.idle_connections.append(conn)

    def lost_connection(self, conn: Connection) -> None:
        """``conn`` closed; the request it carried, if any, is lost."""
        self.connections -= 1
        if conn.current is not None:
            self._answer_lost(conn.current)
            conn.current = None


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Offer the load, drain it, probe for recovery; the figures."""
    url = urlsplit(args.url)
    assert url.hostname is not None and url.port is not None
    load = Load(url.hostname, url.port, url.path or "/", args.max_connections)
    total = int(args.rate * args.duration)
    payloads = [load.payload(i) for i in range(total)]
    cpu_before = _cpu_s()
    start = time.monotonic() + 0.05
    print("start", flush=True)  # the driver starts counting the server's CPU time
    sent = 0
    while sent < total:
        now = time.monotonic()
        due = min(total, int((now - start) * args.rate) + 1)
        while sent < due:
            load.submit(Sent(start + sent / args.rate), payloads[sent])
            sent += 1
        if sent < total:  # wake at the next request's time, but at most once a tick
            await asyncio.sleep(max(args.tick_s, start + sent / args.rate - time.monotonic()))
    end = start + args.duration
    load_cpu = _cpu_s() - cpu_before
    print("end", flush=True)
    # Recovery: a probe every 100 ms until one is answered 200.
    probes: list[Sent] = []
    recovered: float | None = None
    n = total
    while recovered is None and time.monotonic() - end < RECOVERY_LIMIT_S:
        probe = Sent(time.monotonic(), probe=True)
        probes.append(probe)
        load.submit(probe, load.payload(n))
        n += 1
        await asyncio.sleep(PROBE_EVERY_S)
        answered = [p.answered for p in probes if p.status == 200]
        if answered:
            recovered = min(answered) - end
    drain_deadline = time.monotonic() + args.drain_s
    while load.outstanding and time.monotonic() < drain_deadline:
        await asyncio.sleep(0.05)
    return report(load, start, end, load_cpu, recovered)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(
    load: Load, start: float, end: float, load_cpu_s: float, recovered: float | None
) -> dict[str, Any]:
    """What happened to the scheduled requests (probes apart)."""
    window = end - start
    scheduled = [r for r in load.requests if not r.probe]
    by_status = collections.Counter(str(r.status) for r in scheduled if r.status)
    unanswered = sum(1 for r in scheduled if not r.status)
    ok_in_window = sum(1 for r in scheduled if r.status == 200 and r.answered <= end)
    refused = [r for r in scheduled if r.status == 503]
    lag = [(r.sent - r.due) * 1000 for r in scheduled if r.sent]
    ok_latency = [(r.answered - r.due) * 1000 for r in scheduled if r.status == 200]
    refused_latency = [(r.answered - r.due) * 1000 for r in refused]
    sent_in_window = sum(1 for r in scheduled if r.sent and r.sent <= end)
    return {
        "window_s": window,
        "scheduled": len(scheduled),
        "sent_in_window": sent_in_window,
        "offered_per_s": sent_in_window / window,
        "send_lag_ms": {
            "p50": _percentile(lag, 0.5),
            "p99": _percentile(lag, 0.99),
            "max": max(lag, default=float("nan")),
        },
        "waited_for_connection": load.waited_for_connection,
        "most_connections": load.most_connections,
        "by_status": dict(by_status),
        "ok_in_window": ok_in_window,
        "refused_with_retry_after": sum(1 for r in refused if r.retry_after),
        "lost": load.lost,
        "connect_errors": load.connect_errors,
        "unanswered": unanswered,
        "ok_latency_ms": {
            "p50": _percentile(ok_latency, 0.5),
            "p99": _percentile(ok_latency, 0.99),
        },
        "refused_latency_ms": {
            "p50": _percentile(refused_latency, 0.5),
            "p99": _percentile(refused_latency, 0.99),
        },
        "recovery_s": recovered,
        "load_cpu_s": load_cpu_s,
    }


def main() -> None:
    """Parse the arguments, drive the load, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of load")
    parser.add_argument("--max-connections", type=int, default=8192)
    parser.add_argument("--drain-s", type=float, default=90.0)
    parser.add_argument(
        "--tick-ms",
        type=float,
        default=2.0,
        help="the scheduler wakes at most once a tick and sends every request then due",
    )
    args = parser.parse_args()
    args.tick_s = args.tick_ms / 1000
    result = uvloop.run(drive(args))
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
