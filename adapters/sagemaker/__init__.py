"""The ``sagemaker`` provider: the one image on an AWS SageMaker real-time endpoint.

This module is the provider's entry point (:data:`SPEC`): its facts, cheap to import (no
pydantic: a function's cold start loads it; the section's pydantic models are in
:mod:`adapters.sagemaker.settings`). The control plane is :mod:`adapters.sagemaker.provider`
(boto3: S3, SageMaker, Application Auto Scaling, CloudWatch Logs), the invoke path
:mod:`adapters.sagemaker.invoke` (InvokeEndpoint signed with SigV4 over httpx: no boto3 on a
function's cold start). Install with ``pip install 'aiaas[aws]'``; docs/providers/sagemaker.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from adapters.sagemaker.prices import (
    PRICES_AS_OF,
    SERVERLESS_GB_SECOND_USD,
    SERVERLESS_PRICE_SOURCE,
    instance_price,
)
from aiaas.custom_attributes import CUSTOM_ATTRIBUTES_HEADER
from aiaas.plugins import Capabilities, Limits, ProviderSpec
from aiaas.pricing import Price

if TYPE_CHECKING:
    from adapters.sagemaker.settings import SageMakerSection as SageMakerSection
    from adapters.sagemaker.settings import ServerlessSection as ServerlessSection
    from aiaas.config import DeploySection, RolloutSection

DEFAULT_INSTANCE_TYPE = "ml.g4dn.xlarge"
# ProductionVariant.InferenceAmiVersion's values (botocore's sagemaker service model, with
# each AMI's driver and CUDA). SageMaker's default real-time AMI for g4dn/g5/p3/p4d ships
# driver 470 (CUDA 11.4: "Best practices to minimize interruptions during GPU driver
# upgrades", inference-gpu-drivers.html), too old for the image's CUDA 12.8, and NVIDIA
# Container Toolkit 1.17.4+ no longer mounts the compatibility libraries
# (container-nvidia-compliance.html). CUDA 12.8 needs driver 570 or newer: gpu-4-1 (580).
INFERENCE_AMI_VERSIONS = {
    "al2-ami-sagemaker-inference-gpu-2": "driver 535, CUDA 12.2",
    "al2-ami-sagemaker-inference-gpu-2-1": "driver 535, CUDA 12.2, no CUDA-compat mounting",
    "al2-ami-sagemaker-inference-gpu-3-1": "driver 550, CUDA 12.4, no CUDA-compat mounting",
    "al2023-ami-sagemaker-inference-gpu-4-1": "driver 580, CUDA 13.0, no CUDA-compat mounting",
}
DEFAULT_GPU_AMI = "al2023-ami-sagemaker-inference-gpu-4-1"
# ContainerStartupHealthCheckTimeoutInSeconds and ModelDataDownloadTimeoutInSeconds: 60-3600
# (botocore's ProductionVariant). On a GPU the window covers the model data download, the
# torch import, the load, the digest check and the warm-up: larger than AWS's default.
GPU_STARTUP_TIMEOUT_S = 900
GPU_DOWNLOAD_TIMEOUT_S = 900
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
REGION = r"^[a-z][a-z](-gov|-iso[a-z]*)?-[a-z]+-[0-9][0-9]?$"
ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$"
# S3 bucket names: 3-63 lowercase letters, digits, '.' and '-', starting and ending with a
# letter or digit (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html)
BUCKET = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"  # and 3-63 long
# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>(:<tag>|@sha256:<digest>).
# The patterns avoid \d, \w and bounded repeats ({1,61}): pydantic's Rust regex builds them
# into large automata, which cost 70 ms of a function's cold start; lengths are checked apart.
IMAGE_URI = (
    r"^[0-9]+\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"
    r"[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]+)$"
)
_TAG_KEY = re.compile(r"^[\w .:/=+@-]{1,128}$")
_TAG_VALUE = re.compile(r"^[\w .:/=+@-]{0,256}$")
RESERVED_TAG_PREFIXES = ("aws:", "aiaas:")


DEFAULT_SERVERLESS_MEMORY_MB = 2048


@dataclass(frozen=True)
class ServerlessSettings:
    """``sagemaker.serverless`` as the invoke path reads it."""

    memory_mb: int = DEFAULT_SERVERLESS_MEMORY_MB


@dataclass(frozen=True)
class SageMakerSettings:
    """The ``sagemaker:`` section as the invoke path, :func:`limits` and :func:`hourly_price`
    read it (the attributes of :class:`~adapters.sagemaker.settings.SageMakerSection` they
    need), built without pydantic from a packaged config's section (validated when packaged).
    """

    region: str | None = None
    serverless: ServerlessSettings | None = None
    instance_type: str | None = None

    @property
    def instance(self) -> str | None:
        """The instance type of a real-time endpoint (None when serverless)."""
        if self.serverless is not None:
            return None
        return self.instance_type or DEFAULT_INSTANCE_TYPE

    @classmethod
    def read(cls, section: Mapping[str, Any]) -> SageMakerSettings:
        """From the section as a packaged config carries it."""
        serverless = section.get("serverless")
        return cls(
            region=section.get("region"),
            serverless=None
            if serverless is None
            else ServerlessSettings(serverless.get("memory_mb", DEFAULT_SERVERLESS_MEMORY_MB)),
            instance_type=section.get("instance_type"),
        )


class _Serverless(Protocol):
    @property
    def memory_mb(self) -> int: ...


class InvokeSettings(Protocol):
    """What the invoke path reads of the settings: :class:`SageMakerSettings` in a
    function, the validated :class:`~adapters.sagemaker.settings.SageMakerSection` elsewhere."""

    @property
    def region(self) -> str | None: ...

    @property
    def serverless(self) -> _Serverless | None: ...

    @property
    def instance(self) -> str | None: ...


def __getattr__(name: str) -> Any:
    # The pydantic models load where a section is validated, not with the spec (import
    # statements, so a function package ships them for a config validated at cold start).
    if name == "SageMakerSection":
        from adapters.sagemaker.settings import SageMakerSection

        return SageMakerSection
    if name == "ServerlessSection":
        from adapters.sagemaker.settings import ServerlessSection

        return ServerlessSection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MAX_ROLLBACK_ALARMS = 10  # AutoRollbackConfig.Alarms (botocore's model)
INVOCATION_TIMEOUT_S = 60.0
"""How long SageMaker waits for the container's answer to one InvokeEndpoint ("SageMaker AI
endpoints and quotas": invocation timeout, 60 s for real-time)."""
SERVER_REQUEST_TIMEOUT_S = 55.0
"""The model server's request timeout on SageMaker unless ``server.request_timeout_s`` is
written: below :data:`INVOCATION_TIMEOUT_S`, so the server's typed 504 reaches the caller
instead of AWS's "timed out" error."""
MAX_EXECUTION_TIMEOUT_S = (600, 28800)
"""BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds's range (botocore's model)."""


