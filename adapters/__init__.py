"""Providers: one contract (:class:`adapters.base.Provider`) and one module per cloud.

Providers are discovered through the ``aiaas.providers`` entry-point group, so a new cloud
is a package, not an ``if`` branch: ``get_provider("local", config)``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from aiaas.errors import ConfigError

if TYPE_CHECKING:
    from adapters.base import Provider
    from aiaas.config import ProjectConfig

ENTRY_POINT_GROUP = "aiaas.providers"


def available_providers() -> list[str]:
    """Names of the installed providers."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def get_provider(name: str, config: ProjectConfig) -> Provider:
    """Instantiate the provider registered under ``name`` with the project's config."""
    from adapters.base import Provider

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        installed = ", ".join(available_providers()) or "none"
        raise ConfigError(f"provider: unknown provider {name!r}; installed: {installed}")
    cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"provider: entry point {name!r} is not an adapters.base.Provider")
    return cls.from_config(config)
