"""An offline hint list of the ECS instance types PAI-EAS runs a service on, with their vCPUs,
memory, GPUs and an estimated hourly price.

It is a *hint* list, not the authority: EAS's own list (``DescribeMachineSpec``, ``GET
/api/v2/public/instance_types``) is read at plan time by the control plane, as which GPU
types each region offers is not documented ([U] in ``shared/notes/azure-pai-2026-12.md``
§2b). At config load a name must only have the form ``ecs.<family>.<size>``; a malformed one
is refused with a "did you mean" from this list, and :func:`hint` gives the same suggestion
to the control plane when EAS's list lacks a name.

Prices are pay-as-you-go estimates per instance-hour in USD, written without the network to
check them against the PAI-EAS price page (alibabacloud.com/help/en/pai/product-overview/
billing-of-eas): they are estimates for usage records, not a bill (:data:`PRICES_AS_OF` says
so); a type without a price here is priced at 0 saying so, and ``pricing.endpoint_hourly_usd``
overrides any.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from aiaas.pricing import Price

PRICES_AS_OF = "2025 (estimate, not re-checked)"
PRICE_SOURCE = "alibabacloud.com/help/en/pai/product-overview/billing-of-eas, pay-as-you-go"
FORM = r"^ecs\.[a-z0-9]+(-[a-z0-9]+)*\.[a-z0-9]+$"
"""An ECS instance type's form: ``ecs.<family>.<size>`` in lower case (``ecs.gn6i-c4g1.xlarge``)."""
_FORM = re.compile(FORM)


@dataclass(frozen=True)
class InstanceType:
    """One instance type: vCPUs, memory (GiB), NVIDIA GPUs and their model, and the estimated
    hourly price (None: not known here)."""

    name: str
    cpu: int
    memory_gib: float
    gpus: int = 0
    gpu_model: str = ""
    hourly_usd: float | None = None

    @property
    def gpu(self) -> bool:
        """True when the type carries an NVIDIA GPU."""
        return self.gpus > 0


HINTS: tuple[InstanceType, ...] = (
    # general purpose, compute and memory optimized (x86)
    InstanceType("ecs.c7.large", 2, 4, hourly_usd=0.09),
    InstanceType("ecs.c7.xlarge", 4, 8, hourly_usd=0.18),
    InstanceType("ecs.c7.2xlarge", 8, 16, hourly_usd=0.36),
    InstanceType("ecs.c7.4xlarge", 16, 32, hourly_usd=0.72),
    InstanceType("ecs.c7a.large", 2, 4, hourly_usd=0.08),
    InstanceType("ecs.c7a.xlarge", 4, 8, hourly_usd=0.16),
    InstanceType("ecs.g7.large", 2, 8, hourly_usd=0.11),
    InstanceType("ecs.g7.xlarge", 4, 16, hourly_usd=0.22),
    InstanceType("ecs.g7.2xlarge", 8, 32, hourly_usd=0.44),
    InstanceType("ecs.g7.4xlarge", 16, 64, hourly_usd=0.88),
    InstanceType("ecs.r7.large", 2, 16, hourly_usd=0.14),
    InstanceType("ecs.r7.xlarge", 4, 32, hourly_usd=0.28),
    InstanceType("ecs.r7.2xlarge", 8, 64, hourly_usd=0.56),
    # GPU
    InstanceType("ecs.gn5-c4g1.xlarge", 4, 30, 1, "P100", None),
    InstanceType("ecs.gn6i-c4g1.xlarge", 4, 15, 1, "T4", 1.2),
    InstanceType("ecs.gn6i-c8g1.2xlarge", 8, 31, 1, "T4", 1.5),
    InstanceType("ecs.gn6i-c16g1.4xlarge", 16, 62, 1, "T4", 2.0),
    InstanceType("ecs.gn6v-c8g1.2xlarge", 8, 32, 1, "V100", 3.5),
    InstanceType("ecs.gn6e-c12g1.3xlarge", 12, 92, 1, "V100 32GB", 4.5),
    InstanceType("ecs.gn7i-c8g1.2xlarge", 8, 30, 1, "A10", 2.0),
    InstanceType("ecs.gn7i-c16g1.4xlarge", 16, 60, 1, "A10", 2.4),
    InstanceType("ecs.gn7i-c32g1.8xlarge", 32, 188, 1, "A10", 3.2),
)
_BY_NAME = {t.name: t for t in HINTS}


def find(name: str) -> InstanceType | None:
    """The hint-list entry for ``name`` (any case), or None."""
    return _BY_NAME.get(name.strip().lower())


def hint(name: str) -> str:
    """`` (did you mean 'x'?)`` with the closest names of the hint list, or ``""``."""
    close = difflib.get_close_matches(name.strip().lower(), list(_BY_NAME), n=2, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def check_instance_type(name: str) -> str | None:
    """Why ``name`` cannot be an EAS instance type (None: its form is right; EAS's own list
    is checked at plan time)."""
    if _FORM.fullmatch(name.strip().lower()):
        return None
    return (
        f"{name!r} is not an ECS instance type: ecs.<family>.<size>, e.g. "
        f"ecs.gn6i-c4g1.xlarge{hint(name)}"
    )


def instance_price(name: str) -> Price:
    """The estimated hourly price of one instance of ``name`` (0, saying so, when unknown)."""
    found = find(name)
    if found is None or found.hourly_usd is None:
        return Price(
            0.0,
            "instance-hour",
            f"no price for {name!r} in adapters/pai/instance_types.py; set "
            "pricing.endpoint_hourly_usd",
            PRICES_AS_OF,
        )
    return Price(found.hourly_usd, "instance-hour", f"{PRICE_SOURCE} ({found.name})", PRICES_AS_OF)
