"""The ``local`` provider: the model server as a background process on 127.0.0.1.

This module is the provider's entry point (:data:`SPEC`): its facts, cheap to import (no
pydantic: a function's cold start loads it). Its section's pydantic model is
:class:`adapters.local.settings.LocalSection`, the control plane
:mod:`adapters.local.provider`, the invoke path :mod:`adapters.local.invoke`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiaas.plugins import Capabilities, ProviderSpec
from aiaas.pricing import FREE

if TYPE_CHECKING:
    from adapters.local.settings import LocalSection as LocalSection
    from aiaas.config import DeploySection

DEFAULT_HOST = "127.0.0.1"
DEFAULT_READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class LocalSettings:
    """The ``local:`` section as the invoke path reads it (the attributes of
    :class:`~adapters.local.settings.LocalSection` it needs), built without pydantic."""

    host: str = DEFAULT_HOST
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S

    @classmethod
    def read(cls, section: Mapping[str, Any]) -> LocalSettings:
        """From the section as a packaged config carries it (validated when packaged)."""
        return cls(
            host=section.get("host", DEFAULT_HOST),
            ready_timeout_s=section.get("ready_timeout_s", DEFAULT_READY_TIMEOUT_S),
        )


def __getattr__(name: str) -> Any:
    # The pydantic model loads where a section is validated, not with the spec (an import
    # statement, so a function package ships it for a config validated at cold start).
    if name == "LocalSection":
        from adapters.local.settings import LocalSection

        return LocalSection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_deploy(deploy: DeploySection, _settings: Any) -> list[tuple[str, str]]:
    """The neutral settings one local server process cannot honour."""
    refused = []
    if deploy.instance_count != 1:
        refused.append(("deploy.instance_count", "local runs one server process"))
    if deploy.scaling is not None:
        refused.append(("deploy.scaling", "local runs one server process and does not scale"))
    if deploy.rollout.rollback_alarms:
        refused.append(("deploy.rollout.rollback_alarms", "local has no alarms"))
    return refused


SPEC = ProviderSpec(
    name="local",
    settings="adapters.local.settings:LocalSection",
    invoke_settings=LocalSettings.read,
    control_plane="adapters.local.provider:LocalProvider",
    invoker="adapters.local.invoke:LocalInvoker",
    price=lambda _settings: FREE,
    # A new server answers on its own port before the switch: smoke-tested before traffic.
    # A canary or linear step holds with both servers up: the invoke path picks by share.
    capabilities=Capabilities(pre_traffic_smoke=True, traffic_split=True),
    invoke_requirements=("httpx>=0.27",),
    check_deploy=check_deploy,
)
