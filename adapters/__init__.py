"""Providers: one contract (:mod:`adapters.base`) and one package per cloud.

Providers are discovered through the ``aiaas.providers`` entry-point group, whose entry
points are :class:`aiaas.plugins.ProviderSpec` objects, so a new cloud is a package, not an
``if`` branch. :func:`get_provider` builds a control plane (the CLI); :func:`get_invoker`
builds only the light invoke path (a function's cold start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiaas.errors import ConfigError
from aiaas.plugins import installed_providers, provider_spec

if TYPE_CHECKING:
    from adapters.base import Invoker, Provider
    from aiaas.config import ProjectConfig
    from aiaas.packaged import FunctionConfig


def available_providers() -> list[str]:
    """Names of the installed providers."""
    return sorted(installed_providers())


def get_provider(name: str, config: ProjectConfig) -> Provider:
    """The control plane of provider ``name``, built from the project's config."""
    from adapters.base import Provider

    cls = provider_spec(name).load_control_plane()
    if not issubclass(cls, Provider):
        raise ConfigError(f"provider: {name!r}'s control plane is not an adapters.base.Provider")
    return cls.from_config(config)


def get_invoker(name: str, config: ProjectConfig | FunctionConfig) -> Invoker:
    """The invoke path of provider ``name`` (no control-plane SDK is imported), from the
    project's config or a function's light view of it (no pydantic is imported)."""
    from adapters.base import Invoker
    from aiaas.packaged import FunctionConfig

    spec = provider_spec(name)
    cls = spec.load_invoker()
    if not issubclass(cls, Invoker):
        raise ConfigError(f"provider: {name!r}'s invoke path is not an adapters.base.Invoker")
    project = config.project if isinstance(config, FunctionConfig) else None
    if spec.invoke_settings is None and project is not None:
        # A provider that reads its settings from the pydantic section only (no light view
        # declared) is given the whole config, as before light views existed.
        return cls.from_config(project)
    return cls.from_config(config)
