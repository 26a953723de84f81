"""Azure Functions (Python v2 programming model): ``functions.azure_functions``."""

from __future__ import annotations

from aiaas.pricing import FunctionPrices, Price
from functions.platforms import Packaging, Platform

_PRICES = "azure.microsoft.com/pricing/details/functions (Consumption)"
_MB = 1024 * 1024

PLATFORM = Platform(
    name="azure",
    max_request_bytes=100 * _MB,  # the HTTP trigger's request limit
    # No response cap we could confirm: aiaas's choice, equal to the request limit.
    max_response_bytes=100 * _MB,
    escaped_response=False,
    close_after_413=False,  # the Functions host, not uvicorn, holds the connection
    prices=FunctionPrices(
        Price(0.20 / 1e6, "execution", _PRICES, "2024"),
        Price(0.000016, "GB-second", _PRICES, "2024"),
    ),
    package=Packaging(
        entrypoint="functions.azure_functions",
        requirements=("azure-functions>=1.18",),
        site_packages=".python_packages/lib/site-packages",
        templates=("azure/function_app.py", "azure/host.json", "azure/requirements.txt"),
        max_zip_bytes=100 * _MB,
        limit_source="Azure Functions: no zip limit found in the notes; aiaas caps at 100 MB",
        handler="function_app.py (Python {python}, v2 programming model; host.json included)",
    ),
)
