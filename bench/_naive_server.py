"""The server a user writes first: FastAPI, one forward pass per request, no batching.

The endpoint is ``async def`` and calls ``predict`` directly, so a forward blocks the event
loop. It still gets the two cheap wins (orjson bytes, ``inference_mode``), so the comparison
with aiaas is about batching, not JSON encoding.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import torch
import uvicorn
from _minilm import load_minilm
from fastapi import FastAPI, Request
from fastapi.responses import Response


def main() -> None:
    """``_naive_server.py BUNDLE_DIR PORT``: serve on 127.0.0.1 once the model is loaded."""
    model = load_minilm(Path(sys.argv[1]))
    text_in = model.input_schema
    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        items = [text_in.model_validate(i) for i in orjson.loads(await request.body())["inputs"]]
        with torch.inference_mode():
            outputs = model.predict(items)
        return Response(orjson.dumps({"outputs": outputs}), media_type="application/json")

    @app.get("/ping")
    async def ping() -> Response:
        return Response(b"")

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
