"""The ``sagemaker`` provider's control plane, through boto3.

Deploy is CreateModel → CreateEndpointConfig → CreateEndpoint (or UpdateEndpoint with a
``DeploymentConfig`` compiled from the neutral ``deploy.rollout``), then Application Auto
Scaling from ``deploy.scaling``. What each resource holds is in its name (see
:mod:`adapters.sagemaker.names`), so plan reads, compares and writes nothing, and deploying
what is live makes no write call at all. Every AWS error is mapped once, in :func:`aws_error`.

Deploy is the shared transaction (:func:`adapters.rollout.run_rollout`) over SageMaker's
steps (:class:`adapters.sagemaker.steps.SageMakerSteps`); this module keeps the clients, the
reads, upload, describe, list, delete and logs.
"""

from __future__ import annotations

import builtins
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from adapters.base import (
    Deployment,
    DeploymentStatus,
    Plan,
    ProgressFn,
    Provider,
    VersionState,
    no_progress,
)
from adapters.rollout import (
    SMOKE_PATIENCE_S,
    Timing,
    run_rollout,
)
from adapters.sagemaker import SERVER_REQUEST_TIMEOUT_S, SageMakerSection, aws, names
from adapters.sagemaker.errors import aws_error, bucket_problem
from adapters.sagemaker.steps import MODEL, SageMakerSteps
from aiaas.bundle import inspect_archive, verify_archive
from aiaas.config import DEVICE_VARIABLE, SERVER_ENV_PREFIX, ProjectConfig, server_environment
from aiaas.errors import (
    AiaasError,
    BadRequest,
    BundleError,
    ConfigError,
    DeployFailed,
    NotFound,
)
from aiaas.manifest import Manifest

if TYPE_CHECKING:
    from adapters.sagemaker.invoke import SageMakerInvoker

T = TypeVar("T")
_ECR_REGION = re.compile(r"^[0-9]+\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")

MULTIPART_THRESHOLD = 64 * 1024 * 1024  # boto3 uploads larger bundles in parts, in parallel
MAX_LOG_EVENTS = 10_000  # GetLogEvents' limit (EventsLimit 1-10000)
MANIFEST_KEY = "aiaas-manifest.json"  # stored next to the archive: live_manifest reads it

ScalingState = tuple[dict[str, Any] | None, dict[str, Any] | None]
"""The endpoint's scalable target and target-tracking policy (None where not registered)."""


VISIBILITY_ATTEMPTS = 5


def _not_visible_yet(exc: ClientError) -> bool:
    """AWS's answer to a call naming a model or endpoint config it cannot see yet."""
    error = exc.response.get("Error", {})
    message = str(error.get("Message", "")).lower()
    return error.get("Code") == "ValidationException" and (
        "could not find endpoint configuration" in message or "could not find model" in message
    )


