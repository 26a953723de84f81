"""The ``sagemaker:`` section's pydantic models: what ``aiaas.yaml`` is validated against.

Imported where a section is validated (config load, packaging) and by the control plane,
never at a function's cold start: the invoke path reads
:class:`adapters.sagemaker.SageMakerSettings`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.sagemaker import (
    _TAG_KEY,
    _TAG_VALUE,
    BUCKET,
    DEFAULT_GPU_AMI,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_SERVERLESS_MEMORY_MB,
    GPU_DOWNLOAD_TIMEOUT_S,
    GPU_STARTUP_TIMEOUT_S,
    IMAGE_URI,
    INFERENCE_AMI_VERSIONS,
    REGION,
    RESERVED_TAG_PREFIXES,
    ROLE_ARN,
    SERVERLESS_MEMORY_MB,
)
from adapters.sagemaker.instance_types import check_instance_type, is_gpu


class ServerlessSection(BaseModel):
    """SageMaker serverless inference (``sagemaker.serverless``): CPU only, billed per use."""

    model_config = ConfigDict(extra="forbid")

    memory_mb: int = Field(default=DEFAULT_SERVERLESS_MEMORY_MB)
    max_concurrency: int = Field(default=20, ge=1, le=200)
    provisioned_concurrency: int | None = Field(default=None, ge=1, le=200)

    @field_validator("memory_mb")
    @classmethod
    def _memory(cls, value: int) -> int:
        if value not in SERVERLESS_MEMORY_MB:
            sizes = ", ".join(map(str, SERVERLESS_MEMORY_MB))
            raise ValueError(f"{value} MB: SageMaker serverless takes one of {sizes}")
        return value

    @model_validator(mode="after")
    def _provisioned(self) -> ServerlessSection:
        if (self.provisioned_concurrency or 0) > self.max_concurrency:
            raise ValueError(
                f"provisioned_concurrency ({self.provisioned_concurrency}) is above "
                f"max_concurrency ({self.max_concurrency})"
            )
        return self


class SageMakerSection(BaseModel):
    """Settings of the ``sagemaker`` provider (``sagemaker:`` in ``aiaas.yaml``).

    Credentials are never here: boto3's default chain (environment, profile, SSO, instance
    role) for the control plane, the ``AWS_*`` variables (what Lambda sets) for the invoke
    path. ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, ...) is honoured.
    """

    model_config = ConfigDict(extra="forbid")

    region: str | None = Field(default=None, pattern=REGION)
    role_arn: str = Field(pattern=ROLE_ARN, max_length=2048)
    bucket: str = Field(pattern=BUCKET, min_length=3, max_length=63)
    # Also in the aiaas:project tag (s3://bucket/prefix): S3's safe characters that a tag
    # value takes too, and the whole within a tag value's 256.
    prefix: str = Field(default="aiaas", pattern=r"^[A-Za-z0-9_./-]*$", max_length=180)
    image_uri: str = Field(pattern=IMAGE_URI, max_length=1024)
    instance_type: str | None = None
    serverless: ServerlessSection | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    kms_key_id: str | None = Field(default=None, min_length=1, max_length=2048)
    deploy_timeout_s: float = Field(default=1800.0, gt=0, le=6 * 3600)
    poll_interval_s: float = Field(default=15.0, gt=0, le=300)
    inference_ami_version: str | None = None
    startup_timeout_s: int | None = Field(default=None, ge=60, le=3600)
    model_download_timeout_s: int | None = Field(default=None, ge=60, le=3600)

    @field_validator("inference_ami_version")
    @classmethod
    def _ami(cls, value: str | None) -> str | None:
        if value is not None and value not in INFERENCE_AMI_VERSIONS:
            known = "; ".join(f"{k} ({v})" for k, v in INFERENCE_AMI_VERSIONS.items())
            raise ValueError(f"{value!r} is not a SageMaker inference AMI version: {known}")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return value.strip("/")

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str | None) -> str | None:
        problem = check_instance_type(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if key.lower().startswith(RESERVED_TAG_PREFIXES):
                raise ValueError(f"tag {key!r}: the aws: and aiaas: prefixes are reserved")
            if not _TAG_KEY.fullmatch(key) or not _TAG_VALUE.fullmatch(value):
                raise ValueError(
                    f"tag {key!r}: keys are 1-128 and values 0-256 letters, digits, spaces "
                    "and _.:/=+-@"
                )
        if len(tags) > 40:  # 50 per resource, less the ones aiaas sets
            raise ValueError(f"{len(tags)} tags: at most 40 (AWS allows 50, aiaas uses some)")
        return tags

    @model_validator(mode="after")
    def _serverless(self) -> SageMakerSection:
        if self.serverless is not None and self.instance_type is not None:
            gpu = " a GPU type, and" if is_gpu(self.instance_type) else ""
            raise ValueError(
                f"serverless and instance_type {self.instance_type!r} exclude each other:{gpu} "
                "SageMaker serverless endpoints run on CPUs it chooses (no GPU, no instance "
                "type); remove one"
            )
        return self

    @model_validator(mode="after")
    def _instance_settings(self) -> SageMakerSection:
        gpu = self.instance is not None and is_gpu(self.instance)
        if self.inference_ami_version is not None and not gpu:
            where = "a serverless endpoint" if self.serverless else f"{self.instance!r}"
            raise ValueError(
                f"inference_ami_version: {where} has no NVIDIA GPU; the AMI versions are "
                "for GPU instance types (remove it)"
            )
        if self.serverless is not None:
            for key in ("startup_timeout_s", "model_download_timeout_s"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"{key}: serverless endpoints take no startup or download timeouts "
                        "(remove it)"
                    )
        return self

    @property
    def instance(self) -> str | None:
        """The instance type of a real-time endpoint (None when serverless)."""
        if self.serverless is not None:
            return None
        return self.instance_type or DEFAULT_INSTANCE_TYPE

    @property
    def gpu(self) -> bool:
        """True when the endpoint runs on NVIDIA GPUs (the container must then find CUDA)."""
        return self.instance is not None and is_gpu(self.instance)

    def variant_settings(self) -> dict[str, Any]:
        """The ProductionVariant fields these settings add to a real-time variant: the
        inference AMI and the startup windows (a GPU type's defaults where not written)."""
        if self.instance is None:
            return {}
        fields: dict[str, Any] = {}
        ami = self.inference_ami_version or (DEFAULT_GPU_AMI if self.gpu else None)
        startup = self.startup_timeout_s or (GPU_STARTUP_TIMEOUT_S if self.gpu else None)
        download = self.model_download_timeout_s or (GPU_DOWNLOAD_TIMEOUT_S if self.gpu else None)
        if download is not None:
            fields["ModelDataDownloadTimeoutInSeconds"] = download
        if startup is not None:
            fields["ContainerStartupHealthCheckTimeoutInSeconds"] = startup
        if ami is not None:
            fields["InferenceAmiVersion"] = ami
        return fields
