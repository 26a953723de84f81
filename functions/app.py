"""The function app: the one ASGI app every serverless platform runs.

``POST /predict`` (simple protocol) and the Open Inference Protocol v2 routes, checked at
the edge (API key, body size, the manifest's JSON Schema) before anything is forwarded to
the provider's invoke path (:class:`adapters.base.Invoker`, awaited on this event loop).
Provider errors map to HTTP once, here. Never imports torch or a control-plane SDK.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.base import DeploymentStatus, Invoker, InvokeResult
from aiaas import oip
from aiaas.errors import (
    AiaasError,
    DeadlineExceeded,
    ModelError,
    NotFound,
    NotReady,
    ProviderError,
    Throttled,
    Unavailable,
)
from aiaas.http import (
    JSON,
    error_response,
    is_oip_path,
    json_response,
    new_request_id,
    oip_error_response,
    request_id_of,
    route_not_found,
)
from aiaas.packaged import ServedManifest as Manifest
from aiaas.pricing import FREE, CostModel
from aiaas.protocol import brief, check_json_content_type, parse_json, simple_inputs
from aiaas.retry import CALLER_RETRIES_HEADER, TIMEOUT_HEADER, caller_retries, timeout_ms
from functions.auth import KeyChecker, presented_key
from functions.edge import (
    DEFAULT_MAX_ITEMS,
    EdgeValidator,
    ResponseTooLarge,
    check_response_size,
    read_body,
)
from functions.metering import UsageRecord, UsageSink, now
from functions.openapi import openapi_document
from functions.platforms import Platform
from functions.platforms import platform as find_platform

log = logging.getLogger("aiaas.function")


Handler = Callable[[Request, str], Awaitable[Response]]

#: ``Retry-After`` when the deployment behind the function does not exist (deleted, or not
#: deployed yet): it will not be back within a second, but may be within a deploy.
ENDPOINT_MISSING_RETRY_S = 30.0
#: How long a readiness answer from the control plane (DescribeEndpoint) is reused: probes
#: every second must not become control-plane calls every second (and throttled ones).
READY_CACHE_S = 5.0
#: Kept free of a Lambda invocation's remaining time: the answer must be written back
#: before the platform ends the invocation.
PLATFORM_MARGIN_S = 0.25
#: The status of a call whose caller went away before its body was read (nginx's, as the
#: model server records it).
CLIENT_CLOSED = 499

# Credentials that might appear in a cloud's error text: an access key id, a signature, a
# session token or security-token header, a bearer token. Replaced before the text is logged.
_SECRETS = re.compile(
    r"(?i)\b(?:AKIA|ASIA)[A-Z0-9]{12,}"
    r"|(signature\s*=\s*)[0-9a-f]{16,}"
    r"|((?:x-amz-security-token|security[-_ ]token|sessiontoken|credential)[\"':= ]+)[^\s,;\"']+"
    r"|(bearer\s+)[^\s,;\"']+"
)


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``[redacted]`` (for the function's log)."""
    return _SECRETS.sub(
        lambda m: (m.group(1) or m.group(2) or m.group(3) or "") + "[redacted]", text
    )


def _deadline_s(request: Request, configured: float) -> float:
    """The seconds this call may take: the function's ``invoke_timeout_s``, the platform's
    remaining time (Lambda's context, less :data:`PLATFORM_MARGIN_S`) and the caller's own
    deadline (:data:`aiaas.retry.TIMEOUT_HEADER`), whichever is smallest."""
    budget = configured
    context = request.scope.get("aws.context")
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        budget = min(budget, remaining() / 1000 - PLATFORM_MARGIN_S)
    asked = timeout_ms(request.headers.get(TIMEOUT_HEADER))
    if asked is not None:
        budget = min(budget, asked / 1000)
    return max(budget, 0.001)


