"""The ``azureml`` provider: the one image on an Azure ML managed online endpoint.

This module is the provider's entry point (:data:`SPEC`): its facts, cheap to import (no
pydantic, no Azure SDK: a function's cold start loads it; the section's pydantic model is
:class:`adapters.azureml.settings.AzureMLSection`). The control plane is
:mod:`adapters.azureml.provider` (azure-ai-ml for endpoints, deployments, models and
environments; azure-storage-blob for the bundle), the invoke path
:mod:`adapters.azureml.invoke` (the endpoint's scoring URI over httpx with an Entra token
from the managed identity, or the endpoint key: no azure.ai.ml or azure.identity on a
function's cold start). Install with ``pip install 'aiaas[azure]'``; docs/providers/azureml.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aiaas.plugins import Capabilities, ProviderSpec
from aiaas.pricing import Price

if TYPE_CHECKING:
    from adapters.azureml.settings import AzureMLSection as AzureMLSection
    from aiaas.config import DeploySection, RolloutSection

AuthMode = Literal["aad_token", "key"]
DEFAULT_AUTH_MODE: AuthMode = "aad_token"
DEFAULT_PREFIX = "aiaas"
DEFAULT_INSTANCE_TYPE = "Standard_NC4as_T4_v3"
ARM_URL = "https://management.azure.com"
"""Azure Resource Manager (public cloud); ``AIAAS_AZURE_ARM_URL`` points elsewhere (an
emulator, a sovereign cloud)."""
SCORING_RESOURCE = "https://ml.azure.com"
"""The Entra resource (audience) of a token for an ``aad_token`` endpoint's scoring URI."""


@dataclass(frozen=True)
class AzureMLSettings:
    """The ``azureml:`` section as the invoke path, :func:`limits` and the price read it
    (the attributes of :class:`~adapters.azureml.settings.AzureMLSection` they need), built
    without pydantic from a packaged config's section (validated when packaged)."""

    subscription_id: str = ""
    resource_group: str = ""
    workspace: str = ""
    region: str | None = None
    auth_mode: AuthMode = DEFAULT_AUTH_MODE
    instance_type: str = DEFAULT_INSTANCE_TYPE
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def read(cls, section: Mapping[str, Any]) -> AzureMLSettings:
        """From the section as a packaged config carries it."""
        return cls(
            subscription_id=section.get("subscription_id", ""),
            resource_group=section.get("resource_group", ""),
            workspace=section.get("workspace", ""),
            region=section.get("region"),
            auth_mode=section.get("auth_mode", DEFAULT_AUTH_MODE),
            instance_type=section.get("instance_type", DEFAULT_INSTANCE_TYPE),
            prefix=section.get("prefix", DEFAULT_PREFIX),
        )


def __getattr__(name: str) -> Any:
    # The pydantic model loads where a section is validated, not with the spec.
    if name == "AzureMLSection":
        from adapters.azureml.settings import AzureMLSection

        return AzureMLSection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MAX_INSTANCES = 50
"""Instances per deployment ("Manage and increase quotas ... for Azure Machine Learning")."""
MAX_DEPLOYMENTS = 20
"""Deployments per endpoint (quotas): a rollout keeps two at most."""


def rollout_waits_s(rollout: RolloutSection) -> float:
    """How long a ``deploy.rollout`` holds its traffic steps, in all (aiaas steps the
    endpoint's traffic itself: each step but the last holds ``wait_s``)."""
    if rollout.strategy == "linear":
        return rollout.wait_s * (math.ceil(100 / rollout.step_percent) - 1)
    if rollout.strategy == "canary" or rollout.rollback_alarms:
        return rollout.wait_s
    return 0.0


def check_deploy(deploy: DeploySection, settings: Any) -> list[tuple[str, str]]:
    """The neutral settings an Azure ML managed online endpoint cannot honour."""
    refused: list[tuple[str, str]] = []
    if deploy.scaling is not None:
        refused.append(
            (
                "deploy.scaling",
                "Azure ML autoscaling is Azure Monitor autoscale, another API, on one "
                "deployment by name, and each aiaas version is a new deployment, so neither "
                "aiaas.yaml nor iac/azure sets it: deploy.instance_count is the instance "
                "count",
            )
        )
    if deploy.instance_count > MAX_INSTANCES:
        refused.append(
            (
                "deploy.instance_count",
                f"{deploy.instance_count}: an Azure ML deployment runs at most {MAX_INSTANCES} "
                "instances",
            )
        )
    rollout = deploy.rollout
    if rollout.rollback_alarms:
        refused.append(
            (
                "deploy.rollout.rollback_alarms",
                "Azure ML has no alarm-driven rollback of a traffic shift; watch the canary "
                "with Azure Monitor and deploy the old bundle again to roll back",
            )
        )
    timeout = getattr(settings, "deploy_timeout_s", None)
    waits = rollout_waits_s(rollout)
    mirror = getattr(settings, "mirror", None)
    hold = float(getattr(mirror, "duration_s", 0.0) or 0.0)
    if timeout is not None and waits >= timeout:
        refused.append(
            (
                "deploy.rollout.wait_s",
                f"a {rollout.strategy} rollout holds {waits:g}s in all, not less than "
                f"azureml.deploy_timeout_s ({timeout:g}s): every deploy would time out; "
                "raise azureml.deploy_timeout_s or lower wait_s",
            )
        )
    elif timeout is not None and hold and waits + hold >= timeout:
        refused.append(
            (
                "azureml.mirror.duration_s",
                f"the mirror holds {hold:g}s and a {rollout.strategy} rollout {waits:g}s, "
                f"{waits + hold:g}s in all, not less than azureml.deploy_timeout_s "
                f"({timeout:g}s): every deploy that replaces a live version would time out; "
                "raise azureml.deploy_timeout_s or lower duration_s",
            )
        )
    return refused


def hourly_price(settings: Any) -> Price:
    """The estimated list price of one instance of the endpoint's SKU per hour
    (:func:`adapters.azureml.skus.sku_price`)."""
    from adapters.azureml.skus import sku_price

    return sku_price(getattr(settings, "instance_type", DEFAULT_INSTANCE_TYPE))


SPEC = ProviderSpec(
    name="azureml",
    settings="adapters.azureml.settings:AzureMLSection",
    invoke_settings=AzureMLSettings.read,
    control_plane="adapters.azureml.provider:AzureMLProvider",
    invoker="adapters.azureml.invoke:AzureMLInvoker",
    price=hourly_price,
    # A deployment at 0 % traffic answers requests pinned to it (azureml-model-deployment):
    # smoke-tested before any traffic; a canary step holds with both deployments serving.
    capabilities=Capabilities(pre_traffic_smoke=True, traffic_split=True),
    invoke_environment={
        "IDENTITY_ENDPOINT / IDENTITY_HEADER": (
            "set by Azure Functions when the app's managed identity is on (auth_mode "
            "aad_token: the identity needs the endpoint's score action)"
        ),
        "MSI_ENDPOINT / MSI_SECRET": (
            "the older managed-identity protocol (2017-09-01), used when IDENTITY_ENDPOINT is "
            "not set"
        ),
        "AZURE_CLIENT_ID": "a user-assigned identity's client id (optional)",
        "AIAAS_AZUREML_SCORING_URI": (
            "the endpoint's scoring URI (optional with aad_token: read from ARM, which needs "
            "the onlineEndpoints/read action too)"
        ),
        "AIAAS_AZUREML_KEY": "the endpoint key (auth_mode key only; from Key Vault)",
    },
    invoke_requirements=("httpx>=0.27",),
    check_deploy=check_deploy,
)
