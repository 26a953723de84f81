"""The function app: the one ASGI app every serverless platform runs.

``POST /predict`` (simple protocol) and the Open Inference Protocol v2 routes, checked at
the edge (API key, body size, the manifest's JSON Schema) before anything is forwarded to
``Provider.invoke``. Provider errors map to HTTP once, here. Never imports torch.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from adapters.base import Provider
from aiaas import oip
from aiaas.errors import (
    AiaasError,
    DeadlineExceeded,
    ModelError,
    NotFound,
    NotReady,
    Throttled,
)
from aiaas.manifest import Manifest
from aiaas.protocol import parse_json, simple_inputs
from functions.auth import KeyChecker, presented_key
from functions.edge import PLATFORM_BODY_LIMITS, EdgeValidator, check_body_size

log = logging.getLogger("aiaas.function")

JSON = "application/json"
_REQUEST_ID_OK = re.compile(r"^[\w.:/+=@-]{1,128}$")

Handler = Callable[[Request, str], Awaitable[Response]]


class FunctionApp:
    """State of the function tier: where to forward, what to accept, who may call."""

    def __init__(
        self,
        provider: Provider,
        manifest: Manifest,
        *,
        deployment: str | None = None,
        keys: KeyChecker | None = None,
        max_body_bytes: int = PLATFORM_BODY_LIMITS["local"],
        invoke_timeout_s: float = 30.0,
    ) -> None:
        self.provider = provider
        self.manifest = manifest
        self.deployment = deployment or manifest.name
        self.keys = keys  # None: the platform authenticates (Lambda AWS_IAM, function keys, ...)
        self.max_body_bytes = max_body_bytes
        self.invoke_timeout_s = invoke_timeout_s
        self.validator = EdgeValidator(manifest)

    async def _forward(self, items: list[Any], request_id: str) -> dict[str, Any]:
        body = orjson.dumps({"inputs": items})
        try:
            raw = await anyio.to_thread.run_sync(
                lambda: self.provider.invoke(
                    self.deployment, body, request_id=request_id, timeout=self.invoke_timeout_s
                )
            )
        except NotFound as exc:  # the endpoint is gone: for the caller it is not available
            raise NotReady(f"endpoint unavailable: {exc.message}") from None
        result: dict[str, Any] = orjson.loads(raw)
        return result

    async def _items(self, request: Request) -> Any:
        body = await request.body()
        check_body_size(body, self.max_body_bytes)
        return parse_json(body)

    async def predict(self, request: Request, request_id: str) -> Response:
        """``{"inputs": [...]}`` → ``{"outputs": [...], "model", "version"}``."""
        items = simple_inputs(await self._items(request))
        self.validator.validate(items)
        result = await self._forward(items, request_id)
        return Response(orjson.dumps(result), media_type=JSON)

    async def oip_infer(self, request: Request, request_id: str) -> Response:
        """OIP v2 infer: tensors in, validated per item, tensors out."""
        self._check_model(request)
        items, oip_id = oip.items_from_request(await self._items(request))
        self.validator.validate(items, where="instances")
        result = await self._forward(items, request_id)
        body = oip.response(result["outputs"], self.manifest.name, result["version"], oip_id)
        return Response(orjson.dumps(body), media_type=JSON)

    async def oip_metadata(self, request: Request, _rid: str) -> Response:
        """OIP v2 model metadata, from the manifest."""
        self._check_model(request)
        m = self.manifest
        return _json(
            {
                "name": m.name,
                "versions": [m.version],
                "platform": "pytorch",
                "inputs": oip.tensor_metadata(m.input_schema),
                "outputs": oip.tensor_metadata(m.output_schema),
            }
        )

    async def oip_ready(self, request: Request, _rid: str) -> Response:
        """Ready when the deployment behind the function is."""
        if "name" in request.path_params:
            self._check_model(request)
        deployment = await anyio.to_thread.run_sync(lambda: self.provider.describe(self.deployment))
        if deployment.status != "ready":
            raise NotReady(f"deployment {self.deployment!r} is {deployment.status}")
        return _json({"name": self.manifest.name, "ready": True})

    async def live(self, _request: Request, _rid: str) -> Response:
        """The function answers."""
        return _json({"live": True})

    async def health(self, _request: Request, _rid: str) -> Response:
        """What this function serves (no call to the endpoint)."""
        m = self.manifest
        body = {
            "status": "ok",
            "model": m.name,
            "version": m.version,
            "provider": self.provider.name,
        }
        return _json(body)

    def _check_model(self, request: Request) -> None:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name != self.manifest.name or (version is not None and version != self.manifest.version):
            raise NotFound(
                f"model {name!r} is not served here; this function serves {self.manifest.name!r}"
            )

    def endpoint(
        self, handler: Handler, *, authenticated: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        """Request id, API key check, and the one mapping of errors to HTTP."""

        async def call(request: Request) -> Response:
            given = request.headers.get("x-request-id")
            request_id = given if given and _REQUEST_ID_OK.match(given) else uuid.uuid4().hex
            try:
                if authenticated and self.keys is not None:
                    self.keys.verify(
                        presented_key(
                            request.headers.get("authorization"), request.headers.get("x-api-key")
                        )
                    )
                response = await handler(request, request_id)
            except AiaasError as exc:
                response = error_response(exc, request_id)
            except Exception:
                log.exception("unhandled error (request_id=%s)", request_id)
                response = error_response(AiaasError("internal error"), request_id)
            response.headers["x-request-id"] = request_id
            return response

        return call


def error_response(exc: AiaasError, request_id: str) -> Response:
    """The function tier's mapping: throttled 429 (+Retry-After), model error 502, deadline
    504, endpoint missing or not ready 503; everything else keeps its own status."""
    status = exc.http_status
    if isinstance(exc, Throttled):
        status = 429
    elif isinstance(exc, ModelError):
        status = 502
    elif isinstance(exc, DeadlineExceeded):
        status = 504
    response = _json(exc.to_dict(request_id), status)
    if isinstance(exc, Throttled):
        response.headers["retry-after"] = str(max(1, round(exc.retry_after)))
    if status == 401:
        response.headers["www-authenticate"] = "Bearer"
    return response


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def create_app(
    provider: Provider,
    manifest: Manifest,
    *,
    deployment: str | None = None,
    keys: KeyChecker | None = None,
    max_body_bytes: int = PLATFORM_BODY_LIMITS["local"],
    invoke_timeout_s: float = 30.0,
) -> FastAPI:
    """The function app forwarding to ``deployment`` (default: the manifest's name).

    ``keys=None`` turns our API-key check off (the platform authenticates instead).
    """
    state = FunctionApp(
        provider, manifest, deployment=deployment, keys=keys,
        max_body_bytes=max_body_bytes, invoke_timeout_s=invoke_timeout_s,
    )  # fmt: skip
    app = FastAPI(title=f"{manifest.name} (aiaas function)", version=manifest.version)
    routes: list[tuple[str, str, Handler, bool]] = [
        ("POST", "/predict", state.predict, True),
        ("GET", "/health", state.health, False),
        ("GET", "/v2/health/live", state.live, False),
        ("GET", "/v2/health/ready", state.oip_ready, False),
        ("GET", "/v2/models/{name}", state.oip_metadata, True),
        ("GET", "/v2/models/{name}/versions/{version}", state.oip_metadata, True),
        ("GET", "/v2/models/{name}/ready", state.oip_ready, True),
        ("POST", "/v2/models/{name}/infer", state.oip_infer, True),
        ("POST", "/v2/models/{name}/versions/{version}/infer", state.oip_infer, True),
    ]
    for method, path, handler, authenticated in routes:
        app.add_api_route(
            path, state.endpoint(handler, authenticated=authenticated), methods=[method],
            summary=(handler.__doc__ or "").strip().splitlines()[0],
        )  # fmt: skip
    app.openapi = lambda: _openapi(app, manifest)  # type: ignore[method-assign]
    app.state.function = state
    return app


def _openapi(app: FastAPI, manifest: Manifest) -> dict[str, Any]:
    """FastAPI's document plus the model's real input/output schemas on ``/predict``."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    item_in = _hoist(manifest.input_schema, "Input", schemas)
    item_out = _hoist(manifest.output_schema, "Output", schemas)
    doc["paths"]["/predict"]["post"]["requestBody"] = {
        "required": True,
        "content": {JSON: {"schema": {
            "type": "object", "required": ["inputs"],
            "properties": {"inputs": {"type": "array", "minItems": 1, "items": item_in}},
            "example": manifest.example_request,
        }}},
    }  # fmt: skip
    doc["paths"]["/predict"]["post"]["responses"]["200"]["content"] = {
        JSON: {"schema": {
            "type": "object",
            "properties": {
                "outputs": {"type": "array", "items": item_out},
                "model": {"type": "string"}, "version": {"type": "string"},
            },
        }},
    }  # fmt: skip
    app.openapi_schema = doc
    return doc


def _hoist(schema: dict[str, Any], suffix: str, components: dict[str, Any]) -> dict[str, str]:
    """Move a JSON Schema (and its ``$defs``) into OpenAPI components; return a ``$ref``."""
    schema = copy.deepcopy(schema)
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = _rewrite_refs(sub)
    name = f"{schema.get('title', 'Model')}{suffix}"
    components[name] = _rewrite_refs(schema)
    return {"$ref": f"#/components/schemas/{name}"}


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" and isinstance(v, str)
                else _rewrite_refs(v))
            for k, v in node.items()
        }  # fmt: skip
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node
