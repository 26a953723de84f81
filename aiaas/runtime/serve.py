"""Run the model server with uvicorn: ``aiaas serve BUNDLE``.

The port defaults to ``$SAGEMAKER_BIND_TO_PORT`` or 8080 (SageMaker's contract). SIGTERM
stops accepting connections, lets in-flight requests finish (up to 25 s), then exits.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import uvicorn

from aiaas.bundle import open_bundle
from aiaas.config import ServerSection
from aiaas.runtime.app import create_app
from aiaas.runtime.inference_process import InferenceProcessDied
from aiaas.runtime.runner import ModelRunner

GRACEFUL_SHUTDOWN_S = 25
"""How long a SIGTERM'd server lets in-flight requests finish: below the platforms' 30 s
between SIGTERM and SIGKILL (SageMaker's, and Kubernetes' default grace period), so the
drain ends and the server exits 0 before it is killed mid-shutdown."""
DEFAULT_PORT = 8080


def _exit_now_if_still_loading(runner: ModelRunner, code: int | str | None) -> None:
    """Exit at once (with ``code``) if the model is still loading on an inference thread.

    A load cannot be interrupted, and the interpreter joins the inference threads at exit:
    a SIGTERM during a minutes-long load (a cancelled deploy, a stray server) would wait the
    load out, far past the platform's 30 s kill timeout. Nothing is lost: the server never
    answered a prediction, and uvicorn has already closed its connections.
    """
    if runner.load_finished:
        return
    logging.getLogger("aiaas.serve").info("stopped while the model was still loading")
    runner.close(now=True)  # inference processes still loading, if any: killed
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def default_port() -> int:
    """``$SAGEMAKER_BIND_TO_PORT`` if set, else 8080."""
    return int(os.environ.get("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT))


def serve(
    bundle: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    settings: ServerSection | None = None,
    device: str | None = None,
    max_batch_size: int | None = None,
    max_delay_ms: float | None = None,
    log_level: str = "info",
) -> None:
    """Load ``bundle`` (directory or ``model.tar.gz``) and serve it until SIGTERM/SIGINT.

    Exits with status 1 if the model cannot be loaded.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings or ServerSection()
    bundle_dir, manifest = open_bundle(bundle)
    if max_batch_size is not None:
        manifest.batching.max_batch_size = max_batch_size
    if max_delay_ms is not None:
        manifest.batching.max_delay_ms = max_delay_ms
    runner = ModelRunner(
        bundle_dir,
        manifest,
        device=device,
        torch_threads=settings.torch_threads,
        workers=settings.inference_workers,
        output_validation=settings.output_validation,
        process=settings.inference_in == "process",
    )
    failed: list[BaseException] = []

    def stop_on_fatal(exc: BaseException) -> None:
        failed.append(exc)
        server.should_exit = True

    app = create_app(runner, settings, on_fatal=stop_on_fatal)
    config = uvicorn.Config(
        app,
        host=host,
        port=default_port() if port is None else port,
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as exc:  # a SIGTERM turned into an exit, or uvicorn's failed start
        _exit_now_if_still_loading(runner, exc.code)
        raise
    _exit_now_if_still_loading(runner, 0)
    if failed:
        if isinstance(failed[0], InferenceProcessDied):
            raise SystemExit(f"{failed[0].message}; the server stopped")
        raise SystemExit(f"model failed to load: {type(failed[0]).__name__}: {failed[0]}")
