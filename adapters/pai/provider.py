"""The ``pai`` provider's control plane: alibabacloud-eas20210701 (over tea-openapi) for the
EAS service, its versions and autoscaler; alibabacloud-oss-v2 for the bundle.

An aiaas deployment ``name`` is one EAS service (:func:`adapters.pai.names.service_name`)
labelled with the project, the deployment and the first version. Its service config runs the
one image (``containers[].image/script/port``) with the bundle's OSS folder mounted read-only
at :data:`MOUNT_PATH` and ``AIAAS_MODEL_DIR`` pointing there. Deploy is the shared transaction
(:func:`adapters.rollout.run_rollout`) over :class:`adapters.pai.steps.PaiSteps`: a first
deploy is CreateService; a new digest is UpdateService with ``UpdateType=replace`` (merge
would keep a removed mount or variable), a new service version that EAS rolls out in place;
the smoke test runs after it (EAS cannot send a request to a version that takes no traffic),
and a failed version goes back with UpdateServiceVersion to the version that served. The
same digest and settings make no write at all.

- **Upload**: OSS, content-addressed: ``<oss_prefix>/<version>/model.tar.gz`` (the folder
  EAS mounts holds the archive alone: a manifest beside it would make the container take the
  folder for a bundle), the manifest at ``<oss_prefix>/manifests/<version>.json``; skipped
  when present, multipart (the SDK's Uploader) above :data:`MULTIPART_THRESHOLD`.
- **Clients**: credentials from alibabacloud-credentials' default chain (built once, given
  to both SDKs and to the smoke test's invoker); endpoints from ``pai.endpoint`` /
  ``pai.protocol`` / ``pai.oss_endpoint``, which ``AIAAS_PAI_EAS_URL`` and
  ``AIAAS_PAI_OSS_URL`` override when set (read once, by :meth:`PaiProvider.from_config`:
  neither SDK reads an endpoint from the environment itself); nothing global is set.

Every SDK failure is mapped once, by :func:`adapters.pai.errors.pai_error`.
"""

from __future__ import annotations

import builtins
import difflib
import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.auth import AlibabaCredentials
from adapters.base import (
    Deployment,
    DeploymentStatus,
    Plan,
    ProgressFn,
    Provider,
    VersionState,
    no_progress,
)
from adapters.pai import SPEC, names, qps_threshold
from adapters.pai.errors import pai_error
from adapters.pai.settings import PaiSection, server_problems
from adapters.rollout import Timing, run_rollout
from aiaas.bundle import inspect_archive, verify_archive
from aiaas.config import DEVICE_VARIABLE, ProjectConfig, server_environment
from aiaas.errors import AiaasError, BundleError, ConfigError, NotFound, ProviderError
from aiaas.manifest import Manifest

if TYPE_CHECKING:
    from adapters.pai.invoke import PaiInvoker

T = TypeVar("T")

ARCHIVE = "model.tar.gz"
MOUNT_PATH = "/mnt/model"
"""Where EAS mounts the bundle's OSS folder (read-only) in the container."""
SERVER_PORT = 8080
"""The port the model server listens on in the container (``AIAAS_PORT``), the one
``containers[].port`` names to EAS."""
SCRIPT = "python -m aiaas.runtime.container serve"
"""The container's command (``containers[].script``, the documented key)."""
MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
LOG_PAGES_READ = 4
"""DescribeServiceLog pages read for one tail (blank lines make a page short)."""
MAX_LOG_LINES = 10_000
SMOKE_TIMEOUT_S = 70.0
READ_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_MS = 5_000

SETTLING = frozenset(
    {"creating", "updating", "deleting", "waiting", "scaling", "starting", "stopping",
     "hotupdate"}
)  # fmt: skip
FAILED = frozenset({"failed", "deletefailed"})


# -- what is wanted, what is there ---------------------------------------------------------


@dataclass(frozen=True)
class Desired:
    """What deployment ``name`` of a bundle should be on PAI-EAS."""

    name: str
    manifest: Manifest
    service: str
    archive_key: str  # <oss_prefix>/<version>/model.tar.gz
    manifest_key: str  # <oss_prefix>/manifests/<version>.json
    config: dict[str, Any]  # the service config (CreateService's / UpdateService's body)
    labels: dict[str, str]
    autoscaler: dict[str, Any] | None  # CreateServiceAutoScaler's body (None: none)


