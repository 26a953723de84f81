"""Throughput of the aiaas model server vs the raw model limit, a naive server and LitServe.

MiniLM (``examples/minilm``), single-item requests from 64 concurrent wrk connections. One
run, one process tree: the raw limit and every server run as children of this script, on free
127.0.0.1 ports, one at a time (each server's whole session is stopped before the next one
starts), so they never compete for the cores. This process itself never imports torch.

Measured, in order:

1. raw limit: ``MiniLM.predict`` (tokenize + forward + pool, no HTTP) at batch sizes 1, 8,
   16, 32, 64 in one thread with all of torch's threads, and at 8, 16, 32 in two threads
   with their own model copy and one torch thread each (the layout of
   ``--inference-workers 2``); the best rate of either layout is the reference (that
   layout and batch size is measured again after the servers, and the higher of the two
   rates is the limit);
2. aiaas: ``python -m aiaas serve model.tar.gz`` with its defaults and the bundle's batching
   (32 / 5 ms), and with ``--inference-workers 2 --max-batch-size 16``; each of the two
   again with ``--inference-in process`` (each worker's model in a process of its own);
3. naive FastAPI: one forward per request in an ``async def`` endpoint;
4. LitServe 32 / 5 ms as a user configures it, tuned (fast_queue + orjson ``Response``),
   and tuned with two inference workers of one torch thread and batches of 16 (like aiaas's).

The host's speed drifts (by up to 17 % within minutes on a 2-core cloud VM), so the
0.85 x raw-limit targets are taken from paired runs: each aiaas variant is started again and,
with it up (and idle in between), the raw limit of the same thread layout (at its best batch
size) and aiaas under load alternate (raw, aiaas, raw, ..., ``--pairs`` aiaas runs); each
aiaas run is divided by the mean of the raw runs either side of it, and the median of those
ratios is the verdict. The issue's target is aiaas with its defaults against the raw limit
of one thread with torch's default threads; aiaas 2 workers against the two-worker layout is
the same test for that variant.

Each server must first embed a check sentence like the raw forward does; then wrk warms it
up, the queue drains, and a measured wrk run gives req/s, latency percentiles, non-2xx and
socket errors. The CPU time of the server's process tree and of everything else on the
machine is recorded too: a phase during which other processes used more than 0.06 cores is
measured again once the machine is quiet (``--retries``), and flagged if it never was.

Prints a table and the three targets (PASS/FAIL). A benchmark, not a test: the exit status
is 0 whatever the verdicts, 1 if something broke (a server did not start, wrong embeddings,
wrk failed), 2 if wrk is missing, 130 on Ctrl-C, 143 on SIGTERM.

    .venv/bin/python bench/serve_throughput.py [--duration 20] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from _minilm import CHECK_TEXT, SENTENCE  # no torch: aiaas.bundle and the sentence only

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PYTHON = sys.executable
BATCH_SIZES = (1, 8, 16, 32, 64)
#: Batch sizes measured in the two-worker layout (each worker runs its own batches).
WORKER_BATCH_SIZES = (8, 16, 32)
WRK_THREADS = 2
#: Largest element-wise difference allowed between a server's embedding and the raw forward.
CHECK_TOLERANCE = 1e-4
#: Outside CPU load (in cores) above which a run is flagged as disturbed.
OTHER_LOAD_WARN = 0.06
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0  # for the server's main process to exit after SIGTERM
ORPHAN_GRACE_S = 5.0  # then for the rest of its session (LitServe leaves some behind)
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: One sentence per request (``_minilm.SENTENCE``: 20 tokens with CLS/SEP, 21 for some
#: 4-digit numbers). Each wrk thread counts in its own residue class, so no two requests of a
#: run carry the same text.
LUA = """\
local threads_seen = 0
function setup(thread)
  thread:set("tid", threads_seen)
  threads_seen = threads_seen + 1
end

function init(args)
  n = 0
end

function request()
  n = n + 1
  local body = '{"inputs":[{"text":"%(before)s' .. (n * %(threads)d + tid) .. '%(after)s"}]}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""


class BenchError(RuntimeError):
    """Something broke: the benchmark cannot give a figure (exit status 1)."""


# -- results -------------------------------------------------------------------------------


@dataclass
class WrkRun:
    """What one wrk run printed."""

    requests: int
    seconds: float
    requests_per_s: float
    latency_ms: dict[str, float]
    non_2xx: int
    socket_errors: dict[str, int]

    @property
    def ok_per_s(self) -> float:
        """Goodput: 2xx (and 3xx) responses per second."""
        return (self.requests - self.non_2xx) / self.seconds

    @property
    def errors(self) -> int:
        """Socket errors of every kind (connect, read, write, timeout)."""
        return sum(self.socket_errors.values())


