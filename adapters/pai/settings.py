"""The ``pai:`` section's pydantic model: what ``aiaas.yaml`` is validated against.

Imported where a section is validated (config load, packaging) and by the control plane,
never at a function's cold start: the invoke path reads :class:`adapters.pai.PaiSettings`.
Each key is checked at load with a message that names it; what depends on the ``server:``
section too (the request timeout, the queue) is checked by :func:`server_problems` when the
control plane is built.

Patterns avoid ``\\d``, ``\\w`` and bounded repeats (pydantic's Rust regex builds them into
large automata); lengths are checked apart.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.pai import (
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_PREFIX,
    DEFAULT_PROTOCOL,
    DEFAULT_SCALING_LATENCY_S,
    Protocol,
    control_plane_host,
)
from adapters.pai.instance_types import check_instance_type, find

# cn-hangzhou, cn-shanghai, ap-southeast-1, us-west-1, eu-central-1, ...
REGION = r"^[a-z]+-[a-z]+(-[a-z0-9]+)*$"
WORKSPACE_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
# OSS buckets: 3-63 lower-case letters, digits and dashes, a letter or digit at each end
BUCKET = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
PREFIX = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RESOURCE_GROUP = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"  # eas-r-xxxxxxxx; the public group: none
# host[:port], no scheme: the SDK signs the endpoint as the host header
HOST_PORT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?")
# [registry[:port]/]repository[:tag][@sha256:<64 hex>], repository path components in
# lower case (the OCI distribution spec's rules, loosened to one pattern)
IMAGE = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?/)?"
    r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?(@sha256:[0-9a-f]+)?"
)
RESERVED_LABEL_PREFIX = "aiaas:"
MAX_LABELS = 20
"""Labels aiaas lets a user set (it sets three itself); EAS's own limit is not documented in
what was read: an assumption."""
DEFAULT_KEEPALIVE_MS = 90_000
"""Above the model server's default 60 s request timeout plus its 1 s queue wait."""
EAS_MAX_QUEUE_SIZE = 64
EAS_WORKER_THREADS = 5


class RpcSection(BaseModel):
    """EAS's ``metadata.rpc`` settings of the service (alibabacloud.com/help/en/pai/user-guide/
    status-codes and parameters-of-model-services).

    - ``keepalive_ms``: EAS's whole-request timeout, queueing included (EAS's default 5 s):
      past it EAS answers 408 and closes the connection; it must exceed the model server's
      ``request_timeout_s`` plus ``queue_wait_ms`` (:func:`server_problems`);
    - ``max_queue_size``: the requests EAS queues per instance before it answers 450;
    - ``worker_threads``: the requests EAS sends to the instance at once.
    """

    model_config = ConfigDict(extra="forbid")

    keepalive_ms: int = Field(default=DEFAULT_KEEPALIVE_MS, ge=1000, le=3_600_000)
    max_queue_size: int = Field(default=EAS_MAX_QUEUE_SIZE, ge=1, le=100_000)
    worker_threads: int = Field(default=EAS_WORKER_THREADS, ge=1, le=1024)


