"""Alibaba Cloud PAI-EAS (and OSS) for tests: the 2021-07-01 control plane, every request
ACS3-signed, and services that run the real model container.

:class:`AlibabaEmulator` serves one region (``emu.region``) with one access key
(``emu.access_key_id`` / ``emu.access_key_secret``) the way alibabacloud-eas20210701 7.0.0
reaches it through ``Config(endpoint=emu.endpoint, protocol="http")`` (``host:port``: with a
URL the SDK signs ``host`` as the whole URL), and an :class:`~emulators.oss.OssEmulator`
(``emu.oss``, ``emu.oss_endpoint``) with the same key. The ROA paths
(``../shared/notes/azure-pai-2026-12.md`` §2a):

- ``POST /api/v2/services`` CreateService (``Labels``, ``WorkspaceId`` in the query; the body
  is the service JSON), ``GET /api/v2/services`` ListServices (``Filter`` a name substring,
  ``Label`` a JSON object every label of which must match), ``GET|PUT|DELETE
  /api/v2/services/{region}/{name}`` Describe/Update (``UpdateType`` ``merge`` by default:
  the new JSON merged into the old, objects recursively; ``replace``: the new JSON alone)
  /DeleteService, ``GET .../versions`` ListServiceVersions, ``PUT .../version``
  UpdateServiceVersion (``{"Version": n}``: only an existing version older than the current
  one), ``POST|PUT|GET|DELETE .../autoscaler`` (``max`` must exceed ``min``), ``GET .../logs``
  DescribeServiceLog (the container's output), ``GET .../events`` DescribeServiceEvent,
  ``GET /api/v2/public/instance_types`` DescribeMachineSpec (:data:`MACHINE_SPECS`);
- every request's ``ACS3-HMAC-SHA256`` signature is verified
  (:func:`emulators.acs3.verify_acs3`): a wrong secret is 400 ``SignatureDoesNotMatch``, as
  EAS answers it; errors are ``{"Code", "Message", "RequestId"}`` (the SDK's
  ``ClientException.code``);
- a service's versions: CreateService makes version 1 (``Creating``), UpdateService version
  ``LatestVersion + 1`` (``Updating``; ``CurrentVersion`` moves to it at once, so a failed
  update can be rolled back to the version before), UpdateServiceVersion re-deploys an older
  one; each ends ``Running`` once its container answers ``/ping``, or ``Failed`` (``Message``,
  ``Reason`` and a Warning event) when the container exits first, the OSS path is empty, the
  container's ``port`` is not the one the entrypoint listens on, or
  :meth:`AlibabaEmulator.fail_next_version` scripted it. While a new version starts (and when
  it fails), the previous container keeps serving: a rolling update.

The data plane is ``POST /api/predict/<service>[/<path>]`` on the same port
(``InternetEndpoint``; any other method is forwarded as it came, and the container answers
405 for one it does not serve, as EAS's status-codes page describes a service's 405):
``Authorization: <AccessToken>`` (raw, no scheme) or 401; scripted
faults (:meth:`AlibabaEmulator.fault`: 429 rate limit, 450 queue full, 503); the call is
forwarded to the serving container at ``/<path>`` (EAS forwards the service root) within the
service's ``metadata.rpc.keepalive`` (ms, default 5000; 408 past it).

Each version's container is :mod:`emulators.fleet`'s :class:`ContainerProcess` (aiaas's
entrypoint) with EAS's layout: every ``storage[]`` entry's ``oss.path``
(``oss://bucket/prefix/``) is copied from the emulated OSS into
``<workdir>/mounts/<service>/v<N>/<mount_path>`` and made read-only; the container's ``env``
(``[{"name", "value"}]``) is set, a value that names a path under a ``mount_path`` (the
service config's ``AIAAS_MODEL_DIR``, as aiaas/runtime/container.py expects) is rewritten to
the local copy; ``AIAAS_PORT`` is a free port and ``AIAAS_HOST`` 127.0.0.1.

Gaps from Alibaba Cloud (each also named where it is handled):

- one region, one access key (no RAM policies, no STS token check: a signed
  ``x-acs-security-token`` is accepted as is), no workspaces beyond recording
  ``WorkspaceId``; no resource groups, quotas, service groups, weights, mirrors, start/stop;
- the image and its ``script``/``command`` are not run (no container engine): every version
  runs this checkout's entrypoint (``serve``); one container whatever ``metadata.instance``;
  a GPU instance type runs on this host's CPU; readiness is aiaas's ``/ping`` polled every
  0.1 s (EAS's own probe for custom images is not documented);
- the OSS mount is a copy made when the version starts (EAS mounts ossfs, live);
- name rule, error texts, event reasons, the ``ImageId`` field of ListServiceVersions (taken
  as the version number) and the 429/450/503 bodies are assumed; a failed update leaves the
  previous version serving with the service ``Failed`` (EAS's behaviour there is not
  documented); the queue (``rpc.max_queue_size``) and rate limit are not modelled: 450 and 429
  come only from :meth:`AlibabaEmulator.fault`; ``rpc.keepalive`` bounds the container's
  answer, not the time spent queued before it;
- the autoscaler is recorded, never acts; DescribeMachineSpec lists a small fixed sample.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import re
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from emulators.acs3 import verify_acs3
from emulators.faults import CallLog, Faults, Refusals
from emulators.fleet import ContainerProcess, free_port, stop_all
from emulators.httpserver import HttpServer, KeepAliveHandler
from emulators.oss import OssEmulator

API_VERSION = "2021-07-01"
PREDICT_PREFIX = "/api/predict/"
CONTAINER_PORT = 8080  # where aiaas's entrypoint listens without AIAAS_PORT
DEFAULT_KEEPALIVE_MS = 5000  # rpc.keepalive's default (status-codes page)
NAME_RULE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # assumed: EAS's exact rule is not quoted
MACHINE_SPECS: tuple[dict[str, Any], ...] = (
    {"InstanceType": "ecs.c6.large", "CPU": 2, "Memory": 4, "GPU": 0, "GPUMemory": 0},
    {"InstanceType": "ecs.c7.xlarge", "CPU": 4, "Memory": 8, "GPU": 0, "GPUMemory": 0},
    {"InstanceType": "ecs.g6.xlarge", "CPU": 4, "Memory": 16, "GPU": 0, "GPUMemory": 0},
    {"InstanceType": "ecs.gn6i-c4g1.xlarge", "CPU": 4, "Memory": 15, "GPU": "T4",
     "GPUAmount": 1, "GPUMemory": 16},
    {"InstanceType": "ecs.gn7i-c8g1.2xlarge", "CPU": 8, "Memory": 30, "GPU": "A10",
     "GPUAmount": 1, "GPUMemory": 24},
)  # fmt: skip
"""DescribeMachineSpec's answer here: a small sample (gap: the live list is per region)."""
WRITE_ACTIONS = frozenset(
    {
        "CreateService", "UpdateService", "UpdateServiceVersion", "DeleteService",
        "CreateServiceAutoScaler", "UpdateServiceAutoScaler", "DeleteServiceAutoScaler",
    }
)  # fmt: skip
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server",
     "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"}
)  # fmt: skip
FAULT_BODIES = {
    408: "Request timeout",
    429: "Too Many Requests",
    450: "Request queue is full",
    503: "Service Unavailable",
}  # assumed texts


