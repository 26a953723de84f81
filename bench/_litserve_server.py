"""LitServe with batching (32 items / 5 ms) on the same MiniLM model.

``--tuned`` adds what LitServe's docs and our notes show helps most: the zmq fast queue and
an orjson ``Response`` from ``encode_response``.
"""

import sys
from pathlib import Path
from typing import Any

import litserve as ls
import orjson
import torch
from _minilm import load_minilm
from fastapi.responses import Response


class MiniLMAPI(ls.LitAPI):  # type: ignore[misc]
    """decode → batched predict → encode, the LitServe way."""

    def __init__(self, bundle_dir: Path, tuned: bool) -> None:
        super().__init__(max_batch_size=32, batch_timeout=0.005)
        self.bundle_dir = bundle_dir
        self.tuned = tuned

    def setup(self, device: str) -> None:
        self.model = load_minilm(self.bundle_dir)
        self.text_in = self.model.input_schema

    # LitServe reads these annotations at run time to build its FastAPI endpoint: no
    # annotation on ``request`` means "parse the JSON body", as in LitServe's own examples.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return self.text_in.model_validate(request["inputs"][0])

    def predict(self, batch: list[Any]) -> list[Any]:
        with torch.inference_mode():
            return list(self.model.predict(batch))

    def encode_response(self, output: Any) -> Any:
        body = {"outputs": [output]}
        if self.tuned:
            return Response(orjson.dumps(body), media_type="application/json")
        return body


def main() -> None:
    """``_litserve_server.py BUNDLE_DIR PORT [--tuned]``."""
    tuned = "--tuned" in sys.argv
    api = MiniLMAPI(Path(sys.argv[1]), tuned)
    server = ls.LitServer(
        api, accelerator="cpu", workers_per_device=1, fast_queue=tuned, healthcheck_path="/ping"
    )
    server.run(
        host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", generate_client_file=False
    )


if __name__ == "__main__":
    main()
