"""Azure for tests: ARM + Azure ML's control plane over TLS, Azurite, a managed identity, and
managed online endpoints that run the real model container.

:class:`AzureEmulator` serves one workspace (``emu.subscription_id``, ``emu.resource_group``,
``emu.workspace``, ``emu.region``) the way azure-ai-ml 1.35.2 reaches it through
``MLClient(cloud=..., cloud_metadata={"resource_manager": <ARM URL>/ ...})``:

- **ARM over TLS** (one trustme CA for every emulated host, written to ``<workdir>/ca.pem``);
  every call needs a bearer token the managed-identity emulator (:mod:`emulators.identity`)
  issued for ARM (the emulator's own URL, or ``https://management.azure.com``), else 401 with
  ARM's error codes; the api-versions azure-ai-ml 1.35.2 sends (:data:`API_VERSIONS`), others
  400;
- the workspace (its ``location`` is ``emu.region``), its default datastore
  ``workspaceblobstore`` (Azurite's ``devstoreaccount1``, container
  ``azureml-blobstore-<workspace guid>``, made at start), model versions (``flavors``
  added), environments, online endpoints (PUT/GET/list/DELETE, ``listKeys``) and their
  deployments (PUT/GET/list/DELETE, ``getLogs``);
- long-running operations as Azure ML answers them: 201 (200 for an update) or 202 with
  ``Azure-AsyncOperation``, ``Location`` and ``retry-after-ms: 10`` (without them the SDK
  waits 5 s per poll); a deployment's operation stays ``InProgress`` until its container
  answers the environment's readiness route, ``Failed`` (with the error code and message;
  ``provisioningState`` Failed) when the container exits first, the model cannot be fetched,
  or :meth:`AzureEmulator.fail_next_deployment` scripted it;
- Azure's checks: names (a letter first, 3-32 letters, digits and single dashes), endpoint
  traffic summing to 100 (or all zero) over existing deployments, mirror traffic (at most
  50 %, one deployment, never one with live traffic), the managed SKU list
  (:data:`MANAGED_SKUS`), at most 20 deployments per endpoint, at most 50 instances,
  ``request_timeout_ms`` at most 180 000, no delete of a deployment that takes traffic;
  deleting an endpoint deletes its deployments and closes its scoring port.

Each deployment's container is :mod:`emulators.fleet`'s :class:`ContainerProcess` (aiaas's
entrypoint) with Azure ML's layout: the model version's datastore path is downloaded from
Azurite (shared key) into ``<workdir>/mounts/<endpoint>/<deployment>/azureml-models/<model>/
<version>/`` (a registered folder keeps its own name inside, as Azure mounts it), and
``AZUREML_MODEL_DIR`` points there; ``AIAAS_PORT`` is a free port; the deployment's
``environmentVariables`` are set. Each endpoint's scoring host is
:class:`emulators.azure_scoring.ScoringServer`.

Gaps from Azure (each also named where it is handled):

- one subscription, resource group, workspace and region; no other ARM resource types, no
  RBAC (any token the identity emulator issued for ARM may do anything); ARM throttles or
  fails only when scripted (:meth:`AzureEmulator.refuse_next`), with ``retry-after-ms`` where
  ARM sends ``Retry-After`` in seconds;
- the environment's ``image`` is not run (no container engine): every deployment runs this
  checkout's entrypoint; the environment's probe port is honoured only as a check: the
  container listens on a free port, and the deployment fails (as its readiness probe would)
  when ``AIAAS_PORT`` (default 8080) is not the inference config's port;
- probe timings are compressed: readiness is polled every 0.1 s until the container answers or
  exits, up to ``container_start_timeout_s``; liveness is not probed;
- one container per deployment whatever ``instance_count``; a GPU SKU's container runs on this
  host's CPU (``AIAAS_DEVICE`` is dropped);
- the model is copied with the account key, not the endpoint's identity; only the
  ``workspaceblobstore`` datastore exists; a model registered by an https blob URL is
  copied when the blob is in the emulated account (any container), not from another account;
- error codes and texts marked "assumed" were not seen in a primary source; an endpoint's own
  operation completes at once (Azure takes a minute or two);
- asset versions (models, environments) are immutable: a PUT that changes one is refused 409
  (assumed text); no archive, no labels, no registries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import shutil
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulators.azure_scoring import (
    EndpointView,
    Route,
    ScoringCall,
    ScoringHold,
    ScoringServer,
    TlsServer,
)
from emulators.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from emulators.faults import CallLog, Faults
from emulators.fleet import ContainerProcess, free_port, stop_all
from emulators.httpserver import KeepAliveHandler
from emulators.identity import IdentityEmulator

__all__ = [
    "API_VERSIONS",
    "MANAGED_SKUS",
    "ArmCall",
    "AzureContainer",
    "AzureEmulator",
    "ScoringCall",
    "ScoringHold",
    "running",
]

PROVIDER = "Microsoft.MachineLearningServices"
# The api-versions azure-ai-ml 1.35.2 sends, by resource type (its generated clients; seen
# on the wire, ../shared/notes/azure-pai-2026-12.md §1a). Each operations class has its own
# client: the online-endpoint GET that online_deployments makes ("does the endpoint exist")
# uses the deployments' version, and online_endpoints lists deployments with its own.
API_VERSIONS: dict[str, tuple[str, ...]] = {
    "workspaces": ("2024-10-01-preview",),
    "datastores": ("2024-10-01-preview",),
    "models": ("2023-08-01-preview",),
    "environments": ("2023-04-01-preview",),
    "onlineEndpoints": ("2022-02-01-preview", "2023-04-01-preview"),
    "deployments": ("2023-04-01-preview", "2022-02-01-preview"),
}
ARM_AUDIENCES = (
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net",
    "https://management.core.windows.net/",
)
DATASTORE = "workspaceblobstore"
NAME_RULE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?!-))*[A-Za-z0-9]$")
MAX_DEPLOYMENTS = 20  # per endpoint (how-to-manage-quotas)
MAX_INSTANCES = 50  # per deployment
MAX_REQUEST_TIMEOUT_MS = 180_000
MAX_MIRROR_PCT = 50
DEFAULT_REQUEST_TIMEOUT_MS = 5000  # RequestSettings' defaults (YAML reference)
DEFAULT_MAX_CONCURRENT = 1
CONTAINER_PORT = 8080  # where aiaas's entrypoint listens without AIAAS_PORT
RETRY_AFTER_MS = "10"
LOG = logging.getLogger(__name__)
"""The emulator's log: an ARM request it failed on (a bug) is logged here with its traceback;
the client gets a plain 500 ``InternalServerError``."""
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}  # fmt: skip


def _skus() -> frozenset[str]:
    cpu = [f"Standard_DS{n}_v2" for n in (1, 2, 3, 4, 5)]
    cpu += [f"Standard_F{n}s_v2" for n in (2, 4, 8, 16, 32, 48, 64, 72)]
    cpu += [f"Standard_FX{n}mds" for n in (4, 12, 24, 36, 48)]
    cpu += [f"Standard_E{n}s_v3" for n in (2, 4, 8, 16, 32, 48, 64)]
    cpu += [f"Standard_D{n}as_v4" for n in (2, 4, 8, 16, 32, 48, 64, 96)]
    cpu += [f"Standard_D{n}a_v4" for n in (2, 4, 8, 16, 32, 48, 64, 96)]
    cpu += [f"Standard_L{n}s_v2" for n in (8, 16, 32, 48, 64, 80)]
    cpu += [f"Standard_L{n}s_v3" for n in (8, 16, 32, 48, 64, 80)]
    cpu += [f"Standard_L{n}as_v3" for n in (8, 16, 32, 48, 64, 80)]
    gpu = [f"Standard_NC{n}as_T4_v3" for n in (4, 8, 16, 64)]
    gpu += [f"Standard_NC{n}ads_A100_v4" for n in (24, 48, 96)]
    gpu += [f"Standard_NC{n}s_v2" for n in (6, 12, 24)]
    gpu += [f"Standard_NC{n}s_v3" for n in (6, 12, 24)]
    gpu += ["Standard_NC40ads_H100_v5", "Standard_NC80adis_H100_v5"]
    gpu += ["Standard_ND96amsr_A100_v4", "Standard_ND96asr_v4", "Standard_ND40rs_v2"]
    gpu += ["Standard_ND96is_H100_v5", "Standard_ND96isr_H100_v5"]
    gpu += [f"Standard_NV{n}ads_A10_v5" for n in (6, 12, 18, 36, 72)]
    gpu += ["Standard_NV36adms_A10_v5"]
    return frozenset(cpu + gpu)


MANAGED_SKUS = _skus()
"""The managed online endpoint SKU list (reference-managed-online-endpoints-vm-sku-list,
2026-12); gap: per-region availability and quota are not modelled."""
_SKUS_LOWER = {s.lower(): s for s in MANAGED_SKUS}


@dataclass(frozen=True)
class ArmCall:
    """One ARM request as the emulator answered it."""

    method: str
    path: str
    api_version: str | None
    headers: dict[str, str]  # a subset: user-agent, x-ms-client-request-id, content-type
    body: Any  # the JSON body (None when there was none)
    status: int
    received: float = 0.0  # time.monotonic() on arrival


@dataclass(frozen=True)
class AzureContainer:
    """A running model container."""

    endpoint: str
    deployment: str
    model: str
    version: str
    pid: int
    port: int
    environment: dict[str, str]


class ArmError(Exception):
    """An ARM error answer: ``{"error": {"code", "message"}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class _Operation:
    id: str
    resource: str  # the resource's ARM id (canonical casing)
    delete: bool
    status: str = "InProgress"  # Succeeded | Failed
    error: dict[str, str] | None = None
    started: str = ""
    ended: str | None = None

    def finish(self, error: dict[str, str] | None = None) -> None:
        self.error = error
        self.ended = _now()
        self.status = "Failed" if error else "Succeeded"


@dataclass
class _Deployment:
    name: str
    endpoint: str
    doc: dict[str, Any]
    generation: int = 0
    container: ContainerProcess | None = None
    output: list[str] = field(default_factory=list)  # the last container's lines
    init_log: list[str] = field(default_factory=list)  # the storage initializer's
    model: tuple[str, str] = ("", "")
    scoring_path: str = "/score"
    environment: dict[str, str] = field(default_factory=dict)
    pending: ContainerProcess | None = None  # starting, not yet serving

    @property
    def state(self) -> str:
        return str(self.doc["properties"]["provisioningState"])

    def processes(self) -> list[ContainerProcess]:
        """Its containers, serving or starting."""
        return [c for c in (self.container, self.pending) if c is not None]


@dataclass
class _Endpoint:
    name: str
    doc: dict[str, Any]
    keys: tuple[str, str]
    server: ScoringServer
    deployments: dict[str, _Deployment] = field(default_factory=dict)  # lower-case name


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _duration_s(value: Any, default: float) -> float:
    """An ISO-8601 duration (``PT1M30S``) in seconds."""
    if not isinstance(value, str):
        return default
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?", value)
    if not match:
        return default
    d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return d * 86400 + h * 3600 + m * 60 + s


def _name_problem(kind: str, name: str) -> str | None:
    if 3 <= len(name) <= 32 and NAME_RULE.match(name):
        return None
    # Azure's rule as how-to-manage-quotas states it; the error text is assumed.
    return (
        f"{kind} name '{name}' is invalid: it must start with a letter, be 3-32 characters "
        "long, and contain only letters, digits and single dashes (not ending with one)."
    )


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _member(doc: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    """``doc[key]`` as a JSON object (absent or null: empty); a malformed body is ARM's 400
    ``InvalidRequestContent`` (the code ARM gives a body it cannot read; the text is assumed)."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArmError(
            400,
            "InvalidRequestContent",
            f"The request content was invalid: {where}{key} must be a JSON object, not a "
            f"JSON {_json_type(value)}.",
        )
    return value


class AzureEmulator:
    """ARM + Azure ML, Azurite and a managed identity on 127.0.0.1 (see the module's text)."""

    def __init__(
        self,
        workdir: Path,
        *,
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group: str = "aiaas-rg",
        workspace: str = "aiaas-ws",
        region: str = "eastus",
        container_start_timeout_s: float = 90.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.subscription_id, self.resource_group = subscription_id, resource_group
        self.workspace, self.region = workspace, region
        self.container_start_timeout_s = container_start_timeout_s
        self.identity = IdentityEmulator()
        self.workspace_id = str(uuid.uuid5(uuid.NAMESPACE_URL, self.workspace_arm_id.lower()))
        self.blob_container = f"azureml-blobstore-{self.workspace_id}"
        self.ca_file = self.workdir / "ca.pem"
        self.azurite: Azurite | None = None
        self._lock = threading.RLock()
        self._calls: CallLog[ArmCall] = CallLog()
        self._scoring_calls: CallLog[ScoringCall] = CallLog()
        self._faults = Faults()
        self._fail_next: list[tuple[str, str]] = []
        self._refusals: list[tuple[str, str, ArmError]] = []  # (method, path part, answer)
        self._models: dict[tuple[str, str], dict[str, Any]] = {}  # (name, version) lower
        self._environments: dict[tuple[str, str], dict[str, Any]] = {}
        self._endpoints: dict[str, _Endpoint] = {}  # lower-case name
        self._ops: dict[str, _Operation] = {}
        self._threads: list[threading.Thread] = []
        self._context: ssl.SSLContext | None = None
        self._arm: TlsServer | None = None
        self._blob_client: Any = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the managed identity, Azurite (with the datastore's container) and ARM."""
        import trustme

        self.workdir.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA()
        leaf = authority.issue_cert("127.0.0.1", "localhost")
        authority.cert_pem.write_to_path(str(self.ca_file))
        tls = self.workdir / "tls"
        tls.mkdir(exist_ok=True)
        leaf.cert_chain_pems[0].write_to_path(str(tls / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(tls / "key.pem"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        self._context = context
        self.identity.start()
        try:
            self.azurite = Azurite(cert_file=tls / "cert.pem", key_file=tls / "key.pem")
            self.azurite.start()
            self._blob().create_container(self.blob_container)
            emulator = self

            class Handler(_ArmHandler):
                owner = emulator

            self._arm = TlsServer(Handler, name="azure-arm", context=context, ca_file=self.ca_file)
            self._arm.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every container and scoring host, ARM, Azurite and the managed identity."""
        with self._lock:
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
            threads, self._threads = self._threads, []
        for endpoint in endpoints:
            self._tear_down(endpoint)
        for thread in threads:
            thread.join(timeout=10)
        if self._arm is not None:
            self._arm.stop()
            self._arm = None
        if self._blob_client is not None:
            self._blob_client.close()
            self._blob_client = None
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None
        self.identity.stop()

    def __enter__(self) -> AzureEmulator:
        self.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- where it is ---------------------------------------------------------------------------
    @property
    def arm_url(self) -> str:
        """``https://127.0.0.1:<port>`` (no trailing slash)."""
        assert self._arm is not None, "start() first"
        return self._arm.url

    @property
    def blob_url(self) -> str:
        """Azurite's account URL, ``https://127.0.0.1:<port>/devstoreaccount1``."""
        assert self.azurite is not None, "start() first"
        return self.azurite.url

    @property
    def workspace_arm_id(self) -> str:
        """``/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.MachineLearningServices/
        workspaces/<ws>``."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/workspaces/{self.workspace}"
        )

    def env(self) -> dict[str, str]:
        """``AIAAS_AZURE_ARM_URL``, ``AIAAS_AZURE_CA_BUNDLE``, ``AIAAS_AZURE_BLOB_URL``,
        ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``."""
        return {
            "AIAAS_AZURE_ARM_URL": self.arm_url,
            "AIAAS_AZURE_CA_BUNDLE": str(self.ca_file),
            "AIAAS_AZURE_BLOB_URL": self.blob_url,
            **self.identity.env(),
        }

    def token(self, resource: str | None = None) -> str:
        """A fresh managed-identity token for ``resource`` (default: this ARM)."""
        return self.identity.issue(resource or self.arm_url)[0]

    def _blob(self) -> Any:
        """A shared-key BlobServiceClient on Azurite (the emulator's own, for model copies)."""
        if self._blob_client is None:
            from azure.storage.blob import BlobServiceClient

            self._blob_client = BlobServiceClient(
                self.blob_url,
                credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
                connection_verify=str(self.ca_file),
            )
        return self._blob_client

    # -- records and scripts -------------------------------------------------------------------
    def calls(self) -> list[ArmCall]:
        """Every ARM request, in order (operation polls included)."""
        return self._calls.all()

    def writes(self) -> list[str]:
        """``"PUT <path>"``, ``"DELETE <path>"``, ``"POST <path>"`` of every write (``listKeys``,
        ``getLogs`` and ``listSecrets`` are reads)."""
        reads = ("/listkeys", "/getlogs", "/listsecrets")
        return [
            f"{c.method} {c.path}"
            for c in self._calls.all()
            if c.method in ("PUT", "DELETE", "PATCH")
            or (c.method == "POST" and not c.path.lower().endswith(reads))
        ]

    def scoring_calls(self) -> list[ScoringCall]:
        """Every scoring request (mirrored copies included), in order."""
        return self._scoring_calls.all()

    def clear_calls(self) -> None:
        """Forget the recorded ARM and scoring calls."""
        self._calls.clear()
        self._scoring_calls.clear()

    def fail_next_deployment(self, message: str, code: str = "DeploymentFailed") -> None:
        """The next deployment PUT's operation ends ``Failed`` with ``code`` and ``message``;
        its container never starts."""
        with self._lock:
            self._fail_next.append((code, message))

    def refuse_next(
        self,
        method: str,
        path_contains: str,
        status: int,
        code: str = "TooManyRequests",
        message: str = "The request is being throttled.",
        *,
        retry_after_ms: int = int(RETRY_AFTER_MS),
    ) -> None:
        """The next ARM ``method`` request whose path contains ``path_contains`` (case
        ignored) is answered ``status`` with ``code`` and ``message`` instead of being carried
        out (ARM's throttling: 429 ``TooManyRequests``; or a 5xx). Gap: ARM's ``Retry-After``
        is in seconds, which azure-core prefers; the emulator sends ``retry-after-ms`` only
        (``retry_after_ms``, 10 by default), so a client waits that long."""
        headers = {"retry-after-ms": str(retry_after_ms)} if status in (429, 503) else {}
        with self._lock:
            self._refusals.append(
                (method.upper(), path_contains.lower(), ArmError(status, code, message, headers))
            )

    def _refusal(self, method: str, path: str) -> ArmError | None:
        with self._lock:
            for i, (wanted, part, answer) in enumerate(self._refusals):
                if wanted == method and part in path.lower():
                    del self._refusals[i]
                    return answer
        return None

    def fault(
        self,
        endpoint: str,
        status: int,
        *,
        times: int | None = None,
        delay_s: float = 0.0,
        probability: float = 1.0,
        seed: int | None = None,
    ) -> None:
        """The endpoint's next ``times`` scoring calls (None: until cleared) answer ``status``
        (after ``delay_s``; 200 with a delay answers normally, slowly), each with
        ``probability`` (seeded)."""
        self._faults.set(
            endpoint.lower(),
            status,
            times=times,
            code=None,
            delay_s=delay_s,
            probability=probability,
            seed=seed,
        )

    def hold(self, endpoint: str) -> ScoringHold:
        """Hold the endpoint's scoring calls once they take their in-flight slot, before
        they reach the container, until the hold is released (a test's deterministic
        "these calls are in flight"); :meth:`ScoringHold.wait_held` waits for them."""
        with self._lock:
            return self._endpoints[endpoint.lower()].server.hold()

    def clear_faults(self) -> None:
        """Forget every scripted fault and deployment failure."""
        self._faults.clear()
        with self._lock:
            self._fail_next.clear()
            self._refusals.clear()

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused (401) from now on."""
        self.identity.revoke_tokens()

    def containers(self) -> list[AzureContainer]:
        """The running model containers."""
        with self._lock:
            deps = [d for e in self._endpoints.values() for d in e.deployments.values()]
            found = []
            for dep in deps:
                c = dep.container
                if c is not None and c.running():
                    found.append(
                        AzureContainer(
                            dep.endpoint,
                            dep.name,
                            dep.model[0],
                            dep.model[1],
                            c.pid,
                            c.port,
                            dict(dep.environment),
                        )
                    )
        return found

    def endpoint_traffic(self, name: str) -> dict[str, int]:
        """The endpoint's live traffic map (KeyError when there is no such endpoint)."""
        with self._lock:
            return dict(self._endpoints[name.lower()].doc["properties"]["traffic"])

    def endpoint_mirror_traffic(self, name: str) -> dict[str, int]:
        """The endpoint's mirror traffic map."""
        with self._lock:
            return dict(self._endpoints[name.lower()].doc["properties"]["mirrorTraffic"])

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        """A deployment's ``provisioningState`` (None: no such deployment)."""
        with self._lock:
            ep = self._endpoints.get(endpoint.lower())
            dep = ep.deployments.get(deployment.lower()) if ep else None
            return dep.state if dep else None

    def container_output(self, endpoint: str, deployment: str) -> str:
        """What the deployment's last container printed (for test diagnostics)."""
        with self._lock:
            ep = self._endpoints.get(endpoint.lower())
            dep = ep.deployments.get(deployment.lower()) if ep else None
            return "\n".join(dep.output) if dep else ""

    # -- ARM: one request ----------------------------------------------------------------------
    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body or None) for one ARM request; recorded. A body that is
        not JSON, or whose shape is wrong (a list, a ``properties`` that is not an object), is
        ARM's 400 ``InvalidRequestContent``; anything else the emulator fails on is a 500
        ``InternalServerError`` (the traceback goes to :data:`LOG`, never to the client)."""
        received = time.monotonic()
        split = urlsplit(raw_path)
        path = split.path
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        version = query.get("api-version")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        kept = ("user-agent", "x-ms-client-request-id", "content-type")
        try:
            self._authenticate(headers.get("authorization"))
            refusal = self._refusal(method, path)
            if refusal is not None:
                raise refusal
            if isinstance(body, str):
                raise ArmError(400, "InvalidRequestContent", "The request content is not JSON.")
            if body is not None and not isinstance(body, dict):
                raise ArmError(  # every ARM body here is an object (the text is assumed)
                    400,
                    "InvalidRequestContent",
                    f"The request content was invalid: a JSON {_json_type(body)}, not an object.",
                )
            status, out, answer = self._route(method, path, version, body)
        except ArmError as err:
            status, out = err.status, err.headers
            answer = {"error": {"code": err.code, "message": err.message}}
        except Exception:  # an emulator bug: a 500 for the client, the traceback in the log
            LOG.exception("emulated ARM failed on %s %s", method, raw_path)
            status, out = 500, {}
            answer = {
                "error": {
                    "code": "InternalServerError",
                    "message": "The emulated ARM failed on this request; its log has the "
                    "traceback.",
                }
            }
        self._calls.add(
            ArmCall(
                method,
                path,
                version,
                {k: headers[k] for k in kept if k in headers},
                body,
                status,
                received,
            )
        )
        return status, out, answer

    def _authenticate(self, authorization: str | None) -> None:
        """ARM's bearer check (its codes and texts; the challenge header as ARM sends it)."""
        challenge = {
            "WWW-Authenticate": f'Bearer authorization_uri="https://login.windows.net/'
            f'{self.identity.tenant_id}", error="invalid_token", '
            'error_description="The authentication failed because of missing '
            "'Authorization' header.\""
        }
        if not authorization:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                challenge,
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid "
                "format.",
                challenge,
            )
        audiences = (self.arm_url, self.arm_url + "/", *ARM_AUDIENCES)
        why = self.identity.verify(token, audiences)
        if why == "expired":
            raise ArmError(
                401,
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
                challenge,
            )
        if why == "audience":
            claims = self.identity.claims(token)
            raise ArmError(
                401,
                "InvalidAuthenticationTokenAudience",
                f"The access token has been obtained for wrong audience or resource "
                f"'{claims.aud if claims else '?'}'. It should exactly match with one of the "
                f"allowed audiences {', '.join(repr(a) for a in audiences)}.",
                challenge,
            )
        if why is not None:
            raise ArmError(
                401, "InvalidAuthenticationToken", "The access token is invalid.", challenge
            )

    def _check_version(self, kind: str, version: str | None) -> None:
        allowed = API_VERSIONS[kind]
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", version):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are "
                f"'{','.join(allowed)}'.",
            )
        if version not in allowed:
            raise ArmError(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location '{self.region}' and "
                f"API version '{version}' for type '{kind}'. The supported api-versions are "
                f"'{', '.join(allowed)}'.",
            )

    def _route(
        self, method: str, path: str, version: str | None, body: Any
    ) -> tuple[int, dict[str, str], Any]:
        parts = [p for p in path.split("/") if p]
        low = [p.lower() for p in parts]
        # Operation status: /subscriptions/<s>/providers/<P>/locations/<r>/mfeOperations*/<id>
        if len(low) == 8 and low[2] == "providers" and low[6].startswith("mfeoperation"):
            return self._operation(method, low[6], parts[7])
        if len(low) < 2 or low[0] != "subscriptions":
            raise ArmError(404, "NotFound", f"No route for {method} {path}.")
        if low[1] != self.subscription_id.lower():
            raise ArmError(
                404, "SubscriptionNotFound", f"The subscription '{parts[1]}' could not be found."
            )
        if len(low) < 8 or low[2:4] != ["resourcegroups", self.resource_group.lower()]:
            group = parts[3] if len(parts) > 3 else ""
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found."
            )
        if low[4:7] != ["providers", PROVIDER.lower(), "workspaces"]:
            raise ArmError(404, "NotFound", f"No route for {method} {path}.")
        if low[7] != self.workspace.lower():
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{PROVIDER}/workspaces/{parts[7]}' under resource group "
                f"'{self.resource_group}' was not found.",
            )
        rest, low_rest = parts[8:], low[8:]
        kind = {
            0: "workspaces",
        }.get(len(rest)) or {
            "datastores": "datastores",
            "models": "models",
            "environments": "environments",
            "onlineendpoints": "deployments"
            if len(low_rest) >= 3 and low_rest[2] == "deployments"
            else "onlineEndpoints",
        }.get(low_rest[0])
        if kind is None:
            raise ArmError(404, "NotFound", f"No route for {method} {path}.")
        self._check_version(kind, version)
        with self._lock:
            if kind == "workspaces" and method == "GET":
                return 200, {}, self._workspace_doc()
            if kind == "datastores":
                return self._datastores(method, rest)
            if kind in ("models", "environments"):
                return self._asset(kind, method, rest, body, version or "")
            if kind == "onlineEndpoints":
                return self._endpoints_route(method, rest, body, version or "")
            return self._deployments_route(method, rest, body, version or "")
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on {path}.")

    # -- operations ----------------------------------------------------------------------------
    def _op_urls(self, op: _Operation, version: str) -> dict[str, str]:
        base = (
            f"{self.arm_url}/subscriptions/{self.subscription_id}/providers/{PROVIDER}"
            f"/locations/{self.region}"
        )
        query = f"?api-version={version}&type=async"
        return {
            "Azure-AsyncOperation": f"{base}/mfeOperationsStatus/{op.id}{query}",
            "Location": f"{base}/mfeOperationResults/{op.id}?api-version={version}&type=location",
            "retry-after-ms": RETRY_AFTER_MS,
        }

    def _new_op(self, resource: str, *, delete: bool = False) -> _Operation:
        op = _Operation(uuid.uuid4().hex, resource, delete, started=_now())
        self._ops[op.id] = op
        return op

    def _operation(self, method: str, kind: str, op_id: str) -> tuple[int, dict[str, str], Any]:
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"{method} on an operation.")
        with self._lock:
            op = self._ops.get(op_id)
        if op is None:
            raise ArmError(404, "NotFound", f"Operation {op_id} not found.")
        if kind == "mfeoperationsstatus":
            doc: dict[str, Any] = {
                "id": op.id,
                "name": op.id,
                "status": op.status,
                "startTime": op.started,
            }
            if op.ended:
                doc["endTime"] = op.ended
            if op.error:
                doc["error"] = op.error
            headers = {} if op.ended else {"retry-after-ms": RETRY_AFTER_MS}
            return 200, headers, doc
        # Location polling: 202 while running; then the resource (PUT), 200 empty (DELETE)
        if op.status == "InProgress":
            return 202, {"retry-after-ms": RETRY_AFTER_MS}, None
        if op.error:
            raise ArmError(400, op.error["code"], op.error["message"])
        if op.delete:
            return 200, {}, None
        with self._lock:
            return 200, {}, self._doc_at(op.resource)

    def _doc_at(self, resource: str) -> Any:
        parts = [p.lower() for p in resource.split("/") if p]
        endpoint = self._endpoints.get(parts[9]) if len(parts) > 9 else None
        if endpoint is None:
            return None
        if len(parts) > 11:
            dep = endpoint.deployments.get(parts[11])
            return dep.doc if dep else None
        return endpoint.doc

    def _system_data(self, before: dict[str, Any] | None = None) -> dict[str, Any]:
        """ARM's ``systemData``: created (kept from ``before``) and last modified now."""
        now, who = _now(), self.identity.principal_id
        created = before or {"createdAt": now, "createdBy": who, "createdByType": "Application"}
        return {
            **{k: created[k] for k in ("createdAt", "createdBy", "createdByType")},
            "lastModifiedAt": now,
            "lastModifiedBy": who,
            "lastModifiedByType": "Application",
        }

    # -- workspace and datastores --------------------------------------------------------------
    def _workspace_doc(self) -> dict[str, Any]:
        rg = f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
        return {
            "id": self.workspace_arm_id,
            "name": self.workspace,
            "type": f"{PROVIDER}/workspaces",
            "location": self.region,
            "kind": "Default",
            "tags": {},
            "identity": {
                "type": "SystemAssigned",
                "principalId": self.identity.principal_id,
                "tenantId": self.identity.tenant_id,
            },
            "sku": {"name": "Basic", "tier": "Basic"},
            "properties": {
                "friendlyName": self.workspace,
                "workspaceId": self.workspace_id,
                "storageAccount": f"{rg}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}",
                "keyVault": f"{rg}/providers/Microsoft.KeyVault/vaults/kv-{self.workspace}",
                "applicationInsights": f"{rg}/providers/Microsoft.Insights/components/"
                f"ai-{self.workspace}",
                "discoveryUrl": f"{self.arm_url}/discovery",
                "hbiWorkspace": False,
                "publicNetworkAccess": "Enabled",
                "provisioningState": "Succeeded",
            },
        }

    def _datastore_doc(self) -> dict[str, Any]:
        return {
            "id": f"{self.workspace_arm_id}/datastores/{DATASTORE}",
            "name": DATASTORE,
            "type": f"{PROVIDER}/workspaces/datastores",
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": ACCOUNT,
                "containerName": self.blob_container,
                "endpoint": "core.windows.net",
                "protocol": "https",
                "isDefault": True,
                "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
                "credentials": {"credentialsType": "AccountKey"},
                "tags": {},
                "properties": {},
            },
        }

    def _datastores(self, method: str, rest: list[str]) -> tuple[int, dict[str, str], Any]:
        if method == "GET" and len(rest) == 1:
            return 200, {}, {"value": [self._datastore_doc()]}
        if len(rest) >= 2 and rest[1].lower() != DATASTORE:
            raise ArmError(404, "UserError", f"Datastore {rest[1]} not found.")  # assumed
        if method == "GET" and len(rest) == 2:
            return 200, {}, self._datastore_doc()
        if method == "POST" and len(rest) == 3 and rest[2].lower() == "listsecrets":
            return 200, {}, {"secretsType": "AccountKey", "key": ACCOUNT_KEY}
        raise ArmError(405, "MethodNotAllowed", f"{method} on datastores is not emulated.")

    # -- models and environments ---------------------------------------------------------------
    def _asset(
        self, kind: str, method: str, rest: list[str], body: Any, version: str
    ) -> tuple[int, dict[str, str], Any]:
        store = self._models if kind == "models" else self._environments
        if len(rest) == 3 and rest[2].lower() == "versions" and method == "GET":
            name = rest[1].lower()
            docs = [d for (n, _), d in store.items() if n == name]
            return 200, {}, {"value": docs}
        if len(rest) != 4 or rest[2].lower() != "versions":
            raise ArmError(404, "NotFound", f"No route for {method} {kind}/{'/'.join(rest[1:])}.")
        name, ver = rest[1], rest[3]
        key = (name.lower(), ver.lower())
        if method == "GET":
            if key not in store:
                raise ArmError(
                    404, "UserError", f"{kind[:-1].capitalize()} {name}:{ver} not found."
                )  # the code Azure ML gives missing assets (assumed)
            return 200, {}, store[key]
        if method == "DELETE":
            store.pop(key, None)
            return 200, {}, None
        if method != "PUT":
            raise ArmError(405, "MethodNotAllowed", f"{method} on {kind} is not emulated.")
        props = dict(_member(body or {}, "properties"))
        if kind == "environments":
            inference = _member(props, "inferenceConfig", "properties.")
            for route in ("livenessRoute", "readinessRoute", "scoringRoute"):
                _member(inference, route, "properties.inferenceConfig.")
        fields = ("modelUri", "modelType") if kind == "models" else ("image", "inferenceConfig")
        if key in store:
            old = store[key]["properties"]
            if any(old.get(f) != props.get(f) for f in fields):
                raise ArmError(
                    409,
                    "UserError",  # assumed: asset versions cannot change once created
                    f"{kind[:-1].capitalize()} {name}:{ver} already exists with other "
                    "content; asset versions are immutable: register a new version.",
                )
            return 200, {}, store[key]
        if kind == "models":
            if not props.get("modelUri"):
                raise ArmError(400, "UserError", "modelUri is required.")
            props.setdefault("flavors", {})  # the SDK needs it (§1a)
            props.setdefault("modelType", "custom_model")
            props.setdefault("isArchived", False)
        else:
            props.setdefault("osType", "Linux")
            props.setdefault("environmentType", "UserCreated")
            props.setdefault("isArchived", False)
            props.setdefault("isAnonymous", False)
        props["provisioningState"] = "Succeeded"
        path = f"{self.workspace_arm_id}/{kind}/{name}/versions/{ver}"
        doc = {
            "id": path,
            "name": ver,
            "type": f"{PROVIDER}/workspaces/{kind}/versions",
            "properties": props,
            "systemData": self._system_data(),
        }
        store[key] = doc
        return 201, {}, doc

    # -- online endpoints ----------------------------------------------------------------------
    def _endpoint_id(self, name: str) -> str:
        return f"{self.workspace_arm_id}/onlineEndpoints/{name}"

    def _endpoints_route(
        self, method: str, rest: list[str], body: Any, version: str
    ) -> tuple[int, dict[str, str], Any]:
        if len(rest) == 1:
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{method} on onlineEndpoints.")
            return 200, {}, {"value": [e.doc for e in self._endpoints.values()]}
        name = rest[1]
        endpoint = self._endpoints.get(name.lower())
        if len(rest) == 3 and method == "POST":
            if endpoint is None:
                raise self._not_found("onlineEndpoints", name)
            action = rest[2].lower()
            if action == "listkeys":
                if endpoint.doc["properties"]["authMode"] != "Key":
                    raise ArmError(  # assumed text
                        400,
                        "BadArgument",
                        f"Keys are only available for endpoints with auth mode Key; "
                        f"{name} uses {endpoint.doc['properties']['authMode']}.",
                    )
                return 200, {}, {"primaryKey": endpoint.keys[0], "secondaryKey": endpoint.keys[1]}
            raise ArmError(404, "NotFound", f"No action {rest[2]} on online endpoints.")
        if len(rest) != 2:
            raise ArmError(404, "NotFound", f"No route for onlineEndpoints/{'/'.join(rest[1:])}.")
        if method == "GET":
            if endpoint is None:
                raise self._not_found("onlineEndpoints", name)
            return 200, {}, endpoint.doc
        if method == "PUT":
            return self._put_endpoint(name, endpoint, body or {}, version)
        if method == "DELETE":
            if endpoint is None:
                return 204, {}, None
            return self._delete_endpoint(endpoint, version)
        raise ArmError(405, "MethodNotAllowed", f"{method} on an online endpoint.")

    def _not_found(self, kind: str, name: str) -> ArmError:
        return ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{PROVIDER}/workspaces/{self.workspace}/{kind}/{name}' under "
            f"resource group '{self.resource_group}' was not found. For more details please "
            "go to https://aka.ms/ARMResourceNotFoundFix",
        )

    def _check_location(self, body: dict[str, Any]) -> None:
        location = str(body.get("location") or "")
        if location.replace(" ", "").lower() != self.region.lower():
            raise ArmError(
                400,
                "BadArgument",  # assumed: a resource must be in its workspace's region
                f"Location '{location}' is not the workspace's location '{self.region}'.",
            )

    def _check_traffic(
        self,
        endpoint: _Endpoint | None,
        traffic: dict[str, Any],
        mirror: dict[str, Any],
    ) -> None:
        """Azure's traffic and mirror rules (how-to-safely-rollout-online-endpoints); the
        texts are assumed."""
        deps = endpoint.deployments if endpoint else {}
        for kind, table in (("traffic", traffic), ("mirrorTraffic", mirror)):
            for dep, pct in table.items():
                if not isinstance(pct, int) or not 0 <= pct <= 100:
                    raise ArmError(
                        400, "BadArgument", f"{kind} for {dep} must be an integer 0-100."
                    )
                if dep.lower() not in deps:
                    raise ArmError(
                        400,
                        "BadArgument",
                        f"{kind}: deployment {dep} does not exist in this endpoint.",
                    )
                if pct > 0 and deps[dep.lower()].state not in ("Succeeded", "Updating"):
                    raise ArmError(
                        400,
                        "BadArgument",
                        f"{kind}: deployment {dep} is {deps[dep.lower()].state}; only a "
                        "succeeded deployment can take traffic.",
                    )
        total = sum(traffic.values())
        if total not in (0, 100):
            raise ArmError(
                400,
                "BadArgument",
                f"Traffic values must sum to 100 (or all be 0); they sum to {total}.",
            )
        mirrored = {k.lower(): v for k, v in mirror.items() if v > 0}
        if len(mirrored) > 1:
            raise ArmError(400, "BadArgument", "Mirror traffic can go to only one deployment.")
        for dep, pct in mirrored.items():
            if pct > MAX_MIRROR_PCT:
                raise ArmError(
                    400,
                    "BadArgument",
                    f"Mirror traffic to {dep} is {pct}%; it can be at most {MAX_MIRROR_PCT}%.",
                )
            live = {k.lower(): v for k, v in traffic.items()}
            if live.get(dep, 0) > 0:
                raise ArmError(
                    400,
                    "BadArgument",
                    f"Deployment {dep} cannot take both live and mirror traffic.",
                )

    def _put_endpoint(
        self, name: str, endpoint: _Endpoint | None, body: dict[str, Any], version: str
    ) -> tuple[int, dict[str, str], Any]:
        problem = _name_problem("Endpoint", name)
        if problem:
            raise ArmError(400, "BadArgument", problem)
        self._check_location(body)
        if endpoint is not None and endpoint.doc["properties"]["provisioningState"] == "Deleting":
            raise ArmError(409, "Conflict", f"Endpoint {name} is being deleted.")  # assumed
        props = dict(_member(body, "properties"))
        for key in ("traffic", "mirrorTraffic", "properties"):
            _member(props, key, "properties.")
        tags, identity = _member(body, "tags"), _member(body, "identity")
        # Assumed: a PUT may change an existing endpoint's authMode (Key <-> AADToken); the
        # REST spec requires authMode on every PUT and names no refusal, and azure-ai-ml
        # 1.35.2 sends it on each update without checking it against the endpoint's. The
        # keys are kept; scoring follows the new mode at once.
        mode = props.get("authMode") or "Key"
        modes = {"key": "Key", "aadtoken": "AADToken", "amltoken": "AMLToken"}
        if str(mode).lower() not in modes:
            raise ArmError(
                400, "BadArgument", f"authMode {mode} is not one of Key, AADToken, AMLToken."
            )
        # A PUT that leaves a map out keeps the endpoint's (assumed; the SDK always sends both).
        kept = endpoint.doc["properties"] if endpoint is not None else {}
        traffic = {str(k): v for k, v in (props.get("traffic", kept.get("traffic")) or {}).items()}
        mirror = {
            str(k): v
            for k, v in (props.get("mirrorTraffic", kept.get("mirrorTraffic")) or {}).items()
        }
        self._check_traffic(endpoint, traffic, mirror)
        created = endpoint is None
        if endpoint is None:
            keys = (uuid.uuid4().hex + uuid.uuid4().hex, uuid.uuid4().hex + uuid.uuid4().hex)
            assert self._context is not None
            server = ScoringServer(
                name,
                resolve=self._view,
                verify_token=self.identity.verify,
                calls=self._scoring_calls,
                faults=self._faults,
                context=self._context,
                ca_file=self.ca_file,
            )
            server.start()
            doc: dict[str, Any] = {
                "id": self._endpoint_id(name),
                "name": name,
                "type": f"{PROVIDER}/workspaces/onlineEndpoints",
                "kind": "Managed",
                "systemData": self._system_data(),
            }
            endpoint = _Endpoint(name, doc, keys, server)
            self._endpoints[name.lower()] = endpoint
        doc = endpoint.doc
        doc["systemData"] = self._system_data(doc.get("systemData"))
        doc["location"] = self.region
        doc["tags"] = dict(tags)
        doc["identity"] = {
            "type": identity.get("type") or "SystemAssigned",
            "principalId": self.identity.principal_id,
            "tenantId": self.identity.tenant_id,
        }
        doc["properties"] = {
            "authMode": modes[str(mode).lower()],
            "description": props.get("description"),
            "properties": dict(props.get("properties") or {}),
            "traffic": traffic,
            "mirrorTraffic": mirror,
            "publicNetworkAccess": props.get("publicNetworkAccess") or "Enabled",
            "scoringUri": endpoint.server.scoring_uri,
            "swaggerUri": endpoint.server.scoring_uri.removesuffix("/score") + "/swagger.json",
            "provisioningState": "Creating" if created else "Updating",
        }
        answer = json.loads(json.dumps(doc))
        doc["properties"]["provisioningState"] = "Succeeded"  # gap: at once
        op = self._new_op(doc["id"])
        op.finish()
        return (201 if created else 200), self._op_urls(op, version), answer

    def _delete_endpoint(
        self, endpoint: _Endpoint, version: str
    ) -> tuple[int, dict[str, str], Any]:
        endpoint.doc["properties"]["provisioningState"] = "Deleting"
        op = self._new_op(endpoint.doc["id"], delete=True)

        def delete() -> None:
            self._tear_down(endpoint)
            with self._lock:
                if self._endpoints.get(endpoint.name.lower()) is endpoint:
                    del self._endpoints[endpoint.name.lower()]
                op.finish()

        self._background(delete)
        return 202, self._op_urls(op, version), None

    def _tear_down(self, endpoint: _Endpoint) -> None:
        """Close the endpoint's scoring port and stop its containers."""
        endpoint.server.stop()
        with self._lock:
            procs = [c for d in endpoint.deployments.values() for c in d.processes()]
            for dep in endpoint.deployments.values():
                dep.generation += 1  # a start in progress gives up
        stop_all(procs)

    def _background(self, work: Any) -> None:
        thread = threading.Thread(target=work, daemon=True, name="azure-op")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _view(self, name: str) -> EndpointView | None:
        """What the scoring host of ``name`` routes by, now."""
        with self._lock:
            endpoint = self._endpoints.get(name.lower())
            if endpoint is None or endpoint.doc["properties"]["provisioningState"] == "Deleting":
                return None
            props = endpoint.doc["properties"]
            routes = {}
            for key, dep in endpoint.deployments.items():
                dprops = dep.doc["properties"]
                settings = dprops.get("requestSettings") or {}
                timeout_s = _duration_s(
                    settings.get("requestTimeout"), DEFAULT_REQUEST_TIMEOUT_MS / 1000
                )
                mcr = int(
                    settings.get("maxConcurrentRequestsPerInstance") or DEFAULT_MAX_CONCURRENT
                )
                count = int((dep.doc.get("sku") or {}).get("capacity") or 1)
                serving = dep.container if dep.state in ("Succeeded", "Updating") else None
                port = serving.port if serving is not None and serving.running() else None
                routes[key] = Route(dep.name, port, dep.scoring_path, timeout_s, 2 * mcr * count)
            return EndpointView(
                endpoint.name,
                str(props["authMode"]),
                endpoint.keys,
                {k.lower(): int(v) for k, v in props["traffic"].items()},
                {k.lower(): int(v) for k, v in props["mirrorTraffic"].items()},
                routes,
            )

    # -- deployments ---------------------------------------------------------------------------
    def _deployments_route(
        self, method: str, rest: list[str], body: Any, version: str
    ) -> tuple[int, dict[str, str], Any]:
        endpoint = self._endpoints.get(rest[1].lower())
        if endpoint is None:
            raise self._not_found("onlineEndpoints", rest[1])
        if len(rest) == 3:
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{method} on deployments.")
            return 200, {}, {"value": [d.doc for d in endpoint.deployments.values()]}
        name = rest[3]
        dep = endpoint.deployments.get(name.lower())
        if len(rest) == 5 and method == "POST" and rest[4].lower() == "getlogs":
            if dep is None:
                raise self._not_found(f"onlineEndpoints/{endpoint.name}/deployments", name)
            return 200, {}, {"content": self._logs(dep, body or {})}
        if len(rest) != 4:
            raise ArmError(404, "NotFound", f"No route for deployments/{'/'.join(rest[3:])}.")
        if method == "GET":
            if dep is None:
                raise self._not_found(f"onlineEndpoints/{endpoint.name}/deployments", name)
            return 200, {}, dep.doc
        if method == "PUT":
            return self._put_deployment(endpoint, name, dep, body or {}, version)
        if method == "DELETE":
            if dep is None:
                return 204, {}, None
            return self._delete_deployment(endpoint, dep, version)
        raise ArmError(405, "MethodNotAllowed", f"{method} on a deployment.")

    @staticmethod
    def _logs(dep: _Deployment, body: dict[str, Any]) -> str:
        """``getLogs``: the last ``tail`` lines of the inference server's output (or the
        storage initializer's, ``containerType: StorageInitializer``)."""
        kind = str(body.get("containerType") or "InferenceServer")
        lines = dep.init_log if kind.lower() == "storageinitializer" else dep.output
        tail = body.get("tail")
        kept = lines[-int(tail) :] if isinstance(tail, int) and tail > 0 else list(lines)
        return "".join(line + "\n" for line in kept)

    def _arm_ref(self, value: Any, kind: str) -> tuple[str, str] | None:
        """(name, version) of an ARM id ``.../<kind>/<name>/versions/<version>``."""
        match = re.search(rf"/{kind}/([^/]+)/versions/([^/]+)$", str(value or ""), re.IGNORECASE)
        if not match or not str(value).lower().startswith(self.workspace_arm_id.lower()):
            return None
        return match.group(1), match.group(2)

    def _put_deployment(
        self,
        endpoint: _Endpoint,
        name: str,
        dep: _Deployment | None,
        body: dict[str, Any],
        version: str,
    ) -> tuple[int, dict[str, str], Any]:
        problem = _name_problem("Deployment", name)
        if problem:
            raise ArmError(400, "BadArgument", problem)
        self._check_location(body)
        if endpoint.doc["properties"]["provisioningState"] == "Deleting":
            raise ArmError(409, "Conflict", f"Endpoint {endpoint.name} is being deleted.")
        if dep is None and len(endpoint.deployments) >= MAX_DEPLOYMENTS:
            raise ArmError(
                400,
                "BadArgument",  # assumed text; the limit is how-to-manage-quotas'
                f"Endpoint {endpoint.name} already has {MAX_DEPLOYMENTS} deployments, the "
                "most an endpoint can have.",
            )
        if dep is not None and dep.state in ("Creating", "Updating", "Deleting"):
            raise ArmError(
                409, "Conflict", f"Deployment {name} is {dep.state}: wait for it to finish."
            )  # assumed
        props = dict(_member(body, "properties"))
        for key in ("requestSettings", "environmentVariables", "scaleSettings"):
            _member(props, key, "properties.")
        tags = _member(body, "tags")
        sku = dict(_member(body, "sku") or {"name": "Default", "capacity": 1})
        instance_type = str(props.get("instanceType") or "")
        canonical = _SKUS_LOWER.get(instance_type.lower())
        if canonical is None:
            raise ArmError(
                400,
                "BadArgument",  # assumed text
                f"Instance type {instance_type or '(none)'} is not supported for managed "
                "online endpoints. See https://aka.ms/azureml-managed-sku-list.",
            )
        count = sku.get("capacity", 1)
        if not isinstance(count, int) or not 1 <= count <= MAX_INSTANCES:
            raise ArmError(
                400, "BadArgument", f"Instance count must be 1-{MAX_INSTANCES}, not {count}."
            )
        settings = props.get("requestSettings") or {}
        concurrent = settings.get("maxConcurrentRequestsPerInstance")
        if concurrent is not None and (
            not isinstance(concurrent, int) or isinstance(concurrent, bool) or concurrent < 1
        ):
            raise ArmError(
                400,
                "BadArgument",  # assumed text
                f"max_concurrent_requests_per_instance must be a positive integer, not "
                f"{concurrent!r}.",
            )
        timeout_ms = 1000 * _duration_s(settings.get("requestTimeout"), 5.0)
        if timeout_ms > MAX_REQUEST_TIMEOUT_MS:
            raise ArmError(
                400,
                "BadArgument",
                f"request_timeout_ms {int(timeout_ms)} exceeds the maximum of "
                f"{MAX_REQUEST_TIMEOUT_MS}.",
            )
        model_ref = self._arm_ref(props.get("model"), "models")
        env_ref = self._arm_ref(props.get("environmentId"), "environments")
        model = (
            self._models.get((model_ref[0].lower(), model_ref[1].lower())) if model_ref else None
        )
        environment = (
            self._environments.get((env_ref[0].lower(), env_ref[1].lower())) if env_ref else None
        )
        if model_ref is None or model is None:
            raise ArmError(400, "BadArgument", f"Model {props.get('model')} not found.")
        if env_ref is None or environment is None:
            raise ArmError(
                400, "BadArgument", f"Environment {props.get('environmentId')} not found."
            )
        inference = environment["properties"].get("inferenceConfig") or {}
        routes = {
            k: inference.get(k) or {} for k in ("livenessRoute", "readinessRoute", "scoringRoute")
        }
        if not all(
            isinstance(r.get("path"), str) and r["path"] and str(r.get("port") or "").isdigit()
            for r in routes.values()
        ):
            raise ArmError(
                400,
                "BadArgument",
                "A custom container's environment needs inference_config with liveness_route, "
                "readiness_route and scoring_route (each a port and a path).",
            )
        props.setdefault("endpointComputeType", "Managed")
        props["instanceType"] = instance_type
        props["scaleSettings"] = props.get("scaleSettings") or {"scaleType": "Default"}
        props.setdefault("appInsightsEnabled", False)
        props.setdefault("egressPublicNetworkAccess", "Enabled")
        props.setdefault("environmentVariables", {})
        created = dep is None
        restart = (
            dep is None
            or dep.container is None
            or any(
                dep.doc["properties"].get(k) != props.get(k)
                for k in ("model", "environmentId", "environmentVariables")
            )
        )
        props["provisioningState"] = "Creating" if created else "Updating"
        doc: dict[str, Any] = {
            "id": f"{endpoint.doc['id']}/deployments/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/onlineEndpoints/deployments",
            "kind": "Managed",
            "location": self.region,
            "tags": dict(tags),
            "sku": {
                "name": sku.get("name") or "Default",
                "tier": "Standard",
                "capacity": count,
            },
            "properties": props,
            "systemData": self._system_data(dep.doc.get("systemData") if dep else None),
        }
        if dep is None:
            dep = _Deployment(name, endpoint.name, doc)
            endpoint.deployments[name.lower()] = dep
        else:
            dep.doc = doc
        dep.generation += 1
        answer = json.loads(json.dumps(doc))
        op = self._new_op(doc["id"])
        scripted = self._fail_next.pop(0) if self._fail_next else None
        if scripted is not None:
            self._fail(dep, op, scripted[0], scripted[1])
        elif not restart:
            props["provisioningState"] = "Succeeded"
            op.finish()
        else:
            plan = (dep, op, dep.generation, model, routes, dict(props["environmentVariables"]))
            self._background(lambda: self._provision(*plan))
        return (201 if created else 200), self._op_urls(op, version), answer

    def _fail(self, dep: _Deployment, op: _Operation, code: str, message: str) -> None:
        with self._lock:
            dep.doc["properties"]["provisioningState"] = "Failed"
            op.finish({"code": code, "message": message})

    def _provision(
        self,
        dep: _Deployment,
        op: _Operation,
        generation: int,
        model: dict[str, Any],
        routes: dict[str, dict[str, Any]],
        variables: dict[str, Any],
    ) -> None:
        """Copy the model, start the container, wait for readiness; end the operation. A new
        container serves once ready (the old one then stops); on failure both stop (gap:
        Azure's rolling update may leave old instances serving)."""
        try:
            failure = self._start_container(dep, generation, model, routes, variables)
        except Exception as exc:  # an emulator bug must still end the operation
            failure = ("InternalServerError", f"emulator: {type(exc).__name__}: {exc}")
        with self._lock:
            new, dep.pending = dep.pending, None
            stop = [] if new is None else [new]
            if dep.generation != generation:
                op.finish({"code": "Canceled", "message": "Superseded or deleted."})
            elif failure is not None:
                stop += [dep.container] if dep.container is not None else []
                dep.container = None
                self._fail(dep, op, *failure)
            else:
                stop = [dep.container] if dep.container is not None else []
                dep.container = new
                dep.doc["properties"]["provisioningState"] = "Succeeded"
                op.finish()
        stop_all(stop)

    def _blob_path(self, uri: str) -> tuple[str, str] | str:
        """(container, blob prefix) of a model URI in the emulated storage account, or why
        it cannot be copied: a datastore path (``azureml://[...]datastores/<ds>/paths/<p>``,
        ``workspaceblobstore`` only), or an https blob URL of the emulated account (any
        container), as Azurite serves it (``https://127.0.0.1:<port>/devstoreaccount1/<c>/<p>``)
        or as Azure names it (``https://devstoreaccount1.blob.core.windows.net/<c>/<p>``).
        Gap: another account's blobs (any other host) cannot be copied."""
        match = re.fullmatch(
            r"azureml://(?:subscriptions/[^/]+/resourcegroups/[^/]+/workspaces/[^/]+/)?"
            r"datastores/([^/]+)/paths/(.+)",
            uri,
            re.IGNORECASE,
        )
        if match:
            if match.group(1).lower() != DATASTORE:
                return f"Datastore {match.group(1)} not found."
            return self.blob_container, match.group(2)
        split = urlsplit(uri)
        account_url = urlsplit(self.blob_url)
        path = split.path.lstrip("/")
        if split.scheme.lower() == "https" and split.netloc.lower() == account_url.netloc:
            account, _, path = path.partition("/")
            if account != ACCOUNT:
                path = ""
        elif split.scheme.lower() != "https" or split.netloc.lower() != (
            f"{ACCOUNT}.blob.core.windows.net"
        ):
            path = ""
        container, _, prefix = path.partition("/")
        if not container or not prefix:
            return (
                f"Model URI {uri} is neither a datastore path (azureml://datastores/.../paths/"
                f"...) nor a blob of storage account {ACCOUNT} (https://.../<container>/<path>)."
            )
        return container, prefix

    def _copy_model(self, dep: _Deployment, model: dict[str, Any], target: Path) -> str | None:
        """Download the model version's blobs into ``target`` (None, or why not)."""
        uri = str(model["properties"].get("modelUri") or "")
        where = self._blob_path(uri)
        if isinstance(where, str):
            return where
        container_name, prefix = where
        dep.init_log.append(f"Downloading {uri} to {target}")
        container = self._blob().get_container_client(container_name)
        folder = prefix.endswith("/")
        from azure.core.exceptions import ResourceNotFoundError

        try:
            names = [b.name for b in container.list_blobs(name_starts_with=prefix)]
        except ResourceNotFoundError:
            return f"Blob container {container_name} not found in storage account {ACCOUNT}."
        if not folder:  # a file, or a folder named without its slash
            names = [n for n in names if n == prefix or n.startswith(prefix + "/")]
        if not names:
            return f"No blobs found under {uri}: the model's path is empty."
        stem = prefix.rstrip("/")
        base = stem.rsplit("/", 1)[0] + "/" if "/" in stem else ""
        for blob in names:
            # A registered folder keeps its own name inside the mount; a file lands as itself.
            path = target / blob[len(base) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(container.download_blob(blob).readall())
            dep.init_log.append(f"Downloaded {blob} ({path.stat().st_size} bytes)")
        return None

    def _start_container(
        self,
        dep: _Deployment,
        generation: int,
        model: dict[str, Any],
        routes: dict[str, dict[str, Any]],
        variables: dict[str, Any],
    ) -> tuple[str, str] | None:
        name, version = model["id"].split("/")[-3], model["name"]
        dep.init_log = []
        mounts = self.workdir / "mounts" / dep.endpoint / dep.name
        serving = dep.container
        if serving is not None and serving.workdir == mounts:  # an update: the old one reads it
            mounts = mounts.with_name(f"{dep.name}.{generation}")
        shutil.rmtree(mounts, ignore_errors=True)
        model_dir = mounts / "azureml-models" / name / version
        model_dir.mkdir(parents=True)
        problem = self._copy_model(dep, model, model_dir)
        if problem is not None:
            dep.init_log.append(problem)
            return "ModelDownloadFailed", problem  # assumed code
        environment = {str(k): str(v) for k, v in variables.items()}
        listens = int(environment.get("AIAAS_PORT") or CONTAINER_PORT)
        for route in routes.values():
            if int(route["port"]) != listens:
                return (
                    "ResourceNotReady",
                    f"The readiness probe failed: the container listens on port {listens} "
                    f"(AIAAS_PORT) but the environment's inference_config probes port "
                    f"{route['port']}.",
                )
        environment.pop("AIAAS_DEVICE", None)  # gap: a GPU SKU runs on this host's CPU
        port = free_port()
        environment.update(AZUREML_MODEL_DIR=str(model_dir), AIAAS_PORT=str(port))
        container = ContainerProcess.start(workdir=mounts, port=port, environment=environment)
        with self._lock:
            dep.pending, dep.output, dep.environment = container, container.output, environment
            dep.model = (name, version)
            dep.scoring_path = str(routes["scoringRoute"]["path"])
        ready = str(routes["readinessRoute"]["path"])
        deadline = time.monotonic() + self.container_start_timeout_s
        while dep.generation == generation:
            if not container.running():
                return (
                    "ResourceNotReady",
                    "User container has crashed or terminated: exit code "
                    f"{container.process.exitcode}. Please see troubleshooting guide, available "
                    "here: https://aka.ms/oe-tsg#error-resourcenotready",
                )
            if container.ping(ready):
                return None
            if time.monotonic() > deadline:
                return (
                    "ResourceNotReady",
                    f"The readiness probe ({ready}) did not succeed within "
                    f"{self.container_start_timeout_s:.0f} s.",
                )
            time.sleep(0.1)
        return None  # superseded: _provision ends the operation

    def _delete_deployment(
        self, endpoint: _Endpoint, dep: _Deployment, version: str
    ) -> tuple[int, dict[str, str], Any]:
        props = endpoint.doc["properties"]
        for table in ("traffic", "mirrorTraffic"):
            pct = {k.lower(): v for k, v in props[table].items()}.get(dep.name.lower(), 0)
            if pct > 0:
                raise ArmError(
                    400,
                    "BadArgument",  # assumed text
                    f"Deployment {dep.name} takes {pct}% of the endpoint's {table}; set it to "
                    "0 before deleting the deployment.",
                )
        dep.doc["properties"]["provisioningState"] = "Deleting"
        dep.generation += 1
        op = self._new_op(dep.doc["id"], delete=True)

        def delete() -> None:
            with self._lock:
                procs = dep.processes()
                dep.container = dep.pending = None
            stop_all(procs)
            with self._lock:
                if endpoint.deployments.get(dep.name.lower()) is dep:
                    del endpoint.deployments[dep.name.lower()]
                op.finish()

        self._background(delete)
        return 202, self._op_urls(op, version), None


class _ArmHandler(KeepAliveHandler):
    owner: AzureEmulator

    def _any(self) -> None:
        raw = self.body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out, answer = self.owner.handle(self.command, self.path, headers, raw)
        data = b"" if answer is None else json.dumps(answer).encode()
        head = {"x-ms-request-id": str(uuid.uuid4()), **out}
        if data:
            head["Content-Type"] = "application/json; charset=utf-8"
        self.send(status, head, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _any


@contextlib.contextmanager
def running(workdir: Path, **kwargs: Any) -> Iterator[AzureEmulator]:
    """``with running(tmp) as azure:`` starts an :class:`AzureEmulator` and always stops it."""
    emulator = AzureEmulator(workdir, **kwargs)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
