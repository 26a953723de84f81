"""An emulator of the SageMaker runtime's ``InvokeEndpoint`` (API 2017-05-13), on 127.0.0.1.

``POST /endpoints/{EndpointName}/invocations`` is SigV4-verified here, independently of the
client's signer (the signature is recomputed from the request as received, with botocore's
``SigV4Auth`` and the emulated secret), then forwarded to the endpoint's live model container
the way SageMaker's front end does. Errors come in the rest-json shape botocore parses
(``x-amzn-ErrorType`` header, JSON body with the message).

Where the endpoint's traffic goes is not known here: a resolver callback (given by
:class:`emulators.aws.AwsEmulator`) names the endpoint's status and its live container.

Gaps from the real service, named where they matter below:

- one container per fleet: variant weights, ``TargetVariant``, ``TargetModel`` and
  ``TargetContainerHostname`` are not routed on (all traffic goes to the serving variant);
  while a blue/green update's canary or linear step holds, the new fleet takes its share of
  the calls in a fixed rotation (:meth:`SageMakerRuntimeEmulator.route`), where AWS balances
  between instances in a way it does not document;
- no streaming (``invocations-response-stream``) and no async (``async-invocations``) routes;
- serverless: one cold start after the endpoint comes InService (``serverless_cold_start_s``),
  none after idling (AWS scales a serverless endpoint to zero and cold-starts it again); its
  MaxConcurrency is not enforced (AWS throttles beyond it);
- the texts of errors marked "assumed" were not seen in a primary source.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from emulators.faults import CallLog, Faults
from emulators.httpserver import HttpServer, KeepAliveHandler

MAX_PAYLOAD_BYTES = 6_291_456  # InvokeEndpoint's request (and response) limit, 6 MB
MAX_SERVERLESS_PAYLOAD_BYTES = 4_194_304  # a serverless endpoint's request limit, 4 MB
IDLE_TIMEOUT_S = 30.0  # the emulator's default (AWS's front end's timeout is not documented)
MAX_CLOCK_SKEW_S = 300.0  # SigV4: a request signed more than 5 minutes off is refused
CONTAINER_TIMEOUT_S = 60.0  # SageMaker gives the container 60 s to answer /invocations
# While Updating or RollingBack a fleet serves (the old or the restored one); SystemUpdating
# is AWS's maintenance of an InService endpoint, which goes on serving (findings 14, 15).
# Gap: UpdateRollbackFailed is not served (AWS's endpoint may still answer on some fleet).
SERVING_STATUSES = ("InService", "Updating", "SystemUpdating", "RollingBack")
# InvokeEndpoint passes these request headers to the container; SageMaker strips the rest.
FORWARDED_HEADERS = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")

BAD_TOKEN = "The security token included in the request is invalid."
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)

# The error each faulted status answers by default, and its message: InvokeEndpoint's
# modelled errors with their statuses (botocore's service-2.json). Throttling is AWS's generic
# ThrottlingException, not modelled for InvokeEndpoint, which AWS sends with HTTP 400 (as
# botocore's _retry.json expects): fault(name, 400, code="ThrottlingException"). The messages
# are assumed (not seen in a primary source).
FAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationError", "Invalid request."),
    424: ("ModelError", "Received server error from primary."),
    429: ("ModelNotReadyException", "The model is not ready to serve requests yet."),
    500: ("InternalFailure", "An internal failure occurred."),
    503: ("ServiceUnavailable", "The service is unavailable. Please try again later."),
    530: ("InternalDependencyException", "An internal dependency failed."),
}
FAULT_MESSAGES = {
    "ModelNotReadyException": "The model is not ready to serve requests yet.",
    "ThrottlingException": "Rate exceeded",
}


@dataclass(frozen=True)
class RuntimeCall:
    """One InvokeEndpoint request as the emulator answered it."""

    endpoint: str
    status: int  # the HTTP status answered
    error: str | None  # the error code answered, None on success
    received: float  # time.monotonic() when the request arrived


@dataclass(frozen=True)
class Target:
    """Where an endpoint's traffic goes now (what the resolver reports)."""

    status: str  # the endpoint's EndpointStatus
    port: int | None  # the serving container's port on 127.0.0.1 (None: nothing serves)
    variant: str = "AllTraffic"
    log_group: str = ""  # e.g. /aws/sagemaker/Endpoints/<name>
    log_stream_arn: str | None = None
    serverless: bool = False  # the serving variant has a ServerlessConfig
    in_service_at: float | None = None  # time.monotonic() when the serving fleet came up
    canary: Target | None = None  # the new fleet, while a canary or linear step holds
    canary_pct: int = 0  # the share of the calls it answers meanwhile (percent)


