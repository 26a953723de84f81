"""Alibaba Function Compute 3.0 (custom runtime: uvicorn on :9000): ``functions.alibaba_fc``."""

from __future__ import annotations

from aiaas.pricing import FunctionPrices, Price
from functions.platforms import Packaging, Platform

_PRICES = "alibabacloud.com/help/en/functioncompute billing"
_MB = 1024 * 1024

PLATFORM = Platform(
    name="alibaba",
    max_request_bytes=32 * _MB,  # synchronous HTTP invocation: 32 MB
    # No response cap we could confirm: aiaas's choice, equal to the request limit.
    max_response_bytes=32 * _MB,
    escaped_response=False,
    close_after_413=True,  # the custom runtime is uvicorn itself
    prices=FunctionPrices(
        Price(0.0000002, "invocation", f"{_PRICES} (pay-as-you-go)", "2024"),
        Price(0.000016384, "GB-second", f"{_PRICES} (vCPU+memory, approx.)", "2024"),
    ),
    package=Packaging(
        entrypoint="functions.alibaba_fc",
        requirements=("uvicorn>=0.30",),
        site_packages="python",
        templates=("alibaba/bootstrap",),
        max_zip_bytes=100 * _MB,
        limit_source="Function Compute 3.0: code package limit unconfirmed; aiaas caps at 100 MB",
        handler="custom runtime: ./bootstrap serves on port 9000 (needs python{python} as python3)",
    ),
)