@dataclass
class SystemResult:
    """One server's measured run and what its process tree used meanwhile."""

    name: str
    wrk: WrkRun
    server_cores: float
    other_cores: float
    pss_mb: float
    mean_batch: float | None = None
    check_max_abs_diff: float = 0.0
    attempts: int = 1


@dataclass
class RawLimit:
    """Sentences per second of ``MiniLM.predict`` by batch size in one thread layout
    (``workers`` threads with ``threads`` torch threads each); the best is the limit."""

    rates: dict[int, float]
    ms_per_batch: dict[int, float]
    torch: str
    threads: int
    reference: list[float] = field(repr=False)
    workers: int = 1
    other_by_batch: dict[int, float] = field(default_factory=dict)  # other processes' cores
    attempts: int = 1
    end_rate: float | None = None  # the best batch size measured again after the servers

    @property
    def other_cores(self) -> float:
        """The most CPU other processes used while any batch size was measured."""
        return max(self.other_by_batch.values(), default=0.0)

    @property
    def best_batch(self) -> int:
        """The batch size with the highest rate."""
        return max(self.rates, key=lambda size: self.rates[size])

    @property
    def limit(self) -> float:
        """The raw limit in sentences per second: the best batch size's rate, or its rate
        measured again after the servers if that is higher. Other work and a slower host
        only ever lower a rate, so the higher one is the closer to what the machine can do."""
        return max(self.rates[self.best_batch], self.end_rate or 0.0)

    @property
    def layout(self) -> str:
        """E.g. ``1 x 2 torch threads``: workers x torch threads per worker."""
        return f"{self.workers} x {self.threads} torch thread{'s' if self.threads > 1 else ''}"

    @property
    def best(self) -> str:
        """The best configuration, e.g. ``bs32, 1 x 2 torch threads``."""
        return f"bs{self.best_batch}, {self.layout}"


@dataclass
class Paired:
    """aiaas and the raw limit measured alternately: ``raw_rates`` has one more entry than
    ``server_rates`` and brackets each of them."""

    system: str
    batch: int  # the raw side's batch size
    layout: str  # the thread layout both sides share, e.g. ``2 x 1 torch thread``
    seconds: float
    raw_rates: list[float] = field(default_factory=list)
    server_rates: list[float] = field(default_factory=list)
    other_cores: list[float] = field(default_factory=list)  # per phase, in order

    @property
    def raw(self) -> str:
        """The raw configuration, e.g. ``bs16, 2 x 1 torch thread``."""
        return f"bs{self.batch}, {self.layout}"

    @property
    def ratios(self) -> list[float]:
        """Each aiaas run over the mean of the raw runs just before and just after it."""
        raw = self.raw_rates
        return [s / ((raw[i] + raw[i + 1]) / 2) for i, s in enumerate(self.server_rates)]

    @property
    def median_ratio(self) -> float:
        """The verdict's ratio: the median of :attr:`ratios`."""
        ordered = sorted(self.ratios)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass
class Check:
    """One target: ``passed`` is None when a system it needs was not measured."""

    label: str
    ratio: float | None
    passed: bool | None


@dataclass
class Report:
    """Everything one run measured."""

    date: str
    machine: dict[str, str]
    settings: dict[str, Any]
    raws: list[RawLimit]  # one per thread layout
    results: list[SystemResult]
    checks: list[Check]
    paired: list[Paired] = field(default_factory=list)  # one per aiaas variant

    @property
    def raw(self) -> RawLimit:
        """The layout with the highest limit: the reference every ratio is taken against."""
        return best_raw(self.raws)


def best_raw(raws: list[RawLimit]) -> RawLimit:
    """The layout whose best batch size is fastest."""
    return max(raws, key=lambda raw: raw.limit)


# -- machine and process accounting --------------------------------------------------------


