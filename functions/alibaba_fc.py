"""Alibaba Function Compute 3.0 entrypoint: the custom runtime.

FC starts ``bootstrap`` (templates/functions/alibaba/bootstrap), which runs this module:
uvicorn serving the one function app on ``0.0.0.0:9000``, as FC's custom runtime requires
(binding 127.0.0.1 there gives ``FunctionNotStarted``). ``FC_SERVER_HOST`` and
``FC_SERVER_PORT`` override both, which is how the tests run it on 127.0.0.1.

Chosen over the built-in Python runtime's HTTP-trigger event form because it is the same
ASGI app over plain HTTP, with no event translation to keep in step with FC's event format.
"""

from __future__ import annotations

import os

import uvicorn

from functions.bootstrap import app_from_environment
from functions.platforms.alibaba import PLATFORM

FC_PORT = 9000


def main() -> None:
    """Serve the function app until FC stops the instance."""
    uvicorn.run(
        app_from_environment(PLATFORM),
        host=os.environ.get("FC_SERVER_HOST", "0.0.0.0"),  # FC requires 0.0.0.0
        port=int(os.environ.get("FC_SERVER_PORT", FC_PORT)),
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