class PaiSection(BaseModel):
    """Settings of the ``pai`` provider (``pai:`` in ``aiaas.yaml``).

    Credentials are never here: the control plane uses alibabacloud-credentials' default
    chain (``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``_SECRET`` / ``ALIBABA_CLOUD_SECURITY_TOKEN``,
    an OIDC role in CI, ``~/.aliyun``); a function's invoke path the service token
    (``AIAAS_PAI_TOKEN``) and, for ``status()``, its role's credentials.

    Where the service runs: ``instance_type`` (an ECS type on EAS's public resources), or
    ``cpu`` / ``memory_mb`` / ``gpu`` on a dedicated ``resource_group`` (one or the other).
    """

    model_config = ConfigDict(extra="forbid")

    region: str = Field(pattern=REGION, max_length=40)
    workspace_id: str | None = Field(default=None, pattern=WORKSPACE_ID, max_length=64)
    oss_bucket: str = Field(pattern=BUCKET, min_length=3, max_length=63)
    oss_prefix: str = Field(default=DEFAULT_PREFIX, max_length=256)
    image: str = Field(max_length=1024)
    instance_type: str | None = None
    cpu: int | None = Field(default=None, ge=1, le=1024)
    gpu: int | None = Field(default=None, ge=0, le=64)
    memory_mb: int | None = Field(default=None, ge=128, le=4_194_304)
    resource_group: str | None = Field(default=None, pattern=RESOURCE_GROUP, max_length=64)
    endpoint: str | None = Field(default=None, max_length=255)
    protocol: Protocol = DEFAULT_PROTOCOL
    oss_endpoint: str | None = Field(default=None, max_length=255)
    rpc: RpcSection = Field(default_factory=RpcSection)
    scaling_latency_s: float = Field(default=DEFAULT_SCALING_LATENCY_S, gt=0, le=600)
    prefix: str = Field(default=DEFAULT_PREFIX, pattern=PREFIX, max_length=64)
    deploy_timeout_s: float = Field(default=1800.0, gt=0, le=6 * 3600)
    poll_interval_s: float = Field(default=10.0, gt=0, le=300)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not IMAGE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a container image reference: "
                "[registry/]repository[:tag][@sha256:digest], e.g. "
                "registry-vpc.cn-hangzhou.aliyuncs.com/ns/aiaas-server:1.0 (repository in "
                "lower case)"
            )
        return value

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = check_instance_type(value)
        if problem:
            raise ValueError(problem)
        found = find(value)
        return found.name if found else value.strip().lower()

    @field_validator("oss_prefix")
    @classmethod
    def _oss_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if "//" in value or any(part in (".", "..") for part in value.split("/")):
            raise ValueError(f"{value!r}: an OSS key prefix without empty, '.' or '..' parts")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "://" in value:
            raise ValueError(
                f"{value!r}: write host[:port] without a scheme and set pai.protocol (the SDK "
                "signs the endpoint as the host header: with a scheme every call is refused)"
            )
        if not HOST_PORT.fullmatch(value):
            raise ValueError(f"{value!r} is not host[:port], e.g. pai-eas.cn-hangzhou.aliyuncs.com")
        return value

    @field_validator("oss_endpoint")
    @classmethod
    def _oss_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.rpartition("://")
        if (sep and scheme not in ("http", "https")) or not HOST_PORT.fullmatch(rest.rstrip("/")):
            raise ValueError(
                f"{value!r} is not [http(s)://]host[:port], e.g. "
                "https://oss-cn-hangzhou.aliyuncs.com"
            )
        return value.rstrip("/")

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if key.lower().startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(f"label {key!r}: the aiaas: prefix is reserved (aiaas sets it)")
            if not 1 <= len(key) <= 128 or len(value) > 256:
                raise ValueError(f"label {key!r}: keys are 1-128 characters, values at most 256")
        if len(labels) > MAX_LABELS:
            raise ValueError(f"{len(labels)} labels: at most {MAX_LABELS} (aiaas sets 3 more)")
        return labels

    @model_validator(mode="after")
    def _where_it_runs(self) -> PaiSection:
        sized = [k for k in ("cpu", "memory_mb", "gpu") if getattr(self, k) is not None]
        if sized and self.instance_type is not None:
            raise ValueError(
                f"instance_type and {', '.join(sized)} are both set: set instance_type (EAS's "
                "public resources) or cpu and memory_mb (a dedicated resource_group), not both"
            )
        if sized:
            missing = [k for k in ("cpu", "memory_mb") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} not set: a cpu/memory_mb spec needs both"
                )
            if self.resource_group is None:
                raise ValueError(
                    "cpu/memory_mb are set without resource_group: EAS's public resources take "
                    "an instance_type; a cpu/memory spec runs on a dedicated resource group "
                    "(set resource_group, e.g. eas-r-xxxxxxxx)"
                )
        elif self.instance_type is None:
            self.instance_type = DEFAULT_INSTANCE_TYPE
        if self.poll_interval_s >= self.deploy_timeout_s:
            raise ValueError(
                f"poll_interval_s ({self.poll_interval_s:g}) is not below deploy_timeout_s "
                f"({self.deploy_timeout_s:g})"
            )
        return self

    @property
    def control_plane_url(self) -> str:
        """EAS's OpenAPI base URL (``endpoint`` when set, else the region's)."""
        return f"{self.protocol}://{self.endpoint or control_plane_host(self.region)}"

    @property
    def oss_url(self) -> str:
        """The OSS endpoint as a URL (``oss_endpoint`` when set, else the region's public one;
        a bare host is https)."""
        value = self.oss_endpoint or f"oss-{self.region}.aliyuncs.com"
        return value if "://" in value else f"https://{value}"

    @property
    def on_gpu(self) -> bool:
        """True when the service gets an NVIDIA GPU (the container must then find CUDA)."""
        if self.instance_type is not None:
            found = find(self.instance_type)
            return bool(found and found.gpu) or ".gn" in self.instance_type
        return bool(self.gpu)


def server_problems(section: PaiSection, server: Any) -> list[tuple[str, str]]:
    """What the ``server:`` section and these settings get wrong together: ``(key, why)``.

    - ``pai.rpc.keepalive_ms`` is EAS's whole-request timeout, queueing included: it must
      exceed the model server's ``request_timeout_s`` plus ``queue_wait_ms`` (a request may
      wait for room, then run), or EAS answers 408 to a request our server would still
      answer (or answer with its own typed 504);
    - EAS sends an instance at most ``rpc.worker_threads`` requests at once and queues
      ``rpc.max_queue_size`` more before answering 450 (which callers retry). Assumed (how
      EAS's queue meets a custom container's server is not documented, [U] in the notes):
      what EAS sends on, at most ``worker_threads`` + ``max_queue_size`` requests of one item
      per instance, must fit the server's ``max_queue_size``, so EAS's 450 trips before our
      503.
    """
    problems: list[tuple[str, str]] = []
    server_ms = server.request_timeout_s * 1000 + server.queue_wait_ms
    if section.rpc.keepalive_ms <= server_ms:
        problems.append(
            (
                "pai.rpc.keepalive_ms",
                f"{section.rpc.keepalive_ms} ms is not above the model server's "
                f"server.request_timeout_s ({server.request_timeout_s:g} s) plus "
                f"server.queue_wait_ms ({server.queue_wait_ms:g} ms): EAS would answer 408 "
                f"before the server answers; raise it above {server_ms:g} or lower those",
            )
        )
    let_through = section.rpc.max_queue_size + section.rpc.worker_threads
    if server.max_queue_size < let_through:
        problems.append(
            (
                "pai.rpc.max_queue_size",
                f"EAS lets {section.rpc.max_queue_size} queued + {section.rpc.worker_threads} "
                f"running = {let_through} requests through per instance, more than "
                f"server.max_queue_size ({server.max_queue_size}) queues: the server's 503 "
                "would trip before EAS's 450; lower it to "
                f"{max(1, server.max_queue_size - section.rpc.worker_threads)} or raise "
                "server.max_queue_size",
            )
        )
    return problems
