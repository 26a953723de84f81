"""Build the function app: once per cold start, from the environment a platform gives it.

Every platform entrypoint calls :func:`app_from_environment` once at cold start, and
``aiaas function serve`` builds its app with :func:`build_function_app`, the same code. The
environment is read here, once (:class:`FunctionEnvironment`):

- ``AIAAS_CONFIG``: the project's config (default: ``aiaas.json`` in the package root, which
  ``aiaas function package`` writes from ``aiaas.yaml``),
  with ``AIAAS_*`` overrides (``AIAAS_PROVIDER`` picks the cloud);
- ``AIAAS_MANIFEST``: the bundle manifest whose schemas the edge enforces
  (default: ``aiaas-manifest.json`` in the package root);
- ``AIAAS_API_KEYS``: salted key hashes, when ``function.auth`` is ``api_key`` (or
  ``AIAAS_API_KEYS_FILE``: a file of them, re-read within a second when it changes);
- ``AIAAS_DEPLOYMENT``: the deployment to call (default: the model's name);
- ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``: the function's memory, which its cost estimate uses.

Only the provider's invoke path is built (:func:`adapters.get_invoker`): a cold start never
loads a control-plane SDK. Nor pydantic: the packaged config and manifest were validated in
full by ``aiaas function package``, and are read here into light views
(:mod:`aiaas.packaged`); an ``AIAAS_*`` override is still checked at start, naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from starlette.applications import Starlette

from adapters import get_invoker
from aiaas.errors import ConfigError
from aiaas.packaged import (
    MANIFEST_FILE,
    PACKAGED_CONFIG_FILE,
    FunctionConfig,
    ServedManifest,
    read_manifest_view,
)
from aiaas.packaged import function_config as read_function_config
from aiaas.plugins import provider_spec
from aiaas.pricing import CostModel
from functions.app import FunctionApp
from functions.auth import KeyChecker, load_checker
from functions.metering import JsonLineSink, UsageSink
from functions.platforms import Platform
from functions.platforms import platform as find_platform

if TYPE_CHECKING:
    from aiaas.config import ProjectConfig
    from aiaas.manifest import Manifest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MEMORY_MB = 512


@dataclass(frozen=True)
class FunctionEnvironment:
    """What a function reads from its environment, read once."""

    config_path: Path
    manifest_path: Path
    deployment: str
    memory_mb: int

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> FunctionEnvironment:
        """From ``env`` (default ``os.environ``)."""
        env = os.environ if env is None else env
        memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(DEFAULT_MEMORY_MB))
        if not memory.isascii() or not memory.isdigit() or int(memory) <= 0:
            raise ConfigError(
                f"AWS_LAMBDA_FUNCTION_MEMORY_SIZE={memory!r}: must be the function's memory "
                "in MB, a positive whole number"
            )
        return cls(
            config_path=Path(env.get("AIAAS_CONFIG", PACKAGE_ROOT / PACKAGED_CONFIG_FILE)),
            manifest_path=Path(env.get("AIAAS_MANIFEST", PACKAGE_ROOT / MANIFEST_FILE)),
            deployment=env.get("AIAAS_DEPLOYMENT", ""),  # empty: the model's name
            memory_mb=int(memory),
        )


def function_config(env: FunctionEnvironment | None = None) -> FunctionConfig:
    """The config the function runs with (``AIAAS_CONFIG`` + ``AIAAS_*`` overrides), read
    without pydantic where it is the packaged one (:func:`aiaas.packaged.function_config`)."""
    return read_function_config((env or FunctionEnvironment.read()).config_path)


def build_function_app(
    platform: Platform | str,
    config: ProjectConfig | FunctionConfig,
    manifest: ServedManifest,
    *,
    deployment: str = "",
    keys: KeyChecker | None = None,
    usage: UsageSink | None = None,
    memory_mb: int = DEFAULT_MEMORY_MB,
    manifest_source: Callable[[], Manifest | None] | None = None,
) -> Starlette:
    """The function app for ``platform`` (its record, or its name: ``aws``, ``azure``,
    ``alibaba`` or ``local``) in front of ``config.provider``'s invoke path (``config``: the
    function's view of the project's config, or the project's config itself)."""
    record = platform if isinstance(platform, Platform) else find_platform(platform)
    config = FunctionConfig.of(config)
    prices = config.pricing
    cost = CostModel.build(
        record.prices,
        provider_spec(config.provider).price(config.settings),
        memory_mb,
        function_request_usd=prices.function_request_usd,
        function_gb_second_usd=prices.function_gb_second_usd,
        endpoint_hourly_usd=prices.endpoint_hourly_usd,
    )
    return FunctionApp(
        get_invoker(config.provider, config),
        # FunctionApp reads only what ServedManifest has (name, version, schemas, example);
        # the cast goes when functions/app.py annotates it so.
        cast("Manifest", manifest),
        deployment=deployment,
        keys=keys,
        invoke_timeout_s=config.function.invoke_timeout_s,
        max_items=config.max_items_per_request,
        usage=usage,
        platform=record,
        memory_mb=memory_mb,
        manifest_source=manifest_source,
        cost=cost,
    ).asgi()


def app_from_environment(
    platform: Platform | str,
    config: ProjectConfig | FunctionConfig | None = None,
    env: FunctionEnvironment | None = None,
) -> Starlette:
    """The function app for ``platform``, configured from the environment (read once: pass
    the ``env`` and ``config`` already read, if any)."""
    env = env or FunctionEnvironment.read()
    config = FunctionConfig.of(config or function_config(env))
    record = platform if isinstance(platform, Platform) else find_platform(platform)
    return build_function_app(
        record,
        config,
        read_manifest_view(env.manifest_path),
        deployment=env.deployment,
        keys=load_checker() if config.function.auth == "api_key" else None,
        usage=JsonLineSink(emf=record.metrics_in_logs),
        memory_mb=env.memory_mb,
    )