def rollout_waits_s(rollout: RolloutSection) -> float:
    """How long a blue/green update of ``rollout`` waits between its traffic shifts, in all
    (instances starting come on top): once for a canary and for a watched all-at-once, once
    per step but the last for linear."""
    if rollout.strategy == "linear":
        return rollout.wait_s * (math.ceil(100 / rollout.step_percent) - 1)
    if rollout.strategy == "canary" or rollout.rollback_alarms:
        return rollout.wait_s
    return 0.0


def check_deploy(deploy: DeploySection, settings: Any) -> list[tuple[str, str]]:
    """The neutral settings SageMaker cannot honour with these ``sagemaker:`` settings."""
    from adapters.sagemaker.settings import SageMakerSection  # at config load: pydantic's there

    refused: list[tuple[str, str]] = []
    rollout = deploy.rollout
    if isinstance(settings, SageMakerSection) and settings.serverless is not None:
        why = "serverless endpoints have no instances (sagemaker.serverless.max_concurrency "
        if deploy.instance_count != 1:
            refused.append(("deploy.instance_count", why + "sets the capacity)"))
        if deploy.scaling is not None:
            refused.append(("deploy.scaling", why + "is the scaling limit)"))
        if rollout.strategy != "all_at_once" or rollout.rollback_alarms:
            key = "deploy.rollout.strategy" if rollout.strategy != "all_at_once" else ""
            refused.append(
                (
                    key or "deploy.rollout.rollback_alarms",
                    "serverless endpoints take no deployment guardrails (canary, linear, "
                    "rollback alarms); use all_at_once",
                )
            )
        return refused
    count = deploy.instance_count
    if deploy.scaling is not None:  # what the fleet starts at: the count within the bounds
        count = min(max(count, deploy.scaling.min_instances), deploy.scaling.max_instances)
    if rollout.strategy in ("canary", "linear") and count < 2:
        refused.append(
            (
                "deploy.instance_count",
                f"a {rollout.strategy} rollout shifts whole instances: SageMaker's "
                "CanarySize is at most 50% and LinearStepSize 10-50% of the variant's "
                f"instance count (botocore's TrafficRoutingConfig), and {count} instance has "
                "no such share; use 2 or more, or strategy all_at_once",
            )
        )
    if rollout.strategy == "canary" and rollout.canary_percent > 50:
        refused.append(
            ("deploy.rollout.canary_percent", "SageMaker's canary is at most 50% of the fleet")
        )
    if rollout.strategy == "linear" and not 10 <= rollout.step_percent <= 50:
        refused.append(
            ("deploy.rollout.step_percent", "SageMaker's linear step is 10-50% of the fleet")
        )
    if len(rollout.rollback_alarms) > MAX_ROLLBACK_ALARMS:
        refused.append(
            (
                "deploy.rollout.rollback_alarms",
                f"{len(rollout.rollback_alarms)} alarms: SageMaker takes at most "
                f"{MAX_ROLLBACK_ALARMS}",
            )
        )
    waits = rollout_waits_s(rollout)
    if isinstance(settings, SageMakerSection) and waits >= settings.deploy_timeout_s:
        refused.append(
            (
                "deploy.rollout.wait_s",
                f"a {rollout.strategy} rollout waits {waits:g}s in all, not less than "
                f"sagemaker.deploy_timeout_s ({settings.deploy_timeout_s:g}s): every deploy "
                "would time out; raise sagemaker.deploy_timeout_s or lower wait_s",
            )
        )
    scaling = deploy.scaling
    if scaling is not None and scaling.min_instances < 1:
        refused.append(
            (
                "deploy.scaling.min_instances",
                "a real-time endpoint keeps at least one instance (scale to zero needs "
                "inference components or serverless)",
            )
        )
    return refused


