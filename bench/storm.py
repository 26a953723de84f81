"""Clients that ignore ``Retry-After``: goodput under a 1,024-connection storm.

Starts the MiniLM model server (``aiaas serve`` on the ``examples/minilm`` bundle, as
``serve_throughput.py`` does, with its helpers), then in the same run:

1. **capacity**: wrk at ``--connections`` (64) keeps the server busy without overloading it;
   capacity is its 200s per second;
2. **storm**: wrk at ``--storm-connections`` (1,024). wrk sends the next request on a
   connection as soon as the previous answer arrives, whatever its status, so every 503
   comes straight back: clients that ignore ``Retry-After``;
3. the verdict: goodput (200s per second) during the storm as a fraction of the capacity
   just measured, PASS at 0.5 or more; then one normal request must still be answered.

Not a test: it prints figures and a verdict and exits 0 whatever the verdict (1 if something
broke, 2 without wrk). wrk shares the cores with the server, so run it on an otherwise idle
machine; the "other load" column says how many cores other processes took meanwhile.

    .venv/bin/python bench/storm.py            # about 2 minutes
    .venv/bin/python bench/storm.py --quick    # about 1 minute
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from _minilm import CHECK_TEXT, SENTENCE
from serve_throughput import (
    LUA,
    WRK_THREADS,
    BenchError,
    WrkRun,
    _exit_on_sigterm,
    accounted_wrk,
    build_bundle,
    free_port,
    http_call,
    run_wrk,
    running,
    systems,
)

TARGET = 0.5  # storm goodput / capacity


@dataclass
class Phase:
    """One measured wrk run against the server."""

    name: str
    connections: int
    wrk: WrkRun
    server_cores: float
    other_cores: float
    statuses: dict[str, float]  # the server's own count per status during the run

    def row(self) -> str:
        w = self.wrk
        counted = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(self.statuses.items()))
        return (
            f"{self.name:<9} {self.connections:>5}  {w.ok_per_s:>8.1f}  "
            f"{w.non_2xx / w.seconds:>8.1f}  "
            f"{w.latency_ms['p50']:>8.1f}  {w.latency_ms['p99']:>8.1f}  "
            f"{sum(w.socket_errors.values()):>6}  {self.server_cores:>5.2f}  "
            f"{self.other_cores:>5.2f}  {counted}"
        )


def raise_open_files() -> int:
    """Lift the soft limit on open files to the hard one: 1,024 connections need more than
    the usual soft limit of 1,024 descriptors (for wrk and the server it starts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def status_counts(base: str) -> dict[str, float]:
    """``aiaas_requests_total`` of ``/invocations`` by status, from the server's /metrics."""
    text = http_call(base + "/metrics", timeout=30.0)[1].decode()
    pattern = r'^aiaas_requests_total\{route="/invocations",status="(\d+)"\} (\S+)$'
    return {status: float(value) for status, value in re.findall(pattern, text, re.M)}


def phase(name: str, base: str, lua: Path, seconds: int, connections: int, sid: int) -> Phase:
    """One measured run; the server's own status counts for it from /metrics."""
    before = status_counts(base)
    wrk, server_cores, other_cores = accounted_wrk(
        base + "/invocations", lua, seconds, connections, sid
    )
    after = status_counts(base)
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}
    return Phase(name, connections, wrk, server_cores, other_cores, delta)


