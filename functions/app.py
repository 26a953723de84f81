"""The function app: ``POST /predict`` forwarded to the configured provider's ``invoke``.

Minimal for now (the full tier adds auth, edge validation and metering); errors already map
once from the typed hierarchy to HTTP.
"""

from __future__ import annotations

import re
import uuid

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import Response

from adapters.base import Provider
from aiaas.errors import AiaasError, PayloadTooLarge, Throttled

JSON = "application/json"
MAX_BODY_BYTES = 6 * 1024 * 1024
_REQUEST_ID_OK = re.compile(r"^[\w.:/+=@-]{1,128}$")


def create_app(provider: Provider, deployment: str, *, invoke_timeout_s: float = 30.0) -> FastAPI:
    """A FastAPI app forwarding the simple protocol to ``deployment`` on ``provider``."""
    app = FastAPI(title="aiaas function", docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "deployment": deployment, "provider": provider.name}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        given = request.headers.get("x-request-id")
        request_id = given if given and _REQUEST_ID_OK.match(given) else uuid.uuid4().hex
        try:
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                raise PayloadTooLarge(
                    f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}"
                )
            result = await anyio.to_thread.run_sync(
                lambda: provider.invoke(
                    deployment, body, request_id=request_id, timeout=invoke_timeout_s
                )
            )
        except AiaasError as exc:
            response = Response(
                _dumps(exc.to_dict(request_id)), status_code=exc.http_status, media_type=JSON
            )
            if isinstance(exc, Throttled):
                response.headers["retry-after"] = str(max(1, round(exc.retry_after)))
        else:
            response = Response(result, media_type=JSON)
        response.headers["x-request-id"] = request_id
        return response

    return app


def _dumps(body: object) -> bytes:
    import orjson

    return orjson.dumps(body)