@dataclass(frozen=True)
class Live:
    """What the service is now (``status`` None: it does not exist)."""

    service: str
    status: str | None = None  # lower case
    current_version: int = 0
    latest_version: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    endpoint: str | None = None
    token: str | None = field(default=None, repr=False)  # the service's secret: never shown
    message: str = ""
    reason: str = ""
    running: int = 0
    total: int = 0

    @property
    def exists(self) -> bool:
        """True when the service exists."""
        return self.status is not None

    @property
    def version(self) -> str | None:
        """The bundle version the current service config mounts (None: not aiaas's)."""
        return version_of_config(self.config)


def version_of_config(config: dict[str, Any]) -> str | None:
    """The bundle version an aiaas service config mounts (the OSS folder's last part)."""
    for entry in config.get("storage") or []:
        if isinstance(entry, dict) and entry.get("mount_path") == MOUNT_PATH:
            path = str((entry.get("oss") or {}).get("path", "")).rstrip("/")
            return path.rsplit("/", 1)[-1] or None
    return None


def contains(live: Any, wanted: Any) -> bool:
    """True when every key and value of ``wanted`` is in ``live`` (EAS may add its own keys
    to a service config; lists compare item by item)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(
            k in live and contains(live[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    return bool(live == wanted)


class _OssCredentials:
    """alibabacloud-oss-v2's credentials provider over the default chain."""

    def __init__(self, get: Callable[[], AlibabaCredentials]) -> None:
        self._get = get

    def get_credentials(self) -> Any:
        import alibabacloud_oss_v2 as oss

        found = self._get()
        return oss.credentials.Credentials(
            access_key_id=found.access_key_id,
            access_key_secret=found.access_key_secret,
            security_token=found.security_token,
        )


# -- the provider ---------------------------------------------------------------------------