@dataclass
class FunctionApp:
    """The function tier: where to forward, what to accept, who may call.

    ``FunctionApp(invoker, manifest, keys=...).asgi()`` is the ASGI app. ``keys=None``
    turns our API-key check off (the platform authenticates: Lambda ``AWS_IAM``, Azure
    function keys, FC). ``platform``: the platform's record, or its name
    (:mod:`functions.platforms`). ``deployment`` defaults to the manifest's name.
    ``max_items``: most items per request (``server.max_items_per_request``).
    ``max_body_bytes`` and ``max_response_bytes`` default to the platform's limits. ``cost``
    prices each usage record (default: the platform's list prices, a free endpoint).

    ``manifest_source`` follows the live deployment: a cheap callable returning the manifest
    of the version now deployed (``None`` when unknown), asked at most every
    ``manifest_check_s`` seconds and at once when an answer names another version. A new
    version replaces the schemas the edge enforces, the OpenAPI document and the version in
    usage records. Without one (a packaged cloud function carries its manifest), an answer
    from another version is logged once as a stale manifest.
    """

    invoker: Invoker
    manifest: Manifest
    deployment: str = ""
    keys: KeyChecker | None = None
    max_body_bytes: int | None = None
    invoke_timeout_s: float = 30.0
    usage: UsageSink | None = None
    platform: Platform | str = "local"
    memory_mb: int = 512
    max_items: int = DEFAULT_MAX_ITEMS
    max_response_bytes: int | None = None
    manifest_source: Callable[[], Manifest | None] | None = None
    manifest_check_s: float = 1.0
    cost: CostModel | None = None
    validator: EdgeValidator = field(init=False)

    def __post_init__(self) -> None:
        self.deployment = self.deployment or self.manifest.name
        self.validator = EdgeValidator(self.manifest, self.max_items)
        named = self.platform
        record = named if isinstance(named, Platform) else find_platform(named)
        self._platform = record
        self._max_body = (
            record.max_request_bytes if self.max_body_bytes is None else self.max_body_bytes
        )
        self._max_response = (
            record.max_response_bytes
            if self.max_response_bytes is None
            else self.max_response_bytes
        )
        self._next_manifest_check = 0.0
        # The error code of the last forwarded call that found the deployment unreachable
        # (None: it answered): readiness where the invoke path cannot ask (UNKNOWN). The
        # code only: a cloud's own text never reaches a caller.
        self._unreachable: str | None = None
        self._openapi: bytes | None = None  # built on first request: nothing at cold start
        self._stale_warned: set[str] = set()
        self._status: DeploymentStatus | None = None  # the last readiness answer, and when
        self._status_at = 0.0
        self._cost = self.cost or CostModel.build(record.prices, FREE, self.memory_mb)

    async def follow_manifest(self, force: bool = False) -> None:
        """Switch to the live deployment's manifest if it changed (see ``manifest_source``).

        The source runs in a worker thread: for a cloud it is a control-plane call (a
        SageMaker describe is several round trips), which must not hold the event loop."""
        if self.manifest_source is None:
            return
        now = time.monotonic()
        if not force and now < self._next_manifest_check:
            return
        self._next_manifest_check = now + self.manifest_check_s
        try:
            live = await asyncio.to_thread(self.manifest_source)
        except Exception:  # a half-written state file: keep serving, look again next time
            log.warning("could not read the live deployment's manifest", exc_info=True)
            return
        if live is not None and live.version != self.manifest.version:
            log.info(
                "deployment %r is now %s %s (was %s): following its manifest",
                self.deployment, live.name, live.version, self.manifest.version,
            )  # fmt: skip
            self.validator = EdgeValidator(live, self.max_items)
            self.manifest = live
            self._openapi = None

    async def _answered_by(self, request: Request, version: str | None) -> None:
        """Note the version that answered; another than ours means a redeploy happened."""
        if version is None or version == self.manifest.version:
            return
        request.state.version = version
        if self.manifest_source is not None:
            await self.follow_manifest(force=True)
        elif version not in self._stale_warned:
            self._stale_warned.add(version)
            log.warning(
                "stale manifest: deployment %r answers with version %s, but this function "
                "checks requests against %s (its aiaas-manifest.json); package and deploy "
                "the function again (aiaas function package) so the edge enforces the "
                "live schemas",
                self.deployment, version, self.manifest.version,
            )  # fmt: skip

    async def _forward(self, request: Request, body: bytes, request_id: str) -> InvokeResult:
        deadline: float = getattr(request.state, "deadline", 0.0)
        left = deadline - time.monotonic() if deadline else self.invoke_timeout_s
        if left <= 0:
            raise DeadlineExceeded(f"no time left of the call's {self.invoke_timeout_s:g}s")
        try:
            answer = await self.invoker.invoke(
                self.deployment, body, request_id=request_id, timeout=left
            )
        except NotFound as exc:  # the endpoint is gone: for the caller it is not available
            self._unreachable = exc.code
            raise NotReady(
                f"endpoint unavailable: {exc.message}", retry_after=ENDPOINT_MISSING_RETRY_S
            ) from None
        except (NotReady, Unavailable, ProviderError) as exc:  # nothing answered
            self._unreachable = exc.code
            raise
        self._unreachable = None
        return answer

    async def _body(self, request: Request) -> bytes:
        """The body, refused (413) on its declared length or once the bytes read pass the
        limit, so an oversized upload is never buffered."""
        request.state.bytes_in = 0
        body = await read_body(
            request.stream(), request.headers.get("content-length"), self._max_body
        )
        request.state.bytes_in = len(body)
        return body

    async def predict(self, request: Request, request_id: str) -> Response:
        """``{"inputs": [...]}`` → ``{"outputs": [...], "model", "version"}``."""
        check_json_content_type(request.headers.get("content-type"))
        body = await self._body(request)
        self.validator.validate(simple_inputs(parse_json(body)))
        # Checked as it is, so forwarded as it is; the answer goes back untouched.
        answer = await self._forward(request, body, request_id)
        await self._answered_by(request, answer.version)
        return Response(answer.body, media_type=JSON)

    async def oip_infer(self, request: Request, request_id: str) -> Response:
        """OIP v2 infer: tensors in (JSON or binary), validated per item, tensors out."""
        self._check_model(request)
        infer = oip.parse_infer(
            await self._body(request),
            header_length=request.headers.get(oip.HEADER_LENGTH),
            content_type=request.headers.get("content-type"),
            max_items=self.max_items,
            output_names=oip.output_names(self.manifest),
            max_forward_bytes=getattr(self.invoker, "max_request_bytes", None),
        )
        self.validator.validate(infer.items, where="instances")
        # Binary tensor data is decoded here and encoded here: the provider sees JSON items.
        answer = await self._forward(request, oip.forward_body(infer.items), request_id)
        try:
            result = orjson.loads(answer.body)
            outputs = result["outputs"]
        except (ValueError, TypeError, KeyError):
            raise ProviderError("the deployment's answer holds no outputs") from None
        version = answer.version or result.get("version") or self.manifest.version
        await self._answered_by(request, version)
        return oip.infer_response(infer, outputs, self.manifest.name, version)

    async def oip_metadata(self, request: Request, _rid: str) -> Response:
        """OIP v2 metadata: the server's at ``/v2``, the model's (from the manifest)."""
        if "name" not in request.path_params:
            return json_response(oip.server_metadata())
        self._check_model(request)
        return json_response(oip.model_metadata(self.manifest))

    async def oip_ready(self, request: Request, _rid: str) -> Response:
        """Ready when the deployment behind the function is."""
        if "name" in request.path_params:
            self._check_model(request)
        status = await self._deployment_status()
        if status is DeploymentStatus.UNKNOWN:
            # The invoke path cannot ask (a key-only function cannot call the control
            # plane): ready unless the last call found the deployment unreachable.
            if self._unreachable is not None:
                raise NotReady(
                    f"deployment {self.deployment!r}: the last call did not reach it "
                    f"({self._unreachable})"
                )
            body = {"name": self.manifest.name, "ready": True, "deployment_status": "unknown"}
            return json_response(body)
        if status not in (DeploymentStatus.READY, DeploymentStatus.UPDATING):
            raise NotReady(f"deployment {self.deployment!r} is {status.value}")
        return json_response({"name": self.manifest.name, "ready": True})

    async def _deployment_status(self) -> DeploymentStatus:
        """The deployment's status, asked of the control plane at most every
        :data:`READY_CACHE_S` seconds; a throttled ask answers with the last status known
        (or, with none, raises :class:`~aiaas.errors.Throttled`: 429 with ``Retry-After``)."""
        now = time.monotonic()
        if self._status is not None and now - self._status_at < READY_CACHE_S:
            return self._status
        try:
            status = await self.invoker.status(self.deployment)
        except NotFound as exc:  # the route exists; what is behind it is not ready
            raise NotReady(
                f"endpoint unavailable: {exc.message}", retry_after=ENDPOINT_MISSING_RETRY_S
            ) from None
        except Throttled:
            if self._status is not None:
                return self._status
            raise
        self._status, self._status_at = status, now
        return status

    async def live(self, _request: Request, _rid: str) -> Response:
        """The function answers."""
        return json_response({"live": True})

    async def health(self, _request: Request, _rid: str) -> Response:
        """What this function serves (no call to the endpoint)."""
        m = self.manifest
        body = {
            "status": "ok",
            "model": m.name,
            "version": m.version,
            "provider": self.invoker.name,
        }
        return json_response(body)

    def _check_model(self, request: Request) -> None:
        oip.check_model(self.manifest, request.path_params)

    def endpoint(
        self, handler: Handler, *, authenticated: bool, metered: bool = False, oip: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Request id, API key check, and the one mapping of errors to HTTP (in the OIP
        error shape on ``oip`` routes)."""

        async def call(request: Request) -> Response:
            started = time.perf_counter()
            key_id = "-"
            request_id = ""
            try:
                request_id = request_id_of(request, strict=True)
                request.state.deadline = time.monotonic() + _deadline_s(
                    request, self.invoke_timeout_s
                )
                caller_retries.set(CALLER_RETRIES_HEADER in request.headers)
                await self.follow_manifest()
                if authenticated and self.keys is not None:
                    key_id = self.keys.verify(
                        presented_key(
                            request.headers.get("authorization"), request.headers.get("x-api-key")
                        )
                    )
                response = await handler(request, request_id)
                self._check_response(response)
            except AiaasError as exc:
                request_id = request_id or new_request_id()
                if exc.cloud_text:
                    log.warning(
                        "%s: %s (request_id=%s); the cloud said: %s",
                        exc.code, exc.message, request_id, redact(exc.cloud_text),
                    )  # fmt: skip
                response = self._error(exc, request_id, oip)
            except ClientDisconnect:
                log.info(
                    "client closed the connection before its body was read (request_id=%s)",
                    request_id,
                )
                response = Response(status_code=CLIENT_CLOSED)
            except Exception:
                log.exception("unhandled error (request_id=%s)", request_id)
                response = function_error(AiaasError("internal error"), request_id, oip=oip)
            response.headers["x-request-id"] = request_id
            if response.status_code == 413 and self._platform.close_after_413:
                # The rest of an oversized upload is unread: closing stops uvicorn from
                # draining it (and the caller from sending it) after the answer.
                response.headers["connection"] = "close"
            if metered and self.usage is not None:
                self._meter(request, response, request_id, key_id, time.perf_counter() - started)
            return response

        return call

    def _check_response(self, response: Response) -> None:
        """Raise :class:`~functions.edge.ResponseTooLarge` (502) rather than hand the
        platform an answer it would refuse (Lambda: 6 MB)."""
        check_response_size(
            response.body,
            self._max_response,
            self._platform.escaped_response,
            response.headers.get("content-type"),
        )

    def _error(self, exc: AiaasError, request_id: str, oip: bool) -> Response:
        """The error answer, within the platform's response limit like any other: one that
        is not keeps its status and code, with its message cut short and no details."""
        response = function_error(exc, request_id, oip=oip)
        try:
            self._check_response(response)
        except ResponseTooLarge:
            small = copy.copy(exc)  # keeps the type, so status and Retry-After are the same
            small.message, small.details = brief(exc.message), None
            response = function_error(small, request_id, oip=oip)
        return response

    def _meter(
        self, request: Request, response: Response, request_id: str, key_id: str, seconds: float
    ) -> None:
        """Exactly one usage record per metered call, whatever its outcome."""
        version = getattr(request.state, "version", None) or self.manifest.version
        record = UsageRecord(
            time=now(), request_id=request_id, key_id=key_id, model=self.manifest.name,
            version=version, provider=self.invoker.name,
            status=response.status_code, latency_ms=round(seconds * 1000, 3),
            bytes_in=getattr(request.state, "bytes_in", 0), bytes_out=len(response.body),
            cost_usd=self._cost.estimate(seconds),
        )  # fmt: skip
        try:
            assert self.usage is not None
            self.usage.record(record)
        except Exception:  # metering must never fail a call
            log.exception("could not write the usage record (request_id=%s)", request_id)

    def asgi(self) -> Starlette:
        """The Starlette app: the routes, 404/405 as JSON, ``/openapi.json`` on demand."""
        table: list[tuple[str, str, Handler, bool]] = [
            ("POST", "/predict", self.predict, True),
            ("GET", "/health", self.health, False),
            ("GET", "/v2", self.oip_metadata, False),
            ("GET", "/v2/health/live", self.live, False),
            ("GET", "/v2/health/ready", self.oip_ready, False),
            ("GET", "/v2/models/{name}", self.oip_metadata, True),
            ("GET", "/v2/models/{name}/versions/{version}", self.oip_metadata, True),
            ("GET", "/v2/models/{name}/ready", self.oip_ready, True),
            ("GET", "/v2/models/{name}/versions/{version}/ready", self.oip_ready, True),
            ("POST", "/v2/models/{name}/infer", self.oip_infer, True),
            ("POST", "/v2/models/{name}/versions/{version}/infer", self.oip_infer, True),
        ]
        routes = [  # every POST is a prediction: metered, whatever its outcome
            Route(
                path,
                self.endpoint(
                    handler, authenticated=auth, metered=m == "POST", oip=is_oip_path(path)
                ),
                methods=[m],
            )
            for m, path, handler, auth in table
        ]
        summaries = [(m, p, (h.__doc__ or "").strip().splitlines()[0], a) for m, p, h, a in table]

        async def openapi(_request: Request) -> Response:
            await self.follow_manifest()
            if self._openapi is None:
                doc = openapi_document(self.manifest, summaries, self.keys is not None)
                self._openapi = orjson.dumps(doc)
            return Response(self._openapi, media_type=JSON)

        routes.append(Route("/openapi.json", openapi, methods=["GET"]))
        handlers = {404: route_not_found, 405: route_not_found}
        app = Starlette(routes=routes, exception_handlers=handlers)
        app.state.function = self
        return app


def function_error(exc: AiaasError, request_id: str, *, oip: bool = False) -> Response:
    """The function tier's mapping: throttled 429 (+Retry-After), model error 502, deadline
    504, endpoint missing or not ready 503; everything else keeps its own status.

    ``oip``: the body is the Open Inference Protocol's ``{"error": "<message>", ...}``
    (:func:`aiaas.http.oip_error_response`) instead of aiaas's ``{"error": {...}}``.
    """
    status = exc.http_status
    if isinstance(exc, Throttled):
        status = 429
    elif isinstance(exc, ModelError):
        status = 502
    elif isinstance(exc, DeadlineExceeded):
        status = 504
    response = (oip_error_response if oip else error_response)(exc, request_id, status)
    if status == 401:
        response.headers["www-authenticate"] = "Bearer"
    return response
