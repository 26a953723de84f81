"""Throughput (2xx/s) of the aiaas model server vs the raw limit, a naive server and LitServe.

MiniLM (examples/minilm), single-item requests from 64 concurrent clients (wrk), all in one
process tree: every server is a child of this script on a free 127.0.0.1 port, and runs
alone (the one before it is stopped) so none competes for the cores. Prints a table, the
ratios, and the three targets of issue 2 with PASS/FAIL. A benchmark, not a test: the exit
status is 0 whatever the verdicts, non-zero only if something broke.

    .venv/bin/python bench/serve_throughput.py [--duration 20] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
BATCH_SIZES = (1, 8, 16, 32, 64)

LUA = r"""
counter = 0
request = function()
  counter = counter + 1
  local body = '{"inputs":[{"text":"The quick brown fox jumps over the lazy dog, number '
    .. counter .. ' in a sentence of moderate length"}]}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""


@dataclass
class Result:
    """One system's figures from a measured wrk run."""

    system: str
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(BENCH), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}


@contextlib.contextmanager
def _server(cmd: list[str], port: int, log: Path, ready_path: str = "/ping") -> Iterator[str]:
    """Start ``cmd`` (its own process group), wait for ``ready_path`` = 200, stop it after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{cmd[1:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(url + ready_path, timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[1:3]} not ready after 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole process group and wait until every member is gone.

    LitServe runs several processes; one left behind would steal the cores from the next
    system measured.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=40)
    deadline = time.monotonic() + 10
    while True:
        proc.poll()  # reap our own child, or it would count as a live member
        try:
            os.killpg(proc.pid, signal.SIGKILL if time.monotonic() > deadline else 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline + 5:  # only unreaped zombies can be left: they use no CPU
            break
        time.sleep(0.1)


def _wrk(url: str, lua: Path, seconds: float, connections: int) -> str:
    cmd = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    done = subprocess.run([*cmd, "-s", str(lua), url], capture_output=True, text=True, check=True)
    return done.stdout


def _ms(text: str) -> float:
    """wrk's durations (``812.5us``, ``190.2ms``, ``1.02s``, ``1.5m``) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise RuntimeError(f"cannot read wrk duration {text!r}")
    return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[match.group(2)]