class PaiProvider(Provider):
    """Deploys the one image as a PAI-EAS service."""

    name = "pai"

    def __init__(self, config: ProjectConfig, settings: PaiSection) -> None:
        problems = server_problems(settings, config.server)
        if problems:
            raise ConfigError("; ".join(f"{key}: {why}" for key, why in problems))
        self.config = config
        self.settings = settings
        self.project = settings.prefix
        self._credential: Any = None
        self._eas: Any = None
        self._oss: Any = None
        self._oss_http: Any = None
        self._invokers: dict[tuple[str, str], PaiInvoker] = {}
        self._instance_type_checked = False
        self._lock = threading.RLock()
        #: ``AIAAS_PAI_CA_BUNDLE`` (read by :meth:`from_config`): the smoke test's TLS trust
        self.ca_bundle: str | None = None

    @classmethod
    def from_config(
        cls, config: ProjectConfig, env: Mapping[str, str] | None = None
    ) -> PaiProvider:
        """From the project's ``pai:`` section, with the endpoints ``AIAAS_PAI_EAS_URL`` and
        ``AIAAS_PAI_OSS_URL`` name in ``env`` (default: this process's environment, read
        now) in place of the section's (:func:`with_environment`), and the CA bundle
        ``AIAAS_PAI_CA_BUNDLE`` names for the smoke test's TLS."""
        from adapters.pai.invoke import CA_BUNDLE_VARIABLE

        env = os.environ if env is None else env
        settings = config.provider_settings("pai", PaiSection)
        provider = cls(config, with_environment(settings, env))
        provider.ca_bundle = env.get(CA_BUNDLE_VARIABLE) or None
        return provider

    # -- clients -------------------------------------------------------------------------

    @property
    def credential(self) -> Any:
        """alibabacloud-credentials' default chain (environment, OIDC role, ``~/.aliyun``,
        ECS RAM role), built once."""
        with self._lock:
            if self._credential is None:
                from alibabacloud_credentials.client import Client as CredentialClient

                self._credential = self._call("read credentials", CredentialClient)
            return self._credential

    def credentials(self) -> AlibabaCredentials:
        """The chain's credentials now (the smoke test's invoker signs DescribeService)."""
        found = self._call("read credentials", self.credential.get_credential)
        return AlibabaCredentials(
            str(found.access_key_id or ""),
            str(found.access_key_secret or ""),
            getattr(found, "security_token", None) or None,
        )

    @property
    def eas(self) -> Any:
        """alibabacloud-eas20210701's client (``pai.endpoint``/``pai.protocol`` when set)."""
        with self._lock:
            if self._eas is None:
                from alibabacloud_eas20210701.client import Client
                from alibabacloud_tea_openapi import models as open_api

                s = self.settings
                config = open_api.Config(
                    credential=self.credential,
                    region_id=s.region,
                    endpoint=s.endpoint or f"pai-eas.{s.region}.aliyuncs.com",
                    protocol=s.protocol,
                    read_timeout=READ_TIMEOUT_MS,
                    connect_timeout=CONNECT_TIMEOUT_MS,
                )
                self._eas = self._call("build the EAS client", lambda: Client(config))
            return self._eas

    @property
    def oss(self) -> Any:
        """alibabacloud-oss-v2's client on ``pai.oss_endpoint`` (path style for an IP)."""
        with self._lock:
            if self._oss is None:
                import alibabacloud_oss_v2 as oss

                config = oss.config.load_default()
                config.credentials_provider = _OssCredentials(self.credentials)
                config.region = self.settings.region
                config.endpoint = self.settings.oss_url
                if self.settings.oss_endpoint is not None:
                    config.use_path_style = True
                # ours, so close() can close its connections (oss.Client has no close)
                self._oss_http = oss.transport.RequestsHttpClient()
                config.http_client = self._oss_http
                self._oss = oss.Client(config)
            return self._oss

    def invoker_for(self, live: Live) -> PaiInvoker:
        """The invoke path to the service (deploy's smoke test): its endpoint and token from
        DescribeService, this provider's credentials for ``status()``."""
        if not live.endpoint or not live.token:
            raise NotFound(f"service {live.service} has no endpoint or token yet")
        # keyed on the token's digest: the cache never holds the secret itself as a key
        key = (live.endpoint, hashlib.sha256(live.token.encode()).hexdigest())
        with self._lock:
            invoker = self._invokers.get(key)
            if invoker is None:
                from adapters.pai.invoke import PaiInvoker

                invoker = PaiInvoker.for_control_plane(
                    self.settings,
                    endpoint=live.endpoint,
                    token=live.token,
                    credentials=self.credentials,
                    ca_bundle=self.ca_bundle,
                )
                self._invokers[key] = invoker
            return invoker

    def close(self) -> None:
        """Drop every client held, closing what can be closed: the invokers' httpx clients
        and the OSS client's connections (its requests session). The EAS client has nothing
        to close: tea-openapi keeps its connections in a process-wide pool of sessions per
        host; nor has the credentials client. A client that fails to close is passed over."""
        with self._lock:
            invokers = list(self._invokers.values())
            self._invokers.clear()
            oss_http = self._oss_http
            self._eas = self._oss = self._oss_http = self._credential = None
        for client in [*invokers, oss_http]:
            if client is not None:
                with suppress(Exception):
                    client.close()

    @property
    def clients_open(self) -> bool:
        """True while any client is held (dropped by :meth:`close`)."""
        with self._lock:
            held = (self._eas, self._oss, self._credential)
            return any(c is not None for c in held) or bool(self._invokers)

    # -- calls -----------------------------------------------------------------------------

    def _call(self, doing: str, call: Callable[[], T]) -> T:
        """``call()``; any failure as :func:`pai_error`."""
        try:
            return call()
        except AiaasError:
            raise
        except Exception as exc:
            raise pai_error(exc, doing) from None

    def _maybe(self, doing: str, call: Callable[[], T]) -> T | None:
        """:meth:`_call`, or None when EAS (or OSS) says there is no such thing."""
        try:
            return self._call(doing, call)
        except NotFound:
            return None

    # -- what is wanted, what is there ---------------------------------------------------

    def _environment(self) -> list[dict[str, str]]:
        env = {
            "AIAAS_MODEL_DIR": MOUNT_PATH,
            "AIAAS_PORT": str(SERVER_PORT),
            **server_environment(self.config.server),
        }
        if self.settings.on_gpu:
            env[DEVICE_VARIABLE] = "cuda"
        return [{"name": k, "value": v} for k, v in sorted(env.items())]

    def service_config(self, service: str, version: str) -> dict[str, Any]:
        """The EAS service config of ``version``: the image, its port and script, the
        environment, the bundle's folder mounted read-only, ``metadata.rpc`` and where it
        runs (an instance type, or cpu/memory on a resource group)."""
        s = self.settings
        metadata: dict[str, Any] = {
            "name": service,
            "instance": self.config.deploy.instance_count,
            "rpc": {
                "keepalive": s.rpc.keepalive_ms,
                "max_queue_size": s.rpc.max_queue_size,
                "worker_threads": s.rpc.worker_threads,
            },
        }
        if s.workspace_id:
            metadata["workspace_id"] = s.workspace_id
        config: dict[str, Any] = {"metadata": metadata}
        if s.instance_type is not None:
            config["cloud"] = {"computing": {"instances": [{"type": s.instance_type}]}}
        else:
            metadata.update(cpu=s.cpu, memory=s.memory_mb)
            if s.gpu:
                metadata["gpu"] = s.gpu
            if s.resource_group:
                metadata["resource"] = s.resource_group
        config["containers"] = [
            {"image": s.image, "port": SERVER_PORT, "script": SCRIPT, "env": self._environment()}
        ]
        folder = f"oss://{s.oss_bucket}/{self._folder(version)}/"
        config["storage"] = [{"oss": {"path": folder, "readOnly": True}, "mount_path": MOUNT_PATH}]
        return config

    def _folder(self, version: str) -> str:
        prefix = self.settings.oss_prefix
        return f"{prefix}/{version}" if prefix else version

    def _manifest_key(self, version: str) -> str:
        prefix = self.settings.oss_prefix
        return f"{prefix}/manifests/{version}.json" if prefix else f"manifests/{version}.json"

    def autoscaler_spec(self) -> dict[str, Any] | None:
        """CreateServiceAutoScaler's body for ``deploy.scaling`` (None: no autoscaler, as
        when min == max: EAS wants max > min)."""
        scaling = self.config.deploy.scaling
        if scaling is None or scaling.max_instances <= scaling.min_instances:
            return None
        return {
            "min": scaling.min_instances,
            "max": scaling.max_instances,
            "scaleStrategies": [
                {"metricName": "qps", "threshold": qps_threshold(scaling, self.settings)}
            ],
        }

    def _desired(self, bundle: Path, name: str | None) -> Desired:
        if Path(bundle).is_dir():
            raise BundleError(
                f"{bundle}: PAI-EAS takes the bundle archive (model.tar.gz), not a folder: "
                "build it with `aiaas bundle`"
            )
        manifest = inspect_archive(bundle)
        name = name or manifest.name
        service = names.service_name(name, self.settings)
        labels = {
            **self.settings.labels,
            **names.project_labels(self.settings, name, manifest.version),
        }
        return Desired(
            name=name,
            manifest=manifest,
            service=service,
            archive_key=f"{self._folder(manifest.version)}/{ARCHIVE}",
            manifest_key=self._manifest_key(manifest.version),
            config=self.service_config(service, manifest.version),
            labels=labels,
            autoscaler=self.autoscaler_spec(),
        )

    def _live(self, service: str) -> Live:
        body = self._maybe(
            f"describe service {service}",
            lambda: self.eas.describe_service(self.settings.region, service).body,
        )
        if body is None:
            return Live(service)
        labels = {
            str(label.label_key): str(label.label_value or "")
            for label in (body.labels or [])
            if label.label_key
        }
        try:
            config = json.loads(body.service_config or "{}")
        except ValueError:
            config = {}
        return Live(
            service,
            status=str(body.status or "unknown").lower(),
            current_version=int(body.current_version or 0),
            latest_version=int(body.latest_version or 0),
            labels=labels,
            config=config if isinstance(config, dict) else {},
            # the public gateway's over https (the smoke test sends the token, and `status`
            # shows it): EAS gives http:// URLs
            endpoint=names.over_tls(body.internet_endpoint or body.intranet_endpoint or "") or None,
            token=body.access_token or None,
            message=str(body.message or ""),
            reason=str(body.reason or ""),
            running=int(body.running_instance or 0),
            total=int(body.total_instance or 0),
        )

    def _owned_by_us(self, live: Live, name: str) -> bool:
        """True when the service carries this project's and this deployment's labels."""
        return (
            live.labels.get(names.PROJECT_LABEL) == self.project
            and live.labels.get(names.DEPLOYMENT_LABEL) == name
        )

    def events(self, service: str, count: int = 5) -> builtins.list[str]:
        """The service's last Warning events (DescribeServiceEvent), as ``Reason: text``."""
        from alibabacloud_eas20210701 import models

        body = self._maybe(
            f"read the events of service {service}",
            lambda: (
                self.eas.describe_service_event(
                    self.settings.region, service, models.DescribeServiceEventRequest()
                ).body
            ),
        )
        found = [
            f"{e.reason}: {e.message}"
            for e in (getattr(body, "events", None) or [])
            if str(e.type or "").lower() == "warning"
        ]
        return found[-count:]

    def read_autoscaler(self, service: str) -> dict[str, Any] | None:
        """The service's autoscaler as CreateServiceAutoScaler's body (None: none)."""
        body = self._maybe(
            f"read the autoscaler of service {service}",
            lambda: self.eas.describe_service_auto_scaler(self.settings.region, service).body,
        )
        if body is None or body.max_replica is None:
            return None
        strategies = [
            {"metricName": s.metric_name, "threshold": s.threshold}
            for s in (body.scale_strategies or [])
        ]
        return {
            "min": int(body.min_replica or 0),
            "max": int(body.max_replica),
            "scaleStrategies": strategies,
        }

    # -- upload and plan -----------------------------------------------------------------

    def _object_exists(self, key: str) -> bool:
        bucket = self.settings.oss_bucket
        return bool(
            self._call(
                f"look for oss://{bucket}/{key}", lambda: self.oss.is_object_exist(bucket, key)
            )
        )

    def upload(self, bundle: Path) -> str:
        desired = self._desired(bundle, None)
        if not self._object_exists(desired.archive_key):
            self._put_bundle(bundle, desired)
        return f"oss://{self.settings.oss_bucket}/{desired.archive_key}"

    def _put_bundle(self, bundle: Path, desired: Desired) -> None:
        """The manifest first, then the archive (multipart when large): the archive's
        presence says both are up."""
        import alibabacloud_oss_v2 as oss

        verify_archive(bundle)
        bucket = self.settings.oss_bucket
        manifest = desired.manifest.model_dump_json().encode()
        self._call(
            f"upload oss://{bucket}/{desired.manifest_key}",
            lambda: self.oss.put_object(
                oss.PutObjectRequest(
                    bucket=bucket,
                    key=desired.manifest_key,
                    body=manifest,
                    content_type="application/json",
                )
            ),
        )
        where = f"upload oss://{bucket}/{desired.archive_key}"
        request = oss.PutObjectRequest(
            bucket=bucket, key=desired.archive_key, content_type="application/gzip"
        )
        if Path(bundle).stat().st_size > MULTIPART_THRESHOLD:
            uploader = self.oss.uploader(part_size=PART_SIZE, leave_parts_on_error=False)
            self._call(where, lambda: uploader.upload_file(request, filepath=str(bundle)))
            return
        data = Path(bundle).read_bytes()
        self._call(where, lambda: self.oss.put_object(replace_body(request, data)))

    def check_instance_type(self) -> None:
        """``pai.instance_type`` against EAS's own list for the region (DescribeMachineSpec,
        the public resource group's types), read once per provider: ConfigError naming the
        key when EAS does not offer the type, or says it is not available now (no stock),
        with the closest names EAS lists. A cpu/memory spec on a resource group is not
        checked (EAS lists the group's machines elsewhere). Called by the steps' diff only
        when the service is to be created or updated: a deploy that keeps the service writes
        nothing and must not fail because the type's stock ran out."""
        wanted = self.settings.instance_type
        if wanted is None or self._instance_type_checked:
            return
        from alibabacloud_eas20210701 import models

        body = self._call(
            "list the instance types (DescribeMachineSpec)",
            lambda: self.eas.describe_machine_spec(models.DescribeMachineSpecRequest()).body,
        )
        metas = {str(m.instance_type): m for m in (body.instance_metas or []) if m.instance_type}
        meta = metas.get(wanted)
        region = self.settings.region
        if meta is None:
            close = difflib.get_close_matches(wanted, list(metas), n=2, cutoff=0.6)
            near = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise ConfigError(
                f"pai.instance_type: PAI-EAS offers no {wanted!r} in {region} "
                f"(DescribeMachineSpec lists {len(metas)} types){near}"
            )
        if meta.is_available is False:
            stock = f", stock: {meta.stock_status}" if meta.stock_status else ""
            raise ConfigError(
                f"pai.instance_type: {wanted!r} is not available in {region} now{stock}: "
                "choose another type, or deploy on a resource group"
            )
        self._instance_type_checked = True

    def plan(self, bundle: Path, *, name: str | None = None) -> Plan:
        from adapters.pai.steps import PaiSteps

        steps = PaiSteps(self)
        desired = steps.desired(bundle, name)
        return steps.diff(desired, steps.live(desired)).plan()

    # -- deploy ----------------------------------------------------------------------------

    def deploy(
        self, bundle: Path, *, name: str | None = None, progress: ProgressFn = no_progress
    ) -> Deployment:
        from adapters.pai.steps import PaiSteps

        timing = Timing(self.settings.deploy_timeout_s, self.settings.poll_interval_s, smoke_s=30.0)
        steps = PaiSteps(self, timing=timing)  # the rollback's wait shares the one deadline
        outcome = run_rollout(
            steps,
            bundle,
            name=name,
            rollout=self.config.deploy.rollout,
            timing=timing,
            upload=self.upload,
            progress=progress,
        )
        deployment = self.describe(outcome.diff.name)
        if not outcome.warnings:
            return deployment
        return replace(deployment, details={**deployment.details, "warnings": outcome.warnings})

    # -- describe, list, delete, logs ----------------------------------------------------

    def _deployment(self, name: str, live: Live) -> Deployment:
        status = service_status(live)
        version = live.version or live.labels.get(names.VERSION_LABEL, "")
        return Deployment(
            name=name,
            provider=self.name,
            version=version,
            status=status,
            versions=(VersionState(version, 100, status),) if version else (),
            endpoint=live.endpoint,
            details={
                "service": live.service,
                "region": self.settings.region,
                "service_version": live.current_version,
                "latest_service_version": live.latest_version,
                "instances": {"running": live.running, "total": live.total},
                "eas_status": live.status,
                **({"message": live.message} if live.message else {}),
            },
        )

    def describe(self, name: str) -> Deployment:
        service = names.service_name(name, self.settings)
        live = self._live(service)
        if not live.exists or not self._owned_by_us(live, name):
            raise NotFound(
                f"no PAI-EAS deployment named {name!r} in {self.settings.region} "
                f"(service {service})"
            )
        return self._deployment(name, live)

    def list(self) -> builtins.list[Deployment]:
        from alibabacloud_eas20210701 import models

        found: builtins.list[Deployment] = []
        page = 1
        while True:
            request = models.ListServicesRequest(
                label={names.PROJECT_LABEL: self.project}, page_size=100, page_number=page
            )
            body = self._call("list services", functools.partial(self._list_page, request))
            services = body.services or []
            for service in services:
                labels = {
                    str(label.label_key): str(label.label_value or "")
                    for label in (service.labels or [])
                }
                name = labels.get(names.DEPLOYMENT_LABEL)
                if labels.get(names.PROJECT_LABEL) != self.project or not name:
                    continue
                try:
                    if names.service_name(name, self.settings) != service.service_name:
                        continue
                except ConfigError:
                    continue
                live = self._live(service.service_name)
                if live.exists and self._owned_by_us(live, name):
                    found.append(self._deployment(name, live))
            if len(services) < 100 or page * 100 >= int(body.total_count or 0):
                break
            page += 1
        return sorted(found, key=lambda d: d.name)

    def _list_page(self, request: Any) -> Any:
        return self.eas.list_services(request).body

    def delete_service(self, service: str) -> bool:
        """DeleteService (False: it was gone)."""
        done = self._maybe(
            f"delete service {service}",
            lambda: self.eas.delete_service(self.settings.region, service),
        )
        with self._lock:
            stale = [
                self._invokers.pop(key)
                for key in list(self._invokers)
                if key[0].rstrip("/").endswith("/" + service)
            ]
        for invoker in stale:
            with suppress(Exception):
                invoker.close()
        return done is not None

    def delete(self, name: str) -> bool:
        """DeleteService (its autoscaler goes with it). False, and no write, when the
        service is gone (or is not this project's)."""
        service = names.service_name(name, self.settings)
        live = self._live(service)
        if not live.exists or not self._owned_by_us(live, name):
            return False
        return self.delete_service(service)

    def _read_log_page(self, service: str, page: Callable[[int], Any], number: int) -> Any:
        return self._call(f"read the log of service {service}", lambda: page(number))

    def service_logs(self, service: str, tail: int) -> builtins.list[str]:
        """The last ``tail`` lines of the service's log that are not blank
        (DescribeServiceLog, read from its last page backwards)."""
        from alibabacloud_eas20210701 import models

        def page(number: int) -> Any:
            request = models.DescribeServiceLogRequest(page_size=tail, page_num=number)
            return self.eas.describe_service_log(self.settings.region, service, request).body

        first = self._maybe(f"read the log of service {service}", lambda: page(1))
        if first is None:
            return []
        # Pages hold ``tail`` lines, oldest first, blank ones included: the tail is read from
        # the last page backwards until it holds ``tail`` lines that are not blank (the last
        # page is often short), at most LOG_PAGES_READ pages.
        pages = int(first.total_page_num or 1)
        lines: builtins.list[str] = []
        for number in range(pages, max(0, pages - LOG_PAGES_READ), -1):
            body = first if number == 1 else self._read_log_page(service, page, number)
            lines = [str(x) for x in (body.logs or []) if str(x).strip()] + lines
            if len(lines) >= tail:
                break
        return lines[-tail:]

    def logs(self, name: str, tail: int = 100) -> builtins.list[str]:
        if tail <= 0:
            return []
        tail = min(tail, MAX_LOG_LINES)
        service = names.service_name(name, self.settings)
        live = self._live(service)
        if not live.exists or not self._owned_by_us(live, name):
            raise NotFound(f"no PAI-EAS deployment named {name!r} (service {service})")
        return self.service_logs(service, tail)

    def live_manifest(self, name: str) -> Manifest | None:
        import alibabacloud_oss_v2 as oss

        service = names.service_name(name, self.settings)
        live = self._live(service)
        version = live.version if live.exists and self._owned_by_us(live, name) else None
        if not version:
            return None
        bucket, key = self.settings.oss_bucket, self._manifest_key(version)
        found = self._maybe(
            f"read oss://{bucket}/{key}",
            lambda: self.oss.get_object(oss.GetObjectRequest(bucket=bucket, key=key)),
        )
        if found is None:
            return None

        def read() -> bytes:
            with found.body as body:
                return bytes(body.read())

        data = self._call(f"read oss://{bucket}/{key}", read)
        try:
            return Manifest.model_validate_json(data)
        except ValueError:  # pydantic's ValidationError is a ValueError
            raise ProviderError(f"oss://{bucket}/{key} is not an aiaas manifest") from None