@dataclass(frozen=True)
class EasCall:
    """One control-plane request as the emulator answered it."""

    action: str  # x-acs-action ("" when absent)
    method: str
    path: str
    query: dict[str, str]
    status: int
    code: str | None = None  # the error code, when refused
    body: str = ""


@dataclass(frozen=True)
class PredictCall:
    """One data-plane request as the gateway answered it."""

    service: str
    version: int | None  # the version that answered (None: none was reached)
    status: int


class EasError(Exception):
    """An error EAS answers (status, code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Version:
    number: int
    config: dict[str, Any]
    built: str
    message: str = ""


@dataclass
class _Service:
    name: str
    service_id: str
    token: str
    labels: dict[str, str]
    workspace_id: str
    created: str
    versions: dict[int, _Version] = field(default_factory=dict)
    status: str = "Creating"
    message: str = ""
    reason: str = ""
    current: int = 1
    latest: int = 1
    updated: str = ""
    events: list[dict[str, str]] = field(default_factory=list)
    container: ContainerProcess | None = None  # serving
    serving: int | None = None  # the version the serving container runs
    pending: ContainerProcess | None = None
    environment: dict[str, str] = field(default_factory=dict)  # the serving container's
    pending_environment: dict[str, str] = field(default_factory=dict)
    generation: int = 0  # bumped by each new rollout: an older one stops waiting
    output: list[str] = field(default_factory=list)
    autoscaler: dict[str, Any] | None = None
    deleted: bool = False


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(old: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """UpdateType=merge: objects merged recursively, anything else replaced (assumed for
    lists: EAS documents only "merged")."""
    out = dict(old)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _int_param(query: Mapping[str, str], key: str, default: int) -> int:
    """Query parameter ``key`` as an integer (``default`` when absent or empty); anything else
    is refused as EAS refuses a malformed parameter: 400 ``InvalidParameter`` (assumed text)."""
    value = query.get(key) or ""
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise EasError(
            400, "InvalidParameter", f"Specified parameter {key} is not valid: {value!r}."
        ) from None


def _env_of(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's ``env``: EAS's ``[{"name", "value"}]`` (a mapping is accepted too)."""
    env = container.get("env") or []
    if isinstance(env, Mapping):
        return {str(k): str(v) for k, v in env.items()}
    return {str(e["name"]): str(e.get("value", "")) for e in env if isinstance(e, Mapping)}


