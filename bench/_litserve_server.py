"""LitServe with batching (32 items / 5 ms) on the same MiniLM model.

Default variant: what a user writes from LitServe's docs, ``decode_request`` / batched
``predict`` / ``encode_response`` returning a dict, default queue. ``--tuned`` adds what
helps most on this model (see docs/benchmarks.md): the zmq ``fast_queue`` and an orjson
``Response`` built in ``encode_response``. ``--workers 2`` (with ``--tuned``) is LitServe's
answer to ``aiaas serve --inference-workers 2``: two inference processes
(``workers_per_device=2``), one torch thread and batches of up to 16 each.
"""

import sys
from pathlib import Path
from typing import Any

import litserve as ls
import orjson
import torch
from _minilm import load_minilm
from fastapi.responses import Response


class MiniLMAPI(ls.LitAPI):  # type: ignore[misc]  # litserve ships no type hints
    """decode → batched predict → encode, the LitServe way."""

    def __init__(self, bundle_dir: Path, tuned: bool, workers: int = 1) -> None:
        super().__init__(max_batch_size=32 // workers, batch_timeout=0.005)
        self.bundle_dir = bundle_dir
        self.tuned = tuned
        self.workers = workers

    def setup(self, device: str) -> None:
        """Load the model in the inference worker (torch's threads split between workers)."""
        if self.workers > 1:
            torch.set_num_threads(max(1, torch.get_num_threads() // self.workers))
        self.model = load_minilm(self.bundle_dir)
        self.text_in = self.model.input_schema

    # LitServe reads these two methods' annotations at run time to build its FastAPI route: no
    # annotation on ``request`` means "parse the JSON body" and none on the return value means
    # a plain response, as in LitServe's own examples. Annotating them would change the
    # system under test, hence the ignores.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        """One item of the simple protocol: ``{"inputs": [{"text": ...}]}``."""
        return self.text_in.model_validate(request["inputs"][0])

    def predict(self, batch: list[Any]) -> list[Any]:
        """One forward pass for the whole batch."""
        with torch.inference_mode():
            return list(self.model.predict(batch))

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        """``{"outputs": [{"embedding": [...]}]}``: a dict, or orjson bytes when tuned."""
        body = {"outputs": [output]}
        if self.tuned:
            return Response(orjson.dumps(body), media_type="application/json")
        return body


def main() -> None:
    """``_litserve_server.py BUNDLE_DIR PORT [--tuned] [--workers N]``: serve on 127.0.0.1."""
    tuned = "--tuned" in sys.argv
    workers = int(sys.argv[sys.argv.index("--workers") + 1]) if "--workers" in sys.argv else 1
    api = MiniLMAPI(Path(sys.argv[1]), tuned, workers)
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=workers,
        fast_queue=tuned,
        healthcheck_path="/ping",
    )
    server.run(
        host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", generate_client_file=False
    )


if __name__ == "__main__":
    main()
