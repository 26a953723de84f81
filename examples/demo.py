"""`make demo`: build the examples, deploy MiniLM locally, call it through the function URL.

Everything runs on 127.0.0.1 with no cloud account, and everything is stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from adapters.local import LocalProvider
from aiaas.bundle import build_bundle
from aiaas.config import load_config
from functions.auth import create_key

EXAMPLES = Path(__file__).resolve().parent
SENTENCE = "Serverless GPUs on every cloud, one config line apart."


def main() -> int:
    """Run the demo; return the process exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in ("minilm", "iris", "digits"):
        started = time.perf_counter()
        built = build_bundle(EXAMPLES / name)
        size = built.path.stat().st_size / 1e6
        print(f"built {built.path.relative_to(EXAMPLES.parent)}  version {built.manifest.version}  "
              f"{size:.1f} MB in {time.perf_counter() - started:.1f}s")  # fmt: skip

    config = load_config(EXAMPLES / "minilm")
    provider = LocalProvider.from_config(config)
    bundle = config.root / config.bundle.output
    print("deploying minilm to the local provider ...")
    shown: list[str] = []

    def progress(message: str, _fraction: float | None) -> None:
        step = message.split(" (")[0]  # "loading model (3s)" ticks every poll: show it once
        if not shown or shown[-1] != step:
            shown.append(step)
            print(f"  {message}", flush=True)

    deployment = provider.deploy(bundle, progress=progress)
    function = None
    try:
        port = _free_port()
        api_key, record = create_key()  # only the salted hash goes to the function
        function = subprocess.Popen(
            [sys.executable, "-m", "aiaas", "function", "serve", "minilm",
             "--config", str(EXAMPLES / "minilm"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "AIAAS_API_KEYS": str(record)},
        )  # fmt: skip
        function_url = f"http://127.0.0.1:{port}"
        _wait_healthy(function_url + "/health", function)
        body = {"inputs": [{"text": SENTENCE}]}
        auth = {"authorization": f"Bearer {api_key}"}
        response = httpx.post(function_url + "/predict", json=body, headers=auth, timeout=30.0)
        response.raise_for_status()
        result = response.json()
        vector = result["outputs"][0]["embedding"]
        print("\nprediction through the function URL:")
        print(json.dumps({**result, "outputs": [{"embedding": [*vector[:4], "..."]}]}))
        norm = sum(v * v for v in vector) ** 0.5
        request_id = response.headers["x-request-id"]
        print(f"  {len(vector)} floats, L2 norm {norm:.4f}, request id {request_id}")
        endpoint = deployment.endpoint
        print(f"\nmodel endpoint ({deployment.provider}): {endpoint}  version {deployment.version}")
        print(f"function URL: {function_url}/predict\n")
        print("call them with curl (to keep them up: `aiaas deploy -c examples/minilm`, then")
        print(
            "`aiaas keys create -c examples/minilm` and `aiaas function serve -c examples/minilm`):"
        )
        data = json.dumps(body)
        header = f"-H 'authorization: Bearer {api_key}' -H 'content-type: application/json'"
        print(f"  curl -s -X POST {function_url}/predict {header} -d '{data}'")
        print(f"  curl -s -X POST {endpoint}/invocations -d '{data}'")
        print(f"  curl -s {endpoint}/v2/models/minilm")
        return 0
    finally:
        if function is not None:
            function.terminate()
            function.wait(timeout=10)
        provider.delete(deployment.name)
        print("\nstopped the function app and deleted the local deployment.")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"function app exited: {stderr}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"function app not healthy after {timeout}s")


if __name__ == "__main__":
    sys.exit(main())
