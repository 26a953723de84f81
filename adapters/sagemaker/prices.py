"""List prices of SageMaker real-time inference instances, per hour, us-east-1, on demand.

Written from aws.amazon.com/sagemaker/pricing ("Real-Time Inference" tab) without the
network to re-check them: they are estimates for usage records, not a bill. Update them and
:data:`PRICES_AS_OF` when you check the page; ``pricing.endpoint_hourly_usd`` overrides them
per deployment. A type not listed here is priced at 0 with a source that says so (the usage
records then carry no endpoint share until the override is set).
"""

from __future__ import annotations

from aiaas.pricing import Price

PRICES_AS_OF = "2024 (not re-checked)"
SOURCE = "aws.amazon.com/sagemaker/pricing, real-time inference, us-east-1"
SERVERLESS_PRICE_SOURCE = "aws.amazon.com/sagemaker/pricing, serverless inference, us-east-1"
SERVERLESS_GB_SECOND_USD = 0.00002  # per second of compute per GB of the endpoint's memory

HOURLY_USD: dict[str, float] = {
    "ml.t2.medium": 0.056,
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.c5.large": 0.102,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 1.053,
    "ml.g4dn.4xlarge": 1.686,
    "ml.g4dn.8xlarge": 3.046,
    "ml.g4dn.12xlarge": 5.477,
    "ml.g4dn.16xlarge": 6.091,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g5.8xlarge": 3.06,
    "ml.g5.12xlarge": 7.09,
    "ml.g5.24xlarge": 10.18,
    "ml.g5.48xlarge": 20.36,
    "ml.p3.2xlarge": 3.825,
    "ml.p3.8xlarge": 14.688,
    "ml.p3.16xlarge": 28.152,
    "ml.p4d.24xlarge": 37.688,
}


def instance_price(instance_type: str) -> Price:
    """The list price of one ``instance_type`` per hour (0, saying so, when not listed)."""
    value = HOURLY_USD.get(instance_type)
    if value is None:
        return Price(
            0.0,
            "hour",
            f"{instance_type} is not in aiaas's price table: set pricing.endpoint_hourly_usd",
            "-",
        )
    return Price(value, "hour", f"{SOURCE} ({instance_type})", PRICES_AS_OF)
