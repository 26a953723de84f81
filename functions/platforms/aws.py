"""AWS Lambda (function URL or API Gateway HTTP API, through Mangum): ``functions.aws_lambda``."""

from __future__ import annotations

from aiaas.pricing import FunctionPrices, Price
from functions.platforms import Packaging, Platform

_PRICES = "aws.amazon.com/lambda/pricing (x86, us-east-1)"
_MB = 1024 * 1024

PLATFORM = Platform(
    name="aws",
    # Lambda's invocation payload quota: 6 MB each way for a synchronous (buffered) call
    # (docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html). The response limit
    # counts the JSON document the runtime sends, in which the body is a JSON string.
    max_request_bytes=6 * _MB,
    max_response_bytes=6 * _MB,
    escaped_response=True,
    close_after_413=False,  # Lambda reads the whole event before the function runs
    prices=FunctionPrices(
        Price(0.20 / 1e6, "request", _PRICES, "2024"),
        Price(0.0000166667, "GB-second", _PRICES, "2024"),
    ),
    metrics_in_logs=True,
    package=Packaging(
        entrypoint="functions.aws_lambda",
        requirements=("mangum>=0.17",),
        site_packages="",
        # 50 MB zipped for a direct upload (the same quotas page).
        max_zip_bytes=50 * _MB,
        limit_source="Lambda: 50 MB zipped for a direct upload",
        handler="functions.aws_lambda.handler (runtime python{python}, architecture {arch})",
    ),
)
