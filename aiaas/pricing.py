"""Prices behind the per-call cost estimate of every usage record.

Each figure says where it comes from and when it was taken. They are list prices in USD
for one region, written from the providers' public price pages; they were NOT re-checked
against the live pages when this table was written (no network here), so treat them as
estimates and update them (and their ``as_of``) when you check them. Each function
platform's prices sit in its record (``functions.platforms``); the price of the instance
behind an endpoint is declared by each provider (``ProviderSpec.endpoint_hourly``). Override
any of them per deployment in the ``pricing:`` section (or ``AIAAS_PRICING__ENDPOINT_HOURLY_USD``
and friends): the overrides are read with the rest of the config, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Price:
    """One price: value in USD per ``unit``, its source and when it was taken."""

    value: float
    unit: str
    source: str
    as_of: str


class FunctionPrices(NamedTuple):
    """What a serverless function platform charges: per request and per GB-second. Each
    platform's record holds its own (``functions.platforms``; a NamedTuple, cheap to define
    at a cold start)."""

    per_request: Price
    per_gb_second: Price


FREE_FUNCTION = FunctionPrices(
    Price(0.0, "request", "runs on your machine", "-"), Price(0.0, "GB-second", "-", "-")
)

FREE = Price(0.0, "hour", "runs on your machine", "-")


@dataclass(frozen=True)
class CostModel:
    """The prices behind one function's usage records, fixed when the function starts."""

    per_request: float
    per_gb_second: float
    endpoint_hourly: float
    memory_mb: int

    @classmethod
    def build(
        cls,
        function: FunctionPrices,
        endpoint_hourly: Price,
        memory_mb: int,
        *,
        function_request_usd: float | None = None,
        function_gb_second_usd: float | None = None,
        endpoint_hourly_usd: float | None = None,
    ) -> CostModel:
        """The function platform's and the endpoint's list prices, each replaced by its
        override if set."""
        return cls(
            per_request=_pick(function_request_usd, function.per_request.value),
            per_gb_second=_pick(function_gb_second_usd, function.per_gb_second.value),
            endpoint_hourly=_pick(endpoint_hourly_usd, endpoint_hourly.value),
            memory_mb=memory_mb,
        )

    def estimate(self, seconds: float) -> float:
        """USD for one call: the function's request + GB-seconds, plus the endpoint's share.

        The endpoint share charges the call its wall time on one instance, which
        over-counts when the server batches concurrent calls: an upper bound, by design.
        """
        function = self.per_request + self.per_gb_second * (self.memory_mb / 1024) * seconds
        return function + self.endpoint_hourly / 3600 * seconds


def _pick(override: float | None, default: float) -> float:
    return default if override is None else override
