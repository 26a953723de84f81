"""The ``azureml`` provider's control plane: azure-ai-ml for the workspace's endpoints,
deployments, models and environments, azure-storage-blob for the bundle.

An aiaas deployment ``name`` is one managed online endpoint (``<name>-<project hash>``:
endpoint names are unique per region) holding one online deployment per version
(``v-<version>-<settings hash>``). Deploy is the shared transaction
(:func:`adapters.rollout.run_rollout`) over :class:`adapters.azureml.steps.AzureMLSteps`:
the new deployment is created at 0 % traffic, smoke-tested pinned with
``azureml-model-deployment`` before any traffic, optionally receives a mirror of the live
traffic (``azureml.mirror``), then takes the traffic per ``deploy.rollout``; the old
deployment is deleted after success. ``delete`` sets the traffic to 0, deletes the
deployments, then the endpoint.

- **Upload** goes with azure-storage-blob (never the SDK's own upload: it cannot be pointed
  at an emulator and re-uploads under its own names) into the workspace's default datastore's
  container, ``<prefix>/<version>/model.tar.gz`` with the manifest beside it, skipped when
  present. The model is registered by datastore path, the one image as an environment, each
  once (guarded by a GET), and the deployment references both as ``azureml:name:version``,
  so an unchanged digest makes no write at all and a new one writes only what is new.
- **Clients**: :class:`azure.identity.DefaultAzureCredential`, built once;
  ``AIAAS_AZURE_ARM_URL`` reaches azure-ai-ml through its cloud metadata (the variable the
  SDK leaves in ``os.environ`` is put back), ``AIAAS_AZURE_CA_BUNDLE`` is passed explicitly
  to every client, ``AIAAS_AZURE_BLOB_URL`` names the blob account.
- **Quiet**: azure-ai-ml's pollers print a dot to stdout on every poll, from their own
  threads; the pollers this provider starts print nothing (:func:`_quiet_polling`), and the
  SDK's INFO lines on stderr are off (:func:`_quiet_sdk_logging`).

Every SDK failure is mapped once, by :func:`adapters.azureml.errors.azure_error`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.azureml import ARM_URL, SPEC, AzureMLSection, names
from adapters.azureml.errors import azure_error, missing_container
from adapters.azureml.settings import server_problems
from adapters.base import (
    Deployment,
    DeploymentStatus,
    Plan,
    ProgressFn,
    Provider,
    VersionState,
    no_progress,
)
from adapters.rollout import StillSettling, Timing, run_rollout
from aiaas.bundle import inspect_archive, verify_archive
from aiaas.config import DEVICE_VARIABLE, ProjectConfig, server_environment
from aiaas.errors import AiaasError, BundleError, ConfigError, NotFound, ProviderError
from aiaas.manifest import Manifest

if TYPE_CHECKING:
    from adapters.azureml.invoke import AzureMLInvoker

T = TypeVar("T")

ARCHIVE = "model.tar.gz"
MANIFEST_BLOB = "aiaas-manifest.json"  # beside the archive: live_manifest reads it
DATASTORE = "workspaceblobstore"  # the workspace's default datastore
CLOUD_PREFIX = "AiaasArm"
"""azure-ai-ml's cloud registry keeps the first metadata registered under a name for the
whole process: each ARM URL gets a name of its own (:func:`cloud_name`)."""


def cloud_name(arm_url: str) -> str:
    """The name azure-ai-ml's cloud registry gets for ARM at ``arm_url``."""
    return CLOUD_PREFIX + hashlib.sha256(arm_url.encode()).hexdigest()[:12]


SERVER_PORT = 8080
"""The port the model server listens on in the container (``AIAAS_PORT`` unset: its
default), which Azure ML's probes and scoring route reach."""
LIVENESS_PATH, READINESS_PATH, SCORING_PATH = "/", "/ready", "/score"
"""The model server's Azure ML routes (aiaas/runtime/app.py): liveness answers while the
model loads, readiness once it is loaded and warmed up."""
CREATED_TAG = "aiaas:created"
"""A deployment's creation (ns since the epoch): the older one of a 50/50 split is the
version ``describe`` names."""
MAX_LOG_LINES = 10_000
SMOKE_TIMEOUT_S = 70.0

SETTLING = frozenset({"creating", "updating", "deleting", "scaling", "provisioning"})
FAILED = frozenset({"failed", "canceled"})


# -- azure-ai-ml's progress dots -----------------------------------------------------------

_QUIET = threading.local()
_PATCH_LOCK = threading.Lock()