MAX_REQUEST_BYTES = 6_291_456
"""InvokeEndpoint's request limit for a real-time endpoint: 6 MB (SageMaker endpoints and
quotas, "Maximum payload size for InvokeEndpoint request")."""
MAX_SERVERLESS_REQUEST_BYTES = 4_194_304
"""A serverless endpoint's request limit: 4 MB ("Serverless Inference" quotas: maximum
request and response payload size)."""


def limits(settings: Any) -> Limits:
    """The request limit of the endpoint these ``sagemaker:`` settings deploy."""
    serverless = getattr(settings, "serverless", None) is not None  # either InvokeSettings
    return Limits(MAX_SERVERLESS_REQUEST_BYTES if serverless else MAX_REQUEST_BYTES)


def hourly_price(settings: Any) -> Price:
    """The list price of one instance (or a serverless endpoint's memory) per hour."""
    serverless = getattr(settings, "serverless", None)  # either InvokeSettings
    if serverless is not None:
        gb = serverless.memory_mb / 1024
        return Price(
            round(SERVERLESS_GB_SECOND_USD * 3600 * gb, 6),
            "hour",
            f"{SERVERLESS_PRICE_SOURCE} ({serverless.memory_mb} MB while a call runs)",
            PRICES_AS_OF,
        )
    instance = getattr(settings, "instance", None)
    return instance_price(instance or DEFAULT_INSTANCE_TYPE)


SPEC = ProviderSpec(
    name="sagemaker",
    settings="adapters.sagemaker.settings:SageMakerSection",
    invoke_settings=SageMakerSettings.read,
    control_plane="adapters.sagemaker.provider:SageMakerProvider",
    invoker="adapters.sagemaker.invoke:SageMakerInvoker",
    price=hourly_price,
    limits=limits,
    # traffic_split: describe reports both versions' shares while a canary holds
    # (SageMakerProvider._deployment, from DescribeEndpoint's PendingDeploymentSummary).
    capabilities=Capabilities(server_side_rollout=True, traffic_split=True),
    invoke_environment={
        "AWS_REGION": "the endpoint's region (or sagemaker.region in the packaged config)",
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN": (
            "set by Lambda from the function's role (sagemaker:InvokeEndpoint on the endpoint)"
        ),
    },
    request_id_header=CUSTOM_ATTRIBUTES_HEADER,
    invoke_requirements=("httpx>=0.27", "httpx-auth>=0.22"),
    check_deploy=check_deploy,
)
