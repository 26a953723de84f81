"""The ``azureml:`` section's pydantic model: what ``aiaas.yaml`` is validated against.

Imported where a section is validated (config load, packaging) and by the control plane,
never at a function's cold start: the invoke path reads
:class:`adapters.azureml.AzureMLSettings`. Each key is checked at load with a message that
names it; what depends on the ``server:`` section too (the request timeout, the concurrency)
is checked by :func:`server_problems` when the control plane is built.

Patterns avoid ``\\d``, ``\\w`` and bounded repeats (pydantic's Rust regex builds them into
large automata); lengths are checked apart.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.azureml import DEFAULT_AUTH_MODE, DEFAULT_INSTANCE_TYPE, DEFAULT_PREFIX, AuthMode
from adapters.azureml.skus import SMALLEST_RECOMMENDED, check_instance_type, find, is_gpu

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Resource groups: 1-90 letters, digits, '_', '-', '.', '(' and ')', not ending with '.'
RESOURCE_GROUP = r"^[-A-Za-z0-9_.()]*[-A-Za-z0-9_()]$"
# Workspaces: 3-33 letters, digits, '-' and '_', a letter or digit first
WORKSPACE = r"^[A-Za-z0-9][-A-Za-z0-9_]*$"
REGION = r"^[a-z][a-z0-9]*$"  # eastus, westeurope, southcentralus, ...
# [registry[:port]/]repository[:tag][@sha256:<64 hex>], repository path components in
# lower case (the OCI distribution spec's rules, loosened to one pattern)
IMAGE = (
    r"^([A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?/)?"
    r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?(@sha256:[0-9a-f]+)?$"
)
# Blob containers: 3-63 lower-case letters, digits and single dashes, a letter or digit first
CONTAINER = r"^[a-z0-9](-?[a-z0-9])*$"
PREFIX = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_TAG_FORBIDDEN = re.compile(r"[<>%&\\?/]")
RESERVED_TAG_PREFIXES = ("aiaas:", "microsoft", "azure", "windows")
MAX_TAGS = 40  # Azure allows 50 per resource; aiaas sets some
MAX_REQUEST_TIMEOUT_MS = 180_000
"""Azure ML's largest ``request_timeout_ms`` ("Max request time-out at endpoint level: 180
seconds", quotas; RequestSettings in the deployment YAML reference)."""
DEFAULT_REQUEST_TIMEOUT_MS = 90_000
DEFAULT_MAX_CONCURRENT = 16
MAX_MIRROR_PERCENT = 50
"""Azure ML's largest mirror share (how-to-safely-rollout-online-endpoints)."""


class ProbeSection(BaseModel):
    """A liveness or readiness probe (Azure's ``ProbeSettings``; seconds). The routes are
    the model server's own (liveness ``/``, readiness ``/ready``): not settable."""

    model_config = ConfigDict(extra="forbid")

    initial_delay: int = Field(default=10, ge=1, le=3600)
    period: int = Field(default=10, ge=1, le=3600)
    timeout: int = Field(default=2, ge=1, le=3600)
    failure_threshold: int = Field(default=30, ge=1, le=1000)
    success_threshold: int = Field(default=1, ge=1, le=100)


class MirrorSection(BaseModel):
    """Mirror (shadow) traffic before the first live traffic step: the endpoint copies
    ``percent`` % of the live traffic to the new deployment (whose answers go nowhere) for
    ``duration_s`` seconds. Azure's rules: at most 50 %, one deployment, never one that
    takes live traffic (the first traffic step clears the mirror)."""

    model_config = ConfigDict(extra="forbid")

    percent: int = Field(ge=1, le=MAX_MIRROR_PERCENT)
    duration_s: float = Field(gt=0, le=6 * 3600)


