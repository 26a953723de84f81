"""What the function tier costs: cold import of the Lambda entrypoint, and warm latency added
over calling ``Provider.invoke`` directly against the same local endpoint.

    .venv/bin/python bench/function_overhead.py [--calls 400] [--imports 7]

Targets (issue 3): cold import ≤ 250 ms (median of fresh interpreters); the AWS zip built
by ``aiaas function package`` ≤ 10 MB (boto3 is left out: Lambda's runtime has it); added
warm latency ≤ 1.5 ms at p50.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROBE = REPO / "tests" / "projects" / "probe"


def cold_imports(env: dict[str, str], runs: int) -> list[float]:
    """Milliseconds to import ``functions.aws_lambda`` in fresh interpreters."""
    code = (
        "import time; t = time.perf_counter(); import functions.aws_lambda; "
        "print((time.perf_counter() - t) * 1000)"
    )
    times = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return times


def _event(body: bytes, api_key: str) -> dict[str, Any]:
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": "/predict", "rawQueryString": "",
        "headers": {"content-type": "application/json", "authorization": f"Bearer {api_key}",
                    "host": "x.lambda-url.us-east-1.on.aws"},
        "requestContext": {"http": {"method": "POST", "path": "/predict", "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "bench"},
                           "requestId": "bench", "routeKey": "$default", "stage": "$default"},
        "body": base64.b64encode(body).decode(), "isBase64Encoded": True,
    }  # fmt: skip


CONTEXT: Any = SimpleNamespace(aws_request_id="bench", get_remaining_time_in_millis=lambda: 30_000)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    """Deploy the probe model locally, measure, print the figures and verdicts."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=400, help="warm calls per path")
    parser.add_argument(
        "--imports", type=int, default=7, help="fresh interpreters for the cold import"
    )
    args = parser.parse_args()

    from adapters.local import LocalProvider
    from aiaas.bundle import build_bundle
    from aiaas.config import load_config
    from aiaas.manifest import MANIFEST_FILE
    from functions.auth import create_key

    with tempfile.TemporaryDirectory(prefix="aiaas-fn-bench-") as tmp:
        work = Path(tmp)
        project = work / "probe"
        project.mkdir()
        (project / "probe_model.py").write_text((PROBE / "probe_model.py").read_text())
        (project / "aiaas.yaml").write_text(
            "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
        )
        built = build_bundle(project, work / "probe.tar.gz")
        (work / MANIFEST_FILE).write_text(built.manifest.model_dump_json())
        provider = LocalProvider.from_config(load_config(project, env={}))
        provider.deploy(built.path)
        key, record = create_key()
        env = {
            "AIAAS_CONFIG": str(project / "aiaas.yaml"),
            "AIAAS_MANIFEST": str(work / MANIFEST_FILE),
            "AIAAS_API_KEYS": str(record),
        }
        try:
            from aiaas.packaging import package_function

            config = load_config(project, env={})
            zip_size = package_function(config, built.manifest, "aws", work / "fn.zip").size
            imports = cold_imports({**os.environ, **env}, args.imports)
            os.environ.update(env)
            import functions.aws_lambda as entry

            body = json.dumps({"inputs": [{"value": 1.0}]}).encode()
            event = _event(body, key)
            direct, through = [], []
            sink = open(os.devnull, "w")  # noqa: SIM115 - usage lines would flood the terminal
            real_stdout, sys.stdout = sys.stdout, sink
            try:
                for _ in range(50):  # warm both paths
                    provider.invoke("probe", body)
                    entry.handler(event, CONTEXT)
                for _ in range(args.calls):  # interleaved, so drift hits both alike
                    t = time.perf_counter()
                    provider.invoke("probe", body)
                    direct.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    response = entry.handler(event, CONTEXT)
                    through.append((time.perf_counter() - t) * 1000)
                    assert response["statusCode"] == 200, response
            finally:
                sys.stdout = real_stdout
                sink.close()
        finally:
            provider.delete("probe")

    cold = statistics.median(imports)
    added = percentile(through, 0.5) - percentile(direct, 0.5)
    p50_direct, p50_through = percentile(direct, 0.5), percentile(through, 0.5)
    p99_direct, p99_through = percentile(direct, 0.99), percentile(through, 0.99)
    checks = (cold <= 250, zip_size <= 10 * 1024 * 1024, added <= 1.5)
    cold_ok, zip_ok, added_ok = ("PASS" if ok else "FAIL" for ok in checks)
    lines = [
        f"cold import of functions.aws_lambda: median {cold:.0f} ms over {len(imports)} "
        f"fresh interpreters (min {min(imports):.0f}, max {max(imports):.0f})",
        f"warm Provider.invoke direct: p50 {p50_direct:.2f} ms, p99 {p99_direct:.2f} ms",
        f"warm via Lambda handler: p50 {p50_through:.2f} ms, p99 {p99_through:.2f} ms",
        f"added by the function tier: p50 {added:.2f} ms ({args.calls} calls each, interleaved)",
        f"AWS function zip (x86_64, Python 3.11, local provider): {zip_size / 1e6:.2f} MB",
        "",
        "targets:",
        f"  {cold_ok}  cold import <= 250 ms  ({cold:.0f} ms)",
        f"  {zip_ok}  AWS zip <= 10 MB  ({zip_size / 1e6:.2f} MB)",
        f"  {added_ok}  added warm latency <= 1.5 ms at p50  ({added:.2f} ms)",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
