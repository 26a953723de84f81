"""The simple protocol's POST routes as plain ASGI, in front of the Starlette app.

Under load the model server's event loop shares the GIL (and the cores) with the inference
threads, so every microsecond it spends per request is taken from the forward pass.
Starlette's middleware stack, router and ``Request`` object were a large share of the
loop's time per request in py-spy profiles (next to the work itself: read the body, parse,
validate, queue, encode). This wrapper answers
``POST /invocations``, ``/score``, ``/`` and ``/api/predict/{service}`` directly, with the
same handler, error mapping, request id and metrics as the Starlette routes
(:meth:`ModelServer.simple_body`, :meth:`ModelServer.respond`); everything else (other
methods and routes, lifespan) goes to the Starlette app unchanged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aiaas.http import JSON, request_id_from
from aiaas.protocol import check_json_content_type

if TYPE_CHECKING:
    from aiaas.runtime.app import ModelServer

#: Exact paths of the simple protocol, and the metrics label of each.
_SIMPLE_ROUTES = {"/invocations": "/invocations", "/score": "/score", "/": "/"}
_PAI_PREFIX = "/api/predict/"
_PAI_ROUTE = "/api/predict/{service}"


def simple_route(scope: Scope) -> str | None:
    """The route template a simple-protocol POST matches, or None for anything else."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    route = _SIMPLE_ROUTES.get(path)
    if route is not None:
        return route
    service = path[len(_PAI_PREFIX) :] if path.startswith(_PAI_PREFIX) else ""
    return _PAI_ROUTE if service and "/" not in service else None


class SimpleFastPath:
    """ASGI middleware: the simple protocol's POST routes without Starlette's per-request
    machinery; every other request goes to ``app``."""

    def __init__(self, app: ASGIApp, server: ModelServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = simple_route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        declared: str | None = None
        given: str | None = None
        content_type: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"x-request-id":
                given = value.decode("latin-1")
        request_id = request_id_from(given)
        work = self._simple(receive, declared, content_type, request_id)
        response = await self.server.respond(work, request_id)
        self.server.metrics.observe_request(
            route, response.status_code, time.perf_counter() - started
        )
        await response(scope, receive, send)

    async def _simple(
        self, receive: Receive, declared: str | None, content_type: str | None, request_id: str
    ) -> Response:
        check_json_content_type(content_type)  # 415 before reading a body we cannot parse
        body = await self.server.read_body(_body_chunks(receive), declared)
        return Response(await self.server.simple_body(body, request_id), media_type=JSON)


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body's chunks as ASGI delivers them (Starlette's ``Request.stream``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