class AlibabaEmulator:
    """PAI-EAS and OSS on 127.0.0.1 (see the module's text)."""

    def __init__(
        self,
        workdir: Path,
        *,
        region: str = "cn-hangzhou",
        access_key_id: str = "LTAI5tAiaasEmulated",
        access_key_secret: str = "aiaas-emulated-secret",
        bucket: str = "aiaas-bundles",
        container_start_timeout_s: float = 60.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.region = region
        self.access_key_id, self.access_key_secret = access_key_id, access_key_secret
        self.bucket = bucket
        self.container_start_timeout_s = container_start_timeout_s
        self.account_id = "1234567890123456"  # the uid in EAS's endpoint host names
        self.oss = OssEmulator(
            region=region, secrets={access_key_id: access_key_secret}, buckets=(bucket,)
        )
        self._lock = threading.RLock()
        self._services: dict[str, _Service] = {}
        self._calls: CallLog[EasCall] = CallLog()
        self._predict_calls: CallLog[PredictCall] = CallLog()
        self._faults = Faults()
        self._refusals: Refusals[EasError] = Refusals()
        self._sold_out: set[str] = set()  # instance types DescribeMachineSpec has no stock of
        self._fail_next: list[tuple[str, str, tuple[str, ...]]] = []
        self._threads: list[threading.Thread] = []
        self._retired: list[ContainerProcess] = []
        emulator = self

        class Handler(_EasHandler):
            owner = emulator

        self._http = HttpServer(Handler, name="eas-emulator")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start OSS and EAS."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.oss.start()
        try:
            self._http.start()
        except BaseException:
            self.oss.stop()
            raise

    def stop(self) -> None:
        """Stop serving, every container and the rollouts still waiting."""
        self._http.stop()
        self.oss.stop()
        with self._lock:
            services = list(self._services.values())
            for service in services:
                service.generation += 1
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=30)
        containers = [c for s in services for c in (s.container, s.pending) if c is not None]
        with self._lock:
            containers += self._retired
            self._retired = []
        stop_all(containers)
        _writable(self.workdir / "mounts")

    def __enter__(self) -> AlibabaEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the EAS control plane and the services' gateway."""
        return self._http.url

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:<port>``: the EAS SDK's ``Config.endpoint`` (with ``protocol="http"``)."""
        return self.url.split("//", 1)[1]

    @property
    def oss_endpoint(self) -> str:
        """``http://127.0.0.1:<port>``: alibabacloud-oss-v2's ``endpoint`` (path style)."""
        return self.oss.url

    def settings(self) -> dict[str, str]:
        """What a ``pai:`` section needs to reach the emulator (the names adapters/pai's
        settings use): ``region``, ``endpoint`` (``host:port``), ``protocol``,
        ``oss_endpoint`` (a URL), ``oss_bucket``. Neither SDK reads an endpoint from the
        environment, so these are settings, not variables."""
        return {
            "region": self.region,
            "endpoint": self.endpoint,
            "protocol": "http",
            "oss_endpoint": self.oss_endpoint,
            "oss_bucket": self.bucket,
        }

    def env(self) -> dict[str, str]:
        """Variables for a process that talks to the emulator: the access key in the
        credentials chain's variables, the region, ECS metadata off, and the endpoints the
        pai provider takes from the environment in place of its ``pai:`` section's
        (``AIAAS_PAI_EAS_URL``: EAS as ``http://127.0.0.1:<port>``; ``AIAAS_PAI_OSS_URL``:
        OSS, path style). (Not ``AIAAS_PAI_ENDPOINT``: that is a function's data-plane
        endpoint, one per service, which the invoke path looks up when it is unset.)"""
        return {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": self.access_key_id,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": self.access_key_secret,
            "ALIBABA_CLOUD_REGION_ID": self.region,
            "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
            "AIAAS_PAI_EAS_URL": self.url,
            "AIAAS_PAI_OSS_URL": self.oss_endpoint,
        }

    # -- records and scripts -------------------------------------------------------------------
    def calls(self) -> list[EasCall]:
        """Every control-plane request, in order."""
        return self._calls.all()

    def writes(self) -> list[str]:
        """``"<Action> <service>"`` of every write the control plane carried out."""
        return [
            f"{c.action} {c.path.rsplit('/', 1)[-1] if c.action == 'CreateService' else c.path}"
            for c in self._calls.all()
            if c.action in WRITE_ACTIONS and c.status < 300
        ]

    def predict_calls(self) -> list[PredictCall]:
        """Every data-plane request, in order."""
        return self._predict_calls.all()

    def clear_calls(self) -> None:
        """Forget the recorded calls (EAS's and OSS's)."""
        self._calls.clear()
        self._predict_calls.clear()
        self.oss.clear_calls()

    def fail_next_version(
        self, message: str, reason: str = "ContainerStartFailed", *, log: Sequence[str] = ()
    ) -> None:
        """The next version to start (create, update or rollback) ends ``Failed`` with
        ``message`` and a Warning event ``reason``; its container never starts, and ``log``
        is what it printed first (DescribeServiceLog's lines, as they came)."""
        with self._lock:
            self._fail_next.append((reason, message, tuple(log)))

    def sell_out(self, instance_type: str, sold_out: bool = True) -> None:
        """DescribeMachineSpec lists ``instance_type`` as not available (``NoStock``), or again
        with stock. (Gap: EAS still accepts a create here; the real one fails it later.)"""
        with self._lock:
            (self._sold_out.add if sold_out else self._sold_out.discard)(instance_type)

    def refuse_next(
        self,
        action: str,
        status: int,
        code: str = "Throttling.User",
        message: str = "Request was denied due to user flow control.",
        *,
        taken: bool = False,
    ) -> None:
        """The next ``action`` request (``x-acs-action``) is answered ``status`` with
        ``code`` and ``message``; ``taken``: after it was carried out (a lost reply)."""
        self._refusals.add("eas", action, EasError(status, code, message), taken=taken)

    def fault(
        self,
        service: str,
        status: int,
        *,
        times: int | None = None,
        delay_s: float = 0.0,
        probability: float = 1.0,
        seed: int | None = None,
    ) -> None:
        """The service's next ``times`` predictions (None: until cleared) answer ``status``
        (429 rate limit, 450 queue full, 503, ...) after ``delay_s``, each with
        ``probability`` (seeded); 200 with a delay answers normally, slowly."""
        self._faults.set(
            service,
            status,
            times=times,
            code=None,
            delay_s=delay_s,
            probability=probability,
            seed=seed,
        )

    def clear_faults(self) -> None:
        """Forget every scripted fault, refusal and version failure."""
        self._faults.clear()
        self._refusals.clear()
        with self._lock:
            self._fail_next.clear()

    def service_status(self, name: str) -> str | None:
        """The service's ``Status`` (None: no such service)."""
        with self._lock:
            service = self._services.get(name)
            return None if service is None else service.status

    def container_output(self, name: str) -> str:
        """What the service's containers printed so far."""
        with self._lock:
            service = self._services.get(name)
            return "" if service is None else "\n".join(service.output)

    def container_environment(self, name: str) -> dict[str, str]:
        """The environment the serving container got (empty: none serves)."""
        with self._lock:
            service = self._services.get(name)
            return {} if service is None or service.container is None else dict(service.environment)

    def wait(self, name: str, timeout_s: float = 60.0) -> str:
        """Wait until the service is no longer Creating/Updating; its status."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.service_status(name)
            if status not in ("Creating", "Updating") or time.monotonic() > deadline:
                return status or "NotFound"
            time.sleep(0.05)

    # -- control plane -------------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request (``target``: the raw request target)."""
        split = urlsplit(target)
        if split.path.startswith(PREDICT_PREFIX):
            return self._predict(method, split.path, headers, body)
        low = {k.lower(): v for k, v in headers.items()}
        action = low.get("x-acs-action", "")
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        request_id = str(uuid.uuid4()).upper()
        status, answer, code = 200, {}, None
        try:
            why = verify_acs3(
                method,
                split.path,
                split.query,
                low,
                body,
                {self.access_key_id: self.access_key_secret},
            )
            if why is not None:
                raise EasError(400, why, f"Specified signature is not matched ({why}).")
            if low.get("x-acs-version") != API_VERSION:
                raise EasError(400, "InvalidVersion", "Specified parameter Version is not valid.")
            refusal = self._refusals.take("eas", action, query)
            if refusal is not None and not refusal.taken:
                raise refusal.answer
            answer = self._route(method, split.path, query, body)
            if refusal is not None:
                raise refusal.answer
        except EasError as err:
            status, code = err.status, err.code
            answer = {"Code": err.code, "Message": err.message}
        answer["RequestId"] = request_id
        self._calls.add(
            EasCall(
                action,
                method,
                split.path,
                query,
                status,
                code,
                body[:2000].decode("utf-8", "replace"),
            )
        )
        return status, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> dict[str, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts == ["api", "v2", "public", "instance_types"] and method == "GET":
            metas = [
                {**m, "IsAvailable": True, "StockStatus": "WithStock"}
                if m["InstanceType"] not in self._sold_out
                else {**m, "IsAvailable": False, "StockStatus": "NoStock"}
                for m in MACHINE_SPECS
            ]
            return {"InstanceMetas": metas, "Types": []}
        if parts[:3] != ["api", "v2", "services"]:
            raise EasError(404, "InvalidAction.NotFound", f"No route for {method} {path}.")
        rest = parts[3:]
        with self._lock:
            if not rest:
                if method == "POST":
                    return self._create(query, body)
                if method == "GET":
                    return self._list(query)
            elif len(rest) >= 2:
                region, name, sub = rest[0], rest[1], "/".join(rest[2:])
                if region != self.region:
                    raise EasError(400, "InvalidParameter", f"Region {region} is not served here.")
                service = self._services.get(name)
                if service is None:
                    raise EasError(404, "InvalidService.NotFound", f"Service {name} was not found.")
                return self._service_route(method, service, sub, query, body)
        raise EasError(404, "InvalidAction.NotFound", f"No route for {method} {path}.")

    def _service_route(
        self, method: str, service: _Service, sub: str, query: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        if not sub:
            if method == "GET":
                return self._describe(service)
            if method == "PUT":
                return self._update(service, query, body)
            if method == "DELETE":
                self._delete(service)
                return {"Message": f"Service [{service.name}] is deleting."}
        if sub == "versions" and method == "GET":
            versions = [
                {
                    "ImageId": v.number,  # assumed: the version number
                    "BuildTime": v.built,
                    "ServiceConfig": json.dumps(v.config),
                    "Message": v.message,
                    "ImageAvailable": "unknown",
                    "ServiceRunnable": "true",
                }
                for v in sorted(service.versions.values(), key=lambda v: -v.number)
            ]
            return {"Versions": versions, "TotalCount": len(versions), "PageNumber": 1,
                    "PageSize": len(versions)}  # fmt: skip
        if sub == "version" and method == "PUT":
            return self._switch_version(service, body)
        if sub == "autoscaler":
            return self._autoscaler(method, service, body)
        if sub == "logs" and method == "GET":
            keyword = query.get("Keyword", "")
            lines = [line for line in service.output if keyword in line]
            size = max(1, _int_param(query, "PageSize", 100))
            page = max(1, _int_param(query, "PageNum", 1))
            chunk = lines[(page - 1) * size : page * size]
            pages = max(1, -(-len(lines) // size))
            return {"Logs": chunk, "TotalCount": len(lines), "PageNum": page,
                    "TotalPageNum": pages}  # fmt: skip
        if sub == "events" and method == "GET":
            return {"Events": list(service.events), "TotalCount": len(service.events),
                    "PageNum": 1, "TotalPageNum": 1}  # fmt: skip
        raise EasError(404, "InvalidAction.NotFound", f"No route for {method} .../{sub}.")

    def _config(self, body: bytes) -> dict[str, Any]:
        try:
            config = json.loads(body or b"null")
        except ValueError as err:
            raise EasError(
                400, "InvalidParameter", f"The service config is not JSON: {err}"
            ) from err
        if not isinstance(config, dict):
            raise EasError(400, "InvalidParameter", "The service config must be a JSON object.")
        return config

    def _check(self, config: dict[str, Any]) -> None:
        """What EAS refuses in a service config before it starts anything."""
        metadata = config.get("metadata") or {}
        containers = config.get("containers") or []
        if not containers or not all(isinstance(c, dict) and c.get("image") for c in containers):
            # gap: processor services (``processor``/``model_path``) are not emulated
            raise EasError(400, "InvalidParameter", "containers[].image is required.")
        known = {str(m["InstanceType"]) for m in MACHINE_SPECS}
        computing = (config.get("cloud") or {}).get("computing") or {}
        types = [str(i.get("type")) for i in computing.get("instances") or []]
        if metadata.get("instance_type"):
            types.append(str(metadata["instance_type"]))
        for name in types:
            if name not in known:
                raise EasError(
                    400,
                    "InvalidParameter",
                    f"Instance type {name} is not supported in {self.region}.",
                )
        for entry in config.get("storage") or []:
            oss = entry.get("oss") if isinstance(entry, dict) else None
            if oss is not None and not str(oss.get("path", "")).startswith("oss://"):
                raise EasError(
                    400, "InvalidParameter", "storage[].oss.path must start with oss://."
                )
            if oss is not None and not str(entry.get("mount_path", "")).startswith("/"):
                raise EasError(400, "InvalidParameter", "storage[].mount_path must be absolute.")
        instance = metadata.get("instance", 1)
        if isinstance(instance, bool) or not isinstance(instance, int) or instance < 1:
            # assumed: a service starts with at least one instance (the console's minimum);
            # scaling to zero is the autoscaler's (min 0), not metadata.instance's
            raise EasError(
                400,
                "InvalidParameter",
                f"metadata.instance must be a positive integer, not {instance!r}.",
            )
        # metadata.cpu/memory without metadata.resource are accepted: public resources (the
        # ROS ALIYUN::PAI::Service and Terraform alicloud_pai_service examples send just that)
        rpc = metadata.get("rpc") or {}
        if "keepalive" in rpc and not (isinstance(rpc["keepalive"], int) and rpc["keepalive"] > 0):
            raise EasError(
                400, "InvalidParameter", "metadata.rpc.keepalive must be a positive int."
            )

    def _create(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        config = self._config(body)
        name = str((config.get("metadata") or {}).get("name") or "")
        if not NAME_RULE.match(name):
            raise EasError(
                400,
                "InvalidParameter",
                f"Service name {name!r} is invalid: start with a lower-case letter; lower-case "
                "letters, digits and underscores only; at most 64 characters.",
            )  # assumed text
        if name in self._services:
            raise EasError(400, "InvalidService.AlreadyExists", f"Service {name} already exists.")
        self._check(config)
        try:
            labels = json.loads(query.get("Labels") or "{}")
        except ValueError as err:
            raise EasError(400, "InvalidParameter", "Labels must be a JSON object.") from err
        now = _now()
        service = _Service(
            name=name,
            service_id=f"eas-m-{uuid.uuid4().hex[:20]}",
            token=uuid.uuid4().hex + uuid.uuid4().hex[:8],
            labels={str(k): str(v) for k, v in dict(labels).items()},
            workspace_id=query.get("WorkspaceId", ""),
            created=now,
            updated=now,
        )
        service.versions[1] = _Version(1, config, now)
        self._services[name] = service
        self._event(service, "Normal", "ServiceCreated", f"Service {name} is being created.")
        self._rollout(service, 1)
        return {
            "ServiceId": service.service_id,
            "ServiceName": name,
            "Status": "Creating",
            "Region": self.region,
            "InternetEndpoint": self._internet(name),
            "IntranetEndpoint": self._intranet(name),
        }

    def _update(self, service: _Service, query: dict[str, str], body: bytes) -> dict[str, Any]:
        new = self._config(body)
        kind = query.get("UpdateType") or "merge"
        if kind not in ("merge", "replace"):
            raise EasError(400, "InvalidParameter", f"UpdateType {kind} is not merge or replace.")
        config = new if kind == "replace" else _merge(service.versions[service.current].config, new)
        config.setdefault("metadata", {})["name"] = service.name
        self._check(config)
        number = service.latest + 1
        service.versions[number] = _Version(number, config, _now())
        service.latest = service.current = number
        self._event(service, "Normal", "ServiceUpdating", f"Updating to version {number}.")
        self._rollout(service, number, status="Updating")
        return {"Message": f"Service [{service.name}] is updating."}

    def _switch_version(self, service: _Service, body: bytes) -> dict[str, Any]:
        try:
            number = int(json.loads(body or b"{}").get("Version"))
        except (ValueError, TypeError, AttributeError) as err:
            raise EasError(400, "InvalidParameter", "Version must be an integer.") from err
        if not 0 < number < service.current or number not in service.versions:
            raise EasError(
                400,
                "InvalidParameter",
                f"Version {number} must be greater than 0 and smaller than the current "
                f"version {service.current}.",
            )
        service.current = number
        self._event(service, "Normal", "ServiceUpdating", f"Switching to version {number}.")
        self._rollout(service, number, status="Updating")
        return {"Message": f"Service [{service.name}] is switching to version {number}."}

    def _autoscaler(self, method: str, service: _Service, body: bytes) -> dict[str, Any]:
        if method == "GET":
            scaler = service.autoscaler or {}
            return {
                "ServiceName": service.name,
                "MinReplica": scaler.get("min"),
                "MaxReplica": scaler.get("max"),
                "ScaleStrategies": [
                    {k: s.get(k) for k in ("metricName", "threshold", "service") if k in s}
                    for s in scaler.get("scaleStrategies") or []
                ],
                "Behavior": scaler.get("behavior") or {},
                "CurrentMetrics": [],
            }  # fmt: skip
        if method == "DELETE":
            if service.autoscaler is None:
                # assumed: EAS's answer to deleting an autoscaler a service does not have is
                # not documented (DeleteServiceAutoScaler's reference lists no error codes);
                # answered like an update of a missing one, so a client must treat it as gone
                raise EasError(404, "InvalidAutoscaler.NotFound", "The service has no autoscaler.")
            service.autoscaler = None
            return {"Message": "Autoscaler deleted."}
        if method not in ("POST", "PUT"):
            raise EasError(404, "InvalidAction.NotFound", f"No route for {method} autoscaler.")
        spec = self._config(body)
        if method == "PUT":
            if service.autoscaler is None:
                raise EasError(404, "InvalidAutoscaler.NotFound", "The service has no autoscaler.")
            # assumed: an update changes the fields it names and keeps the others
            spec = {**service.autoscaler, **{k: v for k, v in spec.items() if v is not None}}
        low, high = spec.get("min"), spec.get("max")
        if not isinstance(low, int) or not isinstance(high, int) or low < 0:
            raise EasError(400, "InvalidParameter", "min and max must be integers, min >= 0.")
        if high <= low:
            raise EasError(
                400, "InvalidParameter", f"max ({high}) must be greater than min ({low})."
            )
        for strategy in spec.get("scaleStrategies") or []:
            if strategy.get("metricName") not in ("qps", "cpu", "gpu[util]", "gpu"):
                raise EasError(
                    400, "InvalidParameter", f"Unknown metric {strategy.get('metricName')}."
                )
        service.autoscaler = spec
        return {"Message": "Autoscaler updated." if method == "PUT" else "Autoscaler created."}

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        try:
            wanted = json.loads(query.get("Label") or "{}")
        except ValueError as err:
            raise EasError(400, "InvalidParameter", "Label must be a JSON object.") from err
        substring = query.get("Filter", "")
        found = [
            s
            for s in sorted(self._services.values(), key=lambda s: s.created)
            if substring in s.name and all(s.labels.get(k) == str(v) for k, v in wanted.items())
        ]
        size = max(1, _int_param(query, "PageSize", 100))
        page = max(1, _int_param(query, "PageNumber", 1))
        chunk = found[(page - 1) * size : page * size]
        return {"Services": [self._describe(s) for s in chunk], "TotalCount": len(found),
                "PageNumber": page, "PageSize": size}  # fmt: skip

    def _describe(self, service: _Service) -> dict[str, Any]:
        config = service.versions[service.current].config
        metadata = config.get("metadata") or {}
        containers = config.get("containers") or [{}]
        running = 1 if service.container is not None else 0
        return {
            "ServiceName": service.name,
            "ServiceId": service.service_id,
            "Region": self.region,
            "Status": service.status,
            "Message": service.message,
            "Reason": service.reason,
            "CurrentVersion": service.current,
            "LatestVersion": service.latest,
            "AccessToken": service.token,
            "InternetEndpoint": self._internet(service.name),
            "IntranetEndpoint": self._intranet(service.name),
            "ServiceConfig": json.dumps(config),
            "Labels": [{"LabelKey": k, "LabelValue": v} for k, v in service.labels.items()],
            "WorkspaceId": service.workspace_id,
            "Image": containers[0].get("image", ""),
            "Cpu": metadata.get("cpu", 0),
            "Gpu": metadata.get("gpu", 0),
            "Memory": metadata.get("memory", 0),
            "RunningInstance": running,
            "TotalInstance": int(metadata.get("instance", 1) or 1),
            "PendingInstance": 1 if service.pending is not None else 0,
            "CreateTime": service.created,
            "UpdateTime": service.updated,
            "CallerUid": self.account_id,
            "ServiceGroup": "",
            "Weight": 0,
            "TrafficState": "standalone",
        }

    def _internet(self, name: str) -> str:
        return f"{self.url}{PREDICT_PREFIX}{name}"

    def _intranet(self, name: str) -> str:
        # Never reachable from here: EAS's VPC host, shown as EAS shows it.
        return (
            f"http://{self.account_id}.vpc.{self.region}.pai-eas.aliyuncs.com{PREDICT_PREFIX}{name}"
        )

    def _event(self, service: _Service, kind: str, reason: str, message: str) -> None:
        service.events.append({"Time": _now(), "Type": kind, "Reason": reason, "Message": message})

    def _delete(self, service: _Service) -> None:
        service.deleted = True
        service.generation += 1
        del self._services[service.name]
        self._retired += [c for c in (service.container, service.pending) if c is not None]
        service.container = service.pending = None
        self._background(lambda: self._reap())

    def _reap(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        stop_all(retired)

    def _background(self, work: Any) -> None:
        thread = threading.Thread(target=work, daemon=True, name="eas-rollout")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    # -- rollouts ------------------------------------------------------------------------------
    def _rollout(self, service: _Service, number: int, status: str = "Creating") -> None:
        """Start version ``number``'s container on a thread (called under the lock)."""
        service.generation += 1
        service.status, service.message, service.reason = status, "", ""
        service.updated = _now()
        generation = service.generation
        scripted = self._fail_next.pop(0) if self._fail_next else None
        self._background(lambda: self._provision(service, number, generation, scripted))

    def _provision(
        self,
        service: _Service,
        number: int,
        generation: int,
        scripted: tuple[str, str, tuple[str, ...]] | None,
    ) -> None:
        printed: tuple[str, ...] = ()
        if scripted is not None:
            reason, message, printed = scripted
            problem: tuple[str, str] | None = (reason, message)
        else:
            try:
                problem = self._start_version(service, number, generation)
            except Exception as err:  # an emulator bug must still end the rollout
                problem = ("InternalError", f"{type(err).__name__}: {err}")
        with self._lock:
            if service.generation != generation or service.deleted:
                return  # superseded (a newer rollout or a delete owns the service now)
            pending, service.pending = service.pending, None
            if problem is None:
                assert pending is not None
                if service.container is not None:
                    self._retired.append(service.container)
                service.container, service.serving = pending, number
                service.environment = service.pending_environment
                service.status, service.message, service.reason = "Running", "", ""
                self._event(service, "Normal", "Running", f"Version {number} is running.")
            else:
                if pending is not None:
                    self._retired.append(pending)
                reason, message = problem
                service.output.extend(printed)
                service.versions[number].message = message
                service.status, service.message, service.reason = "Failed", message, reason
                self._event(service, "Warning", reason, message)
            service.updated = _now()
        self._reap()

    def _start_version(
        self, service: _Service, number: int, generation: int
    ) -> tuple[str, str] | None:
        """Copy the mounts, start the container, wait for it; None, or (reason, message)."""
        config = service.versions[number].config
        container_spec = (config.get("containers") or [{}])[0]
        root = self.workdir / "mounts" / service.name / f"v{number}.{generation}"
        _writable(root)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        mounts: list[tuple[str, Path]] = []
        for entry in config.get("storage") or []:
            oss = entry.get("oss")
            if oss is None:
                continue  # gap: NAS, git and other mounts are not emulated
            mount_path = str(entry["mount_path"])
            local = root / mount_path.strip("/")
            problem = self._copy(str(oss["path"]), local)
            if problem is not None:
                return "MountFailed", problem  # assumed reason
            if oss.get("readOnly", True):  # gap: assumed default; EAS documents readOnly
                _read_only(local)
            mounts.append((mount_path.rstrip("/") or "/", local))
        environment = _env_of(container_spec)
        for key, value in environment.items():
            for mount_path, local in mounts:
                if value == mount_path or value.startswith(mount_path + "/"):
                    environment[key] = str(local) + value[len(mount_path) :]
        listens = int(environment.get("AIAAS_PORT") or CONTAINER_PORT)
        if int(container_spec.get("port") or 0) != listens:
            return (
                "ContainerStartFailed",
                f"The container listens on port {listens} (AIAAS_PORT) but the service "
                f"config's containers[].port is {container_spec.get('port')}: the readiness "
                "check never succeeds.",
            )  # assumed text
        environment.pop("AIAAS_DEVICE", None)  # gap: a GPU instance runs on this host's CPU
        port = free_port()
        environment.update(AIAAS_PORT=str(port), AIAAS_HOST="127.0.0.1")
        with self._lock:
            if service.generation != generation:
                return None
        container = ContainerProcess.start(
            workdir=root, port=port, environment=environment, on_line=service.output.append
        )
        with self._lock:
            if service.generation != generation:
                self._retired.append(container)
                return None
            service.pending, service.pending_environment = container, environment
        deadline = time.monotonic() + self.container_start_timeout_s
        while True:
            with self._lock:
                if service.generation != generation:
                    return None
            if not container.running():
                return (
                    "ContainerExited",
                    f"Container exited with code {container.process.exitcode} before it was "
                    "ready; see the service log.",
                )
            if container.ping():
                return None
            if time.monotonic() > deadline:
                return (
                    "ContainerNotReady",
                    f"The container was not ready within {self.container_start_timeout_s:.0f} s.",
                )
            time.sleep(0.1)

    def _copy(self, oss_path: str, target: Path) -> str | None:
        """Copy ``oss://bucket/prefix`` into ``target`` (None, or why not)."""
        bucket, _, prefix = oss_path[len("oss://") :].partition("/")
        objects = self.oss.objects(bucket, prefix)
        if not objects:
            return f"Mount failed: no object under {oss_path} (bucket {bucket})."
        target.mkdir(parents=True, exist_ok=True)
        for key, data in objects.items():
            rel = key[len(prefix) :].lstrip("/") if prefix else key
            if not rel or rel.endswith("/"):
                continue  # a "folder" marker object
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return None

    # -- data plane ----------------------------------------------------------------------------
    def _predict(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        name, _, rest = path[len(PREDICT_PREFIX) :].partition("/")
        low = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            service = self._services.get(name)
            token = None if service is None else service.token
            container = None if service is None else service.container
            version = None if service is None else service.serving
            keepalive = DEFAULT_KEEPALIVE_MS
            if service is not None:
                rpc = (service.versions[service.current].config.get("metadata") or {}).get("rpc")
                keepalive = int((rpc or {}).get("keepalive") or DEFAULT_KEEPALIVE_MS)

        def answer(
            status: int, text: str, reached: int | None = None
        ) -> tuple[int, dict[str, str], bytes]:
            self._predict_calls.add(PredictCall(name, reached, status))
            return status, {"Content-Type": "text/plain"}, text.encode()

        if service is None:
            return answer(404, f"Service {name} not found")  # assumed text
        if low.get("authorization") != token:
            return answer(401, "Authorization failed")  # gap: no RAM/STS auth on the gateway
        fault = self._faults.take(name)
        if fault is not None:
            if fault.delay_s > 0:
                time.sleep(fault.delay_s)
            if fault.status != 200:
                return answer(fault.status, FAULT_BODIES.get(fault.status, "Error"))
        if container is None:
            return answer(503, "No healthy instance")  # assumed text
        forward = {k: v for k, v in low.items() if k in ("content-type", "accept", "x-request-id")}
        conn = http.client.HTTPConnection("127.0.0.1", container.port, timeout=keepalive / 1000)
        try:
            conn.request(method, "/" + rest, body=body, headers=forward)
            reply = conn.getresponse()
            data = reply.read()
        except TimeoutError:
            return answer(408, FAULT_BODIES[408], version)
        except (OSError, http.client.HTTPException) as err:
            return answer(502, f"Bad Gateway ({err})", version)
        finally:
            conn.close()
        self._predict_calls.add(PredictCall(name, version, reply.status))
        # the service's own headers come back (its 405's Allow, its Retry-After...), less the
        # hop-by-hop ones and those the gateway's server sets itself (assumed: EAS's gateway
        # is a reverse proxy; which headers it adds or drops is not documented)
        out = {k: v for k, v in reply.getheaders() if k.lower() not in HOP_BY_HOP}
        if not any(k.lower() == "content-type" for k in out):
            out["Content-Type"] = "application/octet-stream"
        return reply.status, out, data


def _read_only(folder: Path) -> None:
    """Files 0444 and folders 0555 under ``folder`` (a read-only mount)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        path.chmod(0o444 if path.is_file() else 0o555)
    folder.chmod(0o555)


def _writable(folder: Path) -> None:
    """Give write access back under ``folder`` so it can be removed."""
    if not folder.exists():
        return
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)


class _EasHandler(KeepAliveHandler):
    owner: AlibabaEmulator

    def _any(self) -> None:
        data = self.body()
        try:
            status, out, body = self.owner.handle(self.command, self.path, dict(self.headers), data)
        except Exception as err:  # an emulator bug: a 500 for the client
            status, out = 500, {"Content-Type": "application/json"}
            body = json.dumps({"Code": "InternalError", "Message": repr(err)}).encode()
        if self.command == "HEAD":
            body = b""  # the status and headers alone
        self.send(status, out, body)

    # Every method the gateway may forward (EAS passes the method to the service: a method
    # the service does not serve is the service's 405, per EAS's status-codes page), and the
    # control plane's unknown ones answered as EAS errors rather than http.server's 501.
    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any


@contextlib.contextmanager
def running(workdir: Path, **kwargs: Any) -> Iterator[AlibabaEmulator]:
    """An :class:`AlibabaEmulator` started in ``workdir`` and stopped after."""
    with AlibabaEmulator(workdir, **kwargs) as emulator:
        yield emulator
