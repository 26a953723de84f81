"""The model server's ASGI app: every cloud's container routes at once, one batcher behind.

Routes (one image fits every cloud):

=========================================  ==========================================
SageMaker                                  ``GET /ping``, ``POST /invocations``
Azure ML custom container                  liveness ``GET /``, readiness ``GET /ready``,
                                           scoring ``POST /score``
PAI-EAS (gateway forwards the service root) ``POST /``, ``POST /api/predict/{service}``
Open Inference Protocol v2                 ``/v2``, ``/v2/health/{live,ready}``,
                                           ``/v2/models/{name}[/versions/{v}][/ready|/infer]``
Prometheus                                 ``GET /metrics``
=========================================  ==========================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from aiaas import oip
from aiaas.config import ServerSection
from aiaas.errors import (
    AiaasError,
    DeadlineExceeded,
    NotReady,
    PayloadTooLarge,
)
from aiaas.http import (
    JSON,
    REQUEST_ID_HEADER,
    error_response,
    is_oip_path,
    json_response,
    oip_error_response,
    read_limited_body,
    request_id_of,
    route_not_found,
)
from aiaas.protocol import (
    check_json_content_type,
    parse_json,
    simple_inputs,
    simple_response,
    validate_items,
)
from aiaas.runtime.batcher import Batcher
from aiaas.runtime.fastpath import SimpleFastPath
from aiaas.runtime.metrics import CONTENT_TYPE, ServerMetrics
from aiaas.runtime.runner import ModelRunner

log = logging.getLogger("aiaas.server")


Handler = Callable[[Request, str], Awaitable[Response]]

#: The status /metrics records for a request whose client left before sending its whole
#: body (nginx's convention; nothing is sent).
CLIENT_CLOSED_REQUEST = 499


class ModelServer:
    """State of one serving process: the runner, the batcher, readiness and metrics."""

    def __init__(
        self,
        runner: ModelRunner,
        settings: ServerSection,
        on_load_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.runner = runner
        self._on_load_failure = on_load_failure
        self.manifest = runner.manifest
        self.settings = settings
        self.metrics = ServerMetrics(self.manifest.name, lambda: self.batcher.queue_depth)
        self.batcher = Batcher(
            runner.run_batch,
            max_batch_size=self.manifest.batching.max_batch_size,
            max_delay_ms=self.manifest.batching.max_delay_ms,
            max_queue_size=settings.max_queue_size,
            on_batch=self.metrics.observe_batch,
            workers=runner.workers,
            queue_wait_ms=settings.queue_wait_ms,
        )
        self.ready = False
        self.load_error: str | None = None
        self._load_task: asyncio.Future[None] | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        """Start batching and load the model in the background: the port opens at once and
        readiness turns 200 only once the model is loaded and warmed up."""
        loop = asyncio.get_running_loop()
        # Loading goes to the inference thread first; batching starts there once it is done.
        self._load_task = loop.run_in_executor(self.batcher.executor, self.runner.load)
        self._load_task.add_done_callback(self._loaded)
        self.batcher.start()
        try:
            yield
        finally:
            self.ready = False
            await self.batcher.stop()

    def _loaded(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self.ready = True
        else:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load", exc_info=exc)
            if self._on_load_failure is not None:
                self._on_load_failure(exc)

    def _require_ready(self) -> None:
        if not self.ready:
            reason = (
                f"model failed to load: {self.load_error}"
                if self.load_error
                else "model is loading"
            )
            raise NotReady(reason)

    # -- the shared predict path -------------------------------------------------------

    async def read_body(self, chunks: AsyncIterator[bytes], declared: str | None) -> bytes:
        """The whole body from ``chunks``, refused (413) as soon as it is over the limit:
        at once if the declared ``content-length`` says so."""
        return await read_limited_body(chunks, declared, self.settings.max_body_bytes)

    async def _read_body(self, request: Request) -> bytes:
        return await self.read_body(request.stream(), request.headers.get("content-length"))

    def check_item_count(self, count: int) -> None:
        """Refuse (413 ``payload_too_large``) a request of more than
        ``server.max_items_per_request`` items, before any of them is validated or expanded:
        a few bytes per item must not buy seconds of validation and a huge error list."""
        limit = self.settings.max_items_per_request
        if count > limit:
            raise PayloadTooLarge(
                f"request has {count} items; the limit is {limit} per request "
                "(server.max_items_per_request)",
                details={"items": count, "limit": limit},
            )

    async def _predict(
        self, raw_items: list[Any], request_id: str, where: str = "inputs"
    ) -> list[Any]:
        self._require_ready()
        self.check_item_count(len(raw_items))
        items = validate_items(self.runner.input_schema, raw_items, where)
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                return await self.batcher.submit(items, request_id)
        except TimeoutError:
            raise DeadlineExceeded(
                f"prediction took longer than {self.settings.request_timeout_s:g}s"
            ) from None

    async def simple(self, request: Request, request_id: str) -> Response:
        """``{"inputs": [...]}`` → ``{"outputs": [...], "model", "version"}``."""
        check_json_content_type(request.headers.get("content-type"))
        body = await self.simple_body(await self._read_body(request), request_id)
        return Response(body, media_type=JSON)

    async def simple_body(self, body: bytes, request_id: str) -> bytes:
        """The simple protocol from request body to response body (see :meth:`simple`)."""
        outputs = await self._predict(simple_inputs(parse_json(body)), request_id)
        return simple_response(outputs, self.manifest.name, self.manifest.version)

    # -- health --------------------------------------------------------------------------

    async def ping(self, _request: Request, _rid: str) -> Response:
        """SageMaker health check: 200 once loaded and warmed up."""
        self._require_ready()
        return Response(b"", status_code=200)

    async def live(self, _request: Request, _rid: str) -> Response:
        """Liveness: the process serves HTTP (also while the model loads)."""
        return json_response({"live": True})

    async def ready_route(self, _request: Request, _rid: str) -> Response:
        """Readiness: the model is loaded and warmed up."""
        self._require_ready()
        return json_response(
            {"ready": True, "model": self.manifest.name, "version": self.manifest.version}
        )

    # -- Open Inference Protocol v2 ------------------------------------------------------

    def _check_model(self, request: Request) -> None:
        oip.check_model(self.manifest, request.path_params)

    async def oip_server(self, _request: Request, _rid: str) -> Response:
        """``GET /v2``: server metadata, with the OIP extensions supported."""
        return json_response(oip.server_metadata())

    async def oip_metadata(self, request: Request, _rid: str) -> Response:
        """``GET /v2/models/{name}``: tensors derived from the manifest's JSON Schemas."""
        self._check_model(request)
        return json_response(oip.model_metadata(self.manifest))

    async def oip_model_ready(self, request: Request, _rid: str) -> Response:
        """``GET /v2/models/{name}/ready``."""
        self._check_model(request)
        self._require_ready()
        return json_response({"name": self.manifest.name, "ready": True})

    async def oip_infer(self, request: Request, request_id: str) -> Response:
        """``POST /v2/models/{name}/infer``: tensors in, tensors out (as JSON or as binary
        tensor data, see :mod:`aiaas.oip`)."""
        self._check_model(request)
        infer = oip.parse_infer(
            await self._read_body(request),
            header_length=request.headers.get(oip.HEADER_LENGTH),
            content_type=request.headers.get("content-type"),
            max_items=self.settings.max_items_per_request,
            output_names=oip.output_names(self.manifest),
        )
        outputs = await self._predict(infer.items, request_id, where="instances")
        return oip.infer_response(infer, outputs, self.manifest.name, self.manifest.version)

    async def metrics_route(self, _request: Request, _rid: str) -> Response:
        """Prometheus text exposition."""
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    # -- wiring --------------------------------------------------------------------------

    def endpoint(self, route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: request id, one JSON error mapping (the OIP error shape on
        ``/v2`` routes), metrics by route and status."""
        oip = is_oip_path(route)

        async def call(request: Request) -> Response:
            started = time.perf_counter()
            request_id = request_id_of(request)
            response = await self.respond(handler(request, request_id), request_id, oip=oip)
            self.metrics.observe_request(route, response.status_code, time.perf_counter() - started)
            return response

        return call

    async def respond(
        self, work: Awaitable[Response], request_id: str, *, oip: bool = False
    ) -> Response:
        """``work``'s response, or its error as JSON (aiaas's shape, or with ``oip`` the Open
        Inference Protocol's ``{"error": "<message>"}``); tagged with the request id."""
        answer = oip_error_response if oip else error_response
        try:
            response = await work
        except AiaasError as exc:
            response = answer(exc, request_id)
        except ClientDisconnect:
            # Nobody is left to answer: not a server error. One line, and status 499 (nginx's
            # "client closed request") so /metrics counts it apart from the 5xx.
            log.info(
                "client disconnected before sending its whole body (request_id=%s)", request_id
            )
            response = Response(b"", status_code=CLIENT_CLOSED_REQUEST)
        except Exception:
            log.exception("unhandled error (request_id=%s)", request_id)
            response = answer(AiaasError("internal server error"), request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    def routes(self) -> list[Route]:
        """Every route of the server."""
        ep = self.endpoint
        simple = self.simple
        # SimpleFastPath answers the simple protocol's POSTs before they reach these routes;
        # they stay so that other methods on those paths get 405 and as the reference handler.
        table: list[tuple[str, Handler, list[str]]] = [
            ("/ping", self.ping, ["GET"]),
            ("/invocations", simple, ["POST"]),
            ("/", self.live, ["GET"]),
            ("/ready", self.ready_route, ["GET"]),
            ("/score", simple, ["POST"]),
            ("/", simple, ["POST"]),
            ("/api/predict/{service}", simple, ["POST"]),
            ("/v2", self.oip_server, ["GET"]),
            ("/v2/health/live", self.live, ["GET"]),
            ("/v2/health/ready", self.ready_route, ["GET"]),
            ("/v2/models/{name}", self.oip_metadata, ["GET"]),
            ("/v2/models/{name}/versions/{version}", self.oip_metadata, ["GET"]),
            ("/v2/models/{name}/ready", self.oip_model_ready, ["GET"]),
            ("/v2/models/{name}/versions/{version}/ready", self.oip_model_ready, ["GET"]),
            ("/v2/models/{name}/infer", self.oip_infer, ["POST"]),
            ("/v2/models/{name}/versions/{version}/infer", self.oip_infer, ["POST"]),
            ("/metrics", self.metrics_route, ["GET"]),
        ]
        return [Route(path, ep(path, handler), methods=methods) for path, handler, methods in table]


def create_app(
    runner: ModelRunner,
    settings: ServerSection | None = None,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> SimpleFastPath:
    """The model server app for ``runner`` (not yet loaded: loading starts with the app).

    ``on_load_failure`` is called if the model cannot load; ``aiaas serve`` uses it to exit
    with status 1 so the platform (or the local provider) sees the failure at once instead of
    a readiness probe that never turns green.
    """
    server = ModelServer(runner, settings or ServerSection(), on_load_failure)
    app = Starlette(
        routes=server.routes(),
        lifespan=server.lifespan,
        exception_handlers={404: route_not_found, 405: route_not_found},
    )
    return SimpleFastPath(app, server)