@contextlib.contextmanager
def warm_minilm_server(
    work: Path, extra: list[str], warmup_s: int, connections: int
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """Build the MiniLM bundle in ``work``, serve it (``aiaas serve`` plus ``extra``, one
    inference worker, metrics on) on a free loopback port, check one real answer, warm it up
    with wrk for ``warmup_s`` at ``connections`` and let it settle 2 s; yield the base URL,
    wrk's Lua script and the server process (stopped on the way out)."""
    print("building the minilm bundle ...", flush=True)
    archive, bundle_dir = build_bundle(work)
    lua = work / "post.lua"
    before, after = SENTENCE.split("{}")
    lua.write_text(LUA % {"threads": WRK_THREADS, "before": before, "after": after})
    base_system = systems(archive, bundle_dir)[0]  # aiaas, one inference worker
    system = type(base_system)(
        base_system.name,
        lambda port: [*base_system.argv(port), *extra],
        base_system.predict_path,
        metrics=True,
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    print(f"aiaas serve on 127.0.0.1:{port} {' '.join(extra)} ...", flush=True)
    with running(system, port, work / "server.log") as proc:
        status, _ = http_call(
            base + "/invocations", json.dumps({"inputs": [{"text": CHECK_TEXT}]}).encode(), 30.0
        )
        if status != 200:
            raise BenchError(f"the check request answered {status}")
        print(f"warm-up: {warmup_s} s at {connections} connections ...", flush=True)
        run_wrk(base + "/invocations", lua, warmup_s, connections)
        time.sleep(2.0)
        yield base, lua, proc


def run(args: argparse.Namespace, work: Path) -> int:
    """Build, serve, measure capacity then the storm; print the table and the verdict."""
    limit = raise_open_files()
    if limit < args.storm_connections + 64:
        raise BenchError(f"only {limit} open files allowed; the storm needs more")
    with warm_minilm_server(work, args.server_arg or [], args.warmup, args.connections) as (
        base,
        lua,
        proc,
    ):
        print(f"capacity: {args.duration} s at {args.connections} connections ...", flush=True)
        capacity = phase("capacity", base, lua, args.duration, args.connections, proc.pid)
        time.sleep(2.0)
        print(
            f"storm: {args.duration} s at {args.storm_connections} connections that ignore "
            "Retry-After ...",
            flush=True,
        )
        # One wrk run, from the first second of the storm: a separate warm-up run would leave
        # a full queue of requests whose clients had gone, and the measured run would wait
        # behind them.
        storm = phase("storm", base, lua, args.duration, args.storm_connections, proc.pid)
        started = time.monotonic()
        while True:  # recovery: a normal request is answered once the storm has passed
            status, _ = http_call(
                base + "/invocations",
                json.dumps({"inputs": [{"text": CHECK_TEXT}]}).encode(),
                30.0,
            )
            if status == 200:
                break
            if time.monotonic() - started > 30:
                raise BenchError(f"no 200 within 30 s after the storm (last {status})")
            time.sleep(0.1)
        recovery = time.monotonic() - started
    print()
    print(
        "phase     conns      200/s  other/s   p50 ms   p99 ms  sockerr  cores  other"
        "  server's count by status"
    )
    print(capacity.row())
    print(storm.row())
    ratio = storm.wrk.ok_per_s / capacity.wrk.ok_per_s if capacity.wrk.ok_per_s else 0.0
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"\ngoodput under the storm: {storm.wrk.ok_per_s:.1f}/s = {ratio:.2f} x capacity "
        f"({capacity.wrk.ok_per_s:.1f}/s)  target >= {TARGET}  {verdict}"
    )
    print(f"first 200 after the storm: {recovery * 1000:.0f} ms")
    if max(capacity.other_cores, storm.other_cores) > 0.1:
        print("note: other processes used the cores meanwhile; the figures are noisy")
    return 0


def capacity_arguments(doc: str, server_arg_example: str) -> argparse.ArgumentParser:
    """The options every wrk-driven bench of the MiniLM server has (``storm.py``,
    ``overload.py``): run length, warm-up, capacity connections, extra server arguments and
    ``--quick``; finish with :func:`parse_with_quick`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=5, help="seconds before capacity")
    parser.add_argument("--connections", type=int, default=64, help="capacity load")
    parser.add_argument(
        "--server-arg",
        action="append",
        help=f"extra argument for aiaas serve (repeat), e.g. --server-arg={server_arg_example}",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (10 s, 3 s warm-up)")
    return parser


def parse_with_quick(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed options, ``--quick`` turned into 10 s runs after a 3 s warm-up."""
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 10, 3
    return args


def run_bench(
    name: str, args: argparse.Namespace, run: Callable[[argparse.Namespace, Path], int]
) -> int:
    """``run(args, work)`` in a temporary folder, as a bench's ``main``: 2 without wrk, 1 on a
    :class:`BenchError`, 130 when interrupted (the server is stopped either way)."""
    if shutil.which("wrk") is None:
        print("wrk is not installed (`apt-get install wrk`, or `make bench`)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix=f"aiaas-{name}-") as tmp:
            return run(args, Path(tmp))
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the server was stopped", file=sys.stderr)
        return 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings."""
    parser = capacity_arguments(__doc__, "--max-queue-size=256")
    parser.add_argument("--storm-connections", type=int, default=1024)
    return parse_with_quick(parser, argv)


def main(argv: list[str] | None = None) -> int:
    """Run the storm benchmark; see the module docstring for exit statuses."""
    return run_bench("storm", parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
