"""AWS for tests: moto's server in-process plus a SageMaker runtime that runs real containers.

:class:`AwsEmulator` serves S3, the SageMaker control plane, Application Auto Scaling and
CloudWatch Logs (moto 5.2.5's ``ThreadedMotoServer`` on 127.0.0.1) and records every request
moto receives (:attr:`AwsEmulator.calls`). On top of moto it runs endpoints the way SageMaker
does: ``CreateEndpoint`` answers at once and leaves the endpoint ``Creating`` while the model's
container starts; the container is ``python -m aiaas.runtime.container serve`` on the model's
``model.tar.gz`` (taken from moto's S3) and the endpoint goes ``InService`` once its ``GET
/ping`` answers 200. ``UpdateEndpoint`` is blue/green: the old container serves until the new
one passes its ping, and its ``BlueGreenUpdatePolicy`` is carried out: a CANARY or LINEAR
update sends ``CanarySize`` (each step, one more ``LinearStepSize``) of the InvokeEndpoint
calls to the new fleet for ``WaitIntervalInSeconds`` a step, then all of them; the old fleet
stops after the baking period (ALL_AT_ONCE) and ``TerminationWaitInSeconds``; past
``MaximumExecutionTimeoutInSeconds`` the update rolls back. The runtime
(:mod:`emulators.sagemaker_runtime`) forwards InvokeEndpoint to the serving container (or,
for its share, the new fleet's). Container output goes to moto's CloudWatch Logs.

Gaps from the real cloud (each also named where it is handled):

- moto makes endpoints ``InService`` at once; the lifecycle above is this module's;
- moto 5.2.5 lacks ``UpdateEndpoint`` (HTTP 500 NotImplemented): this module adds it;
- the model's ``Image`` is not run (no Docker): every model runs aiaas's container entrypoint
  in this interpreter, as a local process;
- one container per variant whatever the instance count; no autoscaling acts on endpoints;
- an update's waits last :attr:`AwsEmulator.wait_scale` times AWS's (1.0 unless a test
  shortens them); no alarm is watched during a bake; a traffic step's share is routed call by
  call in a fixed rotation (see :meth:`AwsEmulator._shift_traffic` for the rest);
- ``DeleteEndpoint`` deletes at once unless a test sets ``deleting_s`` (AWS shows
  ``Deleting`` first, for a time it does not document);
- IAM is off unless a test turns it on (:meth:`AwsEmulator.enforce_iam`: callers' identity
  policies, evaluated by :mod:`emulators.iam`, which names its gaps); the execution role's
  own permissions are never checked (``head_missing_is_403`` stands in for the one S3 rule
  that shows without IAM: a caller without ``s3:ListBucket``);
- every JSON-protocol request is checked against botocore's service model as AWS's front
  end does (:mod:`emulators.validation`, which names its own gaps); S3's REST requests are
  not;
- eventual consistency (``eventual_consistency``; ``stale_describes`` for DescribeEndpoint
  just after an update) and the instance quota (``quota``) are off unless a test turns
  them on; a serverless variant's concurrency quota is not kept.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import http.client
import io
import json
import shutil
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from moto import settings as moto_settings
from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.responses import ActionResult, BaseResponse
from moto.iam.access_control import IAMPolicy, IAMUserAccessKey, S3IAMRequest
from moto.iam.models import iam_backends
from moto.logs.models import logs_backends
from moto.logs.responses import LogsResponse
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends
from moto.sagemaker.exceptions import SagemakerClientError, ValidationError
from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from emulators.faults import CallLog, Refusals
from emulators.fleet import STOP_GRACE_S, ContainerProcess, free_port, stop_all
from emulators.iam import (
    S3_ACTIONS,
    SCALING_ROLE_NAME,
    SCALING_ROLE_PATH,
    SCALING_SERVICE,
    Check,
    checks_for,
    denial,
    evaluate,
)
from emulators.sagemaker_runtime import (
    CONTAINER_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    Caller,
    RuntimeCall,
    SageMakerRuntimeEmulator,
    Target,
)
from emulators.validation import error_code, validator

__all__ = ["ApiCall", "AwsEmulator", "Container", "RuntimeCall"]

# The JSON protocols' X-Amz-Target prefixes, and the service each names.
TARGET_SERVICES = {
    "SageMaker": "sagemaker",
    "AnyScaleFrontendService": "application-autoscaling",
    "Logs_20140328": "logs",
}
# An action is a read when its name starts with one of these (S3: GET and HEAD are reads).
READ_PREFIXES = ("Describe", "List", "Get", "Head", "Search", "Filter", "BatchGet", "BatchDescribe")
PING_FAILED = (
    "The primary container for production variant {variant} did not pass the ping health "
    "check. Please check CloudWatch logs for this endpoint."
)
# AWS's text for a CreateEndpoint/UpdateEndpoint over the account's instance quota, as the
# fidelity notes quote it (finding 10): "Instances" is plural whatever the count.
QUOTA_EXCEEDED = (
    "The account-level service limit '{instance_type} for endpoint usage' is {limit} "
    "Instances, with current utilization of {used} Instances and a request delta of {delta} "
    "Instances. Please use AWS Service Quotas to request an increase for this quota."
)
# A call naming a model or endpoint config AWS cannot see yet (finding 1; CreateEndpoint's
# reference tells callers to retry). The ARN's name is lowercased as SageMaker's ARNs are
# (assumed for these messages).
MODEL_UNSEEN = 'Could not find model "arn:aws:sagemaker:{region}:{account}:model/{name}".'
CONFIG_UNSEEN = (
    'Could not find endpoint configuration "arn:aws:sagemaker:{region}:{account}:'
    'endpoint-config/{name}".'
)
# The calls that create what eventual consistency hides, and the member naming it.
CREATED_NAMES = {
    "CreateModel": ("model", "ModelName"),
    "CreateEndpointConfig": ("config", "EndpointConfigName"),
}
# The IAM user moto's own access control knows the emulator's key pair by (the account's
# root stands in: allowed everything).
ROOT_USER = "aiaas-emulator-root"
ALLOW_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
# The new fleet's VariantStatus message while a traffic step bakes, and the FailureReason of
# an update past its MaximumExecutionTimeoutInSeconds (both texts assumed: not seen in a
# primary source).
BAKING = "Baking for {wait} seconds with traffic enabled on {pct}% of the new fleet's capacity."
TIMED_OUT = (
    "The deployment did not complete within MaximumExecutionTimeoutInSeconds ({limit} "
    "seconds): traffic was rolled back to the old fleet."
)
# Assumed from memory of AWS's text (not seen in a primary source in this work).
MODEL_DATA_FAILED = (
    "Failed to download model data(bucket: {bucket}, key: {key}). Please ensure that there is "
    "an object located at the URL and that the role passed to CreateModel has permissions to "
    "download the model."
)


@dataclass(frozen=True)
class ApiCall:
    """One control-plane request moto received (the emulator's own edits are not requests)."""

    service: str  # "sagemaker", "s3", "application-autoscaling", "logs", ...
    action: str  # "CreateModel", "PutObject", "CreateMultipartUpload", "HeadObject", ...
    write: bool
    params: dict[str, Any]  # JSON body (JSON protocols); S3: bucket, key, query, headers
    key_id: str = ""  # the access key id the request was signed with


@dataclass(frozen=True)
class Container:
    """A running model container (a local process standing in for the instance's)."""

    endpoint: str
    variant: str
    model_name: str
    model_data_url: str
    environment: dict[str, str]
    pid: int
    port: int


# -- request recording ----------------------------------------------------------------------
def _credential(environ: dict[str, Any], query: dict[str, list[str]]) -> list[str]:
    """The SigV4 credential's parts: key id, date, region, service, ``aws4_request``."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    credential = ""
    if "Credential=" in auth:
        credential = auth.split("Credential=", 1)[1].split(",", 1)[0]
    elif "X-Amz-Credential" in query:
        credential = query["X-Amz-Credential"][0]
    return credential.split("/")


def _service_from_auth(environ: dict[str, Any], query: dict[str, list[str]]) -> str | None:
    parts = _credential(environ, query)
    return parts[3] if len(parts) == 5 else None


def _s3_action(method: str, bucket: str, key: str, query: dict[str, list[str]], copy: bool) -> str:
    """S3 REST's operation name from method, path and query (the common operations)."""
    if not bucket:
        return "ListBuckets"
    if key:
        if method == "GET":
            return "ListParts" if "uploadId" in query else "GetObject"
        if method == "HEAD":
            return "HeadObject"
        if method == "PUT":
            if "uploadId" in query:
                return "UploadPartCopy" if copy else "UploadPart"
            if "tagging" in query:
                return "PutObjectTagging"
            return "CopyObject" if copy else "PutObject"
        if method == "POST":
            if "uploads" in query:
                return "CreateMultipartUpload"
            return "CompleteMultipartUpload" if "uploadId" in query else "PostObject"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    else:
        sub = next((q for q in query if q not in ("list-type", "prefix", "delimiter")), "")
        if method == "GET":
            if "uploads" in query:
                return "ListMultipartUploads"
            if sub in ("location", "versioning", "policy", "tagging", "lifecycle", "encryption"):
                return "GetBucket" + sub.capitalize()
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        if method == "HEAD":
            return "HeadBucket"
        if method == "PUT":
            return "PutBucket" + sub.capitalize() if sub else "CreateBucket"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        if method == "DELETE":
            return "DeleteBucket" + sub.capitalize() if sub else "DeleteBucket"
    return f"{method} {bucket}/{key}"


def classify(environ: dict[str, Any], body: bytes | None) -> ApiCall | None:
    """The :class:`ApiCall` a WSGI request stands for (None for moto's own ``/moto-api``)."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/moto-api"):
        return None
    method = environ.get("REQUEST_METHOD", "GET")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    target = environ.get("HTTP_X_AMZ_TARGET")
    service = _service_from_auth(environ, query)
    key_id = _credential(environ, query)[0]
    if target:
        prefix, _, action = target.partition(".")
        service = TARGET_SERVICES.get(prefix, service or prefix)
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {"body": (body or b"").decode(errors="replace")}
        return ApiCall(service, action, not action.startswith(READ_PREFIXES), params, key_id)
    if service == "s3":
        bucket, _, key = unquote(path).lstrip("/").partition("/")
        headers = {
            k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        copy = "x-amz-copy-source" in headers
        action = _s3_action(method, bucket, key, query, copy)
        params = {"bucket": bucket, "key": key, "query": query, "headers": headers}
        return ApiCall("s3", action, method not in ("GET", "HEAD"), params, key_id)
    # Query protocol (Action=... in the form body or the query string).
    form = parse_qs((body or b"").decode(errors="replace")) if body else {}
    fields = {k: v[0] for k, v in {**query, **form}.items()}
    action = fields.get("Action", f"{method} {path}")
    write = not action.startswith(READ_PREFIXES)
    return ApiCall(service or "unknown", action, write, fields, key_id)


@dataclass(frozen=True)
class Refusal:
    """A scripted AWS error for one control-plane call (see :meth:`AwsEmulator.refuse_next`)."""

    status: int
    code: str
    message: str
    taken: bool = False  # moto carries the call out first: only the answer is the error
    s3: bool = False  # S3's REST-XML error (a HEAD's answer has no body)
    head: bool = False

    def response(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """The JSON protocols' error response (``__type`` and ``message``, as botocore reads
        them), or S3's XML one."""
        reason = http.client.responses.get(self.status, "Error")
        request_id = str(uuid.uuid4())
        if self.s3:
            body = (
                b""
                if self.head
                else (
                    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
                    f"{self.code}</Code><Message>{self.message}</Message>"
                    f"<RequestId>{request_id}</RequestId></Error>"
                ).encode()
            )
            headers = [
                ("Content-Type", "application/xml"),
                ("Content-Length", str(len(body))),
                ("x-amz-request-id", request_id),
            ]
            return f"{self.status} {reason}", headers, body
        body = json.dumps({"__type": self.code, "message": self.message}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", request_id),
        ]
        return f"{self.status} {reason}", headers, body