def _missing(exc: ClientError) -> bool:
    """True for AWS's ways of saying "no such thing"."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if code in {"404", "NoSuchKey"} or code.endswith(("NotFound", "NotFoundException")):
        return True  # ResourceNotFoundException (logs), ObjectNotFoundException (scaling), ...
    # SageMaker says "Could not find ..."; moto's autoscaling "No scalable target found"
    # where AWS's says ObjectNotFoundException.
    lowered = message.lower()
    return code == "ValidationException" and any(
        words in lowered
        for words in ("could not find", "does not exist", "not found", "no scalable target")
    )


@dataclass(frozen=True)
class Desired:
    """What deployment ``name`` of a bundle should consist of."""

    name: str
    manifest: Manifest
    uri: str
    model: str
    model_spec: dict[str, Any]
    config: str
    config_spec: dict[str, Any]


@dataclass(frozen=True)
class Live:
    """What the endpoint ``name`` is now (None fields where it does not exist)."""

    status: str | None
    config: str | None
    model: str | None
    instance_type: str | None
    arn: str | None
    failure: str | None
    instances: int | None = None  # the variant's CurrentInstanceCount (None: serverless)
    initial_count: int | None = None  # the live config's InitialInstanceCount
    modified: datetime | None = None  # the endpoint's LastModifiedTime
    pending_config: str | None = None  # an update's new config (PendingDeploymentSummary)
    pending_pct: int = 0  # the share of the traffic its new fleet takes (percent)


_MODEL_LOADER: list[Any] = []  # botocore's loader of service models, once per process


def _fresh_session(region: str) -> boto3.session.Session:
    """A new boto3 session (its own credentials, read when its first client is made) that
    shares one loader of botocore's JSON service models with every other session here: each
    fresh session would read them again, about 0.15 s of CPU for a provider's four clients,
    paid again by every deploy an :mod:`aiaas.api` caller runs in one process. The loader
    only reads the installed botocore and boto3 data files, which do not change while the
    process runs. (botocore has no public hook for this: ``_session`` is boto3's.)"""
    session = boto3.session.Session(region_name=region)
    core = session._session
    if _MODEL_LOADER:
        core.register_component("data_loader", _MODEL_LOADER[0])
    else:
        _MODEL_LOADER.append(core.get_component("data_loader"))
    return session


class SageMakerProvider(Provider):
    """Deploys the one image to a SageMaker real-time (or serverless) endpoint."""

    name = "sagemaker"

    def __init__(self, config: ProjectConfig, settings: SageMakerSection) -> None:
        self.config = config
        self.settings = settings
        env = dict(os.environ)
        self.region = aws.region(settings.region, env)
        self.runtime_url = aws.endpoint_url(
            "SAGEMAKER_RUNTIME", "runtime.sagemaker", self.region, env
        )
        self.project = names.project_id(settings.bucket, settings.prefix)
        self._session = _fresh_session(self.region)
        self._botocore = Config(
            retries={"mode": "standard", "max_attempts": 5},
            user_agent_extra="aiaas",
            connect_timeout=10,
            read_timeout=70,  # AWS's advice for calls that reach a container
        )
        self._clients: dict[str, Any] = {}
        self._invoker: SageMakerInvoker | None = None
        self._owned: dict[str, bool] = {}  # resource ARN -> tagged with this project
        self._regions_checked = False  # image and bucket in the endpoint's region (once)

    @classmethod
    def from_config(cls, config: ProjectConfig) -> SageMakerProvider:
        return cls(config, config.provider_settings("sagemaker", SageMakerSection))

    # -- clients -------------------------------------------------------------------------

    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            client = self._session.client(service, config=self._botocore)  # type: ignore[call-overload]
            self._clients[service] = client
        return client

    @property
    def _sm(self) -> Any:
        return self._client("sagemaker")

    @property
    def invoker(self) -> SageMakerInvoker:
        """The invoke path (for deploy's smoke test), built on first use."""
        if self._invoker is None:
            from adapters.sagemaker.invoke import SageMakerInvoker

            self._invoker = SageMakerInvoker.from_config(self.config)
        return self._invoker

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._invoker is not None:
            self._invoker.close()
            self._invoker = None

    def _error(self, exc: Exception, doing: str) -> AiaasError:
        """:func:`adapters.sagemaker.errors.aws_error` with this provider's region and
        bucket (the one mapping of a boto3 failure)."""
        return aws_error(exc, doing, region=self.region, bucket=self.settings.bucket)

    def _call(self, doing: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._error(exc, doing) from None

    def _call_when_visible(self, doing: str, call: Callable[[], T]) -> T:
        """:meth:`_call` for a call naming a model or endpoint config just created: AWS
        refuses it with a ValidationException ("Could not find ...") until the new one is
        visible, and tells callers to retry (CreateEndpoint's and CreateEndpointConfig's
        reference). Retried :data:`VISIBILITY_ATTEMPTS` times with doubling waits from
        ``poll_interval_s``; any other failure, or the last, is raised as :meth:`_call`."""
        wait = self.settings.poll_interval_s
        for attempt in range(1, VISIBILITY_ATTEMPTS + 1):
            try:
                return call()
            except ClientError as exc:
                if attempt == VISIBILITY_ATTEMPTS or not _not_visible_yet(exc):
                    raise self._error(exc, doing) from None
            except BotoCoreError as exc:
                raise self._error(exc, doing) from None
            time.sleep(wait)
            wait *= 2
        raise AssertionError("unreachable")  # the loop returns or raises

    def _maybe(self, doing: str, call: Callable[[], T]) -> T | None:
        """``call()``, or None when AWS says the thing does not exist."""
        try:
            return call()
        except ClientError as exc:
            if _missing(exc):
                return None
            raise self._error(exc, doing) from None
        except BotoCoreError as exc:
            raise self._error(exc, doing) from None

    # -- what is wanted, what is there ---------------------------------------------------

    def _tags(self, name: str, version: str) -> list[dict[str, str]]:
        ours = {
            names.PROJECT_TAG: self.project,
            names.DEPLOYMENT_TAG: name,
            names.VERSION_TAG: version,
        }
        return [{"Key": k, "Value": v} for k, v in {**self.settings.tags, **ours}.items()]

    def _environment(self) -> dict[str, str]:
        """The container's environment: the ``server:`` settings written in aiaas.yaml, as
        every provider gives them to the container entrypoint; the server's request timeout
        below SageMaker's own (so its typed 504 reaches the caller) unless one is written;
        and on a GPU instance type, ``AIAAS_DEVICE=cuda`` (no CUDA: the container exits,
        and the deploy fails saying so, instead of serving on the CPU)."""
        env = server_environment(self.config.server)
        if "request_timeout_s" not in self.config.server.model_fields_set:
            env[f"{SERVER_ENV_PREFIX}REQUEST_TIMEOUT_S"] = f"{SERVER_REQUEST_TIMEOUT_S:g}"
        if self.settings.gpu:
            env[DEVICE_VARIABLE] = "cuda"
        return dict(sorted(env.items()))

    def _desired(self, bundle: Path, name: str | None) -> Desired:
        if Path(bundle).is_dir():
            raise BundleError(
                f"{bundle}: SageMaker takes the bundle archive (model.tar.gz), not a folder: "
                "build it with `aiaas bundle`"
            )
        manifest = inspect_archive(bundle)
        name = _checked_name(name or manifest.name)
        uri = (
            f"s3://{self.settings.bucket}/{names.bundle_key(self.settings.prefix, manifest.digest)}"
        )
        model_spec: dict[str, Any] = {
            "Image": self.settings.image_uri,
            "ModelDataUrl": uri,
            "Environment": self._environment(),
            "Role": self.settings.role_arn,
        }
        model = names.resource_name(name, manifest.version, model_spec)
        variant: dict[str, Any] = {"VariantName": names.VARIANT, "ModelName": model}
        serverless = self.settings.serverless
        if serverless is not None:
            config: dict[str, Any] = {
                "MemorySizeInMB": serverless.memory_mb,
                "MaxConcurrency": serverless.max_concurrency,
            }
            if serverless.provisioned_concurrency:
                config["ProvisionedConcurrency"] = serverless.provisioned_concurrency
            variant["ServerlessConfig"] = config
        else:
            variant["InstanceType"] = self.settings.instance
            variant["InitialInstanceCount"] = self._initial_count()
            variant.update(self.settings.variant_settings())  # AMI, startup windows
        config_spec = {"ProductionVariants": [variant]}
        return Desired(
            name,
            manifest,
            uri,
            model,
            model_spec,
            names.resource_name(name, manifest.version, config_spec),
            config_spec,
        )

    def _initial_count(self) -> int:
        deploy = self.config.deploy
        count = deploy.instance_count
        if deploy.scaling is not None:
            count = min(max(count, deploy.scaling.min_instances), deploy.scaling.max_instances)
        return count

    def _live(self, name: str) -> Live:
        found = self._maybe(
            f"describe endpoint {name}", lambda: self._sm.describe_endpoint(EndpointName=name)
        )
        if found is None:
            return Live(None, None, None, None, None, None)
        config = found.get("EndpointConfigName")
        model = instance = initial = None
        if config:
            described = self._maybe(
                f"describe endpoint config {config}",
                lambda: self._sm.describe_endpoint_config(EndpointConfigName=config),
            )
            if described:
                first = (described.get("ProductionVariants") or [{}])[0]
                model, instance = first.get("ModelName"), first.get("InstanceType")
                initial = first.get("InitialInstanceCount")
        variant = (found.get("ProductionVariants") or [{}])[0]
        pending = found.get("PendingDeploymentSummary") or {}
        return Live(
            found["EndpointStatus"],
            config,
            model,
            instance,
            found["EndpointArn"],
            found.get("FailureReason"),
            variant.get("CurrentInstanceCount"),
            initial,
            found.get("LastModifiedTime"),
            pending.get("EndpointConfigName"),
            new_fleet_pct(pending, found.get("LastDeploymentConfig")),
        )

    def _owned_by_us(self, arn: str, *, unreadable_is_foreign: bool = False) -> bool:
        """True when the resource carries this project's tag. ``unreadable_is_foreign``:
        tags the principal may not read (a policy scoped to this project's names, listing
        every endpoint of the account) are another project's, not an error."""
        if arn not in self._owned:  # a resource's tags do not change under us: asked once
            try:
                tags = self._sm.list_tags(ResourceArn=arn).get("Tags", [])
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if unreadable_is_foreign and code in aws.AUTH_ERROR_CODES:
                    return False
                raise self._error(exc, f"list tags of {arn}") from None
            except BotoCoreError as exc:
                raise self._error(exc, f"list tags of {arn}") from None
            self._owned[arn] = {"Key": names.PROJECT_TAG, "Value": self.project} in tags
        return self._owned[arn]

    def _exists(self, what: str, call: Callable[[], Any]) -> bool:
        return self._maybe(what, call) is not None

    def _check_regions(self) -> None:
        """Refuse, before anything is written, an image or a bucket outside the endpoint's
        region: SageMaker pulls the image from its own region's ECR and reads the model
        data from its own region's S3 (CreateModel: "must be in the same region"). A bucket
        that does not exist is named here too, not at upload."""
        if self._regions_checked:
            return
        image = _ECR_REGION.match(self.settings.image_uri)
        if image and image.group(1) != self.region:
            raise ConfigError(
                f"sagemaker.image_uri: the image is in ECR's {image.group(1)}, the endpoint "
                f"in {self.region}: SageMaker pulls only from its own region; push the image "
                f"to {self.region} (or set sagemaker.region)"
            )
        problem = bucket_problem(self._client("s3"), self.settings.bucket, self.region)
        if problem is not None:
            raise problem
        self._regions_checked = True

    def _object_exists(self, uri: str) -> bool:
        """Whether the bundle is uploaded: ListObjectsV2 on its exact key, not HeadObject.
        Without an unconditioned s3:ListBucket, S3 answers HeadObject on a missing key with
        403, not 404 (the HeadObject reference's "Permissions"); the documented policy
        grants ListBucket only under the bundles' prefix, which this call's Prefix matches."""
        bucket, key = _split_s3(uri)
        found = self._call(
            f"look for {uri}",
            lambda: self._client("s3").list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1),
        )
        return any(item.get("Key") == key for item in found.get("Contents") or [])

    def _ours_left(self, name: str, keep: set[str]) -> tuple[list[str], list[str]]:
        """This deployment's endpoint configs and models, other than ``keep``."""
        base = names.base_name(name) + "-"

        def mine(found: str, arn: str) -> bool:
            # "probe-b-<version>-<hash>" is not probe's; nor is another project's "probe-..."
            # left behind without its endpoint: the name says whose deployment, the tag whose
            # project (asked only for names that already match)
            return (
                found not in keep
                and names.deployment_of(found) == names.base_name(name)
                and self._owned_by_us(arn, unreadable_is_foreign=True)
            )

        configs = [
            c["EndpointConfigName"]
            for page in self._call(
                "list endpoint configs",
                lambda: list(
                    self._sm.get_paginator("list_endpoint_configs").paginate(NameContains=base)
                ),
            )
            for c in page.get("EndpointConfigs", [])
            if mine(c["EndpointConfigName"], c["EndpointConfigArn"])
        ]
        models = [
            m["ModelName"]
            for page in self._call(
                "list models",
                lambda: list(self._sm.get_paginator("list_models").paginate(NameContains=base)),
            )
            for m in page.get("Models", [])
            if mine(m["ModelName"], m["ModelArn"])
        ]
        return sorted(configs), sorted(models)

    def _scaling_now(self, name: str) -> ScalingState:
        """The endpoint's scalable target and target-tracking policy, where registered."""
        client = self._client("application-autoscaling")
        resource = names.scaling_resource_id(name)
        targets = self._call(
            "describe scalable targets",
            lambda: client.describe_scalable_targets(
                ServiceNamespace="sagemaker", ResourceIds=[resource]
            ).get("ScalableTargets", []),
        )
        policies = self._call(
            "describe scaling policies",
            lambda: client.describe_scaling_policies(
                ServiceNamespace="sagemaker", ResourceId=resource
            ).get("ScalingPolicies", []),
        )
        return (targets[0] if targets else None), (policies[0] if policies else None)

    # -- upload and plan -----------------------------------------------------------------

    def upload(self, bundle: Path) -> str:
        desired = self._desired(bundle, None)
        if not self._object_exists(desired.uri):
            self._put_bundle(bundle, desired)
        return desired.uri

    def _put_bundle(self, bundle: Path, desired: Desired) -> None:
        verify_archive(bundle)  # what goes up matches its digest
        bucket, key = _split_s3(desired.uri)
        extra: dict[str, Any] = {"ServerSideEncryption": "AES256"}
        if self.settings.kms_key_id:
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.settings.kms_key_id}
        s3 = self._client("s3")
        manifest_key = key.rsplit("/", 1)[0] + "/" + MANIFEST_KEY
        self._call(
            f"upload {desired.uri}",
            lambda: s3.upload_file(
                str(bundle),
                bucket,
                key,
                ExtraArgs={**extra, "Metadata": {"aiaas-version": desired.manifest.version}},
                Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD),
            ),
        )
        body = desired.manifest.model_dump_json().encode()
        self._call(
            f"upload the manifest of {desired.uri}",
            lambda: s3.put_object(
                Bucket=bucket,
                Key=manifest_key,
                Body=body,
                ContentType="application/json",
                **extra,
            ),
        )

    def plan(self, bundle: Path, *, name: str | None = None) -> Plan:
        desired = self._desired(bundle, name)
        return SageMakerSteps(self).diff(desired, self._live(desired.name)).plan()

    # -- deploy: the shared transaction (adapters/rollout.py) over SageMaker's steps ------

    def deploy(
        self, bundle: Path, *, name: str | None = None, progress: ProgressFn = no_progress
    ) -> Deployment:
        outcome = run_rollout(
            SageMakerSteps(self),
            bundle,
            name=name,
            rollout=self.config.deploy.rollout,
            timing=Timing(
                self.settings.deploy_timeout_s,
                self.settings.poll_interval_s,
                # A new version may answer 429 ModelNotReadyException at first: for minutes
                # on serverless (a cold start), briefly on instances.
                smoke_s=SMOKE_PATIENCE_S if self.settings.serverless else 30.0,
            ),
            upload=self.upload,
            progress=progress,
        )
        deployment = self.describe(outcome.diff.name)
        if not outcome.warnings:
            return deployment
        return replace(deployment, details={**deployment.details, "warnings": outcome.warnings})

    def _deregister_scaling(self, name: str) -> bool:
        client = self._client("application-autoscaling")
        return (
            self._maybe(
                "deregister scalable target",
                lambda: client.deregister_scalable_target(
                    ServiceNamespace="sagemaker",
                    ResourceId=names.scaling_resource_id(name),
                    ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                ),
            )
            is not None
        )

    def _delete_resource(self, kind: str, resource: str) -> bool:
        sm = self._sm
        if kind == MODEL:
            return (
                self._maybe(f"delete model {resource}", lambda: sm.delete_model(ModelName=resource))
                is not None
            )
        return (
            self._maybe(
                f"delete endpoint config {resource}",
                lambda: sm.delete_endpoint_config(EndpointConfigName=resource),
            )
            is not None
        )

    def _delete_endpoint_and_wait(self, name: str) -> bool:
        deleted = self._maybe(
            f"delete endpoint {name}", lambda: self._sm.delete_endpoint(EndpointName=name)
        )
        deadline = time.monotonic() + self.settings.deploy_timeout_s
        while deleted is not None and self._live(name).status is not None:
            if time.monotonic() > deadline:
                raise DeployFailed(f"endpoint {name} is still Deleting")
            time.sleep(self.settings.poll_interval_s)
        return deleted is not None

    # -- describe, list, delete, logs ----------------------------------------------------

    def _deployment(self, name: str, live: Live) -> Deployment:
        """What DescribeEndpoint says, in every provider's terms: during a blue/green update
        both versions, each with its share of the traffic (:func:`new_fleet_pct`), the
        new one ``creating`` until it takes some; :attr:`Deployment.version` is the one
        taking most (the old one on a tie)."""
        assert live.status is not None
        version = names.version_of(live.config or "") or ""
        status = names.ENDPOINT_STATUS.get(live.status, DeploymentStatus.FAILED)
        versions: tuple[VersionState, ...] = ()
        if version:
            versions = (VersionState(version, 100, status),)
        new = names.version_of(live.pending_config or "")
        if version and new and new != version:
            pct = live.pending_pct
            serving = DeploymentStatus.READY if pct else DeploymentStatus.CREATING
            both = (VersionState(version, 100 - pct, status), VersionState(new, pct, serving))
            versions = tuple(sorted(both, key=lambda v: -v.traffic_pct))
        return Deployment(
            name=name,
            provider=self.name,
            version=versions[0].version if versions else version,
            status=status,
            versions=versions,
            endpoint=f"{self.runtime_url}/endpoints/{name}/invocations",
            details={
                "endpoint_config": live.config,
                "model": live.model,
                "instance_type": live.instance_type or "serverless",
                "instance_count": live.instances,
                "region": self.region,
                "log_group": names.log_group(name),
                **({"failure_reason": live.failure} if live.failure else {}),
            },
        )

    def describe(self, name: str) -> Deployment:
        live = self._live(name)
        if live.arn is None or not self._owned_by_us(live.arn):
            raise NotFound(f"no SageMaker deployment named {name!r} in {self.region}")
        return self._deployment(name, live)

    def list(self) -> builtins.list[Deployment]:
        pages = self._call(
            "list endpoints",
            lambda: builtins.list(self._sm.get_paginator("list_endpoints").paginate()),
        )
        found = []
        for page in pages:
            for summary in page.get("Endpoints", []):
                if not self._owned_by_us(summary["EndpointArn"], unreadable_is_foreign=True):
                    continue
                live = self._live(summary["EndpointName"])
                if live.status is not None:
                    found.append(self._deployment(summary["EndpointName"], live))
        return sorted(found, key=lambda d: d.name)

    def delete(self, name: str) -> bool:
        name = _checked_name(name)
        live = self._live(name)
        if live.arn is not None and not self._owned_by_us(live.arn):
            return False  # someone else's endpoint of that name: not ours to remove
        removed = False
        if live.arn is not None:
            removed |= self._deregister_scaling(name)
            removed |= self._delete_endpoint_and_wait(name)
        configs, models = self._ours_left(name, set())
        for config in configs:
            removed |= self._delete_resource("endpoint config", config)
        for model in models:
            removed |= self._delete_resource("model", model)
        return removed

    def logs(self, name: str, tail: int = 100) -> builtins.list[str]:
        if tail <= 0:
            return []
        tail = min(tail, MAX_LOG_EVENTS)
        logs, group = self._client("logs"), names.log_group(name)
        streams = self._maybe(
            f"describe log streams of {group}",
            lambda: logs.describe_log_streams(
                logGroupName=group, orderBy="LastEventTime", descending=True, limit=5
            ).get("logStreams", []),
        )
        events: builtins.list[tuple[int, str]] = []

        def last_events(stream: str) -> builtins.list[dict[str, Any]]:
            found = logs.get_log_events(
                logGroupName=group, logStreamName=stream, limit=tail, startFromHead=False
            )
            return builtins.list(found.get("events", []))

        for stream in streams or []:
            name_of_stream: str = stream["logStreamName"]
            got = self._call(f"get log events of {group}", partial(last_events, name_of_stream))
            events.extend((e["timestamp"], e["message"].rstrip("\n")) for e in got)
        return [message for _, message in sorted(events)[-tail:]]

    def live_manifest(self, name: str) -> Manifest | None:
        live = self._live(name)
        if live.model is None:
            return None
        model = self._maybe(
            f"describe model {live.model}", lambda: self._sm.describe_model(ModelName=live.model)
        )
        url = (model or {}).get("PrimaryContainer", {}).get("ModelDataUrl")
        if not url:
            return None
        bucket, key = _split_s3(url)
        manifest_key = key.rsplit("/", 1)[0] + "/" + MANIFEST_KEY
        got = self._maybe(
            f"read {manifest_key}",
            lambda: self._client("s3").get_object(Bucket=bucket, Key=manifest_key),
        )
        return Manifest.model_validate_json(got["Body"].read()) if got else None