def _quiet_polling() -> None:
    """Make the pollers started while :data:`_QUIET` is on in the starting thread print
    nothing. ``AzureMLPolling.update_status`` prints ``"."`` to stdout on every poll, from
    the poller's own thread, for as long as the operation runs (beyond any
    ``redirect_stdout``); its ``initialize`` runs in the thread that starts the operation,
    before the polling thread exists, so it records the starting thread's wish and
    ``update_status`` honours it. Pollers started by other code in the process keep their
    dots. (azure-ai-ml 1.35's private module; the pin in pyproject keeps it.)"""
    from azure.ai.ml._utils._azureml_polling import AzureMLPolling
    from azure.mgmt.core.polling.arm_polling import ARMPolling

    with _PATCH_LOCK:
        if getattr(AzureMLPolling, "_aiaas_quiet", False):
            return
        loud_update = AzureMLPolling.update_status
        initialize = AzureMLPolling.initialize

        def quiet_initialize(self: Any, *args: Any, **kwargs: Any) -> None:
            self._aiaas_silent = getattr(_QUIET, "on", False)
            initialize(self, *args, **kwargs)

        def quiet_update(self: Any) -> None:
            if getattr(self, "_aiaas_silent", False):
                ARMPolling.update_status(self)
            else:
                loud_update(self)  # type: ignore[no-untyped-call]

        AzureMLPolling.initialize = quiet_initialize  # type: ignore[method-assign]
        AzureMLPolling.update_status = quiet_update  # type: ignore[method-assign]
        AzureMLPolling._aiaas_quiet = True  # type: ignore[attr-defined]


def _quiet_sdk_logging() -> None:
    """azure-ai-ml gives its loggers INFO and a handler on the stderr of its import time
    (``initialize_logger_info``: "Check: endpoint x exists", ...): the CLI's bar is the
    progress. Its warnings stay."""
    loggers = logging.root.manager.loggerDict
    for name in [n for n in loggers if n == "azure.ai.ml" or n.startswith("azure.ai.ml.")]:
        logger = logging.getLogger(name)
        if logger.level and logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


@contextmanager
def _quiet() -> Iterator[None]:
    before = getattr(_QUIET, "on", False)
    _QUIET.on = True
    try:
        yield
    finally:
        _QUIET.on = before


# -- what is wanted, what is there ---------------------------------------------------------


@dataclass(frozen=True)
class Desired:
    """What deployment ``name`` of a bundle should be on Azure ML."""

    name: str
    manifest: Manifest
    endpoint: str
    deployment: str
    blob_path: str  # <prefix>/<version>/model.tar.gz in the container
    model_name: str
    model_version: str
    environment_version: str
    spec: dict[str, Any]  # the deployment's settings (hashed into its name)


@dataclass(frozen=True)
class LiveDeployment:
    """One online deployment of the endpoint, as Azure reports it."""

    name: str
    version: str | None
    state: str  # provisioning state, lower case
    traffic: int
    created: int  # CREATED_TAG (0: not known)
    instance_type: str | None = None
    instance_count: int | None = None


@dataclass(frozen=True)
class Live:
    """What the endpoint is now (``state`` None: it does not exist)."""

    endpoint: str
    state: str | None = None  # provisioning state, lower case
    tags: dict[str, str] | None = None
    auth_mode: str | None = None
    scoring_uri: str | None = None
    traffic: dict[str, int] | None = None
    mirror: dict[str, int] | None = None  # the mirror traffic map (shares > 0 only)
    deployments: tuple[LiveDeployment, ...] = ()

    @property
    def exists(self) -> bool:
        """True when the endpoint exists."""
        return self.state is not None

    def deployment(self, name: str) -> LiveDeployment | None:
        """The deployment named ``name`` (any case), or None."""
        return next((d for d in self.deployments if d.name == name.lower()), None)

    @property
    def serving(self) -> LiveDeployment | None:
        """The deployment taking most of the traffic (the older on a tie), or None when
        none takes any."""
        taking = [d for d in self.deployments if d.traffic > 0]
        if not taking:
            return None
        return sorted(taking, key=lambda d: (-d.traffic, d.created))[0]


def _short_hash(value: Any, digits: int = 6) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:digits]


# -- the provider ---------------------------------------------------------------------------