def machine_info() -> dict[str, str]:
    """Cores, CPU model, Python and wrk versions (torch's comes from the raw-limit child)."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    wrk = (done.stdout + done.stderr).strip().splitlines()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "wrk": wrk[0].split("[")[0].strip() if wrk else "unknown",
    }


def busy_ticks() -> int:
    """Clock ticks the whole machine has spent busy (all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """``(pid, fields after the command name)`` of every live process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        yield int(entry.name), text[text.rindex(")") + 2 :].split()


def session_members(sid: int) -> list[tuple[int, list[str]]]:
    """Live (non-zombie) processes of session ``sid``; fields as in :func:`_proc_stats`."""
    # After ")": state is field 0, session field 3, utime 11, stime 12.
    return [(pid, f) for pid, f in _proc_stats() if int(f[3]) == sid and f[0] != "Z"]


def session_ticks(sid: int) -> int:
    """CPU ticks (user + system) of every live process in session ``sid``."""
    return sum(int(f[11]) + int(f[12]) for _, f in session_members(sid))


def session_pss_mb(sid: int) -> float:
    """Proportional set size of session ``sid``: shared pages split between their users."""
    kib = 0
    for pid, _ in session_members(sid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    kib += int(line.split()[1])
                    break
    return kib / 1024


def children_cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (wrk, once it has exited)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.1, quiet_s: int = 5) -> None:
    """Wait (up to ``max_wait_s``) until other work leaves the machine idle for ``quiet_s``
    seconds in a row; print a note when waiting, and when it never quieted."""
    deadline = time.monotonic() + max_wait_s
    quiet, noted = 0, False
    while quiet < quiet_s:
        before = busy_ticks()
        time.sleep(1.0)
        cores = (busy_ticks() - before) / CLK_TCK
        quiet = quiet + 1 if cores < threshold_cores else 0
        if quiet:
            continue
        if time.monotonic() >= deadline:
            print(f"  note: going on with {cores:.2f} cores busy with other work", flush=True)
            return
        if not noted:
            print(f"  waiting for other work ({cores:.2f} cores busy) to stop ...", flush=True)
            noted = True


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    """Offline Hugging Face, and ``bench/`` importable (``_minilm``) by the helper scripts."""
    path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": path,
    }


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def http_call(url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET (or POST JSON ``body``) ``url``; ``(status, body)``, also for 4xx/5xx."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class System:
    """How to start one server and where to send the load."""

    name: str
    argv: Callable[[int], list[str]]  # port -> command line
    predict_path: str
    metrics: bool = False  # aiaas only: mean batch size from /metrics
    workers: int = 1  # inference workers (thread layout) of an aiaas variant


@contextlib.contextmanager
def running(system: System, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``system`` in a session of its own, wait for ``GET /ping`` = 200, stop it after.

    The whole session is stopped on the way out, also on an exception or Ctrl-C.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(
            system.argv(port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            cwd=REPO,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise BenchError(
                    f"{system.name} exited with status {proc.returncode} before it was ready:\n"
                    + _tail(log)
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_call(f"http://127.0.0.1:{port}/ping", timeout=1.0)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{system.name} not ready after {READY_TIMEOUT_S:g} s:\n{_tail(log)}"
                )
            time.sleep(0.2)
        yield proc
    finally:
        stop_session(proc)


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


def stop_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever of its session is left.

    Returns once no live process of the session remains: LitServe runs several processes, and
    one left behind would steal the cores from the next system measured.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while members := session_members(proc.pid):
        if time.monotonic() > deadline:
            for pid, _ in members:  # orphans of the session we started, e.g. its own children
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline + 5:
            pids = [pid for pid, _ in members]
            print(f"warning: processes {pids} survived SIGKILL", file=sys.stderr, flush=True)
            return
        time.sleep(0.1)


# -- load ----------------------------------------------------------------------------------


def run_wrk(url: str, lua: Path, seconds: int, connections: int) -> str:
    """Run wrk against ``url`` for ``seconds``; its standard output."""
    cmd = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def _ms(text: str) -> float:
    """wrk's durations (``812.50us``, ``190.21ms``, ``1.02s``, ``1.50m``) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise BenchError(f"cannot read wrk duration {text!r}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[match.group(2)]
    return float(match.group(1)) * scale


def parse_wrk(output: str) -> WrkRun:
    """Requests, Requests/sec, latency percentiles, Non-2xx and socket errors from wrk."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", output, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M))
    if not (total and rate and {"50", "99"} <= latency.keys()):
        raise BenchError(f"cannot read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    kinds = ("connect", "read", "write", "timeout")
    return WrkRun(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2)) / 1000.0,
        requests_per_s=float(rate.group(1)),
        latency_ms={f"p{k}": _ms(v) for k, v in sorted(latency.items())},
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(zip(kinds, map(int, errors.groups()), strict=True))
        if errors
        else dict.fromkeys(kinds, 0),
    )


def check_embedding(url: str, reference: list[float]) -> float:
    """POST the check sentence; the largest difference from the raw forward's embedding."""
    body = json.dumps({"inputs": [{"text": CHECK_TEXT}]}).encode()
    status, raw = http_call(url, body, timeout=30.0)
    if status != 200:
        raise BenchError(f"POST {url} answered {status}: {raw[:500]!r}")
    try:
        embedding = [float(x) for x in json.loads(raw)["outputs"][0]["embedding"]]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BenchError(f"POST {url}: unexpected response {raw[:500]!r}") from exc
    if len(embedding) != len(reference):
        raise BenchError(f"POST {url}: {len(embedding)} floats, expected {len(reference)}")
    diff = max(abs(a - b) for a, b in zip(embedding, reference, strict=True))
    if diff > CHECK_TOLERANCE:
        raise BenchError(f"POST {url}: embedding differs from the raw forward by {diff:.2e}")
    return diff


def aiaas_batches(base: str) -> tuple[float, float]:
    """``(items, batches)`` counted so far by the aiaas server's batch-size histogram."""
    text = http_call(base + "/metrics")[1].decode()
    found = {
        key: float(value)
        for key, value in re.findall(r"^aiaas_batch_size_(sum|count)\{[^}]*\} (\S+)$", text, re.M)
    }
    if {"sum", "count"} - found.keys():
        raise BenchError(f"no aiaas_batch_size histogram in {base}/metrics")
    return found["sum"], found["count"]


def measure(
    system: System, port: int, sid: int, lua: Path, raw: RawLimit, args: Args
) -> SystemResult:
    """Check the embedding, then warm up and measure, again if another load disturbed it.

    ``sid`` is the server's session: its processes' CPU time and memory are the server's.
    """
    url = f"http://127.0.0.1:{port}{system.predict_path}"
    diff = check_embedding(url, raw.reference)
    result, attempts = least_disturbed(
        lambda: measure_once(system, port, sid, lua, args),
        lambda r: r.other_cores,
        args,
        system.name,
    )
    result.check_max_abs_diff = diff
    result.attempts = attempts
    return result


def measure_once(system: System, port: int, sid: int, lua: Path, args: Args) -> SystemResult:
    """Warm up, let the queue drain, then one measured wrk run."""
    base = f"http://127.0.0.1:{port}"
    url = base + system.predict_path
    run_wrk(url, lua, args.warmup, args.connections)
    time.sleep(2.0)
    batches_before = aiaas_batches(base) if system.metrics else None
    wrk, server_cores, other_cores = accounted_wrk(url, lua, args.duration, args.connections, sid)
    mean_batch = None
    if batches_before is not None:
        items, count = (a - b for a, b in zip(aiaas_batches(base), batches_before, strict=True))
        mean_batch = items / count if count else 0.0
    return SystemResult(
        name=system.name,
        wrk=wrk,
        server_cores=server_cores,
        other_cores=other_cores,
        pss_mb=session_pss_mb(sid),
        mean_batch=mean_batch,
    )


def accounted_wrk(
    url: str, lua: Path, seconds: int, connections: int, sid: int
) -> tuple[WrkRun, float, float]:
    """One measured wrk run: wrk's figures, the cores the server's session ``sid`` used,
    and the cores every other process used meanwhile (leaving out wrk and this script)."""
    ticks_before, busy_before, ours_before = session_ticks(sid), busy_ticks(), children_cpu_s()
    started = time.monotonic()
    output = run_wrk(url, lua, seconds, connections)
    wall = time.monotonic() - started
    server_s = (session_ticks(sid) - ticks_before) / CLK_TCK
    busy_s = (busy_ticks() - busy_before) / CLK_TCK
    ours_s = children_cpu_s() - ours_before  # wrk and this script
    return parse_wrk(output), server_s / wall, max(0.0, busy_s - server_s - ours_s) / wall


# -- the run -------------------------------------------------------------------------------


@dataclass
class Args:
    """Command-line settings."""

    duration: int
    warmup: int
    raw_seconds: float
    raw_warmup: float
    connections: int
    systems: list[str]
    quiet_wait: float
    retries: int
    pairs: int
    pair_seconds: float
    json: Path | None


def least_disturbed(
    measure_one: Callable[[], T], other_load: Callable[[T], float], args: Args, what: str
) -> tuple[T, int]:
    """Measure; while other processes used over ``OTHER_LOAD_WARN`` cores meanwhile, wait
    for quiet and measure again (``args.retries`` times at most). The least disturbed
    result and the number of attempts."""
    best, attempts = measure_one(), 1
    while other_load(best) > OTHER_LOAD_WARN and attempts <= args.retries:
        print(
            f"  {what}: other processes used {other_load(best):.2f} cores; measuring again",
            flush=True,
        )
        wait_for_quiet(args.quiet_wait)
        again = measure_one()
        attempts += 1
        if other_load(again) < other_load(best):
            best = again
    return best, attempts


def measure_raw(
    bundle_dir: Path, args: Args, sizes: Iterable[int] = BATCH_SIZES, workers: int = 1
) -> RawLimit:
    """The raw limit in one layout; batch sizes that another load disturbed are measured
    again once the machine is quiet (``args.retries`` times at most), keeping each size's
    least disturbed figure."""
    raw = measure_raw_once(bundle_dir, args, sizes, workers=workers)
    while raw.attempts <= args.retries:
        disturbed = [k for k, v in raw.other_by_batch.items() if v > OTHER_LOAD_WARN]
        if not disturbed:
            break
        worst = max(raw.other_by_batch[k] for k in disturbed)
        print(
            f"  raw limit: other processes used up to {worst:.2f} cores; measuring batch "
            f"sizes {', '.join(map(str, disturbed))} again",
            flush=True,
        )
        wait_for_quiet(args.quiet_wait)
        again = measure_raw_once(bundle_dir, args, disturbed, workers=workers)
        raw.attempts += 1
        for size, other in again.other_by_batch.items():
            if other < raw.other_by_batch[size]:
                raw.rates[size] = again.rates[size]
                raw.ms_per_batch[size] = again.ms_per_batch[size]
                raw.other_by_batch[size] = other
    return raw


def measure_raw_once(
    bundle_dir: Path,
    args: Args,
    sizes: Iterable[int],
    seconds: float | None = None,
    workers: int = 1,
) -> RawLimit:
    """Run ``_raw_limit.py`` in a child process (its torch threads never live here), for
    ``seconds`` per batch size (default ``args.raw_seconds``)."""
    cmd = [PYTHON, str(BENCH / "_raw_limit.py"), "--workers", str(workers), str(bundle_dir)]
    cmd += [str(seconds or args.raw_seconds), str(args.raw_warmup), *map(str, sizes)]
    # Its progress and any traceback go straight to our stderr.
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=child_env(), check=False)
    if done.returncode != 0:
        raise BenchError(f"the raw-limit run failed with status {done.returncode}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return RawLimit(
        rates={int(k): float(v) for k, v in data["rates"].items()},
        ms_per_batch={int(k): float(v) for k, v in data["ms_per_batch"].items()},
        torch=str(data["torch"]),
        threads=int(data["threads"]),
        reference=[float(x) for x in data["reference"]],
        other_by_batch={int(k): float(v) for k, v in data["other_cores"].items()},
        workers=int(data["workers"]),
    )


