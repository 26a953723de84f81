"""The ``local`` provider: the model server as a background process on 127.0.0.1.

This module is the provider's entry point (:data:`SPEC`): its settings and facts, cheap to
import. The control plane is :mod:`adapters.local.provider`, the invoke path
:mod:`adapters.local.invoke`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aiaas.config import DeploySection
from aiaas.plugins import Capabilities, ProviderSpec
from aiaas.pricing import FREE


class LocalSection(BaseModel):
    """Settings of the ``local`` provider (``local:`` in ``aiaas.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", pattern=r"^(127\.\d+\.\d+\.\d+|localhost|::1)$")
    ready_timeout_s: float = Field(default=300.0, gt=0)


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
    settings=LocalSection,
    control_plane="adapters.local.provider:LocalProvider",
    invoker="adapters.local.invoke:LocalInvoker",
    price=lambda _settings: FREE,
    # A new server answers on its own port before the switch: smoke-tested before traffic.
    # A canary or linear step holds with both servers up: the invoke path picks by share.
    capabilities=Capabilities(pre_traffic_smoke=True, traffic_split=True),
    invoke_requirements=("httpx>=0.27",),
    check_deploy=check_deploy,
)
