"""Real traffic through the function tier against a throttling SageMaker (issue 16).

The probe model is deployed on the emulated SageMaker (``emulators.AwsEmulator``: moto, and
the runtime emulator running the real model server). In front of it, the real Lambda handler
(``Mangum`` over ``functions.bootstrap.app_from_environment`` with the AWS platform, as
``functions.aws_lambda`` builds it) runs in-process as ``--instances`` Lambda instances, each
with its own event loop and app (so its own retry budget and connections), one invocation at
a time, behind a small function-URL front (HTTP on 127.0.0.1 turned into payload-2.0 events,
with a Lambda context whose remaining time runs down from ``--lambda-timeout``).
``--clients`` threads (64) call it, for ``--calls`` calls each, in these phases:

1. **throttled, plain**: every InvokeEndpoint throttled (``ThrottlingException``); callers
   that do not retry (one httpx request each). Upstream calls per caller request; target
   <= 1.2 (4.0 before: four attempts each).
2. **throttled, aiaas.Client**: the same, through ``aiaas.Client`` (which retries by
   itself). Upstream calls per client call; target <= 1.2 (16.0 before: 4 x 4).
3. **half throttled, aiaas.Client**: a random half of InvokeEndpoint calls throttled. Every
   client call must succeed, with <= 2.5 upstream calls per success.
4. **queued burst**: the model itself is slow (each request asks the probe to sleep 200 ms,
   batches of one), ``--clients`` requests at once behind a Lambda timeout of 3 s: most wait
   in the container's queue past their deadline. Computed (the items the container ran, from
   its ``/metrics``) against delivered (200s): target computed <= delivered + 5 (one second
   of the model's time: the item in flight when the deadlines pass, and the time requests
   took to reach the container, which a deadline carried as milliseconds left does not
   count). Before the deadline reached the container it computed every request (32 for 14
   delivered, ``--quick`` on the loaded 2-core machine; since: 17 for 13).
5. **deadline burst**: SageMaker answers after 8 s; ``--clients`` new connections at once, a
   Lambda timeout of 3 s (Lambda's default) while ``function.invoke_timeout_s`` is 30 s: every
   answer a 504 no later than the deadline + 0.5 s. Then the same with ``aiaas.Client`` at a
   2 s timeout: DeadlineExceeded no later than 2.5 s.

Upstream calls are counted where they arrive (the runtime emulator's ``runtime_calls``).
Every phase also checks that no answer came later than its deadline + 0.5 s (the deadline:
the Lambda invocation's or the caller's, whichever is sooner).

The random half is the emulator's own seeded fault (``AwsEmulator.fault(...,
probability=0.5, seed=...)``): the same seed throttles the same calls.

Not a test: it prints figures and verdicts and exits 0 whatever the verdicts (1 if something
broke).

    .venv/bin/python bench/storm_function.py           # about 1 to 2 minutes
    .venv/bin/python bench/storm_function.py --quick   # fewer calls
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "projects" / "probe"
BUCKET = "aiaas-bench"
ROLE = "arn:aws:iam::123456789012:role/aiaas-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/aiaas-server:latest"
EXAMPLE = b'{"inputs": [{"value": 3}]}'
SLOW = b'{"inputs": [{"value": 3, "sleep_ms": 200}]}'  # the queued burst's: 5 a second at most
COMPUTED = 'aiaas_batch_size_sum{model="probe"}'  # samples of the container's /metrics
DEPTH = 'aiaas_queue_depth{model="probe"}'
ANSWERED = 'aiaas_requests_total{route="/invocations",status="%s"}'
LATE_S = 0.5  # no answer later than the deadline + this


# -- the function URL front over in-process Lambda instances ------------------------------


@dataclass
class Instance:
    """One Lambda instance: its handler and the event loop it keeps between invocations."""

    handler: Any
    loop: asyncio.AbstractEventLoop


class FunctionUrl:
    """HTTP on 127.0.0.1 → a Lambda function URL event (payload 2.0) → a free instance."""

    def __init__(self, instances: list[Instance], lambda_timeout_s: float) -> None:
        self.free: queue.Queue[Instance] = queue.Queue()
        for instance in instances:
            self.free.put(instance)
        self.lambda_timeout_s = lambda_timeout_s
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                status, headers, out = front.invoke(self.command, self.path, self.headers, body)
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # a burst of new connections: none reset

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)  # a caller gone: expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One invocation on a free instance (waits for one, as Lambda would scale out)."""
        started = time.monotonic()
        event = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": "",
            "headers": {k.lower(): v for k, v in headers.items()},
            "requestContext": {
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                         "sourceIp": "127.0.0.1", "userAgent": "bench"},
                "requestId": "bench", "routeKey": "$default", "stage": "$default",
                "timeEpoch": int(time.time() * 1000),
            },
            "body": base64.b64encode(body).decode(),
            "isBase64Encoded": True,
        }  # fmt: skip
        instance = self.free.get()
        ends = started + self.lambda_timeout_s
        context = SimpleNamespace(
            aws_request_id="bench",
            function_name="aiaas",
            get_remaining_time_in_millis=lambda: max(0, int((ends - time.monotonic()) * 1000)),
        )
        try:
            asyncio.set_event_loop(instance.loop)
            answer = instance.handler(event, context)
        finally:
            self.free.put(instance)
        out = answer.get("body") or ""
        data = base64.b64decode(out) if answer.get("isBase64Encoded") else out.encode()
        return int(answer["statusCode"]), dict(answer.get("headers") or {}), data

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- faults --------------------------------------------------------------------------------


