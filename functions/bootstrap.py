"""Build the function app from the environment a serverless platform gives it.

Every platform entrypoint calls :func:`app_from_environment` once at cold start:

- ``AIAAS_CONFIG``: the project's config (default: ``aiaas.json`` in the package root, which
  ``aiaas function package`` writes from ``aiaas.yaml``),
  with ``AIAAS_*`` overrides (``AIAAS_PROVIDER`` picks the cloud);
- ``AIAAS_MANIFEST``: the bundle manifest whose schemas the edge enforces
  (default: ``aiaas-manifest.json`` in the package root);
- ``AIAAS_API_KEYS``: salted key hashes, when ``function.auth`` is ``api_key`` (or
  ``AIAAS_API_KEYS_FILE``: a file of them, re-read within a second when it changes);
- ``AIAAS_DEPLOYMENT``: the deployment to call (default: the model's name).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette

from adapters import get_provider
from aiaas.config import PACKAGED_CONFIG_FILE, ProjectConfig, load_config
from aiaas.manifest import MANIFEST_FILE, read_manifest_file
from functions.app import FunctionApp
from functions.auth import load_checker
from functions.edge import PLATFORM_BODY_LIMITS
from functions.metering import JsonLineSink

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def function_config() -> ProjectConfig:
    """The project config the function runs with (``AIAAS_CONFIG`` + ``AIAAS_*`` overrides)."""
    return load_config(os.environ.get("AIAAS_CONFIG", PACKAGE_ROOT / PACKAGED_CONFIG_FILE))


def app_from_environment(platform: str, config: ProjectConfig | None = None) -> Starlette:
    """The function app for ``platform`` (``aws``, ``azure``, ``alibaba`` or ``local``)."""
    config = config or function_config()
    manifest = read_manifest_file(
        Path(os.environ.get("AIAAS_MANIFEST", PACKAGE_ROOT / MANIFEST_FILE))
    )
    keys = load_checker() if config.function.auth == "api_key" else None
    return FunctionApp(
        get_provider(config.provider, config),
        manifest,
        deployment=os.environ.get("AIAAS_DEPLOYMENT", ""),  # empty: the model's name
        keys=keys,
        max_body_bytes=PLATFORM_BODY_LIMITS[platform],
        invoke_timeout_s=config.function.invoke_timeout_s,
        max_items=config.server.max_items_per_request,
        usage=JsonLineSink(emf=platform == "aws"),
        platform=platform,
        memory_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")),
    ).asgi()