class AzureMLProvider(Provider):
    """Deploys the one image to an Azure ML managed online endpoint."""

    name = "azureml"

    def __init__(self, config: ProjectConfig, settings: AzureMLSection) -> None:
        problems = server_problems(settings, config.server, config.deploy.instance_count)
        if problems:
            raise ConfigError("; ".join(f"{key}: {why}" for key, why in problems))
        self.config = config
        self.settings = settings
        self.arm_url = os.environ.get("AIAAS_AZURE_ARM_URL", ARM_URL).rstrip("/")
        self.ca_bundle = os.environ.get("AIAAS_AZURE_CA_BUNDLE") or None
        self.blob_url = (os.environ.get("AIAAS_AZURE_BLOB_URL") or "").rstrip("/") or None
        self.project = settings.prefix
        self.project_hash = names.project_hash(settings)
        self._credential: Any = None
        self._ml: Any = None
        self._blob_service: Any = None
        self._store: tuple[str, str, bool] | None = None  # account URL, container, default
        self._registered: set[tuple[str, str, str]] = set()  # (kind, name, version) seen
        self._invoker: AzureMLInvoker | None = None
        self._key_invokers: dict[str, AzureMLInvoker] = {}
        self._scoring: dict[str, str] = {}  # endpoint -> scoring URI
        self._keys: dict[str, str] = {}  # endpoint -> primary key (key mode)
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, config: ProjectConfig) -> AzureMLProvider:
        return cls(config, config.provider_settings("azureml", AzureMLSection))

    # -- clients -------------------------------------------------------------------------

    @property
    def credential(self) -> Any:
        """azure-identity's default chain, built once (no interactive browser, no VS Code
        or shared token cache: a deploy never opens a window)."""
        with self._lock:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential(
                    exclude_interactive_browser_credential=True,
                    exclude_visual_studio_code_credential=True,
                    exclude_shared_token_cache_credential=True,
                )
            return self._credential

    @property
    def ml(self) -> Any:
        """The azure-ai-ml client of the workspace, built on first use."""
        if self._ml is None:
            credential = self.credential
            with self._lock:
                if self._ml is None:
                    self._ml = self._ml_client(credential)
        return self._ml

    def _ml_client(self, credential: Any) -> Any:
        from azure.ai.ml import MLClient

        _quiet_polling()
        _quiet_sdk_logging()
        s = self.settings
        kwargs: dict[str, Any] = {"enable_telemetry": False, "show_progress": False}
        if self.ca_bundle:
            kwargs["connection_verify"] = self.ca_bundle
        if self.arm_url == ARM_URL:
            return MLClient(credential, s.subscription_id, s.resource_group, s.workspace, **kwargs)
        url = self.arm_url
        metadata = {
            "azure_portal": url,
            "resource_manager": url + "/",
            "active_directory": url,
            "aml_resource_id": url,
            "storage_endpoint": "core.windows.net",
            "registry_discovery_endpoint": url,
        }
        saved = os.environ.get("AZUREML_CURRENT_CLOUD")
        try:
            return MLClient(
                credential,
                s.subscription_id,
                s.resource_group,
                s.workspace,
                cloud=cloud_name(url),
                cloud_metadata=metadata,
                **kwargs,
            )
        finally:  # the SDK leaves the cloud's name in os.environ for every later client
            if saved is None:
                os.environ.pop("AZUREML_CURRENT_CLOUD", None)
            else:
                os.environ["AZUREML_CURRENT_CLOUD"] = saved

    def _blob_container(self) -> Any:
        account, container, _ = self._datastore()
        with self._lock:
            if self._blob_service is None:
                from azure.storage.blob import BlobServiceClient

                kwargs: dict[str, Any] = {}
                if self.ca_bundle:
                    kwargs["connection_verify"] = self.ca_bundle
                self._blob_service = BlobServiceClient(
                    account, credential=self.credential, **kwargs
                )
            return self._blob_service.get_container_client(container)

    @property
    def invoker(self) -> AzureMLInvoker:
        """The invoke path with this provider's credential, built on first use: scoring URIs
        read from each endpoint (ARM), an Entra token for scoring (``aad_token``). In key
        mode each endpoint has its own key: :meth:`invoker_for`."""
        if self._invoker is None:
            from adapters.azureml.invoke import AzureMLInvoker

            self._invoker = AzureMLInvoker.for_control_plane(
                self.settings, self.credential, arm_url=self.arm_url, ca_bundle=self.ca_bundle
            )
        return self._invoker

    def invoker_for(self, endpoint: str) -> AzureMLInvoker:
        """The invoke path to ``endpoint`` (deploy's smoke test): :attr:`invoker`, or in key
        mode one with the endpoint's scoring URI and its key from ``listKeys``."""
        if self.settings.auth_mode != "key":
            return self.invoker
        invoker = self._key_invokers.get(endpoint)
        if invoker is None:
            from adapters.azureml.invoke import AzureMLInvoker

            invoker = AzureMLInvoker.for_control_plane(
                self.settings,
                self.credential,
                scoring_uri=self.scoring_uri(endpoint),
                key=self.endpoint_key(endpoint),
                arm_url=self.arm_url,
                ca_bundle=self.ca_bundle,
            )
            self._key_invokers[endpoint] = invoker
        return invoker

    def close(self) -> None:
        """Close every client held; a client that fails to close is passed over (closing
        runs after a deploy's failure too, and must never hide it)."""
        clients = [self._ml, self._blob_service, self._credential, self._invoker]
        clients += list(self._key_invokers.values())
        self._ml = self._blob_service = self._credential = self._invoker = None
        self._key_invokers.clear()
        for client in clients:
            close = getattr(client, "close", None)
            if callable(close):
                with suppress(Exception):
                    close()

    @property
    def clients_open(self) -> bool:
        """True while any client is held (closed by :meth:`close`)."""
        clients = (self._ml, self._blob_service, self._credential, self._invoker)
        return any(c is not None for c in clients) or bool(self._key_invokers)

    # -- calls -----------------------------------------------------------------------------

    def _call(self, doing: str, call: Callable[[], T]) -> T:
        """``call()`` with its pollers quiet; any failure as :func:`azure_error`."""
        try:
            with _quiet():
                return call()
        except AiaasError:
            raise
        except Exception as exc:
            raise azure_error(exc, doing) from None

    def _maybe(self, doing: str, call: Callable[[], T]) -> T | None:
        """:meth:`_call`, or None when Azure says there is no such thing."""
        try:
            return self._call(doing, call)
        except NotFound:
            return None

    def _wait(self, doing: str, poller: Any) -> Any:
        """Wait for an operation this provider started (its poller is quiet), at most
        ``deploy_timeout_s``: past it, :class:`~adapters.rollout.StillSettling` (the
        operation goes on in Azure; nothing it may still be moving to is removed)."""
        timeout = self.settings.deploy_timeout_s
        self._call(doing, lambda: poller.wait(timeout=timeout))
        if not poller.done():  # its result would be the unfinished resource's
            raise StillSettling(
                f"{doing}: still running after {timeout:g}s (azureml.deploy_timeout_s); it "
                "goes on in Azure: see `aiaas status`, and deploy again once it settles"
            )
        return self._call(doing, poller.result)

    # -- the datastore -----------------------------------------------------------------------

    def _datastore(self) -> tuple[str, str, bool]:
        """The blob account URL, the container and whether it is the default datastore's,
        read once (``GET datastores/workspaceblobstore``): ``AIAAS_AZURE_BLOB_URL`` and
        ``azureml.blob_container`` override the datastore's account and container."""
        if self._store is not None:
            return self._store
        found = self._call(f"read datastore {DATASTORE}", lambda: self.ml.datastores.get(DATASTORE))
        container = self.settings.blob_container or found.container_name
        account = self.blob_url
        if account is None:
            protocol = getattr(found, "protocol", None) or "https"
            account = f"{protocol}://{found.account_name}.blob.{found.endpoint}"
        self._store = (account, container, container == found.container_name)
        return self._store

    def _model_path(self, version: str) -> str:
        """What the model version is registered by: the bundle archive alone (Azure mounts
        it as ``$AZUREML_MODEL_DIR/model.tar.gz``; the manifest beside it, named as a
        bundle folder's manifest, would make the container take the folder for a bundle)."""
        account, container, default = self._datastore()
        path = f"{self.settings.prefix}/{version}/{ARCHIVE}"
        if default:
            return f"azureml://datastores/{DATASTORE}/paths/{path}"
        return f"{account}/{container}/{path}"

    # -- what is wanted, what is there ---------------------------------------------------

    def _environment_variables(self) -> dict[str, str]:
        """The container's environment: the ``server:`` settings written in aiaas.yaml, as
        every provider gives them to the container entrypoint, and on a GPU SKU
        ``AIAAS_DEVICE=cuda`` (no CUDA: the container exits, and the deploy fails saying so,
        instead of serving on the CPU). ``AIAAS_PORT`` stays unset: the server's default
        port is the one :data:`SERVER_PORT` names to Azure."""
        env = server_environment(self.config.server)
        if self.settings.gpu:
            env[DEVICE_VARIABLE] = "cuda"
        return dict(sorted(env.items()))

    def inference_config(self) -> dict[str, Any]:
        """The environment's routes: the model server's own, on its port."""
        return {
            "liveness_route": {"port": SERVER_PORT, "path": LIVENESS_PATH},
            "readiness_route": {"port": SERVER_PORT, "path": READINESS_PATH},
            "scoring_route": {"port": SERVER_PORT, "path": SCORING_PATH},
        }

    @property
    def environment_version(self) -> str:
        """The environment's version: a hash of the image and the routes (a new image
        reference, a new environment version; the same, none)."""
        return "i-" + _short_hash([self.settings.image, self.inference_config()], 12)

    def _desired(self, bundle: Path, name: str | None) -> Desired:
        if Path(bundle).is_dir():
            raise BundleError(
                f"{bundle}: Azure ML takes the bundle archive (model.tar.gz), not a folder: "
                "build it with `aiaas bundle`"
            )
        manifest = inspect_archive(bundle)
        name = name or manifest.name
        endpoint = names.endpoint_name(name, self.settings)
        s = self.settings
        model_ref = f"azureml:{endpoint}:{manifest.version}"
        environment_ref = f"azureml:{names.ENVIRONMENT_NAME}:{self.environment_version}"
        spec = {
            "model": model_ref,
            "environment": environment_ref,
            "instance_type": s.instance_type,
            "instance_count": self.config.deploy.instance_count,
            "environment_variables": self._environment_variables(),
            "request_timeout_ms": s.request_timeout_ms,
            "max_concurrent_requests_per_instance": s.max_concurrent_requests_per_instance,
            "liveness_probe": s.liveness_probe.model_dump(),
            "readiness_probe": s.readiness_probe.model_dump(),
        }
        return Desired(
            name=name,
            manifest=manifest,
            endpoint=endpoint,
            deployment=names.deployment_name(manifest.version, _short_hash(spec, 6)),
            blob_path=f"{s.prefix}/{manifest.version}/{ARCHIVE}",
            model_name=endpoint,
            model_version=manifest.version,
            environment_version=self.environment_version,
            spec=spec,
        )

    def _live(self, endpoint: str) -> Live:
        found = self._maybe(
            f"read endpoint {endpoint}", lambda: self.ml.online_endpoints.get(endpoint)
        )
        if found is None:
            return Live(endpoint)
        listed = (
            self._maybe(
                f"list deployments of {endpoint}",
                lambda: builtins.list(self.ml.online_deployments.list(endpoint)),
            )
            or []
        )
        traffic = {k.lower(): int(v) for k, v in (found.traffic or {}).items()}
        mirrored = getattr(found, "mirror_traffic", None) or {}
        mirror = {k.lower(): int(v) for k, v in mirrored.items() if int(v) > 0}
        deployments = []
        for d in listed:
            tags = d.tags or {}
            try:
                created = int(tags.get(CREATED_TAG, "0"))
            except ValueError:
                created = 0
            deployments.append(
                LiveDeployment(
                    name=d.name.lower(),
                    version=tags.get(names.VERSION_TAG) or names.version_of(d.name),
                    state=_state(d.provisioning_state),
                    traffic=traffic.get(d.name.lower(), 0),
                    created=created,
                    instance_type=getattr(d, "instance_type", None),
                    instance_count=getattr(d, "instance_count", None),
                )
            )
        return Live(
            endpoint,
            state=_state(found.provisioning_state) or "unknown",
            tags=dict(found.tags or {}),
            auth_mode=_state(found.auth_mode),
            scoring_uri=found.scoring_uri,
            traffic=traffic,
            mirror=mirror,
            deployments=tuple(sorted(deployments, key=lambda d: (d.created, d.name))),
        )

    def _owned_by_us(self, live: Live) -> bool:
        """True when the endpoint carries this project's tag."""
        return (live.tags or {}).get(names.PROJECT_TAG) == self.project

    def _tags(self, name: str, version: str) -> dict[str, str]:
        return {
            **self.settings.tags,
            names.PROJECT_TAG: self.project,
            names.DEPLOYMENT_TAG: name,
            names.VERSION_TAG: version,
        }

    def _registered_already(self, kind: str, name: str, version: str) -> bool:
        """Whether the model or environment version is registered (asked once)."""
        key = (kind, name, version)
        if key in self._registered:
            return True
        ops = self.ml.models if kind == "model" else self.ml.environments
        found = self._maybe(
            f"read {kind} {name}:{version}", lambda: ops.get(name=name, version=version)
        )
        if found is not None:
            self._registered.add(key)
        return found is not None

    def _blob_exists(self, path: str) -> bool:
        blob = self._blob_container().get_blob_client(path)
        return bool(self._call(f"look for {self._blob_uri(path)}", blob.exists))

    def _blob_uri(self, path: str) -> str:
        account, container, _ = self._datastore()
        return f"{account}/{container}/{path}"

    # -- upload and plan -----------------------------------------------------------------

    def upload(self, bundle: Path) -> str:
        desired = self._desired(bundle, None)
        if not self._blob_exists(desired.blob_path):
            self._put_bundle(bundle, desired)
        return self._blob_uri(desired.blob_path)

    def _put_bundle(self, bundle: Path, desired: Desired) -> None:
        """The manifest first, then the archive: the archive's presence says both are up."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        verify_archive(bundle)  # what goes up matches its digest
        container = self._blob_container()
        folder = desired.blob_path.rsplit("/", 1)[0]
        metadata = {"aiaas_version": desired.manifest.version}
        uri = self._blob_uri(desired.blob_path)

        def put(path: str, data: Any, content_type: str) -> None:
            try:
                container.get_blob_client(path).upload_blob(
                    data,
                    overwrite=True,
                    metadata=metadata,
                    content_settings=ContentSettings(content_type=content_type),
                    max_concurrency=4,
                )
            except ResourceExistsError:
                pass  # another deploy uploaded the same content
            except ResourceNotFoundError as exc:
                if "ContainerNotFound" in str(getattr(exc, "error_code", "")) + str(exc):
                    account, name, _ = self._datastore()
                    raise missing_container(name, account) from None
                raise

        manifest = desired.manifest.model_dump_json().encode()
        self._call(
            f"upload the manifest of {uri}",
            lambda: put(f"{folder}/{MANIFEST_BLOB}", manifest, "application/json"),
        )
        with open(bundle, "rb") as archive:
            self._call(f"upload {uri}", lambda: put(desired.blob_path, archive, "application/gzip"))

    def plan(self, bundle: Path, *, name: str | None = None) -> Plan:
        from adapters.azureml.steps import AzureMLSteps

        steps = AzureMLSteps(self)
        desired = steps.desired(bundle, name)
        return steps.diff(desired, steps.live(desired)).plan()

    # -- deploy: the shared transaction (adapters/rollout.py) over Azure ML's steps -------

    def deploy(
        self, bundle: Path, *, name: str | None = None, progress: ProgressFn = no_progress
    ) -> Deployment:
        from adapters.azureml.steps import AzureMLSteps

        steps = AzureMLSteps(self, progress=progress)
        outcome = run_rollout(
            steps,
            bundle,
            name=name,
            rollout=self.config.deploy.rollout,
            timing=Timing(
                self.settings.deploy_timeout_s,
                self.settings.poll_interval_s,
                smoke_s=30.0,  # a new deployment's first answers may be 404/429 briefly
            ),
            upload=self.upload,
            progress=progress,
        )
        deployment = self.describe(outcome.diff.name)
        if not outcome.warnings:
            return deployment
        return replace(deployment, details={**deployment.details, "warnings": outcome.warnings})

    # -- removal -------------------------------------------------------------------------

    def _delete_deployment(self, endpoint: str, deployment: str) -> bool:
        """Delete one deployment and wait (False: it was gone, or its endpoint is)."""
        poller = self._maybe(
            f"delete deployment {deployment} of {endpoint}",
            lambda: self.ml.online_deployments.begin_delete(
                name=deployment, endpoint_name=endpoint
            ),
        )
        if poller is None:
            return False
        with suppress(NotFound):
            self._wait(f"delete deployment {deployment} of {endpoint}", poller)
        return True

    def _put_maps(self, live: Live, traffic: dict[str, int], mirror: dict[str, int]) -> None:
        """One endpoint PUT with these traffic and mirror maps (``live``'s auth mode and
        tags), waited for."""
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        endpoint = ManagedOnlineEndpoint(
            name=live.endpoint,
            auth_mode=live.auth_mode or self.settings.auth_mode,
            tags=dict(live.tags or {}),
            traffic=traffic,
            mirror_traffic=mirror,
        )
        shown = ", ".join(f"{k} {v}%" for k, v in sorted(traffic.items())) or "none"
        mirrored = ", ".join(f"{k} {v}%" for k, v in sorted(mirror.items())) or "none"
        doing = f"set the traffic of endpoint {live.endpoint} ({shown}; mirror {mirrored})"
        ops = self.ml.online_endpoints
        poller = self._call(doing, lambda: ops.begin_create_or_update(endpoint))
        self._wait(doing, poller)

    def _delete_endpoint(self, endpoint: str, live: Live | None = None) -> bool:
        """Delete the endpoint's deployments, then the endpoint, waiting for each (False:
        it was gone). Azure refuses to delete a deployment that takes live or mirror
        traffic, so both maps go to 0 first (one endpoint PUT, only where a share is set);
        Azure would delete the deployments with the endpoint, but one by one each is seen
        gone (and its container stopped) before the endpoint goes. A failed endpoint (or one
        being deleted) takes no update: it is deleted as it is, its deployments with it."""
        live = live if live is not None else self._live(endpoint)
        if not live.exists:
            return False
        if live.state != "deleting" and live.state not in FAILED:  # a failed one: Azure's cascade
            if any(v > 0 for v in (live.traffic or {}).values()) or live.mirror:
                zero = {d.name: 0 for d in live.deployments}
                self._put_maps(live, zero, {})
            for d in live.deployments:
                self._delete_deployment(endpoint, d.name)
        poller = self._maybe(
            f"delete endpoint {endpoint}",
            lambda: self.ml.online_endpoints.begin_delete(name=endpoint),
        )
        if poller is not None:
            with suppress(NotFound):
                self._wait(f"delete endpoint {endpoint}", poller)
        self._scoring.pop(endpoint, None)
        self._keys.pop(endpoint, None)
        stale = self._key_invokers.pop(endpoint, None)
        if stale is not None:
            with suppress(Exception):
                stale.close()
        return True

    # -- describe, list, delete, logs ----------------------------------------------------

    def _deployment(self, name: str, live: Live) -> Deployment:
        """What the endpoint says, in every provider's terms: every deployment with its
        share of the traffic and its state; :attr:`Deployment.version` is the one taking
        most (the older on a tie; while none takes any, the newest)."""
        versions = tuple(
            VersionState(d.version or d.name, d.traffic, _version_status(d))
            for d in sorted(live.deployments, key=lambda d: (-d.traffic, d.created))
        )
        serving = live.serving
        if serving is not None:
            version = serving.version or serving.name
        elif live.deployments:
            newest = live.deployments[-1]
            version = newest.version or newest.name
        else:
            version = ""
        serving_name = serving.name if serving else None
        return Deployment(
            name=name,
            provider=self.name,
            version=version,
            status=_endpoint_status(live),
            versions=versions,
            endpoint=live.scoring_uri,
            details={
                "endpoint": live.endpoint,
                "auth_mode": live.auth_mode,
                "workspace": self.settings.workspace,
                "resource_group": self.settings.resource_group,
                "deployment": serving_name,
                "instance_type": serving.instance_type if serving else None,
                "instance_count": serving.instance_count if serving else None,
                "traffic": dict(sorted((live.traffic or {}).items())),
                "deployments": {d.name: d.state for d in live.deployments},
            },
        )

    def describe(self, name: str) -> Deployment:
        endpoint = names.endpoint_name(name, self.settings)
        live = self._live(endpoint)
        if not live.exists or not self._owned_by_us(live):
            raise NotFound(
                f"no Azure ML deployment named {name!r} in workspace {self.settings.workspace} "
                f"(endpoint {endpoint})"
            )
        return self._deployment(name, live)

    def list(self) -> builtins.list[Deployment]:
        listed = self._call(
            "list endpoints", lambda: builtins.list(self.ml.online_endpoints.list())
        )
        found = []
        suffix = f"-{self.project_hash}"
        for endpoint in listed:
            tags = endpoint.tags or {}
            name = tags.get(names.DEPLOYMENT_TAG)
            if (
                tags.get(names.PROJECT_TAG) != self.project
                or not name
                or endpoint.name.lower() != f"{name}{suffix}".lower()
            ):
                continue
            live = self._live(endpoint.name)
            if live.exists and self._owned_by_us(live):
                found.append(self._deployment(name, live))
        return sorted(found, key=lambda d: d.name)

    def delete(self, name: str) -> bool:
        """Set the endpoint's traffic and mirror to 0, delete its deployments one by one,
        then the endpoint, waiting for each (:meth:`_delete_endpoint`). False, and no
        write, when the endpoint is gone (or is not this project's)."""
        endpoint = names.endpoint_name(name, self.settings)
        live = self._live(endpoint)
        if not live.exists or not self._owned_by_us(live):
            return False  # gone, or someone else's endpoint of that name
        return self._delete_endpoint(endpoint, live)

    def logs(self, name: str, tail: int = 100) -> builtins.list[str]:
        if tail <= 0:
            return []
        tail = min(tail, MAX_LOG_LINES)
        endpoint = names.endpoint_name(name, self.settings)
        live = self._live(endpoint)
        if not live.exists or not self._owned_by_us(live):
            raise NotFound(f"no Azure ML deployment named {name!r} (endpoint {endpoint})")
        lines: builtins.list[str] = []
        for d in live.deployments:
            lines += [f"[{d.name}] {line}" for line in self.deployment_logs(endpoint, d.name, tail)]
        return lines[-tail:]

    def deployment_logs(self, endpoint: str, deployment: str, tail: int) -> builtins.list[str]:
        """The last ``tail`` lines of one deployment's container log (``getLogs``)."""
        text = self._maybe(
            f"get logs of deployment {deployment}",
            lambda: self.ml.online_deployments.get_logs(
                name=deployment, endpoint_name=endpoint, lines=tail
            ),
        )
        return [line for line in (text or "").splitlines() if line.strip()][-tail:]

    def live_manifest(self, name: str) -> Manifest | None:
        endpoint = names.endpoint_name(name, self.settings)
        live = self._live(endpoint)
        serving = live.serving if live.exists and self._owned_by_us(live) else None
        if serving is None or not serving.version:
            return None
        path = f"{self.settings.prefix}/{serving.version}/{MANIFEST_BLOB}"
        blob = self._blob_container().get_blob_client(path)
        data = self._maybe(f"read {self._blob_uri(path)}", lambda: blob.download_blob().readall())
        return Manifest.model_validate_json(data) if data else None

    # -- the invoke path's facts ----------------------------------------------------------

    def scoring_uri(self, endpoint: str) -> str:
        """The endpoint's scoring URI, read from the endpoint (never built)."""
        uri = self._scoring.get(endpoint)
        if uri is None:
            found = self._call(
                f"read endpoint {endpoint}", lambda: self.ml.online_endpoints.get(endpoint)
            )
            uri = found.scoring_uri
            if not uri:
                raise ProviderError(f"endpoint {endpoint} has no scoring URI yet")
            self._scoring[endpoint] = uri
        return uri

    def endpoint_key(self, endpoint: str) -> str:
        """The endpoint's primary key (``listKeys``; key mode)."""
        key = self._keys.get(endpoint)
        if key is None:
            keys = self._call(
                f"list the keys of endpoint {endpoint}",
                lambda: self.ml.online_endpoints.get_keys(endpoint),
            )
            key = str(getattr(keys, "primary_key", "") or "")
            if not key:
                raise ProviderError(f"endpoint {endpoint} answered no key (auth_mode key?)")
            self._keys[endpoint] = key
        return key


def _state(value: Any) -> str:
    """A provisioning state in lower case (the SDK gives a str or an enum member)."""
    return str(getattr(value, "value", value) or "").lower()


def _version_status(d: LiveDeployment) -> DeploymentStatus:
    if d.state in FAILED:
        return DeploymentStatus.FAILED
    if d.state == "deleting":
        return DeploymentStatus.DELETING
    if d.state in SETTLING:
        return DeploymentStatus.UPDATING if d.traffic else DeploymentStatus.CREATING
    return DeploymentStatus.READY


def _endpoint_status(live: Live) -> DeploymentStatus:
    """The endpoint's state in every provider's terms: ``creating`` until a deployment takes
    traffic; ``updating`` while another deployment is being created, takes part of the
    traffic or waits for removal; ``failed`` when the endpoint or every deployment failed."""
    state = live.state or ""
    if state == "deleting":
        return DeploymentStatus.DELETING
    if state in FAILED:
        return DeploymentStatus.FAILED
    serving = live.serving
    if serving is None:
        if live.deployments and all(d.state in FAILED for d in live.deployments):
            return DeploymentStatus.FAILED
        return DeploymentStatus.CREATING
    others = [d for d in live.deployments if d.name != serving.name and d.state not in FAILED]
    if state in SETTLING or others or serving.state in SETTLING:
        return DeploymentStatus.UPDATING
    if serving.state in FAILED:
        return DeploymentStatus.FAILED
    return DeploymentStatus.READY


__all__ = ["SPEC", "AzureMLProvider", "Desired", "Live", "LiveDeployment"]