def measure_paired(
    system: System, port: int, sid: int, lua: Path, bundle_dir: Path, raw: RawLimit, args: Args
) -> Paired:
    """Alternate the raw limit in ``raw``'s best configuration and wrk runs against the
    running server, so each server run has a raw run just before and just after it. The
    server sits idle while the raw child runs."""
    url = f"http://127.0.0.1:{port}{system.predict_path}"
    batch = raw.best_batch
    paired = Paired(system.name, batch, raw.layout, args.pair_seconds)

    def raw_phase() -> None:
        again = measure_raw_once(bundle_dir, args, [batch], args.pair_seconds, raw.workers)
        paired.raw_rates.append(again.rates[batch])
        paired.other_cores.append(again.other_cores)

    raw_phase()
    for n in range(1, args.pairs + 1):
        run_wrk(url, lua, 2, args.connections)  # new connections ramp up, the queue fills
        time.sleep(1.0)  # the warm-up's last requests finish, not inside the measured run
        run, _, other = accounted_wrk(url, lua, round(args.pair_seconds), args.connections, sid)
        if run.non_2xx or run.errors:
            raise BenchError(f"paired run {n}: {run.non_2xx} non-2xx, {run.errors} socket errors")
        paired.server_rates.append(run.ok_per_s)
        paired.other_cores.append(other)
        time.sleep(1.0)  # the last batches finish before the raw child starts
        raw_phase()
        print(
            f"  pair {n}: raw {paired.raw_rates[-2]:.0f}/s, server {run.ok_per_s:.0f}/s, "
            f"raw {paired.raw_rates[-1]:.0f}/s -> {paired.ratios[-1]:.2f}",
            flush=True,
        )
    return paired


