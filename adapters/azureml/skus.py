"""The VM SKUs an Azure ML managed online endpoint deploys to, kept in the repo so a typo is
caught at config load, with their GPUs and an estimated list price.

The names are those of "Managed online endpoints SKU list" (MS Learn,
``reference-managed-online-endpoints-vm-sku-list.md``, read for the notes in
``shared/notes/azure-pai-2026-12.md`` §1b): the general purpose, compute and memory optimized
families, then the GPU ones. Azure takes the names in any case (the page writes them in
capitals); aiaas keeps Azure's usual spelling and matches without case.

Prices are the pay-as-you-go Linux list price per hour in East US, written from the Azure
virtual machines price page (azure.microsoft.com/pricing/details/virtual-machines/linux)
without the network to re-check them: a managed online endpoint bills the VM. They are
estimates for usage records, not a bill (:data:`PRICES_AS_OF` says so); a SKU without a
price here is priced at 0 saying so, and ``pricing.endpoint_hourly_usd`` overrides any.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from aiaas.pricing import Price

PRICES_AS_OF = "2025 (estimate, not re-checked)"
PRICE_SOURCE = "azure.microsoft.com/pricing/details/virtual-machines/linux, pay-as-you-go, East US"
SKU_LIST_SOURCE = "MS Learn: Managed online endpoints SKU list"
SMALLEST_RECOMMENDED = "Standard_DS3_v2"
"""azure-ai-ml warns below this SKU ("may be too small for compute resources")."""


@dataclass(frozen=True)
class Sku:
    """One SKU: its name, NVIDIA GPUs (a fraction for a partitioned A10), GPU model, and the
    estimated hourly list price (None: not known here)."""

    name: str
    gpus: float = 0
    gpu_model: str = ""
    hourly_usd: float | None = None

    @property
    def gpu(self) -> bool:
        """True when the SKU carries an NVIDIA GPU (the one image's CUDA build uses it)."""
        return self.gpus > 0


def _cpu(*rows: tuple[str, float | None]) -> list[Sku]:
    return [Sku(name, hourly_usd=price) for name, price in rows]


def _gpu(model: str, *rows: tuple[str, float, float | None]) -> list[Sku]:
    return [Sku(name, gpus, model, price) for name, gpus, price in rows]


_TABLE: list[Sku] = [
    # general purpose
    *_cpu(
        ("Standard_DS1_v2", 0.073),
        ("Standard_DS2_v2", 0.146),
        ("Standard_DS3_v2", 0.293),
        ("Standard_DS4_v2", 0.585),
        ("Standard_DS5_v2", 1.17),
        ("Standard_D2a_v4", 0.096),
        ("Standard_D4a_v4", 0.192),
        ("Standard_D8a_v4", 0.384),
        ("Standard_D16a_v4", 0.768),
        ("Standard_D32a_v4", 1.536),
        ("Standard_D48a_v4", 2.304),
        ("Standard_D64a_v4", 3.072),
        ("Standard_D96a_v4", 4.608),
        ("Standard_D2as_v4", 0.096),
        ("Standard_D4as_v4", 0.192),
        ("Standard_D8as_v4", 0.384),
        ("Standard_D16as_v4", 0.768),
        ("Standard_D32as_v4", 1.536),
        ("Standard_D48as_v4", 2.304),
        ("Standard_D64as_v4", 3.072),
        ("Standard_D96as_v4", 4.608),
    ),
    # compute optimized
    *_cpu(
        ("Standard_F2s_v2", 0.0846),
        ("Standard_F4s_v2", 0.169),
        ("Standard_F8s_v2", 0.338),
        ("Standard_F16s_v2", 0.677),
        ("Standard_F32s_v2", 1.353),
        ("Standard_F48s_v2", 2.03),
        ("Standard_F64s_v2", 2.706),
        ("Standard_F72s_v2", 3.045),
        ("Standard_FX4mds", None),
        ("Standard_FX12mds", None),
        ("Standard_FX24mds", None),
        ("Standard_FX36mds", None),
        ("Standard_FX48mds", None),
    ),
    # memory and storage optimized
    *_cpu(
        ("Standard_E2s_v3", 0.126),
        ("Standard_E4s_v3", 0.252),
        ("Standard_E8s_v3", 0.504),
        ("Standard_E16s_v3", 1.008),
        ("Standard_E32s_v3", 2.016),
        ("Standard_E48s_v3", 3.024),
        ("Standard_E64s_v3", 3.629),
        ("Standard_L8s_v2", 0.624),
        ("Standard_L16s_v2", 1.248),
        ("Standard_L32s_v2", 2.496),
        ("Standard_L48s_v2", 3.744),
        ("Standard_L64s_v2", 4.992),
        ("Standard_L80s_v2", 6.24),
        ("Standard_L8s_v3", 0.624),
        ("Standard_L16s_v3", 1.248),
        ("Standard_L32s_v3", 2.496),
        ("Standard_L48s_v3", 3.744),
        ("Standard_L64s_v3", 4.992),
        ("Standard_L80s_v3", 6.24),
        ("Standard_L8as_v3", 0.624),
        ("Standard_L16as_v3", 1.248),
        ("Standard_L32as_v3", 2.496),
        ("Standard_L48as_v3", 3.744),
        ("Standard_L64as_v3", 4.992),
        ("Standard_L80as_v3", 6.24),
    ),
    # GPU
    *_gpu(
        "T4",
        ("Standard_NC4as_T4_v3", 1, 0.526),
        ("Standard_NC8as_T4_v3", 1, 0.752),
        ("Standard_NC16as_T4_v3", 1, 1.204),
        ("Standard_NC64as_T4_v3", 4, 4.352),
    ),
    *_gpu(
        "A100 80GB",
        ("Standard_NC24ads_A100_v4", 1, 3.673),
        ("Standard_NC48ads_A100_v4", 2, 7.346),
        ("Standard_NC96ads_A100_v4", 4, 14.692),
        ("Standard_ND96amsr_A100_v4", 8, 32.77),
    ),
    *_gpu("A100 40GB", ("Standard_ND96asr_v4", 8, 27.197)),
    *_gpu(
        "P100",
        ("Standard_NC6s_v2", 1, 2.07),
        ("Standard_NC12s_v2", 2, 4.14),
        ("Standard_NC24s_v2", 4, 8.28),
    ),
    *_gpu(
        "V100",
        ("Standard_NC6s_v3", 1, 3.06),
        ("Standard_NC12s_v3", 2, 6.12),
        ("Standard_NC24s_v3", 4, 12.24),
        ("Standard_ND40rs_v2", 8, 22.032),
    ),
    *_gpu(
        "H100",
        ("Standard_NC40ads_H100_v5", 1, 6.98),
        ("Standard_NC80adis_H100_v5", 2, 13.96),
        ("Standard_ND96is_H100_v5", 8, None),
        ("Standard_ND96isr_H100_v5", 8, 98.32),
    ),
    *_gpu(
        "A10",
        ("Standard_NV6ads_A10_v5", 1 / 6, 0.454),
        ("Standard_NV12ads_A10_v5", 1 / 3, 0.908),
        ("Standard_NV18ads_A10_v5", 1 / 2, 1.6),
        ("Standard_NV36ads_A10_v5", 1, 3.2),
        ("Standard_NV36adms_A10_v5", 1, 4.52),
        ("Standard_NV72ads_A10_v5", 2, 6.52),
    ),
]

SKUS: dict[str, Sku] = {sku.name.lower(): sku for sku in _TABLE}
"""Every SKU, by its name in lower case."""


def find(instance_type: str) -> Sku | None:
    """The SKU named ``instance_type`` (any case), or None."""
    return SKUS.get(instance_type.lower())


def is_gpu(instance_type: str) -> bool:
    """True for a SKU with an NVIDIA GPU."""
    sku = find(instance_type)
    return sku is not None and sku.gpu


def _label(sku: Sku) -> str:
    if not sku.gpu:
        return sku.name
    count = f"{sku.gpus:g}" if sku.gpus >= 1 else f"1/{round(1 / sku.gpus)}"
    return f"{sku.name} (GPU: {count} {sku.gpu_model})"


def check_instance_type(instance_type: str) -> str | None:
    """Why ``instance_type`` is not a managed online endpoint SKU (None: it is), with the
    closest names ("did you mean"), GPU SKUs marked."""
    if find(instance_type) is not None:
        return None
    names = {sku.name.lower(): sku for sku in _TABLE}
    close = difflib.get_close_matches(instance_type.lower(), sorted(names), n=3, cutoff=0.75)
    if close:
        hint = "; did you mean " + " or ".join(_label(names[c]) for c in close) + "?"
    else:
        hint = " (e.g. Standard_NC4as_T4_v3, a T4 GPU, or Standard_DS3_v2, CPU)"
    return f"{instance_type!r} is not an Azure ML managed online endpoint SKU{hint}"


def gpu_skus() -> list[str]:
    """The GPU SKUs, as labelled in messages (for docs and ``did you mean``)."""
    return [_label(sku) for sku in _TABLE if sku.gpu]


def sku_price(instance_type: str) -> Price:
    """The estimated list price of one ``instance_type`` instance per hour (0, saying so,
    when the SKU or its price is not in the table)."""
    sku = find(instance_type)
    if sku is None or sku.hourly_usd is None:
        return Price(
            0.0,
            "hour",
            f"{instance_type} has no price in aiaas's Azure SKU table: set "
            "pricing.endpoint_hourly_usd",
            "-",
        )
    return Price(sku.hourly_usd, "hour", f"{PRICE_SOURCE} ({sku.name})", PRICES_AS_OF)