def new_fleet_pct(pending: dict[str, Any], deployment: dict[str, Any] | None) -> int:
    """The share of the traffic (percent) a blue/green update's new fleet takes, from
    DescribeEndpoint's ``PendingDeploymentSummary`` and ``LastDeploymentConfig``: none while
    its variant is ``Creating`` or ``Updating`` (botocore's ``ProductionVariantStatus``);
    once it is ``ActivatingTraffic`` or ``Baking``, a canary's ``CanarySize``, a linear
    shift's ``LinearStepSize``, else (all at once) all of it. Gap: DescribeEndpoint does not
    say which step a linear shift reached: its first step's share is reported (the least the
    new fleet takes until the update ends)."""
    variants = pending.get("ProductionVariants") or []
    states = {s.get("Status") for v in variants for s in v.get("VariantStatus") or []}
    if not variants or not states & {"ActivatingTraffic", "Baking"}:
        return 0
    policy = (deployment or {}).get("BlueGreenUpdatePolicy") or {}
    routing = policy.get("TrafficRoutingConfiguration") or {}
    member = {"CANARY": "CanarySize", "LINEAR": "LinearStepSize"}.get(str(routing.get("Type")))
    size = routing.get(member) if member else None
    if not size:
        return 100
    if size.get("Type") == "INSTANCE_COUNT":
        count = variants[0].get("DesiredInstanceCount") or 1
        return min(100, int(size.get("Value", 0)) * 100 // count)
    return min(100, int(size.get("Value", 0)))


def _checked_name(name: str) -> str:
    problem = names.check_endpoint_name(name)
    if problem:
        raise BadRequest(problem)
    return name


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key
