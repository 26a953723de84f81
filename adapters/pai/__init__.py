"""The ``pai`` provider: the one image as an Alibaba Cloud PAI-EAS service.

This module is the provider's entry point (:data:`SPEC`): its facts, cheap to import (no
pydantic, no Alibaba Cloud SDK: a function's cold start loads it; the section's pydantic model
is :class:`adapters.pai.settings.PaiSection`). The control plane is
:mod:`adapters.pai.provider` (alibabacloud-eas20210701 over tea-openapi for services, versions
and autoscalers; alibabacloud-oss-v2 for the bundle), the invoke path :mod:`adapters.pai.invoke`
(the service endpoint over httpx with the service token; a small ACS3 signer for
DescribeService: no tea-openapi, credentials client nor eas-prediction on a function's cold
start). Install with ``pip install 'aiaas[alibaba]'``.

Neither Alibaba SDK reads an endpoint from the environment: ``pai.endpoint`` (``host:port``)
with ``pai.protocol``, and ``pai.oss_endpoint``, are how a user (or an emulator) points them
elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aiaas.plugins import Capabilities, Limits, ProviderSpec
from aiaas.pricing import Price

if TYPE_CHECKING:
    from adapters.pai.settings import PaiSection as PaiSection
    from aiaas.config import DeploySection, ScalingSection

Protocol = Literal["https", "http"]
DEFAULT_PROTOCOL: Protocol = "https"
DEFAULT_PREFIX = "aiaas"
DEFAULT_INSTANCE_TYPE = "ecs.gn6i-c4g1.xlarge"
"""One NVIDIA T4, 4 vCPUs, 15 GiB (the T4 default, as Azure ML's)."""
DEFAULT_SCALING_LATENCY_S = 1.0
API_VERSION = "2021-07-01"
"""The EAS OpenAPI version (alibabacloud-eas20210701)."""


def control_plane_host(region: str) -> str:
    """EAS's OpenAPI endpoint in ``region`` (``pai-eas.<region>.aliyuncs.com``)."""
    return f"pai-eas.{region}.aliyuncs.com"


@dataclass(frozen=True)
class PaiSettings:
    """The ``pai:`` section as the invoke path, :func:`limits` and the price read it (the
    attributes of :class:`~adapters.pai.settings.PaiSection` they need), built without
    pydantic from a packaged config's section (validated when packaged)."""

    region: str = ""
    workspace_id: str | None = None
    prefix: str = DEFAULT_PREFIX
    endpoint: str | None = None
    protocol: Protocol = DEFAULT_PROTOCOL
    instance_type: str | None = DEFAULT_INSTANCE_TYPE
    cpu: int | None = None
    gpu: int | None = None
    memory_mb: int | None = None

    @classmethod
    def read(cls, section: Mapping[str, Any]) -> PaiSettings:
        """From the section as a packaged config carries it."""
        sized = section.get("cpu") is not None or section.get("memory_mb") is not None
        return cls(
            region=section.get("region", ""),
            workspace_id=section.get("workspace_id"),
            prefix=section.get("prefix", DEFAULT_PREFIX),
            endpoint=section.get("endpoint"),
            protocol=section.get("protocol", DEFAULT_PROTOCOL),
            instance_type=section.get("instance_type", None if sized else DEFAULT_INSTANCE_TYPE),
            cpu=section.get("cpu"),
            gpu=section.get("gpu"),
            memory_mb=section.get("memory_mb"),
        )

    @property
    def control_plane_url(self) -> str:
        """EAS's OpenAPI base URL (``pai.endpoint`` when set, else the region's)."""
        return f"{self.protocol}://{self.endpoint or control_plane_host(self.region)}"


def __getattr__(name: str) -> Any:
    # The pydantic model loads where a section is validated, not with the spec.
    if name == "PaiSection":
        from adapters.pai.settings import PaiSection

        return PaiSection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


GROUP_REASON = (
    "PAI-EAS splits traffic between *services* of a service group, not between versions of "
    "one service, and the service-group weight API is not in the 2021-07-01 client "
    "(alibabacloud-eas20210701 has ListGroups, DescribeGroup, DescribeGroupEndpoints, no "
    "weight call): aiaas cannot step traffic on pai; use strategy all_at_once (EAS replaces "
    "the service's instances, and a failed update goes back to the previous version)"
)


def qps_threshold(scaling: ScalingSection, settings: Any) -> int:
    """EAS's per-instance ``qps`` scaling threshold for ``scaling.target_concurrency``.

    EAS scales on qps, cpu or gpu, not on requests in flight. By Little's law requests in
    flight = qps x seconds per request, so the threshold is ``target_concurrency /
    pai.scaling_latency_s``: the assumption is that a request takes ``scaling_latency_s``
    seconds (default 1 s) on average, queueing included; set it to the model's measured
    latency. Rounded, at least 1 (EAS's threshold is a whole number of requests per second
    in its examples)."""
    latency = float(getattr(settings, "scaling_latency_s", DEFAULT_SCALING_LATENCY_S))
    return max(1, round(scaling.target_concurrency / latency))


def check_deploy(deploy: DeploySection, settings: Any) -> list[tuple[str, str]]:
    """The neutral settings a PAI-EAS service cannot honour."""
    refused: list[tuple[str, str]] = []
    rollout = deploy.rollout
    if rollout.strategy in ("canary", "linear"):
        refused.append(("deploy.rollout.strategy", f"{rollout.strategy}: {GROUP_REASON}"))
    if rollout.rollback_alarms:
        refused.append(
            (
                "deploy.rollout.rollback_alarms",
                "PAI-EAS has no alarm-driven rollback of an update; watch the service in "
                "CloudMonitor and deploy the old bundle again (or roll the service back to its "
                "previous version) to roll back",
            )
        )
    # deploy.scaling is honoured: CreateServiceAutoScaler between min and max (none when they
    # are equal: EAS wants max > min; min 0 scales to zero), target_concurrency as a qps
    # threshold per instance (qps_threshold, its assumption stated there).
    return refused


def limits(settings: Any) -> Limits:
    """What an EAS service takes: no request size limit is documented (searched: the status
    codes, gateway and call pages; [U] in the notes), so only the model server's own
    ``server.max_body_bytes`` applies."""
    return Limits()


def hourly_price(settings: Any) -> Price:
    """The estimated price of one instance per hour: the instance type's, from the hint table
    (:func:`adapters.pai.instance_types.instance_price`); 0, saying so, for a cpu/memory
    spec on a resource group (EAS bills the group's machines, not the service)."""
    from adapters.pai.instance_types import PRICES_AS_OF, instance_price

    instance_type = getattr(settings, "instance_type", DEFAULT_INSTANCE_TYPE)
    if instance_type is None:
        return Price(
            0.0,
            "instance-hour",
            "a cpu/memory spec on a resource group: the group's machines are billed, not the "
            "service; set pricing.endpoint_hourly_usd",
            PRICES_AS_OF,
        )
    return instance_price(instance_type)


SPEC = ProviderSpec(
    name="pai",
    settings="adapters.pai.settings:PaiSection",
    invoke_settings=PaiSettings.read,
    control_plane="adapters.pai.provider:PaiProvider",
    invoker="adapters.pai.invoke:PaiInvoker",
    price=hourly_price,
    limits=limits,
    # No pinning of a version (a new version replaces the service's instances), no traffic
    # split between versions (see GROUP_REASON); an autoscaler with min 0 scales to zero.
    capabilities=Capabilities(scale_to_zero=True),
    invoke_environment={
        "AIAAS_PAI_ENDPOINT": (
            "the service endpoint: DescribeService's InternetEndpoint or IntranetEndpoint "
            "(https://<uid>.<region>.pai-eas.aliyuncs.com, with or without "
            "/api/predict/<service>; the public gateway's http:// form is called over https, "
            "an explicit :80 keeps plain HTTP); unset: read with DescribeService "
            "(credentials below)"
        ),
        "AIAAS_PAI_TOKEN": (
            "the service's AccessToken (a secret: from KMS or the function's config); unset: "
            "read with DescribeService at the first call (credentials below), read again once "
            "when the service refuses it"
        ),
        "ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET": (
            "the function role's credentials (set by Function Compute), for DescribeService, "
            "which needs eas:DescribeService on the service: status(), and the endpoint and "
            "token when the two variables above are unset; without them status() is unknown"
        ),
        "AIAAS_PAI_EAS_URL": (
            "EAS's control plane as http(s)://host[:port], instead of pai.endpoint/protocol "
            "(optional: another endpoint, or `aiaas emulate alibaba`)"
        ),
        "ALIBABA_CLOUD_SECURITY_TOKEN": "the STS token that goes with a role's credentials",
        "AIAAS_PAI_CA_BUNDLE": "a CA bundle to verify the endpoints' TLS with (optional)",
    },
    invoke_requirements=("httpx>=0.27",),
    check_deploy=check_deploy,
)