def with_environment(settings: PaiSection, env: Mapping[str, str]) -> PaiSection:
    """``settings`` with the endpoints the environment names instead of the section's:
    ``AIAAS_PAI_EAS_URL`` (``http(s)://host[:port]``) as ``endpoint`` and ``protocol``,
    ``AIAAS_PAI_OSS_URL`` as ``oss_endpoint`` (so addressed path style, as any
    ``oss_endpoint``). ConfigError naming the variable when one is not such a URL."""
    from adapters.pai.invoke import EAS_URL_VARIABLE, OSS_URL_VARIABLE, endpoint_url

    changes: dict[str, Any] = {}
    eas = endpoint_url(env, EAS_URL_VARIABLE)
    if eas is not None:
        protocol, _, host = eas.partition("://")
        changes.update(endpoint=host, protocol=protocol)
    oss = endpoint_url(env, OSS_URL_VARIABLE)
    if oss is not None:
        changes["oss_endpoint"] = oss
    return settings.model_copy(update=changes) if changes else settings


def replace_body(request: Any, data: bytes) -> Any:
    """``request`` (a PutObjectRequest) carrying ``data``."""
    request.body = data
    return request


def service_status(live: Live) -> DeploymentStatus:
    """EAS's service status in every provider's terms."""
    status = live.status or ""
    if status == "running":
        return DeploymentStatus.READY
    if status == "creating":
        return DeploymentStatus.CREATING
    if status in ("deleting",):
        return DeploymentStatus.DELETING
    if status in ("stopped", "stopping", "completed"):
        return DeploymentStatus.STOPPED
    if status in FAILED:
        # a failed update leaves the previous version serving
        return DeploymentStatus.UPDATING if live.running else DeploymentStatus.FAILED
    if status in SETTLING:
        return DeploymentStatus.UPDATING if live.running else DeploymentStatus.CREATING
    return DeploymentStatus.UNKNOWN


__all__ = ["SPEC", "Desired", "Live", "PaiProvider", "with_environment"]
