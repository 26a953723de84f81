"""This machine: ``aiaas function serve`` (uvicorn), as strict as the strictest cloud."""

from __future__ import annotations

from aiaas.pricing import FREE_FUNCTION
from functions.platforms import Platform

_MB = 1024 * 1024

PLATFORM = Platform(
    name="local",
    # Lambda's limits, and its way of counting the answer, so local finds a too-large
    # request or answer before the strictest cloud does.
    max_request_bytes=6 * _MB,
    max_response_bytes=6 * _MB,
    escaped_response=True,
    close_after_413=True,  # served by uvicorn itself
    prices=FREE_FUNCTION,
)