Resolver = Callable[[str], Target | None]


def _allowed(action: str, resource: str) -> str | None:
    return None


@dataclass(frozen=True)
class Caller:
    """Who signed a request: the secret (and session token) its signature is checked with,
    and IAM's verdict on an action on a resource (None: allowed; else AWS's AccessDenied
    text)."""

    secret_key: str
    session_token: str | None = None
    denied: Callable[[str, str], str | None] = _allowed


Callers = Callable[[str], Caller | None]
"""The caller an access key id stands for (None: AWS does not know the key)."""


MAX_CUSTOM_ATTRIBUTES = 1024  # InvokeEndpoint's CustomAttributes: max 1024, \p{ASCII}*


def _check_custom_attributes(value: str | None) -> None:
    """What AWS checks of ``X-Amzn-SageMaker-Custom-Attributes`` (botocore's service model:
    at most 1024 characters, ASCII only; botocore's client checks neither): a 400
    ValidationError in AWS's constraint wording (the text is assumed: AWS's usual form for a
    member that fails a constraint, not seen for this member)."""
    if value is None:
        return
    if len(value) > MAX_CUSTOM_ATTRIBUTES:
        raise _ErrorAnswer(
            400,
            "ValidationError",
            "1 validation error detected: Value at 'customAttributes' failed to satisfy "
            f"constraint: Member must have length less than or equal to {MAX_CUSTOM_ATTRIBUTES}",
        )
    if not value.isascii():
        raise _ErrorAnswer(
            400,
            "ValidationError",
            "1 validation error detected: Value at 'customAttributes' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: \\p{ASCII}*",
        )