class AzureMLSection(BaseModel):
    """Settings of the ``azureml`` provider (``azureml:`` in ``aiaas.yaml``).

    Credentials are never here: the control plane uses azure-identity's default chain
    (environment, workload identity, managed identity, ``az login``); a function's invoke
    path its managed identity (``IDENTITY_ENDPOINT``) or the endpoint key
    (``AIAAS_AZUREML_KEY``). ``AIAAS_AZURE_ARM_URL``, ``AIAAS_AZURE_BLOB_URL`` and
    ``AIAAS_AZURE_CA_BUNDLE`` point the clients elsewhere (an emulator, a sovereign cloud).
    """

    model_config = ConfigDict(extra="forbid")

    subscription_id: str
    resource_group: str = Field(pattern=RESOURCE_GROUP, min_length=1, max_length=90)
    workspace: str = Field(pattern=WORKSPACE, min_length=3, max_length=33)
    region: str | None = Field(default=None, pattern=REGION, max_length=40)
    image: str = Field(max_length=1024)
    instance_type: str = DEFAULT_INSTANCE_TYPE
    auth_mode: AuthMode = DEFAULT_AUTH_MODE
    request_timeout_ms: int = Field(default=DEFAULT_REQUEST_TIMEOUT_MS, ge=1000)
    max_concurrent_requests_per_instance: int = Field(default=DEFAULT_MAX_CONCURRENT, ge=1, le=1000)
    liveness_probe: ProbeSection = Field(default_factory=ProbeSection)
    readiness_probe: ProbeSection = Field(default_factory=ProbeSection)
    blob_container: str | None = Field(default=None, pattern=CONTAINER, min_length=3, max_length=63)
    prefix: str = Field(default=DEFAULT_PREFIX, pattern=PREFIX, max_length=64)
    deploy_timeout_s: float = Field(default=1800.0, gt=0, le=6 * 3600)
    poll_interval_s: float = Field(default=10.0, gt=0, le=300)
    tags: dict[str, str] = Field(default_factory=dict)
    mirror: MirrorSection | None = None

    @field_validator("subscription_id")
    @classmethod
    def _subscription(cls, value: str) -> str:
        if not GUID.fullmatch(value.lower()):
            raise ValueError(
                f"{value!r} is not a subscription id: a GUID such as "
                "00000000-0000-0000-0000-000000000000 (`az account show --query id`)"
            )
        return value.lower()

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not re.fullmatch(IMAGE, value):
            raise ValueError(
                f"{value!r} is not a container image reference: "
                "[registry/]repository[:tag][@sha256:digest], e.g. "
                "myregistry.azurecr.io/aiaas-server:1.0 (repository in lower case)"
            )
        return value

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        problem = check_instance_type(value)
        if problem:
            raise ValueError(problem)
        sku = find(value)
        assert sku is not None
        return sku.name  # Azure's usual spelling

    @field_validator("request_timeout_ms")
    @classmethod
    def _request_timeout(cls, value: int) -> int:
        if value > MAX_REQUEST_TIMEOUT_MS:
            raise ValueError(
                f"{value} ms: Azure ML's request timeout is at most {MAX_REQUEST_TIMEOUT_MS} "
                "ms (180 s)"
            )
        return value

    @field_validator("liveness_probe")
    @classmethod
    def _liveness(cls, probe: ProbeSection) -> ProbeSection:
        if probe.success_threshold != 1:
            raise ValueError("success_threshold: Azure ML fixes a liveness probe's at 1")
        return probe

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if key.lower().startswith(RESERVED_TAG_PREFIXES):
                raise ValueError(
                    f"tag {key!r}: the aiaas:, microsoft, azure and windows prefixes are reserved"
                )
            if not 1 <= len(key) <= 512 or len(value) > 256 or _TAG_FORBIDDEN.search(key):
                raise ValueError(
                    f"tag {key!r}: keys are 1-512 characters without < > % & \\ ? /, "
                    "values at most 256"
                )
        if len(tags) > MAX_TAGS:
            raise ValueError(
                f"{len(tags)} tags: at most {MAX_TAGS} (Azure allows 50, aiaas uses some)"
            )
        return tags

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _poll(self) -> AzureMLSection:
        if self.poll_interval_s >= self.deploy_timeout_s:
            raise ValueError(
                f"poll_interval_s ({self.poll_interval_s:g}) is not below deploy_timeout_s "
                f"({self.deploy_timeout_s:g})"
            )
        return self

    @property
    def gpu(self) -> bool:
        """True when the SKU carries an NVIDIA GPU (the container must then find CUDA)."""
        return is_gpu(self.instance_type)

    @property
    def small(self) -> bool:
        """True for the SKUs azure-ai-ml calls too small (below Standard_DS3_v2)."""
        return self.instance_type in ("Standard_DS1_v2", "Standard_DS2_v2")


SMALL_SKU_NOTE = f"below {SMALLEST_RECOMMENDED}, which Azure recommends at least"


def server_problems(
    section: AzureMLSection, server: Any, instance_count: int
) -> list[tuple[str, str]]:
    """What the ``server:`` section and these settings get wrong together: ``(key, why)``.

    - ``azureml.request_timeout_ms`` must exceed the server's ``request_timeout_s`` plus
      ``queue_wait_ms`` (a request may wait for room, then run): below it, Azure answers 408
      to a request our server would still answer (or answer with its own typed 504);
    - Azure lets ``2 * max_concurrent_requests_per_instance * instances`` requests in flight
      and answers 429 past them ("Too many pending requests"); our server answers 503 past
      ``max_queue_size`` queued items. Each instance must be able to queue what Azure lets
      through to it (``2 * max_concurrent_requests_per_instance`` requests of one item), so
      Azure's 429, which callers retry, trips first.
    """
    problems: list[tuple[str, str]] = []
    server_ms = server.request_timeout_s * 1000 + server.queue_wait_ms
    if section.request_timeout_ms <= server_ms:
        problems.append(
            (
                "azureml.request_timeout_ms",
                f"{section.request_timeout_ms} ms is not above the model server's "
                f"server.request_timeout_s ({server.request_timeout_s:g} s) plus "
                f"server.queue_wait_ms ({server.queue_wait_ms:g} ms): Azure would answer 408 "
                "before the server answers; raise it (at most 180000) or lower those",
            )
        )
    in_flight = 2 * section.max_concurrent_requests_per_instance
    if server.max_queue_size < in_flight:
        problems.append(
            (
                "azureml.max_concurrent_requests_per_instance",
                f"Azure lets 2 x {section.max_concurrent_requests_per_instance} = {in_flight} "
                f"requests in flight per instance ({in_flight * instance_count} for "
                f"{instance_count}), more than server.max_queue_size "
                f"({server.max_queue_size}) queues: the server's 503 would trip before "
                "Azure's 429; lower it to "
                f"{max(1, server.max_queue_size // 2)} or raise server.max_queue_size",
            )
        )
    return problems
