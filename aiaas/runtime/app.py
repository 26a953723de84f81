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

Three layers, imports pointing down: this module (the Starlette transport and
:func:`create_app`, which composes the app) → :mod:`aiaas.runtime.fastpath` (the simple
protocol's POSTs as plain ASGI, in front of Starlette) → :mod:`aiaas.runtime.dataplane`
(the work, free of any transport).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aiaas import oip
from aiaas.config import ServerSection
from aiaas.custom_attributes import CUSTOM_ATTRIBUTES_HEADER
from aiaas.http import REQUEST_ID_HEADER, is_oip_path, request_id_of, route_not_found
from aiaas.retry import TIMEOUT_HEADER
from aiaas.runtime.dataplane import Answer, DataPlane, caller_deadline
from aiaas.runtime.fastpath import (
    SimpleEndpoint,
    SimpleFastPath,
    simple_endpoints,
    unless_client_leaves,
)
from aiaas.runtime.runner import ModelRunner

Handler = Callable[[Request, str], Awaitable[Answer]]


def to_response(answer: Answer, request_id: str) -> Response:
    """``answer`` as a Starlette ``Response``, tagged with the request id."""
    response = Response(
        answer.body,
        status_code=answer.status,
        headers=answer.headers,
        media_type=answer.media_type,
    )
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


class ModelServer:
    """The Starlette transport of a :class:`~aiaas.runtime.dataplane.DataPlane`: its routes
    (every cloud's and OIP's, health, metrics) and its lifespan."""

    def __init__(self, plane: DataPlane, simple: dict[str, SimpleEndpoint]) -> None:
        self.plane = plane
        self.simple = simple

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        """Start batching and load the model in the background: the port opens at once and
        readiness turns 200 only once the model is loaded and warmed up."""
        self.plane.start()
        try:
            yield
        finally:
            await self.plane.stop()

    # -- handlers: the request's parts the data plane needs, in; its answer, out ---------

    async def ping(self, _request: Request, _rid: str) -> Answer:
        """SageMaker health check: 200 once loaded and warmed up."""
        return self.plane.ping()

    async def live(self, _request: Request, _rid: str) -> Answer:
        """Liveness: the process serves HTTP (also while the model loads)."""
        return self.plane.live()

    async def ready_route(self, _request: Request, _rid: str) -> Answer:
        """Readiness: the model is loaded and warmed up."""
        return self.plane.readiness()

    async def oip_server(self, _request: Request, _rid: str) -> Answer:
        """``GET /v2``: server metadata, with the OIP extensions supported."""
        return self.plane.server_metadata()

    async def oip_metadata(self, request: Request, _rid: str) -> Answer:
        """``GET /v2/models/{name}``: tensors derived from the manifest's JSON Schemas."""
        return self.plane.model_metadata(request.path_params)

    async def oip_model_ready(self, request: Request, _rid: str) -> Answer:
        """``GET /v2/models/{name}/ready``."""
        return self.plane.model_ready(request.path_params)

    async def oip_infer(self, request: Request, request_id: str) -> Answer:
        """``POST /v2/models/{name}/infer``: tensors in, tensors out."""
        oip.check_model(self.plane.manifest, request.path_params)  # 404 before the body
        headers = request.headers
        attributes = headers.get(CUSTOM_ATTRIBUTES_HEADER)
        deadline = caller_deadline(headers.get(TIMEOUT_HEADER), attributes)  # 400 if malformed
        # 503 (at once, or after a wait at the door) before reading the body; in until answered
        async with self.plane.admitted(deadline) as own:
            length = headers.get("content-length")
            body = await self.plane.read_body(request.stream(), length, deadline, own)
            work = self.plane.infer(
                body,
                request.path_params,
                header_length=headers.get(oip.HEADER_LENGTH),
                content_type=headers.get("content-type"),
                request_id=request_id,
                deadline=deadline,
                own=own,
            )
            return await unless_client_leaves(work, request.receive)

    async def metrics_route(self, _request: Request, _rid: str) -> Answer:
        """Prometheus text exposition."""
        return self.plane.metrics_text()

    # -- wiring --------------------------------------------------------------------------

    def endpoint(self, route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: request id, the data plane's one error mapping (the OIP error
        shape on ``/v2`` routes), metrics by route and status."""
        oip_route = is_oip_path(route)

        async def checked(request: Request, request_id: str) -> Answer:
            request_id_of(request, strict=True)  # 400 for an id that is not printable ASCII
            return await handler(request, request_id)

        async def call(request: Request) -> Response:
            started = time.perf_counter()
            request_id = request_id_of(request)  # a sane one to answer with, whatever came
            work = checked(request, request_id)
            answer = await self.plane.respond(work, request_id, oip=oip_route)
            self.plane.observe(route, answer.status, started)
            return to_response(answer, request_id)

        return call

    def routes(self) -> list[Route]:
        """Every route of the server."""
        ep = self.endpoint
        table: list[tuple[str, Handler, list[str]]] = [
            ("/ping", self.ping, ["GET"]),
            ("/", self.live, ["GET"]),
            ("/ready", self.ready_route, ["GET"]),
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
        routes = [Route(path, ep(path, fn), methods=methods) for path, fn, methods in table]
        # The simple protocol's POSTs: SimpleFastPath hands them to these same ASGI
        # endpoints before Starlette routes anything; the routes declare the paths, so that
        # another method on them gets 405 with an Allow header that names POST.
        routes += [Route(path, ep_, methods=["POST"]) for path, ep_ in self.simple.items()]
        return routes


def create_app(
    runner: ModelRunner,
    settings: ServerSection | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> SimpleFastPath:
    """The model server app for ``runner`` (not yet loaded: loading starts with the app).

    ``on_fatal`` is called with the exception if the model cannot load or an inference
    process dies (``server.inference_in: process``); ``aiaas serve`` uses it to exit with status
    1 so the platform (or the local provider) sees the failure at once instead of a
    readiness probe that never turns green (or never turns green again).
    """
    plane = DataPlane(runner, settings or ServerSection(), on_fatal)
    simple = simple_endpoints(plane)
    server = ModelServer(plane, simple)
    app = Starlette(
        routes=server.routes(),
        lifespan=server.lifespan,
        exception_handlers={404: route_not_found, 405: route_not_found},
    )
    return SimpleFastPath(app, simple)