class _Recorder:
    """WSGI middleware in front of moto: records each request as an :class:`ApiCall`, and
    answers a scripted :class:`Refusal` in moto's place."""

    def __init__(
        self,
        app: Any,
        record: Callable[[ApiCall], None],
        refusal: Callable[[ApiCall], Refusal | None],
    ) -> None:
        self.app, self.record, self.refusal = app, record, refusal

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body: bytes | None = None
        is_s3 = _service_from_auth(environ, parse_qs(environ.get("QUERY_STRING", ""))) == "s3"
        length = environ.get("CONTENT_LENGTH")
        if not is_s3 and length and length.isdigit():  # S3 bodies are not recorded (not read)
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
        call = classify(environ, body)
        if call is not None:
            self.record(call)
            refused = self.refusal(call)
            if refused is not None:
                if refused.taken:  # moto's answer is dropped, as a lost or failed reply is
                    answered = self.app(environ, lambda *args, **kwargs: lambda data: None)
                    for _ in answered:
                        pass
                status, headers, body = refused.response()
                start_response(status, headers)
                return [body]
        return self.app(environ, start_response)


class _RecordingMotoServer(ThreadedMotoServer):
    """moto's threaded server with :class:`_Recorder` wrapped around its WSGI app."""

    def __init__(
        self, record: Callable[[ApiCall], None], refusal: Callable[[ApiCall], Refusal | None]
    ) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._record, self._refusal = record, refusal

    def _server_entry(self) -> None:  # moto's own, plus the recorder
        app = _Recorder(
            DomainDispatcherApplication(create_backend_app), self._record, self._refusal
        )
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


# -- moto patches: the lifecycle hooks and UpdateEndpoint -------------------------------------
_EMULATORS: dict[tuple[str, str], AwsEmulator] = {}
_PATCHED = False
_ORIGINAL: dict[str, Callable[..., Any] | None] = {}


def _emulator_for(resp: SageMakerResponse) -> AwsEmulator | None:
    return _EMULATORS.get((resp.current_account, resp.region))


def _endpoint_arn(backend: SageMakerModelBackend, name: str) -> str:
    return str(FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name))


def _create_endpoint(self: SageMakerResponse) -> ActionResult:
    """moto's CreateEndpoint, then ``Creating`` while the container starts (emulated)."""
    emulator = _emulator_for(self)
    if emulator is None:
        created: ActionResult = _original("create_endpoint")(self)
        return created
    name = self._get_param("EndpointName")
    with emulator._lock:
        backend = self.sagemaker_backend
        if name in backend.endpoints:  # moto would silently replace it
            arn = _endpoint_arn(backend, name)
            raise ValidationError(message=f'Cannot create already existing endpoint "{arn}".')
        config = backend.endpoint_configs.get(self._get_param("EndpointConfigName"))
        fleet = _fleet(config.production_variants if config is not None else [], None)
        problem = emulator._quota_problem(fleet)
        if problem:
            raise ResourceLimitExceeded(problem)
        result: ActionResult = _original("create_endpoint")(self)
        emulator._begin(name, "create", self._get_param("EndpointConfigName"), fleet=fleet)
    return result


def _update_endpoint(self: SageMakerResponse) -> ActionResult:
    """UpdateEndpoint, which moto 5.2.5 lacks (it answers 500 NotImplemented): added here.

    Checked as AWS does: the endpoint and the new config must exist, and the endpoint must be
    InService or UpdateRollbackFailed (the error texts for a missing endpoint/config are
    moto's; the others are assumed). The deployment guardrails' rules are enforced
    (:func:`_guardrail_problem`). ``RetainAllVariantProperties`` keeps the variant's current
    instance count for the new fleet (unless ``ExcludeRetainedVariantProperties`` names
    ``DesiredInstanceCount``). The ``BlueGreenUpdatePolicy`` is carried out by
    :meth:`AwsEmulator._shift_traffic` and :meth:`AwsEmulator._run_op` (canary and linear
    steps, the all-at-once baking period, ``TerminationWaitInSeconds``,
    ``MaximumExecutionTimeoutInSeconds``); DescribeEndpoint shows it in
    ``PendingDeploymentSummary`` and ``LastDeploymentConfig``. Gaps: no alarm is watched
    during a bake (``AutoRollbackConfiguration`` is checked, not acted on);
    ``RollingUpdatePolicy`` and ``RetainDeploymentConfig`` are accepted, not acted on (a
    rolling update switches all at once).
    """
    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    config_name = self._get_param("EndpointConfigName")
    emulator = _emulator_for(self)
    with emulator._lock if emulator is not None else contextlib.nullcontext():
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(
                message=f"Could not find endpoint '{_endpoint_arn(backend, name)}'."
            )
        config = backend.describe_endpoint_config(config_name)  # ValidationException if missing
        if endpoint.endpoint_status not in ("InService", "UpdateRollbackFailed"):
            raise ValidationError(
                message=f'Cannot update in-progress endpoint "{_endpoint_arn(backend, name)}".'
            )
        current = (endpoint.production_variants or [{}])[0].get("CurrentInstanceCount")
        retain = bool(self._get_param("RetainAllVariantProperties"))
        excluded = {
            e.get("VariantPropertyType")
            for e in self._get_param("ExcludeRetainedVariantProperties") or []
        }
        retained = current if retain and "DesiredInstanceCount" not in excluded else None
        problem = _guardrail_problem(
            self._get_param("DeploymentConfig"),
            config["ProductionVariants"],
            retained,
            _scaled_instance_type(backend, endpoint),
        )
        problem = problem or _missing_alarms(backend, self._get_param("DeploymentConfig"))
        if problem:
            raise ValidationError(message=problem)
        fleet = _fleet(config["ProductionVariants"], retained)
        if emulator is not None:
            problem = emulator._quota_problem(fleet)
            if problem:  # the old fleet serves on: nothing changes
                raise ResourceLimitExceeded(problem)
        if emulator is None:  # plain moto: switch at once
            endpoint.endpoint_config_name = config_name
            endpoint.production_variants = endpoint._process_production_variants(
                config["ProductionVariants"]
            )
        else:
            emulator._remember_stale(name, endpoint.response_object)
            deployment = self._get_param("DeploymentConfig")
            if deployment:
                # DescribeEndpoint's LastDeploymentConfig, "the most recent deployment
                # configuration for the endpoint" (botocore's model): shown from the update's
                # start (assumed; AWS does not say when it changes).
                endpoint.last_deployment_config = deployment  # type: ignore[attr-defined]
            endpoint.endpoint_status = "Updating"
            endpoint.failure_reason = None  # AWS clears the last failure when an update starts
            endpoint.last_modified_time = dt.datetime.now(dt.UTC)
            # While updating, DescribeEndpoint keeps the old config and shows the new one here.
            endpoint.pending_deployment_summary = {  # type: ignore[attr-defined]
                "EndpointConfigName": config_name,
                "StartTime": endpoint.last_modified_time,
                "ProductionVariants": [
                    {
                        "VariantName": v["VariantName"],
                        "DesiredInstanceCount": retained or v.get("InitialInstanceCount", 1),
                        "InstanceType": v.get("InstanceType"),
                        "VariantStatus": [
                            {"Status": "Creating", "StartTime": endpoint.last_modified_time}
                        ],
                    }
                    for v in config["ProductionVariants"]
                ],
            }
            emulator._begin(
                name, "update", config_name, retained, fleet=fleet, deployment=deployment
            )
    return ActionResult({"EndpointArn": endpoint.arn})