class _ErrorAnswer(Exception):
    """An AWS error answered instead of forwarding."""

    def __init__(
        self, status: int, code: str | None, message: str, fields: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields


class SageMakerRuntimeEmulator:
    """A threaded HTTP/1.1 server (keep-alive) speaking InvokeEndpoint on 127.0.0.1:<free>.

    ``idle_timeout_s``: an idle keep-alive connection is closed after this (AWS's front end
    closes idle connections too; its timeout is not documented)."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        account: str,
        region: str,
        access_key: str,
        secret_key: str,
        session_token: str | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        callers: Callers | None = None,
    ) -> None:
        self.resolve = resolve
        self.account, self.region = account, region
        self.access_key, self.secret_key, self.session_token = access_key, secret_key, session_token
        # Without callers, the one key pair given is the only one known, allowed everything.
        self.callers: Callers = callers or self._own_key
        self._calls: CallLog[RuntimeCall] = CallLog()
        self._faults = Faults()
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._http = HttpServer(Handler, name="sagemaker-runtime", idle_timeout_s=idle_timeout_s)
        self.container_timeout_s = CONTAINER_TIMEOUT_S  # a test may shorten it
        self.clock_skew_s = 0.0  # AWS's clock minus this host's (a caller's clock that is off)
        self.serverless_cold_start_s = 0.0  # 429 ModelNotReady this long after InService
        self._routed: dict[str, int] = {}  # endpoint: calls routed during its traffic split
        self._routing = threading.Lock()

    @property
    def idle_timeout_s(self) -> float:
        """After how long an idle keep-alive connection is closed (new connections)."""
        return self._http.idle_timeout_s

    @idle_timeout_s.setter
    def idle_timeout_s(self, seconds: float) -> None:
        self._http.idle_timeout_s = seconds

    @property
    def connections(self) -> int:
        """How many connections were accepted so far."""
        return self._http.connections

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve on a background thread."""
        self._http.start()

    def stop(self) -> None:
        """Stop serving and close the socket (idle keep-alive connections time out)."""
        self._http.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return self._http.url

    @property
    def runtime_calls(self) -> list[RuntimeCall]:
        """Every InvokeEndpoint request, in order of arrival."""
        return self._calls.all()

    # -- faults and records ----------------------------------------------------------------
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
        """The next ``times`` invocations of ``endpoint`` answer ``status`` after ``delay_s``
        (with ``probability`` < 1: a seeded random share of its calls).

        ``status=200`` with a delay answers normally, but slowly.
        """
        if status != 200 and code is None and status not in FAULT_ERRORS:
            raise ValueError(f"no AWS error known for status {status}: pass code=")
        self._faults.set(
            endpoint, status, times=times, code=code, delay_s=delay_s,
            probability=probability, seed=seed,
        )  # fmt: skip

    def clear_faults(self) -> None:
        """Forget every scripted fault."""
        self._faults.clear()

    def clear(self) -> None:
        """Forget faults, recorded calls and where the traffic split's rotation stands."""
        self._faults.clear()
        self._calls.clear()
        with self._routing:
            self._routed.clear()

    def _record(self, call: RuntimeCall) -> None:
        self._calls.add(call)

    # -- SigV4 and IAM ---------------------------------------------------------------------
    def _own_key(self, key_id: str) -> Caller | None:
        return Caller(self.secret_key, self.session_token) if key_id == self.access_key else None

    def authorize(self, caller: Caller, endpoint: str) -> None:
        """Raise :class:`_ErrorAnswer` unless IAM allows the caller ``sagemaker:InvokeEndpoint``
        on the endpoint's ARN (its name lowercase, as SageMaker writes ARNs). The status,
        403, is assumed (a rest-json service's AccessDeniedException)."""
        arn = f"arn:aws:sagemaker:{self.region}:{self.account}:endpoint/{endpoint.lower()}"
        said = caller.denied("sagemaker:InvokeEndpoint", arn)
        if said is not None:
            raise _ErrorAnswer(403, "AccessDeniedException", said)

    def verify_sigv4(
        self, method: str, raw_path: str, headers: Message[str, str], body: bytes
    ) -> Caller:
        """The caller, or :class:`_ErrorAnswer` (403) unless the request is signed as AWS
        requires."""
        auth = headers.get("Authorization")
        if not auth:
            raise _ErrorAnswer(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        algorithm, _, rest = auth.partition(" ")
        fields = dict(
            part.strip().split("=", 1) for part in rest.split(",") if "=" in part
        )  # Credential=..., SignedHeaders=..., Signature=...
        credential = fields.get("Credential", "").split("/")
        if algorithm != "AWS4-HMAC-SHA256" or len(credential) != 5 or "Signature" not in fields:
            raise _ErrorAnswer(
                403, "IncompleteSignatureException", "Authorization header is malformed."
            )
        key, date, region, service, terminator = credential
        caller = self.callers(key)
        if caller is None:
            raise _ErrorAnswer(403, "UnrecognizedClientException", BAD_TOKEN)
        token = headers.get("X-Amz-Security-Token")
        if token != caller.session_token:  # a session token must be the one issued with the key
            raise _ErrorAnswer(403, "UnrecognizedClientException", BAD_TOKEN)
        if service != "sagemaker" or region != self.region or terminator != "aws4_request":
            raise _ErrorAnswer(
                403,
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region and service: expected "
                f"{self.region}/sagemaker, got {region}/{service}.",  # text assumed
            )
        amz_date = headers.get("X-Amz-Date", "")
        try:
            signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            raise _ErrorAnswer(
                403, "IncompleteSignatureException", "X-Amz-Date is missing or malformed."
            ) from None
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.clock_skew_s)
        if date != amz_date[:8]:  # the scope's date must be the signing date
            raise _ErrorAnswer(403, "InvalidSignatureException", BAD_SIGNATURE)
        if abs((now - signed_at).total_seconds()) > MAX_CLOCK_SKEW_S:
            raise _ErrorAnswer(
                403,
                "InvalidSignatureException",
                f"Signature expired: {amz_date} is now earlier than "
                f"{(now - dt.timedelta(seconds=MAX_CLOCK_SKEW_S)).strftime('%Y%m%dT%H%M%SZ')}"
                f" ({now.strftime('%Y%m%dT%H%M%SZ')} - 5 min.)",
            )
        declared = headers.get("X-Amz-Content-SHA256")
        if declared is not None and declared != hashlib.sha256(body).hexdigest():
            # assumed: a payload hash that does not match the body is a bad signature
            raise _ErrorAnswer(403, "InvalidSignatureException", BAD_SIGNATURE)
        signed_names = fields.get("SignedHeaders", "").split(";")
        if "host" not in signed_names:
            raise _ErrorAnswer(403, "InvalidSignatureException", BAD_SIGNATURE)
        signed: dict[str, str] = {}
        for name in signed_names:
            values = headers.get_all(name)
            if values is None:
                raise _ErrorAnswer(403, "InvalidSignatureException", BAD_SIGNATURE)
            signed[name] = ",".join(values)
        request = AWSRequest(
            method=method, url=f"http://{signed['host']}{raw_path}", headers=signed, data=body
        )
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(
            Credentials(key, caller.secret_key, caller.session_token),
            "sagemaker",
            self.region,
        )
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != fields["Signature"]:
            # AWS quotes the canonical request it expected (with the session token's header,
            # when one was sent): a caller must never pass this text on.
            raise _ErrorAnswer(
                403,
                "InvalidSignatureException",
                f"{BAD_SIGNATURE}\n\nThe Canonical String for this request should have "
                f"been\n'{canonical}'\n",
            )
        return caller

    # -- one invocation --------------------------------------------------------------------
    def invoke(
        self, endpoint: str, headers: Message[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer an authenticated InvokeEndpoint: (status, headers, body) or _ErrorAnswer."""
        fault = self._faults.take(endpoint)
        if fault is not None:
            if fault.delay_s > 0:
                time.sleep(fault.delay_s)
            if fault.status != 200:
                code = fault.code or FAULT_ERRORS[fault.status][0]
                default = FAULT_ERRORS.get(fault.status, (code, "Error."))[1]
                raise _ErrorAnswer(fault.status, code, FAULT_MESSAGES.get(code, default))
        if len(body) > MAX_PAYLOAD_BYTES:
            # AWS answers 413 with no error type (botocore reports the code "413"): seen in
            # aws/sagemaker-python-sdk#171 with the older 5 MB limit ("HTTP content length
            # exceeded 5246976 bytes."); the 6 MB figure is from botocore's service model.
            raise _ErrorAnswer(
                413, None, f"HTTP content length exceeded {MAX_PAYLOAD_BYTES} bytes."
            )
        _check_custom_attributes(headers["X-Amzn-SageMaker-Custom-Attributes"])
        target = self.resolve(endpoint)
        if target is None:
            raise _ErrorAnswer(
                400, "ValidationError", f"Endpoint {endpoint} of account {self.account} not found."
            )
        if target.status not in SERVING_STATUSES or target.port is None:
            raise _ErrorAnswer(  # text assumed: AWS names the endpoint and why it cannot serve
                400,
                "ValidationError",
                f"Endpoint {endpoint} of account {self.account} is not in service "
                f"(EndpointStatus: {target.status}).",
            )
        target = self.route(endpoint, target)
        if target.serverless:
            self._serverless_check(target, body)
        forward = {name: headers[name] for name in FORWARDED_HEADERS if headers[name] is not None}
        conn = http.client.HTTPConnection(
            "127.0.0.1", target.port, timeout=self.container_timeout_s
        )
        try:
            conn.request("POST", "/invocations", body=body, headers=forward)
            answer = conn.getresponse()
            data = answer.read()
            status, content_type = answer.status, answer.getheader("Content-Type")
        except TimeoutError:
            # AWS's answer for a container that misses the 60 s: a ModelError with status 0
            # and this text (quoted in RamVegiraju/SageMaker-Deployment#3 and
            # aws-samples/host-yolov8-on-sagemaker-endpoint#21); OriginalStatusCode 0 is
            # inferred from the "(0)", OriginalMessage is assumed absent.
            raise _ErrorAnswer(
                424,
                "ModelError",
                'Received server error (0) from primary with message "Your invocation timed '
                "out while waiting for a response from container primary. Review the latency "
                "metrics for each container in Amazon CloudWatch, resolve the issue, and try "
                f'again.". See {self._console(target)} in account {self.account} for more '
                "information.",
                {"ErrorCode": "SERVER_ERROR_FROM_MODEL", "OriginalStatusCode": 0},
            ) from None
        except OSError as exc:
            raise _ErrorAnswer(500, "InternalFailure", f"container unreachable: {exc}") from None
        finally:
            conn.close()
        if status >= 400:
            raise self._model_error(endpoint, target, status, data)
        out = {"Content-Type": content_type or "application/octet-stream"}
        out["x-Amzn-Invoked-Production-Variant"] = target.variant
        return 200, out, data

    def route(self, endpoint: str, target: Target) -> Target:
        """The fleet that answers this call: while a canary or linear step holds, the new
        one for ``canary_pct`` of the calls, spread evenly (call n goes to it when
        ``n * pct // 100`` steps up: exactly 50 of every 100 calls at 50 %), else the serving
        one."""
        if target.canary is None or target.canary_pct <= 0:
            return target
        with self._routing:
            n = self._routed.get(endpoint, 0) + 1
            self._routed[endpoint] = n
        pct = target.canary_pct
        return target.canary if n * pct // 100 > (n - 1) * pct // 100 else target

    def _serverless_check(self, target: Target, body: bytes) -> None:
        """A serverless endpoint's own limits: 4 MB bodies (413, as the 6 MB limit is
        answered; the text is assumed) and the cold start after it came InService (429
        ModelNotReadyException: InvokeEndpoint's modelled error for a model not loaded yet;
        the message is assumed, finding 24)."""
        if len(body) > MAX_SERVERLESS_PAYLOAD_BYTES:
            raise _ErrorAnswer(
                413, None, f"HTTP content length exceeded {MAX_SERVERLESS_PAYLOAD_BYTES} bytes."
            )
        since = target.in_service_at
        if since is not None and time.monotonic() - since < self.serverless_cold_start_s:
            code = "ModelNotReadyException"
            raise _ErrorAnswer(429, code, FAULT_MESSAGES[code])

    def _console(self, target: Target) -> str:
        """The CloudWatch console link AWS's ModelError messages carry."""
        return (
            f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
            f"#logEventViewer:group={target.log_group}"
        )

    def _model_error(self, endpoint: str, target: Target, status: int, data: bytes) -> _ErrorAnswer:
        """The 424 ModelError SageMaker answers when the container answers 4xx/5xx.

        The members (Message, OriginalStatusCode, OriginalMessage, LogStreamArn) are botocore's
        ModelError shape. The Message text follows what AWS answers ("Received client error
        (400) from primary with message ...") as quoted in public bug reports; "ErrorCode" in
        the body is assumed from the same reports (botocore does not model it).
        """
        kind = "client" if status < 500 else "server"
        original = data.decode("utf-8", errors="replace")
        message = (
            f'Received {kind} error ({status}) from primary with message "{original}". '
            f"See {self._console(target)} in account {self.account} for more information."
        )
        fields: dict[str, Any] = {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
            "OriginalStatusCode": status,
            "OriginalMessage": original,
        }
        if target.log_stream_arn:
            fields["LogStreamArn"] = target.log_stream_arn
        return _ErrorAnswer(424, "ModelError", message, fields)


class _Handler(KeepAliveHandler):
    """The HTTP side: parse, verify, answer; every InvokeEndpoint is recorded."""

    owner: SageMakerRuntimeEmulator

    def do_POST(self) -> None:
        received = time.monotonic()
        body = self.body()
        parts = self.path.split("?", 1)[0].split("/")
        if len(parts) != 4 or parts[1] != "endpoints" or parts[3] != "invocations":
            self._send_error(_ErrorAnswer(404, "UnknownOperationException", "Unknown operation."))
            return
        endpoint = unquote(parts[2])
        try:
            caller = self.owner.verify_sigv4("POST", self.path, self.headers, body)
            self.owner.authorize(caller, endpoint)
            status, headers, data = self.owner.invoke(endpoint, self.headers, body)
        except _ErrorAnswer as err:
            self.owner._record(
                RuntimeCall(endpoint, err.status, err.code or str(err.status), received)
            )
            self._send_error(err)
            return
        self.owner._record(RuntimeCall(endpoint, status, None, received))
        self._send(status, headers, data)

    def do_GET(self) -> None:
        self._send_error(_ErrorAnswer(404, "UnknownOperationException", "Unknown operation."))

    def _send_error(self, err: _ErrorAnswer) -> None:
        if err.fields is not None:  # a modelled error with members: "Message" as its shape has
            payload: dict[str, Any] = {"Message": err.message, **err.fields}
        else:
            payload = {"message": err.message}
        headers = {"Content-Type": "application/json"}
        if err.code is not None:
            headers["x-amzn-ErrorType"] = err.code
        self._send(err.status, headers, json.dumps(payload).encode())

    def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send(status, {**headers, "x-amzn-RequestId": str(uuid.uuid4())}, data)