def build_bundle(work: Path) -> tuple[Path, Path]:
    """``aiaas bundle build examples/minilm`` in a child; the archive and its unpacked copy."""
    from aiaas.bundle import open_bundle  # tar extraction only: no torch in this process

    archive = work / "minilm.tar.gz"
    cmd = [PYTHON, "-m", "aiaas", "bundle", "build", str(REPO / "examples" / "minilm")]
    done = subprocess.run(
        [*cmd, "-o", str(archive)], capture_output=True, text=True, env=child_env(), check=False
    )
    if done.returncode != 0:
        raise BenchError(f"bundle build failed:\n{done.stdout}{done.stderr}")
    bundle_dir, _ = open_bundle(archive, cache_dir=work / "unpacked")
    return archive, bundle_dir


def systems(archive: Path, bundle_dir: Path) -> list[System]:
    """Every server this benchmark knows, in the order they are measured."""
    aiaas = [PYTHON, "-m", "aiaas", "serve", str(archive), "--host", "127.0.0.1"]
    naive = [PYTHON, str(BENCH / "_naive_server.py"), str(bundle_dir)]
    lit = [PYTHON, str(BENCH / "_litserve_server.py"), str(bundle_dir)]
    two_workers = ["--inference-workers", "2", "--max-batch-size", "16"]
    process = ["--inference-in", "process"]  # each worker's model in a process of its own
    return [
        System(
            "aiaas",
            lambda port: [*aiaas, "--port", str(port), "--log-level", "warning"],
            "/invocations",
            metrics=True,
        ),
        System(
            "aiaas 2 workers",
            lambda port: [*aiaas, "--port", str(port), "--log-level", "warning", *two_workers],
            "/invocations",
            metrics=True,
            workers=2,
        ),
        System(
            "aiaas process",
            lambda port: [*aiaas, "--port", str(port), "--log-level", "warning", *process],
            "/invocations",
            metrics=True,
        ),
        System(
            "aiaas process 2 workers",
            lambda port: [
                *aiaas,
                "--port",
                str(port),
                "--log-level",
                "warning",
                *process,
                *two_workers,
            ],
            "/invocations",
            metrics=True,
            workers=2,
        ),
        System("naive FastAPI", lambda port: [*naive, str(port)], "/invocations"),
        System("LitServe 32/5ms", lambda port: [*lit, str(port)], "/predict"),
        System("LitServe tuned", lambda port: [*lit, str(port), "--tuned"], "/predict"),
        System(
            "LitServe tuned 2 workers",
            lambda port: [*lit, str(port), "--tuned", "--workers", "2"],
            "/predict",
        ),
    ]


