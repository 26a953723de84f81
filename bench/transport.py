"""Is the hand-written transport (adapters/transport.py) worth keeping? Issue 15's test.

    .venv/bin/python bench/transport.py [--calls 2000]

The probe is deployed locally; two Lambda handlers (Mangum over the same function app, as
``functions.aws_lambda`` builds it) answer the same function URL event, one whose invoke path
runs on :class:`adapters.transport.AsyncH11Transport`, one on httpx's own
``httpx.AsyncHTTPTransport`` (``AIAAS_HTTP_TRANSPORT=httpx``). Calls alternate in a shuffled
order within one run, so load from elsewhere hits both alike; p50 and p99 are printed for each.
The rule (issue 15): the transport stays only if it saves at least 0.2 ms at p50.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from function_overhead import CONTEXT, PROBE, _event, percentile  # noqa: E402

THRESHOLD_MS = 0.2


def main() -> int:
    """Deploy the probe locally, time both handlers interleaved, print the verdict."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per transport")
    args = parser.parse_args()

    from mangum import Mangum

    from adapters.http_invoker import HttpClients, TransportKind
    from adapters.local.invoke import LocalInvoker
    from adapters.local.provider import LocalProvider
    from aiaas.bundle import build_bundle
    from aiaas.config import load_config
    from aiaas.manifest import MANIFEST_FILE
    from functions.auth import create_key
    from functions.bootstrap import app_from_environment

    with tempfile.TemporaryDirectory(prefix="aiaas-transport-bench-") as tmp:
        work = Path(tmp)
        project = work / "probe"
        project.mkdir()
        (project / "probe_model.py").write_text((PROBE / "probe_model.py").read_text())
        (project / "aiaas.yaml").write_text(
            "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
        )
        built = build_bundle(project, work / "probe.tar.gz")
        (work / MANIFEST_FILE).write_text(built.manifest.model_dump_json())
        key, record = create_key()
        os.environ.update(
            {
                "AIAAS_CONFIG": str(project / "aiaas.yaml"),
                "AIAAS_MANIFEST": str(work / MANIFEST_FILE),
                "AIAAS_API_KEYS": str(record),
            }
        )
        provider = LocalProvider.from_config(load_config(project, env={}))
        provider.deploy(built.path)
        try:
            event = _event(json.dumps({"inputs": [{"value": 1.0}]}).encode(), key)
            handlers: dict[str, Any] = {}
            kinds: tuple[TransportKind, ...] = ("h11", "httpx")
            for kind in kinds:
                invoker = LocalInvoker(provider.root, provider.settings.host)
                invoker.clients = HttpClients(https=False, use_proxies=False, kind=kind)
                app = app_from_environment("aws")
                app.state.function.invoker = invoker
                handlers[kind] = Mangum(app, lifespan="off")
            times: dict[str, list[float]] = {kind: [] for kind in handlers}
            sink = open(os.devnull, "w")  # noqa: SIM115 - usage lines would flood the terminal
            real_stdout, sys.stdout = sys.stdout, sink
            try:
                for _ in range(100):  # warm both
                    for handler in handlers.values():
                        assert handler(event, CONTEXT)["statusCode"] == 200
                order = list(handlers.items())
                shuffle = random.Random(7)
                for _ in range(args.calls):
                    shuffle.shuffle(order)
                    for label, handler in order:
                        started = time.perf_counter()
                        response = handler(event, CONTEXT)
                        times[label].append((time.perf_counter() - started) * 1000)
                        assert response["statusCode"] == 200, response
            finally:
                sys.stdout = real_stdout
                sink.close()
        finally:
            provider.delete("probe")

    p50 = {kind: percentile(values, 0.5) for kind, values in times.items()}
    p99 = {kind: percentile(values, 0.99) for kind, values in times.items()}
    gained = p50["httpx"] - p50["h11"]
    print(f"warm calls through the Lambda handler, provider: local, {args.calls} each, interleaved")
    names = {
        "h11": "AsyncH11Transport (adapters/transport.py)",
        "httpx": "httpx.AsyncHTTPTransport",
    }
    for label, name in names.items():
        print(f"  {name:<42} p50 {p50[label]:.3f} ms, p99 {p99[label]:.3f} ms")
    verdict = "KEEP" if gained >= THRESHOLD_MS else "REMOVE"
    print(f"gained at p50: {gained:.3f} ms -> {verdict} (threshold {THRESHOLD_MS} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
