"""Prices behind the per-call cost estimate of every usage record.

Each figure says where it comes from and when it was taken. They are list prices in USD
for one region, written from the providers' public price pages; they were NOT re-checked
against the live pages when this table was written (no network here), so treat them as
estimates and update the table (and its ``as_of``) when you check them. Override any of
them per deployment with ``AIAAS_PRICE_<NAME>`` (e.g. ``AIAAS_PRICE_ENDPOINT_HOURLY``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """One price: value in USD per ``unit``, its source and when it was taken."""

    value: float
    unit: str
    source: str
    as_of: str


_LAMBDA = "aws.amazon.com/lambda/pricing (x86, us-east-1)"
_AZURE_FN = "azure.microsoft.com/pricing/details/functions (Consumption)"
_FC = "alibabacloud.com/help/en/functioncompute billing (pay-as-you-go, approx.)"

# platform -> (per-request price, per-GB-second price) of the serverless function
FUNCTION_PRICES: dict[str, tuple[Price, Price]] = {
    "aws": (
        Price(0.20 / 1e6, "request", _LAMBDA, "2024"),
        Price(0.0000166667, "GB-second", _LAMBDA, "2024"),
    ),
    "azure": (
        Price(
            0.20 / 1e6,
            "execution",
            "azure.microsoft.com/pricing/details/functions (Consumption)",
            "2024",
        ),
        Price(
            0.000016,
            "GB-second",
            "azure.microsoft.com/pricing/details/functions (Consumption)",
            "2024",
        ),
    ),
    "alibaba": (
        Price(
            0.0000002,
            "invocation",
            "alibabacloud.com/help/en/functioncompute billing (pay-as-you-go)",
            "2024",
        ),
        Price(
            0.000016384,
            "GB-second",
            "alibabacloud.com/help/en/functioncompute billing (vCPU+memory, approx.)",
            "2024",
        ),
    ),
    "local": (
        Price(0.0, "request", "runs on your machine", "-"),
        Price(0.0, "GB-second", "-", "-"),
    ),
}

# provider -> hourly price of the default GPU instance behind the endpoint
ENDPOINT_HOURLY: dict[str, Price] = {
    "sagemaker": Price(
        0.736, "hour", "aws.amazon.com/sagemaker/pricing ml.g4dn.xlarge, us-east-1", "2024"
    ),
    "azureml": Price(
        0.526, "hour", "azure.microsoft.com/pricing/details/machine-learning NC4as T4 v3", "2024"
    ),
    "pai": Price(0.60, "hour", "alibabacloud.com PAI-EAS ecs.gn6i-c4g1.xlarge (approx.)", "2024"),
    "local": Price(0.0, "hour", "runs on your machine", "-"),
}


def _override(name: str, default: float) -> float:
    value = os.environ.get(f"AIAAS_PRICE_{name}")
    return float(value) if value else default


def estimate_cost(platform: str, provider: str, seconds: float, memory_mb: int) -> float:
    """USD for one call: the function's request + GB-seconds, plus the endpoint's time share.

    The endpoint share charges the call its wall time on one instance, which over-counts
    when the server batches concurrent calls: an upper bound, by design.
    """
    per_request, per_gb_s = FUNCTION_PRICES.get(platform, FUNCTION_PRICES["local"])
    hourly = ENDPOINT_HOURLY.get(provider, ENDPOINT_HOURLY["local"])
    function = (
        _override("FUNCTION_REQUEST", per_request.value)
        + _override("FUNCTION_GB_SECOND", per_gb_s.value) * (memory_mb / 1024) * seconds
    )
    endpoint = _override("ENDPOINT_HOURLY", hourly.value) / 3600 * seconds
    return function + endpoint