SYSTEM_KEYS = {
    "aiaas": "aiaas",
    "aiaas-2w": "aiaas 2 workers",
    "aiaas-proc": "aiaas process",
    "aiaas-proc-2w": "aiaas process 2 workers",
    "naive": "naive FastAPI",
    "litserve": "LitServe 32/5ms",
    "litserve-tuned": "LitServe tuned",
    "litserve-2w": "LitServe tuned 2 workers",
}


def checks(raw: RawLimit, results: list[SystemResult], paired: list[Paired]) -> list[Check]:
    """The targets, on goodput (2xx/s): each aiaas variant against the raw limit of its own
    thread layout (paired medians; ``raw``, the best of all, when not paired), then the
    faster variant against naive and the best LitServe."""
    by = {r.name: r.wrk.ok_per_s for r in results}
    mine = {name: rate for name, rate in by.items() if name.startswith("aiaas")}
    best_mine = max(mine, key=lambda name: mine[name]) if mine else "aiaas"
    ours = mine.get(best_mine)
    naive = by.get("naive FastAPI")
    lit = {name: rate for name, rate in by.items() if name.startswith("LitServe")}
    best_lit = max(lit, key=lambda name: lit[name]) if lit else "LitServe"

    def check(label: str, ratio: float | None, target: float, strict: bool = False) -> Check:
        if ratio is None:
            return Check(label, None, None)
        return Check(label, ratio, ratio > target if strict else ratio >= target)

    raw_checks = [
        check(
            f"{p.system} >= 0.85 x raw limit, {p.layout} (paired median)",
            p.median_ratio,
            0.85,
        )
        for p in paired
    ]
    if not paired:
        raw_checks = [
            check(
                f"{best_mine} >= 0.85 x raw limit", None if ours is None else ours / raw.limit, 0.85
            )
        ]
    return [
        *raw_checks,
        check(
            f"{best_mine} >= 2 x naive", None if ours is None or not naive else ours / naive, 2.0
        ),
        check(
            f"{best_mine} > {best_lit} (best LitServe)",
            None if ours is None or not lit else ours / lit[best_lit],
            1.0,
            strict=True,
        ),
    ]


def run(args: Args, work: Path) -> Report:
    """Build the bundle, measure the raw limit and every chosen server; the figures."""
    machine = machine_info()
    print("building the minilm bundle ...", flush=True)
    archive, bundle_dir = build_bundle(work)
    lua = work / "post.lua"
    before, after = SENTENCE.split("{}")
    lua.write_text(LUA % {"threads": WRK_THREADS, "before": before, "after": after})

    raws: list[RawLimit] = []
    for workers, sizes in ((1, BATCH_SIZES), (2, WORKER_BATCH_SIZES)):
        wait_for_quiet(args.quiet_wait)
        print(
            f"raw in-process limit, {workers} worker{'s' if workers > 1 else ''} "
            f"({args.raw_warmup:g} s warm-up + {args.raw_seconds:g} s per batch size) ...",
            flush=True,
        )
        raws.append(measure_raw(bundle_dir, args, sizes, workers))
    raw = best_raw(raws)
    machine["torch"] = raw.torch

    results: list[SystemResult] = []
    chosen = [
        s for s in systems(archive, bundle_dir) if s.name in {SYSTEM_KEYS[k] for k in args.systems}
    ]
    for system in chosen:
        wait_for_quiet(args.quiet_wait)
        port = free_port()
        print(f"{system.name} on 127.0.0.1:{port} ...", flush=True)
        with running(system, port, _log_path(work, system)) as proc:
            result = measure(system, port, proc.pid, lua, raw, args)
        w = result.wrk
        print(
            f"  {w.ok_per_s:.1f} 2xx/s, p50 {w.latency_ms['p50']:.0f} ms, "
            f"p99 {w.latency_ms['p99']:.0f} ms, non-2xx {w.non_2xx}, socket errors {w.errors}, "
            f"server {result.server_cores:.2f} cores, other load {result.other_cores:.2f}",
            flush=True,
        )
        results.append(result)

    # The raw-limit targets, drift-proof: each aiaas variant alternates with the raw limit
    # of its own thread layout.
    paired: list[Paired] = []
    for system in chosen if args.pairs else []:
        layout = next((r for r in raws if r.workers == system.workers), None)
        if not system.metrics or layout is None:
            continue
        wait_for_quiet(args.quiet_wait)
        port = free_port()
        print(f"paired: raw {layout.best} and {system.name}, {args.pairs} pairs ...", flush=True)
        with running(system, port, _log_path(work, system, "paired")) as proc:
            paired.append(measure_paired(system, port, proc.pid, lua, bundle_dir, layout, args))

    # The best configuration again after the servers: the host's speed drifts, so the limit
    # is the higher of the two rates.
    wait_for_quiet(args.quiet_wait)
    print(f"raw limit again at {raw.best} ...", flush=True)
    end, _ = least_disturbed(
        lambda: measure_raw_once(bundle_dir, args, [raw.best_batch], workers=raw.workers),
        lambda r: r.other_cores,
        args,
        "raw limit (end)",
    )
    raw.end_rate = end.rates[raw.best_batch]

    return Report(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine,
        settings={
            "connections": args.connections,
            "wrk_threads": WRK_THREADS,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "raw_seconds": args.raw_seconds,
        },
        raws=raws,
        results=results,
        checks=checks(best_raw(raws), results, paired),
        paired=paired,
    )