class ResourceLimitExceeded(SagemakerClientError):
    """SageMaker's ResourceLimitExceeded (HTTP 400), raised inside moto's dispatch."""

    code = "ResourceLimitExceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message)


def _fleet(variants: Iterable[dict[str, Any]], retained: int | None) -> dict[str, int]:
    """The instances a config's variants run, by instance type (``retained``: the count
    RetainAllVariantProperties keeps). Serverless variants run none (their concurrency
    quota is not kept: a gap)."""
    fleet: dict[str, int] = {}
    for variant in variants:
        kind = variant.get("InstanceType")
        if not kind or "ServerlessConfig" in variant:
            continue
        count = retained if retained is not None else int(variant.get("InitialInstanceCount") or 1)
        fleet[kind] = fleet.get(kind, 0) + count
    return fleet


def _guardrail_problem(
    deployment: dict[str, Any] | None,
    variants: list[dict[str, Any]],
    retained: int | None,
    scaled_type: str | None,
) -> str | None:
    """What AWS refuses in an UpdateEndpoint's ``DeploymentConfig`` against the new config
    (the texts are assumed; the rules are botocore's documentation of the fields):

    - a serverless variant takes no deployment guardrails ("Deployment guardrails apply only
      to Asynchronous inference and Real-time inference endpoint types");
    - ``CanarySize`` is at most 50 % and ``LinearStepSize`` 10-50 % of the variant's
      instance count (``TrafficRoutingConfig``): with one instance there is no such share;
    - ``MaximumExecutionTimeoutInSeconds`` is 600-28800 (``BlueGreenUpdatePolicy``);
    - a variant registered with Application Auto Scaling keeps its instance type ("you can't
      change the instance type ... deregister the endpoint from auto scaling first",
      endpoint-scaling-update.html)."""
    variant = variants[0] if variants else {}
    if scaled_type is not None and variant.get("InstanceType") != scaled_type:
        return (
            "The instance type of a variant registered as a scalable target cannot be "
            "changed: deregister it from Application Auto Scaling first."
        )
    if not deployment:
        return None
    if "ServerlessConfig" in variant:
        return "DeploymentConfig is not supported for endpoints with serverless variants."
    policy = deployment.get("BlueGreenUpdatePolicy") or {}
    timeout = policy.get("MaximumExecutionTimeoutInSeconds")
    if timeout is not None and not 600 <= int(timeout) <= 28800:
        return f"MaximumExecutionTimeoutInSeconds {timeout} is outside 600-28800."
    routing = policy.get("TrafficRoutingConfiguration") or {}
    size = routing.get("CanarySize") or routing.get("LinearStepSize")
    if routing.get("Type") in ("CANARY", "LINEAR") and size:
        count = retained or int(variant.get("InitialInstanceCount") or 1)
        share = size["Value"] / (count if size["Type"] == "INSTANCE_COUNT" else 100)
        if count < 2 or share > 0.5:
            return (
                f"{routing['Type']} traffic routing of {size['Value']} {size['Type']} is not "
                f"possible on {count} instance(s): the size must be at most 50% of the "
                "variant's instance count."
            )
    return None


def _missing_alarms(
    backend: SageMakerModelBackend, deployment: dict[str, Any] | None
) -> str | None:
    """AutoRollbackConfiguration's alarms that do not exist in CloudWatch (moto's backend),
    as AWS refuses them at UpdateEndpoint (the text is assumed; the rule is that SageMaker
    watches existing alarms)."""
    alarms = ((deployment or {}).get("AutoRollbackConfiguration") or {}).get("Alarms") or []
    known = cloudwatch_backends[backend.account_id][backend.region_name].alarms
    missing = [a.get("AlarmName") for a in alarms if a.get("AlarmName") not in known]
    if not missing:
        return None
    named = ", ".join(str(m) for m in missing)
    return f"The alarm(s) [{named}] named in AutoRollbackConfiguration do not exist."


def _scaled_instance_type(backend: SageMakerModelBackend, endpoint: Any) -> str | None:
    """The live variant's instance type when it is registered as a scalable target."""
    scaling = applicationautoscaling_backends[backend.account_id][backend.region_name]
    resource = f"endpoint/{endpoint.endpoint_name}/variant/AllTraffic"
    if not any(resource in targets for targets in scaling.targets.values()):
        return None
    live = backend.endpoint_configs.get(endpoint.endpoint_config_name)
    variants = live.production_variants if live is not None else []
    return str(variants[0].get("InstanceType")) if variants else None


def _delete_endpoint(self: SageMakerResponse) -> ActionResult:
    """DeleteEndpoint: the containers stop at once; the endpoint goes at once (moto's), or
    under :attr:`AwsEmulator.deleting_s` stays ``Deleting`` that long first, as on AWS,
    where DescribeEndpoint shows it, InvokeEndpoint is refused, and a CreateEndpoint of
    the name fails as for any existing endpoint. A second DeleteEndpoint meanwhile is
    accepted and changes nothing (assumed: AWS does not document it)."""
    emulator = _emulator_for(self)
    if emulator is None:
        deleted: ActionResult = _original("delete_endpoint")(self)
        return deleted
    name = self._get_param("EndpointName")
    with emulator._lock:
        endpoint = self.sagemaker_backend.endpoints.get(name)
        if endpoint is None or emulator.deleting_s <= 0:
            result: ActionResult = _original("delete_endpoint")(self)  # ValidationException
        else:
            if endpoint.endpoint_status != "Deleting":
                endpoint.endpoint_status = "Deleting"
                endpoint.last_modified_time = dt.datetime.now(dt.UTC)
                emulator._later(emulator.deleting_s, emulator._gone, name, endpoint)
            result = ActionResult({})
    emulator._retire(name)
    return result


def _describe_endpoint(self: SageMakerResponse) -> ActionResult:
    """moto's DescribeEndpoint, or under :attr:`AwsEmulator.stale_describes` the endpoint as
    it was before the last UpdateEndpoint (AWS's eventual consistency: finding 16)."""
    emulator = _emulator_for(self)
    stale = emulator._stale_view(self._get_param("EndpointName")) if emulator else None
    if stale is not None:
        return ActionResult(stale)
    described: ActionResult = _original("describe_endpoint")(self)
    return described


def _moto_resource(self: BaseResponse) -> str:
    """The resource moto's own access control checks a SageMaker or Logs call on (its
    default, ``*``, matches no statement scoped to an ARN): the one :mod:`emulators.iam`
    names for the call."""
    try:
        params = json.loads(self.body or "{}")
    except ValueError:
        params = {}
    service = "sagemaker" if isinstance(self, SageMakerResponse) else "logs"
    found = checks_for(
        service, self._get_action(), params, region=self.region, account=self.current_account
    )
    return found[0].resource if found else "*"


