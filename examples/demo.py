"""`make demo`: build the examples, deploy MiniLM locally, call it through the function URL.

Everything runs on 127.0.0.1 with no cloud account, and everything is stopped at the end;
then it prints the commands that start it all again, to paste into a shell. With ``--keep``
(``.venv/bin/python examples/demo.py --keep``) the deployment and the function app stay up
until Ctrl-C, and the curl lines it prints call them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from adapters.local.provider import LocalProvider
from aiaas.bundle import build_bundle
from aiaas.config import load_config
from functions.auth import create_key

EXAMPLES = Path(__file__).resolve().parent
SENTENCE = "Serverless GPUs on every cloud, one config line apart."


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", action="store_true", help="keep the servers up until Ctrl-C, then stop them"
    )
    keep = parser.parse_args(argv).keep
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
    function_log = config.state_path / "demo-function.log"
    try:
        port = _free_port()
        api_key, record = create_key()  # only the salted hash goes to the function
        with function_log.open("wb") as log:
            function = subprocess.Popen(
                [sys.executable, "-m", "aiaas", "function", "serve", "minilm",
                 "--config", str(EXAMPLES / "minilm"), "--host", "127.0.0.1", "--port", str(port)],
                stdout=subprocess.DEVNULL, stderr=log,
                env={**os.environ, "AIAAS_API_KEYS": str(record)},
            )  # fmt: skip
        function_url = f"http://127.0.0.1:{port}"
        _wait_healthy(function_url + "/health", function, function_log)
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
        print(f"function URL: {function_url}/predict")
        if keep:
            data = shlex.quote(json.dumps(body))
            print("\nboth stay up until Ctrl-C; call them from another shell:")
            print(f"  curl -s -X POST {function_url}/predict "
                  f"-H 'authorization: Bearer {api_key}' "
                  f"-H 'content-type: application/json' -d {data}")  # fmt: skip
            print(f"  curl -s -X POST {endpoint}/invocations "
                  f"-H 'content-type: application/json' -d {data}")  # fmt: skip
            print(f"  curl -s {endpoint}/v2/models/minilm")
            signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up as Ctrl-C does
            with contextlib.suppress(KeyboardInterrupt):
                function.wait()
        return 0
    finally:
        if function is not None:
            function.terminate()
            function.wait(timeout=10)
        provider.delete(deployment.name)
        print("\nstopped the function app and deleted the local deployment.")
        if not keep:
            again = f"{shlex.quote(sys.executable)} {shlex.quote(str(EXAMPLES / 'demo.py'))} --keep"
            print(f"\nto run it yourself, paste this into a shell (or run `{again}`):\n")
            print(paste_commands(config.root, {"inputs": [{"text": SENTENCE}]}))


def aiaas_command() -> list[str]:
    """How to run the ``aiaas`` CLI of this interpreter's environment, whether or not it is
    on PATH: its console script beside the interpreter, else ``python -m aiaas``."""
    script = Path(sys.executable).parent / "aiaas"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "aiaas"]


def paste_commands(
    project: Path, body: dict[str, object], port: int | None = None, aiaas: list[str] | None = None
) -> str:
    """Shell lines that deploy ``project`` locally, create a key, start the function app, call
    it with curl and through ``aiaas invoke``, then stop everything: they work when pasted
    as they are, from any directory (absolute paths, no ``aiaas`` needed on PATH)."""
    cli = " ".join(shlex.quote(part) for part in aiaas or aiaas_command())
    cfg = shlex.quote(str(project.resolve()))
    port = port if port is not None else load_config(project).function.port
    url = f"http://127.0.0.1:{port}"
    data = shlex.quote(json.dumps(body))
    return "\n".join([
        f"{cli} deploy -c {cfg}",
        f"KEY=$({cli} keys create -c {cfg} 2>/dev/null | sed -n 's/^API key //p')",
        f"{cli} function serve -c {cfg} --port {port} & FUNCTION=$!",
        f"until curl -sf {url}/health >/dev/null; do sleep 0.2; done",
        f"curl -s -X POST {url}/predict -H \"authorization: Bearer $KEY\" "
        f"-H 'content-type: application/json' -d {data}; echo",
        f"{cli} invoke -c {cfg} -d {data}",
        f"kill $FUNCTION; {cli} delete -c {cfg}",
    ])  # fmt: skip


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"function app exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"function app not healthy after {timeout}s")


if __name__ == "__main__":
    sys.exit(main())