# -- phases --------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    requests: int = 0
    ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    upstream: int = 0
    latest_over_deadline_s: float = -1e9  # the latest answer, against its deadline
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, outcome: str, elapsed: float, deadline: float) -> None:
        with self.lock:
            self.requests += 1
            self.ok += outcome == "200"
            self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
            self.latest_over_deadline_s = max(self.latest_over_deadline_s, elapsed - deadline)


def run_threads(count: int, work: Callable[[int], None]) -> float:
    """``work(i)`` in ``count`` threads started together; the seconds they took."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:  # reported after the phase
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client threads failed: {errors[0]!r}")
    return time.monotonic() - started


def plain_phase(
    name: str, url: str, clients: int, calls: int, deadline: float, body: bytes = EXAMPLE
) -> Phase:
    """Callers that send each request once (their own connection each, kept alive)."""
    phase = Phase(name)

    def work(_i: int) -> None:
        with httpx.Client(base_url=url, timeout=deadline + 5) as http:
            for _ in range(calls):
                started = time.monotonic()
                try:
                    response = http.post(
                        "/predict", content=body, headers={"content-type": "application/json"}
                    )
                    outcome = str(response.status_code)
                except httpx.TimeoutException:  # nothing by the deadline + 5 s
                    outcome = "no answer"
                phase.note(outcome, time.monotonic() - started, deadline)

    phase.seconds = run_threads(clients, work)
    return phase


def client_phase(name: str, url: str, clients: int, calls: int, timeout: float) -> Phase:
    """Callers through ``aiaas.Client`` (one each, its retries as shipped), sharing one retry
    budget as a process's clients of one URL do; a new one each phase, so a phase does not
    start with the previous phase's failures in the budget's 10 s window."""
    import aiaas
    from aiaas.retry import client_budget

    phase = Phase(name)
    budget = client_budget()

    def work(_i: int) -> None:
        with aiaas.Client(url, timeout=timeout, retry_budget=budget) as client:
            for _ in range(calls):
                started = time.monotonic()
                try:
                    client.predict([{"value": 3}])
                    outcome = "200"
                except aiaas.AiaasError as exc:
                    outcome = exc.code
                phase.note(outcome, time.monotonic() - started, timeout)

    phase.seconds = run_threads(clients, work)
    return phase


# -- set-up --------------------------------------------------------------------------------


def deploy(work: Path) -> Any:
    """Start the AWS emulators and deploy the probe as ``probe``; the emulator."""
    from adapters.sagemaker.provider import SageMakerProvider
    from aiaas.bundle import build_bundle
    from aiaas.config import load_config
    from emulators.aws import AwsEmulator

    project = work / "probe"
    shutil.copytree(PROBE, project)
    (project / "aiaas.yaml").write_text(
        "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
        "provider: sagemaker\nfunction:\n  auth: platform\n"
        f"sagemaker:\n  role_arn: {ROLE}\n  bucket: {BUCKET}\n  prefix: bench\n"
        f"  image_uri: {IMAGE}\n  instance_type: ml.m5.xlarge\n  poll_interval_s: 0.05\n"
        "  deploy_timeout_s: 120\n"
    )
    emulator = AwsEmulator(work / "aws")
    emulator.start()
    os.environ.update(emulator.env())
    emulator.client("s3").create_bucket(Bucket=BUCKET)
    bundle = build_bundle(project, work / "probe.tar.gz")
    with SageMakerProvider.from_config(load_config(project)) as provider:
        provider.deploy(bundle.path)
    manifest = work / "aiaas-manifest.json"
    manifest.write_text(bundle.manifest.model_dump_json())
    os.environ["AIAAS_CONFIG"] = str(project / "aiaas.yaml")
    os.environ["AIAAS_MANIFEST"] = str(manifest)
    return emulator


def instances(count: int) -> list[Instance]:
    """``count`` Lambda instances, each built as ``functions.aws_lambda`` builds its one."""
    from mangum import Mangum

    from functions.bootstrap import app_from_environment
    from functions.platforms.aws import PLATFORM

    built = []
    for _ in range(count):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = app_from_environment(PLATFORM)
        app.state.function.usage = None  # the usage lines (stdout) are not what is measured
        built.append(Instance(Mangum(app, lifespan="off"), loop))
    return built


def upstream_since(emulator: Any, mark: int) -> int:
    return len([c for c in emulator.runtime_calls[mark:] if c.endpoint == "probe"])


def container_metric(emulator: Any, sample: str) -> float:
    """A sample of the probe's serving container's ``/metrics``, e.g.
    ``aiaas_batch_size_sum{model="probe"}`` (the items it has run so far); 0 when absent."""
    target = emulator.resolve("probe")
    text = httpx.get(f"http://127.0.0.1:{target.port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def computed_when_drained(emulator: Any, limit_s: float = 30.0) -> float:
    """The items the container has run once its queue is empty (and the batch in flight,
    200 ms at most, is done)."""
    deadline = time.monotonic() + limit_s
    while container_metric(emulator, DEPTH) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    return container_metric(emulator, COMPUTED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--instances", type=int, default=64)
    parser.add_argument("--calls", type=int, default=10, help="calls per client per phase")
    parser.add_argument("--lambda-timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="32 clients, 4 calls each")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.instances, args.calls = 32, 32, 4
    sys.setswitchinterval(0.001)  # many threads on few cores: keep each one's turn short
    for name in ("aiaas.function", "werkzeug"):  # a line per throttled call otherwise
        logging.getLogger(name).setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="aiaas-storm-function-"))
    emulator = None
    front = None
    try:
        emulator = deploy(work)
        front = FunctionUrl(instances(args.instances), args.lambda_timeout)
        results: list[tuple[Phase, str, float, float, bool]] = []

        def measured(phase_of: Callable[[], Phase], per: str, target: float) -> Phase:
            mark = len(emulator.runtime_calls)
            phase = phase_of()
            phase.upstream = upstream_since(emulator, mark)
            base = phase.requests if per == "request" else max(phase.ok, 1)
            ratio = phase.upstream / base
            ok = ratio <= target
            results.append((phase, per, ratio, target, ok))
            return phase

        deadline = min(30.0, args.lambda_timeout)
        emulator.fault("probe", 400, code="ThrottlingException")
        measured(
            lambda: plain_phase("throttled, plain", front.url, args.clients, args.calls, deadline),
            "request", 1.2,
        )  # fmt: skip
        measured(
            lambda: client_phase(
                "throttled, aiaas.Client", front.url, args.clients, args.calls, 30.0
            ),
            "request", 1.2,
        )  # fmt: skip
        emulator.clear_faults()
        emulator.fault("probe", 400, code="ThrottlingException", probability=0.5, seed=args.seed)
        half = measured(
            lambda: client_phase(
                "half throttled, aiaas.Client", front.url, args.clients, args.calls, 30.0
            ),
            "success", 2.5,
        )  # fmt: skip
        emulator.clear_faults()

        # A queued burst: the container's own queue holds the requests past their deadline.
        # (Before the deadline bursts: the emulator holds those 8 s, then forwards them to
        # the container with the time they had left when sent, which it then computes.)
        front.lambda_timeout_s = 3.0
        before = [container_metric(emulator, m) for m in (COMPUTED, ANSWERED % 504)]
        queued = plain_phase("queued burst, plain (3 s)", front.url, args.clients, 1, 3.0, SLOW)
        computed = computed_when_drained(emulator) - before[0]
        dropped = container_metric(emulator, ANSWERED % 504) - before[1]

        # Deadline bursts: new connections all at once, SageMaker answering after 8 s.
        front.lambda_timeout_s = 3.0
        emulator.fault("probe", 200, delay_s=8.0)
        burst = plain_phase("deadline burst, plain (3 s)", front.url, args.clients, 1, 3.0)
        burst_client = client_phase(
            "deadline burst, aiaas.Client (2 s)", front.url, args.clients, 1, 2.0
        )
        emulator.clear_faults()
        front.lambda_timeout_s = args.lambda_timeout

        print(f"\nfunction tier storm: {args.clients} clients x {args.calls} calls, "
              f"{args.instances} Lambda instances, emulated SageMaker (probe)\n")  # fmt: skip
        print(f"{'phase':<36} {'calls':>6} {'ok':>6} {'upstream':>8} {'ratio':>12} "
              f"{'target':>8} {'late_s':>7} {'s':>6}  statuses")  # fmt: skip
        verdicts: list[tuple[str, bool]] = []
        for phase, per, ratio, target, ok in results:
            print(
                f"{phase.name:<36} {phase.requests:>6} {phase.ok:>6} {phase.upstream:>8} "
                f"{ratio:>6.2f}/{per[:4]:<5} {'<= ' + str(target):>8} "
                f"{phase.latest_over_deadline_s:>7.2f} {phase.seconds:>6.1f}  {phase.statuses}"
            )
            verdicts.append((f"{phase.name}: {ratio:.2f} upstream calls per {per}", ok))
        for phase in (queued, burst, burst_client):
            print(
                f"{phase.name:<36} {phase.requests:>6} {phase.ok:>6} {'':>8} {'':>12} "
                f"{'':>8} {phase.latest_over_deadline_s:>7.2f} {phase.seconds:>6.1f}  "
                f"{phase.statuses}"
            )
        every = [*(r[0] for r in results), queued, burst, burst_client]
        late = max(p.latest_over_deadline_s for p in every)
        verdicts.append((f"half throttled: {half.ok} of {half.requests} client calls succeed",
                         half.ok == half.requests))  # fmt: skip
        verdicts.append((f"latest answer: deadline {late:+.2f} s (target <= +{LATE_S})",
                         late <= LATE_S))  # fmt: skip
        verdicts.append((f"queued burst: {computed:.0f} computed, {queued.ok} delivered, "
                         f"{dropped:.0f} dropped by the container at their deadline "
                         "(target computed <= delivered + 5)",
                         computed <= queued.ok + 5))  # fmt: skip
        print()
        for text, ok in verdicts:
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
        if args.json:
            figures = {
                "clients": args.clients, "calls": args.calls, "instances": args.instances,
                "queued_burst": {"computed": computed, "delivered": queued.ok,
                                 "dropped": dropped},
                "phases": [
                    {"name": p.name, "requests": p.requests, "ok": p.ok, "upstream": p.upstream,
                     "statuses": p.statuses, "late_s": p.latest_over_deadline_s,
                     "seconds": p.seconds}
                    for p in every
                ],
                "verdicts": [{"text": t, "pass": ok} for t, ok in verdicts],
            }  # fmt: skip
            args.json.write_text(json.dumps(figures, indent=2))
        return 0
    finally:
        if front is not None:
            front.stop()
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