def _s3_iam_request(self: S3IAMRequest, *args: Any, **kwargs: Any) -> None:
    """moto's S3 authorization, checking the IAM action AWS checks: moto 5.2.6 checks the
    operation's name (``s3:ListObjectsV2``, ``s3:HeadObject``, ``s3:HeadBucket``,
    ``s3:CreateMultipartUpload``), which no policy grants; AWS checks ``s3:ListBucket``,
    ``s3:GetObject``, ``s3:ListBucket`` and ``s3:PutObject`` for them."""
    _original("s3_iam_request")(self, *args, **kwargs)
    self._action = S3_ACTIONS.get(self._action.partition(":")[2], self._action)


def _original(action: str) -> Callable[..., Any]:
    """moto's own response method for ``action`` (one the patch replaced)."""
    found = _ORIGINAL[action]
    assert found is not None, action
    return found


def _install_patches() -> None:
    """Patch moto's SageMaker responses once per process (dispatching per account/region)."""
    global _PATCHED
    if _PATCHED:
        return
    _ORIGINAL["create_endpoint"] = SageMakerResponse.create_endpoint
    _ORIGINAL["delete_endpoint"] = SageMakerResponse.delete_endpoint
    _ORIGINAL["describe_endpoint"] = SageMakerResponse.describe_endpoint
    # None while moto lacks UpdateEndpoint (tests/test_aws_emulator.py fails once it has it:
    # then its behaviour must be weighed against this patch's).
    _ORIGINAL["update_endpoint"] = getattr(SageMakerResponse, "update_endpoint", None)
    SageMakerResponse.create_endpoint = _create_endpoint  # type: ignore[method-assign]
    SageMakerResponse.delete_endpoint = _delete_endpoint  # type: ignore[method-assign]
    SageMakerResponse.describe_endpoint = _describe_endpoint  # type: ignore[method-assign]
    SageMakerResponse.update_endpoint = _update_endpoint  # type: ignore[attr-defined]
    SageMakerResponse._determine_resource = _moto_resource  # type: ignore[attr-defined]
    _ORIGINAL["s3_iam_request"] = S3IAMRequest.__init__
    S3IAMRequest.__init__ = _s3_iam_request  # type: ignore[method-assign,assignment]
    LogsResponse._determine_resource = _moto_resource  # type: ignore[attr-defined]
    _PATCHED = True


# -- containers ---------------------------------------------------------------------------------
@dataclass
class _Proc:
    """One container and what it runs."""

    info: Container
    container: ContainerProcess
    base_dir: Path
    log_stream: str


@dataclass
class _Op:
    """A CreateEndpoint or UpdateEndpoint in progress."""

    kind: str  # "create" | "update"
    config_name: str
    started: float
    cancel: threading.Event = field(default_factory=threading.Event)
    procs: list[_Proc] = field(default_factory=list)
    thread: threading.Thread | None = None
    variants: list[dict[str, Any]] = field(default_factory=list)  # the config's, at the start
    retained: int | None = None  # the instance count kept by RetainAllVariantProperties
    fleet: dict[str, int] = field(default_factory=dict)  # instances by type (the quota's)
    deployment: dict[str, Any] = field(default_factory=dict)  # UpdateEndpoint's DeploymentConfig
    share: int = 0  # percent of InvokeEndpoint calls the new fleet answers while the old serves


@dataclass
class _Live:
    """An endpoint's containers: the serving ones and the operation in progress."""

    serving: list[_Proc] = field(default_factory=list)
    op: _Op | None = None
    fleet: dict[str, int] = field(default_factory=dict)  # the serving instances, by type
    serverless: bool = False  # the serving config's variant has a ServerlessConfig
    in_service_at: float | None = None  # time.monotonic() when the serving fleet came up


_MODEL_LOADER: list[Any] = []  # botocore's loader of service models (AwsEmulator.client)