def parse_wrk(system: str, output: str) -> Result:
    """Goodput (2xx responses per second), p50, p99, non-2xx and socket errors from wrk."""
    found = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (found and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    bad = int(non_2xx.group(1)) if non_2xx else 0
    seconds = _ms(found.group(2)) / 1000.0
    return Result(
        system=system,
        rps=(int(found.group(1)) - bad) / seconds,
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        non_2xx=bad,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def measure(system: str, url: str, lua: Path, args: argparse.Namespace) -> Result:
    """Warm up, let the queue drain, then one measured run."""
    _wrk(url, lua, args.warmup, args.connections)
    time.sleep(2)
    result = parse_wrk(system, _wrk(url, lua, args.duration, args.connections))
    r = result
    print(
        f"  {system}: {r.rps:.1f} req/s, p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms", flush=True
    )
    return result


def _batch_average(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    total = float(re.search(r"^aiaas_batch_size_sum\S* (\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    count = float(re.search(r"^aiaas_batch_size_count\S* (\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    return total / count if count else 0.0


def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Build the bundle, measure every system, return the figures."""
    from aiaas.bundle import build_bundle, open_bundle

    print("building the minilm bundle ...", flush=True)
    built = build_bundle(REPO / "examples" / "minilm", work / "minilm.tar.gz")
    bundle_dir, _ = open_bundle(built.path, cache_dir=work / "unpacked")
    lua = work / "post.lua"
    lua.write_text(LUA)
    py = sys.executable

    print(f"raw in-process limit ({args.raw_seconds:g} s per batch size) ...", flush=True)
    raw_cmd = [py, str(BENCH / "_raw_limit.py"), str(bundle_dir), str(args.raw_seconds)]
    raw_out = subprocess.run(
        [*raw_cmd, *map(str, BATCH_SIZES)], capture_output=True, text=True, env=_env(), check=True
    ).stdout
    raw = {int(k): v for k, v in json.loads(raw_out.strip().splitlines()[-1]).items()}
    best_bs = max(raw, key=lambda k: raw[k])
    print("  " + ", ".join(f"bs{k}: {v:.0f}/s" for k, v in raw.items()), flush=True)

    results: list[Result] = []
    systems: list[tuple[str, list[str], str]] = [
        (
            "aiaas",
            [py, "-m", "aiaas", "serve", str(built.path), "--log-level", "warning"],
            "/invocations",
        ),
        ("naive FastAPI", [py, str(BENCH / "_naive_server.py"), str(bundle_dir)], "/invocations"),
        ("LitServe 32/5ms", [py, str(BENCH / "_litserve_server.py"), str(bundle_dir)], "/predict"),
        (
            "LitServe tuned",
            [py, str(BENCH / "_litserve_server.py"), str(bundle_dir), "--tuned"],
            "/predict",
        ),
    ]
    for name, cmd, path in systems:
        if args.quick and name == "LitServe 32/5ms":
            continue
        port = _free_port()
        cmd = [*cmd, "--port", str(port)] if name == "aiaas" else [*cmd[:3], str(port), *cmd[3:]]
        print(f"{name} ...", flush=True)
        with _server(cmd, port, work / f"{name.split()[0]}.log") as url:
            result = measure(name, url + path, lua, args)
            if name == "aiaas":
                result.extra["mean_batch"] = round(_batch_average(url), 1)
        results.append(result)

    limit = raw[best_bs]
    by = {r.system: r for r in results}
    aiaas = by["aiaas"]
    best_lit = max((r for r in results if r.system.startswith("LitServe")), key=lambda r: r.rps)
    checks = [
        ("aiaas >= 0.85 x raw limit", aiaas.rps / limit, aiaas.rps >= 0.85 * limit),
        (
            "aiaas >= 2 x naive",
            aiaas.rps / by["naive FastAPI"].rps,
            aiaas.rps >= 2 * by["naive FastAPI"].rps,
        ),
        (f"aiaas > {best_lit.system}", aiaas.rps / best_lit.rps, aiaas.rps > best_lit.rps),
    ]
    return {
        "raw": raw, "best_batch": best_bs, "limit": limit, "results": results, "checks": checks,
        "connections": args.connections, "duration_s": args.duration,
    }  # fmt: skip


def report(data: dict[str, object]) -> None:
    """Print the table and verdicts."""
    import torch

    limit = float(data["limit"])  # type: ignore[arg-type]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    versions = f"torch {torch.__version__}; python {platform.python_version()}"
    print(f"\nmachine: {os.cpu_count()} cores, {cpu}; {versions}")
    raw = data["raw"]
    assert isinstance(raw, dict)
    print(
        "raw in-process limit (sentences/s): " + ", ".join(f"bs{k} {v:.0f}" for k, v in raw.items())
    )
    conns, secs = data["connections"], data["duration_s"]
    print(f"\nminilm, single-item requests, {conns} connections, {secs} s measured:")
    head = "| system | 2xx/s | p50 ms | p99 ms | non-2xx / socket errors"
    print(f"{head} | ratio to raw limit ({limit:.0f}/s) |")
    print("|---|---|---|---|---|---|")
    print(f"| raw limit (bs{data['best_batch']}, no HTTP) | {limit:.0f} | - | - | - | 1.00 |")
    results = data["results"]
    assert isinstance(results, list)
    for r in results:
        note = f" (mean batch {r.extra['mean_batch']})" if "mean_batch" in r.extra else ""
        print(f"| {r.system}{note} | {r.rps:.0f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | "
              f"{r.non_2xx} / {r.socket_errors} | {r.rps / limit:.2f} |")  # fmt: skip
    print("\ntargets:")
    checks = data["checks"]
    assert isinstance(checks, list)
    for label, ratio, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}  (ratio {ratio:.2f})")


def main() -> int:
    """Parse arguments, run, report; exit 2 if wrk is missing."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per system")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds per system")
    parser.add_argument("--raw-seconds", type=float, default=4.0, help="seconds per raw batch size")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="short runs, one LitServe variant")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.raw_seconds = 5.0, 2.0, 1.5
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: apt-get install wrk (or `make bench`, which installs it)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="aiaas-bench-") as tmp:
        data = run(args, Path(tmp))
    report(data)
    if args.json:
        out = {**data, "results": [asdict(r) for r in data["results"]]}  # type: ignore[attr-defined]
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