def _log_path(work: Path, system: System, suffix: str = "") -> Path:
    name = system.name.replace(" ", "_").replace("/", "_")
    return work / f"{name}{'-' + suffix if suffix else ''}.log"


# -- output --------------------------------------------------------------------------------


def render(report: Report) -> str:
    """The table and the verdicts, as printed."""
    raw, s, m = report.raw, report.settings, report.machine
    limit = raw.limit
    lines = [
        f"serve_throughput {report.date}",
        f"machine: {m['nproc']} cores, {m['cpu']}; torch {m['torch']}; "
        f"python {m['python']}; {m['wrk']}",
    ]
    for layout in report.raws:
        lines += [
            "",
            "raw in-process limit, MiniLM.predict (tokenize + forward + pool), sentences/s, "
            f"{layout.layout}:",
            "| batch | " + " | ".join(str(k) for k in layout.rates) + " |",
            "|---" * (len(layout.rates) + 1) + "|",
            "| sent/s | " + " | ".join(f"{v:.0f}" for v in layout.rates.values()) + " |",
            "| ms/batch | " + " | ".join(f"{v:.1f}" for v in layout.ms_per_batch.values()) + " |",
            "| other load (cores) | "
            + " | ".join(f"{layout.other_by_batch.get(k, 0.0):.2f}" for k in layout.rates)
            + " |",
        ]
    lines += [
        "",
        f"minilm, single-item requests, wrk -t{s['wrk_threads']} -c{s['connections']}, "
        f"{s['duration_s']} s measured after {s['warmup_s']} s warm-up:",
        "| system | req/s | 2xx/s | p50 ms | p99 ms | non-2xx | socket errors (timeouts) "
        "| server cores | other load | PSS MB | ratio to raw limit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| raw limit ({raw.best}, no HTTP) | - | {limit:.0f} | - | - | - | - | "
        f"{raw.workers * raw.threads} threads | {raw.other_cores:.2f} | - | 1.00 |",
    ]
    for r in report.results:
        w = r.wrk
        name = r.name + (f" (mean batch {r.mean_batch:.1f})" if r.mean_batch is not None else "")
        lines.append(
            f"| {name} | {w.requests_per_s:.0f} | {w.ok_per_s:.0f} | {w.latency_ms['p50']:.0f} | "
            f"{w.latency_ms['p99']:.0f} | {w.non_2xx} | {w.errors} ({w.socket_errors['timeout']})"
            f" | {r.server_cores:.2f} | {r.other_cores:.2f} | {r.pss_mb:.0f} | "
            f"{w.ok_per_s / limit:.2f} |"
        )
    if raw.end_rate is not None:
        start = raw.rates[raw.best_batch]
        lines += [
            "",
            f"raw limit at {raw.best}: {start:.0f}/s before the servers, "
            f"{raw.end_rate:.0f}/s after ({raw.end_rate / start - 1:+.0%}); "
            f"the limit is the higher, {limit:.0f}/s",
        ]
    for p in report.paired:
        lines += [
            "",
            f"{p.system} against the raw limit at {p.raw}, paired: they alternate, "
            f"{p.seconds:g} s each; each server run over the mean of the raw runs around it:",
            f"| pair | raw before | {p.system} 2xx/s | raw after | ratio |",
            "|---|---|---|---|---|",
        ]
        for i, (rate, pair_ratio) in enumerate(zip(p.server_rates, p.ratios, strict=True)):
            lines.append(
                f"| {i + 1} | {p.raw_rates[i]:.0f} | {rate:.0f} | {p.raw_rates[i + 1]:.0f} "
                f"| {pair_ratio:.2f} |"
            )
        lines.append(
            f"median ratio {p.median_ratio:.2f}; most other load in a phase "
            f"{max(p.other_cores):.2f} cores"
        )
    lines += ["", "targets (on 2xx/s):"]
    for c in report.checks:
        verdict = "SKIP" if c.passed is None else "PASS" if c.passed else "FAIL"
        ratio = "not measured" if c.ratio is None else f"ratio {c.ratio:.2f}"
        lines.append(f"  {verdict}  {c.label}  ({ratio})")
    disturbed = [r.name for r in report.results if r.other_cores > OTHER_LOAD_WARN]
    disturbed += [
        f"paired runs of {p.system}" for p in report.paired if max(p.other_cores) > OTHER_LOAD_WARN
    ]
    if any(layout.other_cores > OTHER_LOAD_WARN for layout in report.raws):
        disturbed.insert(0, "raw limit")
    if disturbed:
        lines += [
            "",
            f"warning: other processes used more than {OTHER_LOAD_WARN} cores during: "
            + ", ".join(disturbed)
            + "; their figures are low by that much. Re-run on a quiet machine.",
        ]
    return "\n".join(lines)