class AwsEmulator:
    """moto's server in-process (S3, SageMaker control plane, Application Auto Scaling,
    CloudWatch Logs) plus a SageMaker runtime emulator that runs each endpoint's model the
    way the container would."""

    ACCOUNT = "123456789012"  # moto's default account

    def __init__(
        self,
        workdir: Path,
        *,
        region: str = "us-east-1",
        access_key: str = "AKIAIOSFODNN7EXAMPLE",
        secret_key: str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        min_transition_s: float = 0.3,
        container_start_timeout_s: float = 90.0,
        session_token: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.region, self.access_key, self.secret_key = region, access_key, secret_key
        self.session_token = session_token  # when set, InvokeEndpoint must carry it
        self.min_transition_s = min_transition_s
        self.container_start_timeout_s = container_start_timeout_s
        # How long an update's waits (WaitIntervalInSeconds, TerminationWaitInSeconds) last
        # here, as a fraction of AWS's (gap: 1.0 is AWS's time; tests set it small).
        self.wait_scale = 1.0
        self.gpu_unusable = False  # True: GPU instances' containers find no CUDA (see _spawn)
        # Every JSON-protocol request is checked against botocore's model (refused as AWS
        # refuses it); each refusal's (service, action, message) is kept in violations.
        self.validate = True
        self.violations: CallLog[tuple[str, str, str]] = CallLog()
        # N > 0: a model or endpoint config just created is invisible to the next N calls
        # naming it (AWS's eventual consistency, finding 1).
        self.eventual_consistency = 0
        # N > 0: the next N DescribeEndpoint calls after an UpdateEndpoint still show the
        # endpoint as it was before it (InService on the old config): finding 16.
        self.stale_describes = 0
        # > 0: DeleteEndpoint leaves the endpoint Deleting this many seconds, then it is gone.
        self.deleting_s = 0.0
        self._stale: dict[str, tuple[dict[str, Any], int]] = {}  # name: (view, calls left)
        self._timers: list[threading.Timer] = []
        # Instances allowed per instance type ({"ml.m5.xlarge": 1}), the account's
        # "<type> for endpoint usage" quota; a type not named has no limit.
        self.quota: dict[str, int] = {}
        # True: HeadObject/GetObject of a missing key answer 403, as AWS does for a caller
        # without s3:ListBucket on the bucket (finding 2); no IAM is evaluated.
        self.head_missing_is_403 = False
        # Every authorization IAM made (enforce_iam): (principal ARN, check, verdict).
        self.iam_checks: CallLog[tuple[str, Check, str]] = CallLog()
        self._iam = False
        self._unseen: dict[tuple[str, str], int] = {}  # ("model"|"config", name): calls left
        self._calls: CallLog[ApiCall] = CallLog()
        self._lock = threading.RLock()
        self._live: dict[str, _Live] = {}
        self._scripted: dict[str, str] = {}
        self._refusals: Refusals[Refusal] = Refusals()
        self._moto: _RecordingMotoServer | None = None
        self._runtime = SageMakerRuntimeEmulator(
            self.resolve,
            account=self.ACCOUNT,
            region=region,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            callers=self._runtime_caller,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start moto and the runtime emulator on free ports of 127.0.0.1."""
        key = (self.ACCOUNT, self.region)
        if key in _EMULATORS:
            raise RuntimeError(f"an AwsEmulator already runs for {key} in this process")
        _install_patches()
        alone = not _EMULATORS
        self._moto = _RecordingMotoServer(self._record, self._refusal)
        self._moto.start()
        self._runtime.start()
        _EMULATORS[key] = self
        if alone:  # moto's backends are the process's: a stopped emulator's state is there
            self.reset()  # (and a running one's, in another region, which must stay)

    def stop(self) -> None:
        """Stop every container, the runtime emulator and moto (no process is left)."""
        _EMULATORS.pop((self.ACCOUNT, self.region), None)
        self._iam_off()
        self._stop_all_containers()
        self._runtime.stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def __enter__(self) -> AwsEmulator:
        self.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """moto's URL, ``http://127.0.0.1:<port>``."""
        assert self._moto is not None, "start() first"
        host, port = self._moto.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def runtime_url(self) -> str:
        """The runtime emulator's URL, ``http://127.0.0.1:<port>``."""
        return self._runtime.url

    def env(self) -> dict[str, str]:
        """The variables that send every boto3 client here, with the emulated credentials."""
        token = {"AWS_SESSION_TOKEN": self.session_token} if self.session_token else {}
        return token | {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.runtime_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client of ``service`` pointed here (a fresh session: no cached state)."""
        import boto3

        kwargs.setdefault(
            "endpoint_url", self.runtime_url if service == "sagemaker-runtime" else self.url
        )
        session = boto3.session.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            region_name=self.region,
        )
        # The session's state is fresh; botocore's service models (read-only JSON, about
        # 40 ms of CPU per client to read again) come from one loader kept for the process.
        if _MODEL_LOADER:
            session._session.register_component("data_loader", _MODEL_LOADER[0])
        else:
            _MODEL_LOADER.append(session._session.get_component("data_loader"))
        return session.client(service, **kwargs)  # type: ignore[call-overload]

    def reset(self) -> None:
        """Clear moto's state, stop every container, forget calls, faults and scripts."""
        self._stop_all_containers()
        self._iam_off()
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        try:
            conn.request("POST", "/moto-api/reset")
            conn.getresponse().read()
        finally:
            conn.close()
        with self._lock:
            self._calls.clear()
            self._scripted.clear()
            self._refusals.clear()
            self._unseen.clear()
            self.violations.clear()
            self.gpu_unusable = False
            self.validate = True
            self.eventual_consistency = 0
            self.stale_describes = 0
            self.deleting_s = 0.0
            self.wait_scale = 1.0
            self._stale.clear()
            self.quota = {}
            self.head_missing_is_403 = False
            self.iam_checks.clear()
        self._runtime.clear()
        self._runtime.container_timeout_s = CONTAINER_TIMEOUT_S
        self._runtime.clock_skew_s = 0.0
        self._runtime.serverless_cold_start_s = 0.0
        self._runtime.idle_timeout_s = IDLE_TIMEOUT_S

    # -- records and faults -----------------------------------------------------------------
    @property
    def calls(self) -> list[ApiCall]:
        """Every control-plane request moto received, in order."""
        return self._calls.all()

    def _record(self, call: ApiCall) -> None:
        self._calls.add(call)

    def _refusal(self, call: ApiCall) -> Refusal | None:
        """AWS's answer in moto's place, if the call gets one: IAM's AccessDenied, a
        constraint violation, a missing S3 key's 403, a model or config not visible yet, or
        a scripted refusal (in that order: AWS authorizes a request, then validates it,
        before it looks anything up)."""
        denied = self._authorize(call)
        if denied is not None:
            return denied
        if self.validate and call.service in TARGET_SERVICES.values():
            problem = validator(call.service).problem(call.action, call.params)
            if problem is not None:
                self.violations.add((call.service, call.action, problem))
                return Refusal(400, error_code(call.service), problem)
        if call.service == "s3":
            return self._s3_refusal(call)
        if call.service == "sagemaker":
            unseen = self._unseen_refusal(call)
            if unseen is not None:
                return unseen
        scripted = self._refusals.take(call.service, call.action, call.params)
        if scripted is None or scripted.taken:
            self._created(call)
        return None if scripted is None else scripted.answer

    def _s3_refusal(self, call: ApiCall) -> Refusal | None:
        """A missing key in an existing bucket is 403 AccessDenied for HeadObject (no body:
        botocore reports "403"/"Forbidden") and GetObject, as AWS answers a caller without
        s3:ListBucket on the bucket (finding 2): every caller under ``head_missing_is_403``,
        and under :meth:`enforce_iam` an IAM user whose policies do not allow s3:ListBucket
        with no ``s3:prefix`` (a HEAD carries none: a prefix-conditioned grant does not
        count here, which AWS does not document either way)."""
        if call.action not in ("HeadObject", "GetObject"):
            return None
        if not (self.head_missing_is_403 or self._lacks_list_bucket(call)):
            return None
        bucket, key = call.params["bucket"], call.params["key"]
        with self._lock:
            backend = s3_backends[self.ACCOUNT]["aws"]
            if bucket not in backend.buckets:
                return None  # moto's NoSuchBucket answers
            if backend.get_object(bucket, key) is not None:
                return None
        return Refusal(403, "AccessDenied", "Access Denied", s3=True,
                       head=call.action == "HeadObject")  # fmt: skip

    # -- IAM ---------------------------------------------------------------------------------
    def enforce_iam(self) -> None:
        """Turn IAM on until :meth:`reset` or :meth:`stop`: every request must then be signed
        by this emulator's own key pair (the account's root: allowed everything) or by an IAM
        user's (:meth:`create_user`), whose policies decide each call as
        :mod:`emulators.iam` evaluates them (the call's own action on its resource ARN, with
        its condition context, and what AWS checks on the caller's behalf). Control-plane
        calls are also put through moto's own access control (its signature check and its
        action check; the switch is process-wide in moto, so it is on only while this is).
        InvokeEndpoint is checked by the runtime emulator against ``sagemaker:InvokeEndpoint``
        on the endpoint's ARN. Gap: only the JSON-protocol services and S3 get this module's
        evaluation; the query-protocol ones (IAM, STS, CloudWatch) get moto's alone."""
        if self.session_token:
            raise RuntimeError("enforce_iam: the emulator's key pair must have no session token")
        with self._lock:
            backend = iam_backends[self.ACCOUNT]["aws"]
            backend.create_user(self.region, ROOT_USER)
            backend.put_user_policy(ROOT_USER, "all", json.dumps(ALLOW_ALL))
            key = backend.create_access_key(ROOT_USER)
            key.access_key_id, key.secret_access_key = self.access_key, self.secret_key
            self._iam = True
            moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # moto checks from the next call

    def create_user(self, name: str, policy: dict[str, Any]) -> tuple[str, str]:
        """An IAM user holding exactly ``policy`` (one inline policy): its access key id and
        secret (see :meth:`enforce_iam`)."""
        with self._lock:
            backend = iam_backends[self.ACCOUNT]["aws"]
            backend.create_user(self.region, name)
            backend.put_user_policy(name, f"{name}-policy", json.dumps(policy))
            key = backend.create_access_key(name)
        return key.access_key_id, key.secret_access_key

    def _iam_off(self) -> None:
        if self._iam:
            moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
            self._iam = False

    def _iam_user(self, key_id: str) -> tuple[str, str, list[dict[str, Any]]] | None:
        """An IAM user's ARN, secret and policy documents, by access key id (moto's IAM)."""
        try:
            user = IAMUserAccessKey(self.ACCOUNT, "aws", key_id, {})
        except Exception:  # moto's CreateAccessKeyFailure: no such key
            return None
        documents = [IAMPolicy(p)._policy_json for p in user.collect_policies()]
        return user.arn, user.create_credentials().secret_key, documents

    def _checks(self, call: ApiCall) -> list[Check]:
        """What AWS authorizes for ``call`` (called under the lock)."""
        config = None
        resource_id = str(call.params.get("ResourceId", ""))
        if call.action == "RegisterScalableTarget" and resource_id.startswith("endpoint/"):
            found = self._sagemaker().endpoints.get(resource_id.split("/")[1])
            config = found.endpoint_config_name if found is not None else None
        roles = iam_backends[self.ACCOUNT]["aws"].roles.values()
        return checks_for(
            call.service,
            call.action,
            call.params,
            region=self.region,
            account=self.ACCOUNT,
            scaling_role_exists=any(r.name == SCALING_ROLE_NAME for r in roles),
            endpoint_config=config,
        )

    def _authorize(self, call: ApiCall) -> Refusal | None:
        """IAM's AccessDenied for an IAM user's call its policies do not allow (None: allowed,
        or IAM is off, or the key is the root's or unknown: moto answers an unknown one).
        The JSON protocols' AccessDeniedException is answered with HTTP 400 (assumed) and
        S3's AccessDenied with 403, both with IAM's "User: ... is not authorized to perform:
        ..." text. Registering a SageMaker scalable target creates the service-linked role
        it needs, as Application Auto Scaling does."""
        if not self._iam or call.key_id == self.access_key:
            return None
        if call.service != "s3" and call.service not in TARGET_SERVICES.values():
            return None
        user = self._iam_user(call.key_id)
        if user is None:
            return None
        arn, _, policies = user
        with self._lock:
            checks = self._checks(call)
        for check in checks:
            verdict = evaluate(policies, check)
            self.iam_checks.add((arn, check, verdict))
            if verdict != "allow":
                said = denial(arn, check, verdict)
                if call.service == "s3":
                    head = call.action.startswith("Head")
                    return Refusal(403, "AccessDenied", said, s3=True, head=head)
                return Refusal(400, "AccessDeniedException", said)
        if any(c.action == "iam:CreateServiceLinkedRole" for c in checks):
            with self._lock:
                iam_backends[self.ACCOUNT]["aws"].create_role(
                    SCALING_ROLE_NAME,
                    json.dumps({"Version": "2012-10-17", "Statement": []}),
                    SCALING_ROLE_PATH,
                    None,
                    "created by registering a scalable target",
                    [],
                    None,
                    linked_service=SCALING_SERVICE,
                )
        return None

    def _lacks_list_bucket(self, call: ApiCall) -> bool:
        """Under IAM, whether the caller's policies leave out s3:ListBucket on the call's
        bucket with no ``s3:prefix`` in the context."""
        if not self._iam or call.key_id == self.access_key:
            return False
        user = self._iam_user(call.key_id)
        if user is None:
            return False
        check = Check("s3:ListBucket", f"arn:aws:s3:::{call.params['bucket']}")
        return evaluate(user[2], check) != "allow"

    def _runtime_caller(self, key_id: str) -> Caller | None:
        """Who signed an InvokeEndpoint with ``key_id``: the emulator's own key pair, or
        under :meth:`enforce_iam` an IAM user, whose policies decide the action."""
        if key_id == self.access_key:
            return Caller(self.secret_key, self.session_token)
        user = self._iam_user(key_id) if self._iam else None
        if user is None:
            return None
        arn, secret, policies = user

        def denied(action: str, resource: str) -> str | None:
            check = Check(action, resource)
            verdict = evaluate(policies, check)
            self.iam_checks.add((arn, check, verdict))
            return None if verdict == "allow" else denial(arn, check, verdict)

        return Caller(secret, None, denied)

    # -- what takes time on AWS: deletion, a stale view after an update ---------------------
    def _later(self, delay_s: float, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` after ``delay_s`` on a timer (cancelled by reset and stop)."""
        timer = threading.Timer(delay_s, action, args)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _gone(self, name: str, endpoint: FakeEndpoint) -> None:
        """The end of ``Deleting``: moto forgets the endpoint (if it is still that one)."""
        with self._lock:
            backend = self._sagemaker()
            if backend.endpoints.get(name) is endpoint:
                backend.delete_endpoint(name)

    def _remember_stale(self, name: str, view: dict[str, Any]) -> None:
        """Keep the endpoint's DescribeEndpoint answer from before an update, for
        :attr:`stale_describes` calls (called under the lock)."""
        if self.stale_describes > 0:
            self._stale[name] = (copy.deepcopy(view), self.stale_describes)

    def _stale_view(self, name: str) -> dict[str, Any] | None:
        """The stale DescribeEndpoint answer for ``name``, if one is left (each counts one).
        Gap: AWS's staleness is time, not a count of calls, and is not documented."""
        with self._lock:
            view, left = self._stale.pop(name, (None, 0))
            if view is not None and left > 1:
                self._stale[name] = (view, left - 1)
        return view

    def _created(self, call: ApiCall) -> None:
        """A model or endpoint config being created starts out invisible
        (``eventual_consistency``). Gap: AWS's delay is time, not a count of calls; other
        resources (endpoints, tags, scaling targets) are visible at once (a DescribeEndpoint
        right after an update: ``stale_describes``)."""
        kind = CREATED_NAMES.get(call.action)
        if kind is None or call.service != "sagemaker" or self.eventual_consistency <= 0:
            return
        name = call.params.get(kind[1])
        if isinstance(name, str):
            with self._lock:
                self._unseen[(kind[0], name)] = self.eventual_consistency

    def _unseen_refusal(self, call: ApiCall) -> Refusal | None:
        """AWS's "Could not find ..." for a call naming a model or config still invisible:
        CreateEndpointConfig naming the model, CreateEndpoint/UpdateEndpoint naming the
        config, DescribeModel/DescribeEndpointConfig of them (each such call counts one)."""
        params = call.params
        named: list[tuple[str, str]] = []
        if call.action == "CreateEndpointConfig":
            for key in ("ProductionVariants", "ShadowProductionVariants"):
                for variant in params.get(key) or []:
                    if isinstance(variant, dict) and isinstance(variant.get("ModelName"), str):
                        named.append(("model", variant["ModelName"]))
        elif call.action == "DescribeModel":
            named.append(("model", str(params.get("ModelName"))))
        elif call.action in ("CreateEndpoint", "UpdateEndpoint", "DescribeEndpointConfig"):
            named.append(("config", str(params.get("EndpointConfigName"))))
        with self._lock:
            for kind, name in named:
                left = self._unseen.get((kind, name), 0)
                if left <= 0:
                    continue
                if left == 1:
                    del self._unseen[(kind, name)]
                else:
                    self._unseen[(kind, name)] = left - 1
                text = MODEL_UNSEEN if kind == "model" else CONFIG_UNSEEN
                said = text.format(region=self.region, account=self.ACCOUNT, name=name.lower())
                return Refusal(400, "ValidationException", said)
        return None

    def _quota_problem(self, delta: dict[str, int]) -> str | None:
        """AWS's ResourceLimitExceeded text when ``delta`` more instances (by type) would
        exceed :attr:`quota` (called under the lock). Counted: every endpoint's serving
        fleet plus the fleet an operation is starting (during a blue/green update, old and
        new). Gap: AWS's accounting (which states count, how soon a deleted endpoint's
        instances are freed) is assumed: here a Failed endpoint and a deleted one count
        nothing, at once."""
        for kind, wanted in delta.items():
            limit = self.quota.get(kind)
            if limit is None:
                continue
            used = sum(
                live.fleet.get(kind, 0) + (live.op.fleet.get(kind, 0) if live.op else 0)
                for live in self._live.values()
            )
            if used + wanted > limit:
                return QUOTA_EXCEEDED.format(
                    instance_type=kind, limit=limit, used=used, delta=wanted
                )
        return None

    def refuse_next(
        self,
        service: str,
        action: str,
        code: str,
        message: str,
        *,
        matching: dict[str, Any] | None = None,
        status: int = 400,
        taken: bool = False,
    ) -> None:
        """The next ``service``'s ``action`` call (e.g. ``"sagemaker"``, ``"UpdateEndpoint"``)
        whose parameters include ``matching`` is answered with HTTP ``status`` and this AWS
        error code and message (it is still recorded in :attr:`calls`). It reaches moto not
        at all, or, ``taken``, it is carried out and only its answer is the error (AWS took
        the call; the caller cannot know). For the JSON protocols only (not S3)."""
        refusal = Refusal(status, code, message, taken)
        self._refusals.add(service, action, refusal, matching=matching, taken=taken)

    def writes(self) -> list[str]:
        """``"service:Action"`` of every write call so far, in order."""
        return [f"{c.service}:{c.action}" for c in self._calls.matching(lambda c: c.write)]

    @property
    def runtime_calls(self) -> list[RuntimeCall]:
        """Every InvokeEndpoint request, in order of arrival."""
        return self._runtime.runtime_calls

    def fault(
        self,
        endpoint: str,
        status: int,
        *,
        times: int | None = None,
        code: str | None = None,
        delay_s: float = 0.0,
        probability: float = 1.0,
        seed: int | None = None,
    ) -> None:
        """The next ``times`` (None: all until cleared) invocations of ``endpoint`` answer
        ``status`` with AWS's error for it (400 ValidationError, 429 ModelNotReadyException,
        500 InternalFailure, 503 ServiceUnavailable by default; throttling is
        ``400, code="ThrottlingException"``, as AWS sends it), after
        ``delay_s``; ``status=200`` with ``delay_s>0`` answers normally but slowly. With
        ``probability`` < 1 each invocation is faulted with that probability (drawn from a
        generator seeded with ``seed``), the others answered normally."""
        self._runtime.fault(
            endpoint, status, times=times, code=code, delay_s=delay_s,
            probability=probability, seed=seed,
        )  # fmt: skip

    def clear_faults(self) -> None:
        """Forget every scripted fault."""
        self._runtime.clear_faults()

    def fail_next_start(self, endpoint: str, reason: str) -> None:
        """The next create/update of ``endpoint`` fails with this FailureReason (no container
        is started for it)."""
        with self._lock:
            self._scripted[endpoint] = reason

    @property
    def container_timeout_s(self) -> float:
        """How long the runtime waits for a container's answer (SageMaker's 60 s; a test
        may shorten it to see AWS's timed-out answer)."""
        return self._runtime.container_timeout_s

    @container_timeout_s.setter
    def container_timeout_s(self, seconds: float) -> None:
        self._runtime.container_timeout_s = seconds

    @property
    def clock_skew_s(self) -> float:
        """How far AWS's clock is ahead of this host's, as the runtime checks signatures
        (past 5 minutes either way, AWS answers "Signature expired")."""
        return self._runtime.clock_skew_s

    @clock_skew_s.setter
    def clock_skew_s(self, seconds: float) -> None:
        self._runtime.clock_skew_s = seconds

    def set_status(self, endpoint: str, status: str, failure: str | None = None) -> None:
        """Move an endpoint to a status AWS sets by itself (``SystemUpdating`` during
        maintenance, ``OutOfService``, ``UpdateRollbackFailed``, ...), with a FailureReason.
        Its containers go on as they were (gap: AWS's maintenance and rollbacks are not
        emulated, only what DescribeEndpoint then says)."""
        with self._lock:
            found = self._sagemaker().endpoints[endpoint]
            found.endpoint_status = status
            found.failure_reason = failure  # type: ignore[assignment]

    def scale_to(self, endpoint: str, count: int) -> None:
        """What Application Auto Scaling does to the variant: its current and desired
        instance count become ``count`` (the containers are not multiplied: one serves)."""
        with self._lock:
            variant = self._sagemaker().endpoints[endpoint].production_variants[0]
            variant["CurrentInstanceCount"] = variant["DesiredInstanceCount"] = count
            live = self._live.get(endpoint)
            if live is not None:  # the quota counts the scaled fleet
                live.fleet = dict.fromkeys(live.fleet, count)

    @property
    def serverless_cold_start_s(self) -> float:
        """How long a serverless endpoint answers 429 ModelNotReadyException after it came
        InService (its first instance starting; 0: never)."""
        return self._runtime.serverless_cold_start_s

    @serverless_cold_start_s.setter
    def serverless_cold_start_s(self, seconds: float) -> None:
        self._runtime.serverless_cold_start_s = seconds

    @property
    def runtime_idle_timeout_s(self) -> float:
        """After how long the runtime closes an idle keep-alive connection (new
        connections; 30 s unless a test shortens it)."""
        return self._runtime.idle_timeout_s

    @runtime_idle_timeout_s.setter
    def runtime_idle_timeout_s(self, seconds: float) -> None:
        self._runtime.idle_timeout_s = seconds

    @property
    def runtime_connections(self) -> int:
        """How many connections the runtime has accepted."""
        return self._runtime.connections

    def containers(self) -> list[Container]:
        """The running model containers (serving or starting)."""
        with self._lock:
            procs = [p for live in self._live.values() for p in self._procs_of(live)]
        return [p.info for p in procs if p.container.running()]

    def container_output(self, endpoint: str) -> str:
        """Everything the endpoint's containers printed so far (for test diagnostics)."""
        with self._lock:
            live = self._live.get(endpoint)
            procs = self._procs_of(live) if live else []
        return "\n".join(p.container.text() for p in procs)

    @staticmethod
    def _procs_of(live: _Live) -> list[_Proc]:
        return live.serving + (live.op.procs if live.op else [])

    # -- moto backends (in-process edits: not counted in calls) -----------------------------
    def _sagemaker(self) -> SageMakerModelBackend:
        return sagemaker_backends[self.ACCOUNT][self.region]

    def _log_group(self, endpoint: str) -> str:
        return f"/aws/sagemaker/Endpoints/{endpoint}"

    def _log_stream_arn(self, endpoint: str, stream: str) -> str:
        return (
            f"arn:aws:logs:{self.region}:{self.ACCOUNT}:log-group:"
            f"{self._log_group(endpoint)}:log-stream:{stream}"
        )

    def resolve(self, endpoint: str) -> Target | None:
        """The runtime's view of an endpoint: its status and serving container, and while a
        canary or linear step holds, the new fleet's container and its share of the calls."""
        with self._lock:
            found = self._sagemaker().endpoints.get(endpoint)
            if found is None:
                return None
            live = self._live.get(endpoint)
            proc = live.serving[0] if live and live.serving else None
            op = live.op if live else None
            green = op.procs[0] if op and op.share > 0 and op.procs else None
            share = op.share if op else 0
        if proc is None or live is None:
            return Target(status=found.endpoint_status, port=None)
        target = Target(
            status=found.endpoint_status,
            port=proc.info.port,
            variant=proc.info.variant,
            log_group=self._log_group(endpoint),
            log_stream_arn=self._log_stream_arn(endpoint, proc.log_stream),
            serverless=live.serverless,
            in_service_at=live.in_service_at,
        )
        if green is None:
            return target
        new = replace(
            target,
            port=green.info.port,
            variant=green.info.variant,
            log_stream_arn=self._log_stream_arn(endpoint, green.log_stream),
        )
        return replace(target, canary=new, canary_pct=share)

    # -- the lifecycle ------------------------------------------------------------------------
    def _begin(
        self,
        endpoint: str,
        kind: str,
        config_name: str,
        retained: int | None = None,
        *,
        fleet: dict[str, int] | None = None,
        deployment: dict[str, Any] | None = None,
    ) -> None:
        """Start a create/update on a background thread (called under the lock);
        ``retained``: the instance count the new fleet keeps (RetainAllVariantProperties);
        ``fleet``: the new fleet's instances by type (counted against :attr:`quota`);
        ``deployment``: an update's DeploymentConfig."""
        if kind == "create":
            self._sagemaker().endpoints[endpoint].endpoint_status = "Creating"
        live = self._live.setdefault(endpoint, _Live())
        op = _Op(
            kind,
            config_name,
            time.monotonic(),
            retained=retained,
            fleet=fleet or {},
            deployment=deployment or {},
        )
        live.op = op
        op.thread = threading.Thread(
            target=self._run_op, args=(endpoint, op), name=f"sagemaker-{kind}-{endpoint}"
        )
        op.thread.daemon = True
        op.thread.start()

    def _run_op(self, endpoint: str, op: _Op) -> None:
        with self._lock:
            scripted = self._scripted.pop(endpoint, None)
        reason: str | None = scripted
        if reason is None:
            try:
                reason = self._start_and_wait(endpoint, op)
            except Exception as exc:  # an emulator bug must show, not hang the endpoint
                reason = f"emulator error while starting the container: {exc!r}"
        op.cancel.wait(max(0.0, op.started + self.min_transition_s - time.monotonic()))
        if reason is None and op.kind == "update":
            try:
                reason = self._shift_traffic(endpoint, op)
            except Exception as exc:  # as above: a failed update, not an endpoint stuck Updating
                reason = f"emulator error while shifting traffic: {exc!r}"
        stop: list[_Proc]
        switched = False
        with self._lock:
            live = self._live.get(endpoint)
            found = self._sagemaker().endpoints.get(endpoint)
            if op.cancel.is_set() or live is None or live.op is not op or found is None:
                stop = op.procs
            elif reason is None:
                # Traffic switches to the new containers now; the old ones get SIGTERM and
                # the endpoint shows InService once they are gone (below).
                stop, live.serving = live.serving, op.procs
                live.fleet = op.fleet
                live.serverless = any("ServerlessConfig" in v for v in op.variants)
                found.endpoint_config_name = op.config_name
                # From the config as it was when the change began: AWS's DeleteEndpointConfig
                # reference says a config must not be deleted while an endpoint is created or
                # updated on it, and that if it is, the endpoint goes on ("you may lose
                # visibility into the instance type the endpoint is using").
                variants = op.variants
                if op.retained is not None:  # the new fleet keeps the count it had
                    variants = [{**v, "InitialInstanceCount": op.retained} for v in variants]
                found.production_variants = found._process_production_variants(variants)
                found.failure_reason = None
                op.procs, switched = [], True  # they are live.serving's now
            elif op.kind == "create":
                stop = op.procs
                found.endpoint_status = "Failed"
                found.failure_reason = reason  # type: ignore[assignment]
            else:
                # Blue/green's automatic rollback: the old fleet keeps serving, the endpoint is
                # InService on its OLD EndpointConfigName with FailureReason set. AWS's API
                # reference (EndpointMetadata.FailureReason: "If the status of the endpoint is
                # Failed, or the status is InService but update operation fails, this provides
                # the reason why it failed"), aws-controllers-k8s/sagemaker-controller#7 ("If
                # an update fails, the endpoint goes back to InService state with a
                # FailureReason") and hashicorp/terraform-provider-aws#39099 report the same.
                stop = op.procs
                found.endpoint_status = "InService"
                found.failure_reason = reason  # type: ignore[assignment]
            self._stale.pop(endpoint, None)  # the change is over: AWS's view has caught up
            if found is not None:
                found.pending_deployment_summary = None  # type: ignore[attr-defined]
                found.last_modified_time = dt.datetime.now(dt.UTC)
            if live is not None and live.op is op and not switched:
                live.op = None
        if switched:  # the old fleet stands by: the baking period, then the termination wait
            op.cancel.wait(self._after_shift_s(op) * self.wait_scale)
        self._stop_procs(stop)
        if switched:
            with self._lock:
                if live is not None and found is not None and live.op is op:
                    live.op = None
                    live.in_service_at = time.monotonic()  # a serverless cold start begins
                    found.endpoint_status = "InService"

    def _shift_traffic(self, endpoint: str, op: _Op) -> str | None:
        """A CANARY or LINEAR update's traffic steps, once the new fleet passed its pings:
        None, or the FailureReason that rolls it back.

        As the developer guide's "Use canary traffic shifting" and "Use linear traffic
        shifting" describe (deployment-guardrails-blue-green-canary.html, -linear.html) and
        botocore's ``TrafficRoutingConfig`` documents: the new fleet takes ``CanarySize`` of
        the traffic (a canary), or one more ``LinearStepSize`` per step (linear), and each
        step bakes ``WaitIntervalInSeconds`` before the next; the last step (all the traffic)
        is :meth:`_run_op`'s switch. Meanwhile DescribeEndpoint says Updating on the old
        config, the new fleet's variant ``Baking`` in ``PendingDeploymentSummary``. Past
        ``MaximumExecutionTimeoutInSeconds`` (counted from UpdateEndpoint, the waits in
        AWS's seconds) the update fails and the old fleet takes all the traffic back.

        Gaps: waits last ``wait_scale`` times as long as AWS's; a step's share is the size's
        percentage of the calls, routed call by call in a fixed rotation (AWS turns on whole
        instances and balances between them, not documented further); ``ActivatingTraffic``
        is not shown (here turning traffic on takes no time); no alarm is watched."""
        routing = (op.deployment.get("BlueGreenUpdatePolicy") or {}).get(
            "TrafficRoutingConfiguration"
        ) or {}
        kind = routing.get("Type")
        size = routing.get("CanarySize" if kind == "CANARY" else "LinearStepSize")
        if kind not in ("CANARY", "LINEAR") or not size:
            return None
        count = op.retained or int((op.variants or [{}])[0].get("InitialInstanceCount") or 1)
        step = int(size["Value"]) if size["Type"] == "CAPACITY_PERCENT" else 0
        if size["Type"] == "INSTANCE_COUNT":
            step = int(size["Value"]) * 100 // count
        shares = [step] if kind == "CANARY" else list(range(step, 100, step))
        wait = float(routing.get("WaitIntervalInSeconds") or 0)
        limit = (op.deployment.get("BlueGreenUpdatePolicy") or {}).get(
            "MaximumExecutionTimeoutInSeconds"
        )
        elapsed = time.monotonic() - op.started  # starting the fleet took real seconds
        for share in shares:
            with self._lock:
                live = self._live.get(endpoint)
                found = self._sagemaker().endpoints.get(endpoint)
                if op.cancel.is_set() or live is None or live.op is not op or found is None:
                    return "cancelled"
                op.share = share
                status = {
                    "Status": "Baking",
                    "StatusMessage": BAKING.format(wait=int(wait), pct=share),
                    "StartTime": dt.datetime.now(dt.UTC),
                }
                pending = getattr(found, "pending_deployment_summary", None) or {}
                for variant in pending.get("ProductionVariants") or []:
                    variant["VariantStatus"] = [dict(status)]
            if limit is not None and elapsed + wait > float(limit):
                op.cancel.wait(max(0.0, float(limit) - elapsed) * self.wait_scale)
                return "cancelled" if op.cancel.is_set() else TIMED_OUT.format(limit=limit)
            if op.cancel.wait(wait * self.wait_scale):
                return "cancelled"
            elapsed += wait
        return None

    @staticmethod
    def _after_shift_s(op: _Op) -> float:
        """How long (AWS's seconds) the old fleet stands by once all the traffic is on the
        new one: an ALL_AT_ONCE update's baking period (``WaitIntervalInSeconds``: "Once the
        green fleet starts receiving traffic, the baking period begins", "Use all at once
        traffic shifting"), then ``TerminationWaitInSeconds`` (BlueGreenUpdatePolicy:
        "Additional waiting time ... before terminating the old endpoint fleet"). Meanwhile
        DescribeEndpoint says Updating on the new config (assumed: AWS does not say when
        EndpointConfigName changes). Gap: MaximumExecutionTimeoutInSeconds is not checked
        after the last shift."""
        policy = op.deployment.get("BlueGreenUpdatePolicy") or {}
        routing = policy.get("TrafficRoutingConfiguration") or {}
        bake = 0.0
        if routing.get("Type") == "ALL_AT_ONCE":
            bake = float(routing.get("WaitIntervalInSeconds") or 0)
        return bake + float(policy.get("TerminationWaitInSeconds") or 0)

    def _start_and_wait(self, endpoint: str, op: _Op) -> str | None:
        """Start the config's containers and wait for their pings: None, or a FailureReason."""
        with self._lock:
            backend = self._sagemaker()
            config = backend.endpoint_configs[op.config_name]
            variants = list(config.production_variants)
            op.variants = variants
            models = {v["ModelName"]: backend._models[v["ModelName"]] for v in variants}
        for variant in variants:
            if op.cancel.is_set():
                return "cancelled"
            model = models[variant["ModelName"]]
            spec = model.primary_container or (model.containers or [{}])[0]
            failure = self._spawn(endpoint, variant["VariantName"], model.model_name, spec, op)
            if failure is not None:
                return failure
        deadline = op.started + self.container_start_timeout_s
        while not op.cancel.is_set():
            for proc in op.procs:
                if not proc.container.running():  # exited: it never passes the ping
                    return PING_FAILED.format(variant=proc.info.variant)
            if all(proc.container.ping() for proc in op.procs):
                return None
            if time.monotonic() > deadline:
                return PING_FAILED.format(variant=op.procs[0].info.variant)
            op.cancel.wait(0.1)
        return "cancelled"

    def _spawn(
        self, endpoint: str, variant: str, model_name: str, spec: dict[str, Any], op: _Op
    ) -> str | None:
        """Fetch and extract the model data, start its container: None, or a FailureReason."""
        url = spec.get("ModelDataUrl") or ""
        bucket, _, key = url.removeprefix("s3://").partition("/")
        with self._lock:
            try:
                obj = s3_backends[self.ACCOUNT]["aws"].get_object(bucket, key)
            except Exception:  # moto raises MissingBucket for an unknown bucket
                obj = None
            data = bytes(obj.value) if obj is not None else None
            in_use = {p.base_dir for live in self._live.values() for p in self._procs_of(live)}
        if not url.startswith("s3://") or data is None:
            return MODEL_DATA_FAILED.format(bucket=bucket, key=key)
        base = self.workdir / "containers" / endpoint / model_name
        n = 1
        while base in in_use:  # the serving container still reads its own copy
            base = base.with_name(f"{model_name}.{n}")
            n += 1
        shutil.rmtree(base, ignore_errors=True)
        (base / "model").mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            archive.extractall(base / "model", filter="data")  # stands in for /opt/ml/model
        port = free_port()
        environment = {str(k): str(v) for k, v in (spec.get("Environment") or {}).items()}
        host = dict(environment)
        if not self.gpu_unusable:
            # Gap: an emulated GPU instance is this host's CPU. On a real one the container
            # finds the GPU the provider expects (AIAAS_DEVICE=cuda); here the variable is
            # left out so the model loads on the CPU. gpu_unusable=True passes it on, as an
            # AMI whose driver is too old for the image's CUDA would: the container exits.
            host.pop("AIAAS_DEVICE", None)
        stream = f"{variant}/i-{uuid.uuid4().hex[:17]}"
        self._open_log_stream(endpoint, stream)
        # The model's Image is not run (no Docker): aiaas's container entrypoint runs in this
        # interpreter instead, as a local process with the model's Environment and where
        # SageMaker puts the model and the port.
        container = ContainerProcess.start(
            workdir=base,
            port=port,
            environment={
                **host,
                "SAGEMAKER_BIND_TO_PORT": str(port),
                "SAGEMAKER_BASE_DIR": str(base),
            },
            on_line=lambda line: self._log_event(endpoint, stream, line),
        )
        info = Container(endpoint, variant, model_name, url, environment, container.pid, port)
        with self._lock:
            op.procs.append(_Proc(info, container, base, stream))
        return None

    # -- CloudWatch Logs (moto's backend, in-process) ----------------------------------------
    def _open_log_stream(self, endpoint: str, stream: str) -> None:
        with self._lock:
            logs = logs_backends[self.ACCOUNT][self.region]
            logs.ensure_log_group(self._log_group(endpoint))
            logs.create_log_stream(self._log_group(endpoint), stream)

    def _log_event(self, endpoint: str, stream: str, line: str) -> None:
        """Each line a container prints becomes a log event, as SageMaker's agent does."""
        event = {"timestamp": int(time.time() * 1000), "message": line}
        with self._lock, contextlib.suppress(Exception):  # gone after a reset: dropped
            logs_backends[self.ACCOUNT][self.region].put_log_events(
                self._log_group(endpoint), stream, [event]
            )

    # -- stopping -----------------------------------------------------------------------------
    def _retire(self, endpoint: str) -> None:
        """Cancel the endpoint's operation and stop all its containers (after delete)."""
        with self._lock:
            live = self._live.pop(endpoint, None)
        if live is None:
            return
        op = live.op
        if op is not None:
            op.cancel.set()
            if op.thread is not None:
                op.thread.join(timeout=STOP_GRACE_S * 3)
            self._stop_procs(op.procs)
        self._stop_procs(live.serving)

    def _stop_all_containers(self) -> None:
        with self._lock:
            timers, self._timers = self._timers, []
            names = list(self._live)
        for timer in timers:  # a pending deletion goes with the state it was for
            timer.cancel()
        for name in names:
            self._retire(name)

    @staticmethod
    def _stop_procs(procs: Iterable[_Proc]) -> None:
        """SIGTERM each container, SIGKILL after STOP_GRACE_S, and reap it."""
        stop_all(proc.container for proc in procs)


@contextlib.contextmanager
def running(workdir: Path, **kwargs: Any) -> Iterator[AwsEmulator]:
    """``with running(tmp) as aws:`` starts an :class:`AwsEmulator` and always stops it."""
    emulator = AwsEmulator(workdir, **kwargs)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
