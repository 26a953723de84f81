"""The simple protocol's POST routes as plain ASGI, in front of the Starlette app.

Under load the model server's event loop shares the GIL (and the cores) with the inference
threads, so every microsecond it spends per request is taken from the forward pass.
Starlette's middleware stack, router and ``Request`` object were a large share of the
loop's time per request in py-spy profiles (next to the work itself: read the body, parse,
validate, queue, encode). :class:`SimpleFastPath` answers ``POST /invocations``,
``/score``, ``/`` and ``/api/predict/{service}`` directly with :class:`SimpleEndpoint`:
the data plane's simple protocol (:meth:`DataPlane.simple`), error mapping, request id and
metrics, the same as every Starlette route. Everything else (other methods and routes,
lifespan) goes to the Starlette app unchanged; its routes for these paths are the same
:class:`SimpleEndpoint` objects (they declare the paths, so that another method gets 405
with the right ``Allow``). This module imports the data plane only, never the app.

Both transports read the caller's deadline (:func:`~aiaas.runtime.dataplane.caller_deadline`)
and, once the body is in, watch the connection while the request waits
(:func:`unless_client_leaves`): a client gone before its answer is not computed for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TypeVar

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiaas.custom_attributes import CUSTOM_ATTRIBUTES_HEADER, request_id_in_attributes
from aiaas.http import JSON, check_request_id, request_id_from
from aiaas.protocol import check_json_content_type
from aiaas.retry import TIMEOUT_HEADER
from aiaas.runtime.dataplane import Answer, ClientGone, DataPlane, caller_deadline

T = TypeVar("T")

#: Exact paths of the simple protocol, and the metrics label of each.
_SIMPLE_ROUTES = {"/invocations": "/invocations", "/score": "/score", "/": "/"}
_PAI_PREFIX = "/api/predict/"
_PAI_ROUTE = "/api/predict/{service}"
#: Every route template of the simple protocol.
SIMPLE_ROUTES = (*_SIMPLE_ROUTES.values(), _PAI_ROUTE)

_JSON_TYPE = (b"content-type", JSON.encode("latin-1"))
_ATTRIBUTES = CUSTOM_ATTRIBUTES_HEADER.encode("latin-1")
_TIMEOUT = TIMEOUT_HEADER.encode("latin-1")


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


class SimpleEndpoint:
    """One simple-protocol route as an ASGI app: ``{"inputs": [...]}`` in, the data
    plane's answer out, with the request id and the route's metrics."""

    def __init__(self, plane: DataPlane, route: str) -> None:
        self.plane = plane
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        declared: str | None = None
        given: str | None = None
        content_type: str | None = None
        timeout: str | None = None
        attributes: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"x-request-id":
                given = value.decode("latin-1")
            elif name == _TIMEOUT:
                timeout = value.decode("latin-1")
            elif name == _ATTRIBUTES:
                attributes = value.decode("latin-1")
        if given is None and attributes is not None:
            given = request_id_in_attributes(attributes)
        request_id = request_id_from(given)
        work = self._simple(
            receive, declared, content_type, request_id, given, (timeout, attributes)
        )
        answer = await self.plane.respond(work, request_id, oip=False)
        self.plane.observe(self.route, answer.status, started)
        await send_answer(send, answer, request_id)

    async def _simple(
        self,
        receive: Receive,
        declared: str | None,
        content_type: str | None,
        request_id: str,
        given: str | None,
        timeout: tuple[str | None, str | None],
    ) -> Answer:
        check_request_id(given)  # 400 for an id that is not printable ASCII (answered anew)
        deadline = caller_deadline(*timeout)  # 400 for a malformed one; counted from here
        check_json_content_type(content_type)  # 415 before reading a body we cannot parse
        # 503 (at once, or after a wait at the door) before reading the body; in until answered
        async with self.plane.admitted(deadline) as own:
            body = await self.plane.read_body(_body_chunks(receive), declared, deadline, own)
            work = self.plane.simple(body, request_id, deadline, own)
            return Answer(200, await unless_client_leaves(work, receive))


async def send_answer(send: Send, answer: Answer, request_id: str) -> None:
    """Send ``answer`` as an ASGI response (what a Starlette ``Response`` sends, without
    building one): ``content-length``, ``content-type``, its headers, ``x-request-id``."""
    status, body, media_type, extra = answer
    headers = [(b"content-length", str(len(body)).encode("latin-1"))]
    if media_type == JSON:
        headers.append(_JSON_TYPE)
    elif media_type is not None:
        headers.append((b"content-type", media_type.encode("latin-1")))
    if extra:
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    headers.append((b"x-request-id", request_id.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def simple_endpoints(plane: DataPlane) -> dict[str, SimpleEndpoint]:
    """One :class:`SimpleEndpoint` for each simple-protocol route, by route template."""
    return {route: SimpleEndpoint(plane, route) for route in SIMPLE_ROUTES}


class SimpleFastPath:
    """ASGI middleware: the simple protocol's POST routes straight to their
    :class:`SimpleEndpoint` (``endpoints``, by route template), without Starlette's
    per-request machinery; every other request goes to ``app``."""

    def __init__(self, app: ASGIApp, endpoints: Mapping[str, SimpleEndpoint]) -> None:
        self.app = app
        self.endpoints = dict(endpoints)
        missing = set(SIMPLE_ROUTES) - self.endpoints.keys()
        assert not missing, f"no endpoint for {sorted(missing)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = simple_route(scope)
        if route is None:
            await self.app(scope, receive, send)
        else:
            await self.endpoints[route](scope, receive, send)


async def unless_client_leaves(work: Awaitable[T], receive: Receive) -> T:
    """``work``'s result, unless the client disconnects first: ``work`` is then cancelled
    (its items still queued are never run) and :class:`~aiaas.runtime.dataplane.ClientGone`
    raised (499). Call it once the request's body has been read: ``receive`` then returns
    only when the connection is gone (``http.disconnect``). It costs one task per request
    (about 10 µs of the event loop's time, measured on the 2-core machine)."""
    task = asyncio.current_task()
    assert task is not None, "call it from a task"
    answered = gone = False

    def left(watcher: asyncio.Future[Message]) -> None:
        nonlocal gone
        if answered or watcher.cancelled() or watcher.exception() is not None:
            return
        if watcher.result()["type"] == "http.disconnect":
            gone = True
            task.cancel()

    watcher = asyncio.ensure_future(receive())
    watcher.add_done_callback(left)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        raise ClientGone() from None
    finally:
        answered = True
        watcher.cancel()


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