def to_json(report: Report) -> str:
    """The report as JSON, with wrk's goodput and the raw limit spelled out."""
    data = dataclasses.asdict(report)
    for layout, entry in zip(report.raws, data["raws"], strict=True):
        del entry["reference"]  # 384 floats of the check sentence: not a result
        entry["best_batch"] = layout.best_batch
        entry["limit"] = layout.limit
    data["raw_limit"] = {"configuration": report.raw.best, "limit": report.raw.limit}
    for result, entry in zip(report.results, data["results"], strict=True):
        entry["wrk"]["ok_per_s"] = result.wrk.ok_per_s
        entry["ratio_to_raw_limit"] = result.wrk.ok_per_s / report.raw.limit
    for p, entry in zip(report.paired, data["paired"], strict=True):
        entry["ratios"] = p.ratios
        entry["median_ratio"] = p.median_ratio
    return json.dumps(data, indent=2)


def parse_args(argv: list[str] | None = None) -> Args:
    """Command-line settings; ``--quick`` shortens every phase for a smoke run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=20, help="measured seconds per server")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up seconds per server")
    parser.add_argument("--raw-seconds", type=float, default=4.0, help="seconds per batch size")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEM_KEYS),
        help=f"comma-separated subset of {','.join(SYSTEM_KEYS)} (default: all)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait for other load to stop before each phase",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="measure a phase again (at most this often) when another load disturbed it",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=5,
        help="runs of each aiaas variant alternated with raw-limit runs for the 0.85 targets "
        "(0: compare with the raw limit of the sweep instead)",
    )
    parser.add_argument(
        "--pair-seconds", type=float, default=8.0, help="seconds per paired run, raw or aiaas"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s warm-up, 5 s runs")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    ns = parser.parse_args(argv)
    chosen = [key.strip() for key in ns.systems.split(",") if key.strip()]
    unknown = set(chosen) - SYSTEM_KEYS.keys()
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {list(SYSTEM_KEYS)}")
    if ns.duration < 1 or ns.warmup < 1 or ns.pair_seconds < 1:
        parser.error("--duration, --warmup and --pair-seconds must be at least 1 s")
    if ns.pairs < 0:
        parser.error("--pairs must be 0 or more")
    args = Args(
        duration=ns.duration,
        warmup=ns.warmup,
        raw_seconds=ns.raw_seconds,
        raw_warmup=1.0,
        connections=ns.connections,
        systems=chosen,
        quiet_wait=ns.quiet_wait,
        retries=ns.retries,
        pairs=ns.pairs,
        pair_seconds=ns.pair_seconds,
        json=ns.json,
    )
    if ns.quick:
        args.duration, args.warmup, args.raw_seconds, args.raw_warmup = 5, 2, 1.0, 0.3
        args.pairs, args.pair_seconds = min(args.pairs, 1), 3.0
        args.quiet_wait = min(args.quiet_wait, 5.0)
    return args


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit, so every server is stopped on the way out."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; see the module docstring for exit statuses."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed. Install it (Debian/Ubuntu: `apt-get install wrk`) or run "
            "`make bench`, which does.",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        with tempfile.TemporaryDirectory(prefix="aiaas-bench-") as tmp:
            report = run(args, Path(tmp))
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; every server was stopped", file=sys.stderr)
        return 130
    print("\n" + render(report))
    if args.json is not None:
        args.json.write_text(to_json(report) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
