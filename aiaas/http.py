"""HTTP pieces shared by the model server and the function app (Starlette, no torch).

One JSON error shape, one request-id rule, one 404/405 handler, so every aiaas surface
answers alike.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from aiaas.custom_attributes import CUSTOM_ATTRIBUTES_HEADER, request_id_in_attributes
from aiaas.errors import (
    AiaasError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)

JSON = "application/json"
REQUEST_ID_HEADER = "x-request-id"
# ASCII only (re.ASCII: ``\w`` would take any letter, and a header carrying one cannot be
# sent on by httpx, nor by most HTTP stacks).
_REQUEST_ID_OK = re.compile(r"^[\w.:/+=@-]{1,128}$", re.ASCII)


_DECIMAL = re.compile(r"[0-9]{1,20}")


def header_int(value: str | None, header: str) -> int | None:
    """A byte-count header (``Content-Length``…) as an int; ``None`` when absent.

    Only ASCII digits count: ``"²".isdigit()`` is true but ``int("²")`` fails. Anything
    else raises :class:`~aiaas.errors.BadRequest` (400) naming the header.
    """
    if value is None:
        return None
    text = value.strip()
    if _DECIMAL.fullmatch(text) is None:
        raise BadRequest(f"{header} {text[:20]!r} is not a byte count (ASCII digits)")
    return int(text)


async def read_limited_body(
    chunks: AsyncIterator[bytes], declared: str | None, limit: int, *, who: str = "this server"
) -> bytes:
    """The whole body from ``chunks``, refused (413) as soon as it is over ``limit`` bytes: at
    once when the declared ``Content-Length`` says so, else when the bytes read pass it (the
    rest is never read, so an oversized upload is never buffered). Both servers read bodies
    through this."""
    length = header_int(declared, "Content-Length")
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is {length} bytes; {who} accepts {limit}")
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over {limit} bytes; {who} accepts {limit}")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def request_id_of(request: Request, *, strict: bool = False) -> str:
    """The caller's ``x-request-id`` (or the one a cloud carried in its custom attributes)
    when it is sane, else a new one. ``strict``: an id that is not printable ASCII is
    refused (:class:`~aiaas.errors.BadRequest`, 400) rather than replaced."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is None:
        given = request_id_in_attributes(request.headers.get(CUSTOM_ATTRIBUTES_HEADER))
    if strict:
        check_request_id(given)
    return request_id_from(given)


def check_request_id(given: str | None) -> None:
    """Raise :class:`~aiaas.errors.BadRequest` (400) for a request id that is not printable
    ASCII (a header value decoded as Latin-1 shows a UTF-8 id as such characters)."""
    if given is not None and not (given.isascii() and given.isprintable()):
        raise BadRequest(
            f"{REQUEST_ID_HEADER} must be printable ASCII (letters, digits, . : / + = @ _ -)"
        )


def request_id_from(given: str | None) -> str:
    """``given`` (an ``x-request-id`` header's value) when it is sane, else a new id."""
    return given if given and _REQUEST_ID_OK.match(given) else new_request_id()


#: New ids are this process's random prefix and a counter: unique, 32 hex digits like a
#: UUID's, at a tenth of ``uuid4``'s cost (no system call per request).
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """A new request id: 32 hex digits, unique across processes and requests."""
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    """orjson-encoded JSON (FastAPI's encoder costs ~50x more per embedding)."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def error_response(exc: AiaasError, request_id: str, status: int | None = None) -> Response:
    """``{"error": {code, message, details, request_id}}``; ``Retry-After`` when throttled or
    unavailable (503)."""
    response = json_response(exc.to_dict(request_id), status or exc.http_status)
    _say_when_to_retry(response, exc)
    return response


def oip_error_response(exc: AiaasError, request_id: str, status: int | None = None) -> Response:
    """An error on an Open Inference Protocol route, in the shape OIP clients parse.

    The OIP v2 REST spec answers errors as ``{"error": "<message>"}`` (tritonclient and
    KServe's client read that string); aiaas adds ``code`` and ``request_id`` beside it, so
    :func:`aiaas.errors.error_from_body` still rebuilds the typed error. ``Retry-After`` as
    in :func:`error_response`.
    """
    body: dict[str, Any] = {"error": exc.message, "code": exc.code, "request_id": request_id}
    if exc.details is not None:
        body["details"] = exc.details
    response = json_response(body, status or exc.http_status)
    _say_when_to_retry(response, exc)
    return response


def _say_when_to_retry(response: Response, exc: AiaasError) -> None:
    """``Retry-After``: the error's own hint when it has one, else 1 s on every 503 (every
    "try again later" of aiaas says when)."""
    hint = exc.retry_after
    if hint is not None and response.status_code in (429, 503):
        response.headers["retry-after"] = str(max(1, round(hint)))
    elif response.status_code == 503:
        response.headers["retry-after"] = "1"


def is_oip_path(path: str) -> bool:
    """True for the Open Inference Protocol's routes (``/v2`` and below): their errors are
    answered with :func:`oip_error_response`, every other route's with :func:`error_response`."""
    return path == "/v2" or path.startswith("/v2/")


def route_path(scope: Scope) -> str:
    """The path routes match against: ``scope["path"]`` without the ``root_path`` prefix."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of ``request``'s app takes on its path, sorted.

    Starlette's 405 names only the first route whose path matches, but a path may be served
    by several routes (the model server has ``GET /`` and ``POST /``)."""
    path = route_path(request.scope)
    methods: set[str] = set()
    app = request.scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", ()):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


async def route_not_found(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 as JSON errors (the OIP shape under ``/v2``); a 405 carries the
    ``Allow`` header (RFC 9110) listing the path's methods."""
    path = request.url.path
    allow = ""
    if getattr(exc, "status_code", 404) == 405:
        allow = ", ".join(allowed_methods(request)) or str(
            (getattr(exc, "headers", None) or {}).get("Allow", "")
        )
        err: AiaasError = MethodNotAllowed(
            f"method {request.method} is not allowed on {path}"
            + (f"; allowed: {allow}" if allow else "")
        )
    else:
        err = NotFound(f"no route {request.method} {path}")
    answer = oip_error_response if is_oip_path(route_path(request.scope)) else error_response
    request_id = request_id_of(request)
    response = answer(err, request_id)
    response.headers[REQUEST_ID_HEADER] = request_id
    if allow:
        response.headers["allow"] = allow
    return response
