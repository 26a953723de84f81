"""The SageMaker real-time instance types, kept in the repo so a typo is caught at config load.

Taken from botocore 1.44.5's service model (the ``ProductionVariantInstanceType``
enum of ``sagemaker`` 2017-07-24): regenerate with ``python -m adapters.sagemaker.instance_types``
when AWS adds a family. Which families carry NVIDIA GPUs (what the one CUDA image needs) and
which are Arm (Graviton: the image is built for x86_64) is ours, from AWS's instance pages.
"""

from __future__ import annotations

import difflib

# family -> sizes, as the API spells them: ml.<family>.<size>
FAMILIES: dict[str, tuple[str, ...]] = {
    "c4": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
    ),
    "c5": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "9xlarge",
        "18xlarge",
    ),
    "c5d": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "9xlarge",
        "18xlarge",
    ),
    "c6g": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "c6gd": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "c6gn": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "c6i": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "32xlarge",
    ),
    "c6in": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "32xlarge",
    ),
    "c7g": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "c7i": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "c8g": (
        "medium",
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "dl1": ("24xlarge",),
    "g4dn": (
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "g5": (
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "g6": (
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "g6e": (
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "g7": (
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "g7e": (
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "inf1": (
        "xlarge",
        "2xlarge",
        "6xlarge",
        "24xlarge",
    ),
    "inf2": (
        "xlarge",
        "8xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "m4": (
        "xlarge",
        "2xlarge",
        "4xlarge",
        "10xlarge",
        "16xlarge",
    ),
    "m5": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "12xlarge",
        "24xlarge",
    ),
    "m5d": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "12xlarge",
        "24xlarge",
    ),
    "m6g": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "m6gd": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "m6i": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "32xlarge",
    ),
    "m7i": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "m8g": (
        "medium",
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "p2": (
        "xlarge",
        "8xlarge",
        "16xlarge",
    ),
    "p3": (
        "2xlarge",
        "8xlarge",
        "16xlarge",
    ),
    "p4d": ("24xlarge",),
    "p4de": ("24xlarge",),
    "p5": (
        "48xlarge",
        "4xlarge",
    ),
    "p5e": ("48xlarge",),
    "p5en": ("48xlarge",),
    "p6-b200": ("48xlarge",),
    "p6-b300": ("48xlarge",),
    "p6e-gb200": ("36xlarge",),
    "r5": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "12xlarge",
        "24xlarge",
    ),
    "r5d": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "12xlarge",
        "24xlarge",
    ),
    "r6g": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "r6gd": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "r6i": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "32xlarge",
    ),
    "r7gd": (
        "medium",
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
    ),
    "r7i": (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "r8g": (
        "medium",
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "48xlarge",
    ),
    "t2": (
        "medium",
        "large",
        "xlarge",
        "2xlarge",
    ),
    "trn1": (
        "2xlarge",
        "32xlarge",
    ),
    "trn1n": ("32xlarge",),
    "trn2": ("48xlarge",),
}

GPU_FAMILIES = frozenset(
    {
        "g4dn",
        "g5",
        "g6",
        "g6e",
        "g7",
        "g7e",
        "p2",
        "p3",
        "p4d",
        "p4de",
        "p5",
        "p5e",
        "p5en",
        "p6-b200",
        "p6-b300",
        "p6e-gb200",
    }
)
"""NVIDIA GPU families: what the CUDA image runs on."""

CUDA12_RETIRED_FAMILIES = frozenset({"p2"})
"""NVIDIA families CUDA 12 dropped (ml.p2: K80, sm_37; CUDA 12.0's release notes remove
Kepler): refused, since the image is CUDA 12.8."""

ARM_FAMILIES = frozenset(
    {
        "c6g",
        "c6gd",
        "c6gn",
        "c7g",
        "c8g",
        "m6g",
        "m6gd",
        "m8g",
        "r6g",
        "r6gd",
        "r7gd",
        "r8g",
        "p6e-gb200",
    }
)
"""Arm (Graviton or Grace) families: the one image is built for x86_64."""

ACCELERATOR_FAMILIES = frozenset({"inf1", "inf2", "trn1", "trn1n", "trn2", "dl1"})
"""Inferentia, Trainium and Gaudi: need their own SDKs (Neuron, SynapseAI), not CUDA."""

INSTANCE_TYPES: frozenset[str] = frozenset(
    f"ml.{family}.{size}" for family, sizes in FAMILIES.items() for size in sizes
)


def family(instance_type: str) -> str:
    """``ml.g4dn.xlarge`` -> ``g4dn``."""
    return instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""


def is_gpu(instance_type: str) -> bool:
    """True for an NVIDIA GPU instance type."""
    return family(instance_type) in GPU_FAMILIES


def check_instance_type(instance_type: str) -> str | None:
    """Why ``instance_type`` cannot run the one image, or None when it can."""
    if instance_type not in INSTANCE_TYPES:
        close = difflib.get_close_matches(instance_type, sorted(INSTANCE_TYPES), n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(close)}?" if close else " (e.g. ml.g4dn.xlarge)"
        return f"{instance_type!r} is not a SageMaker real-time instance type{hint}"
    kind = family(instance_type)
    if kind in ARM_FAMILIES:
        return f"{instance_type!r} is an Arm instance; the aiaas image is built for x86_64"
    if kind in CUDA12_RETIRED_FAMILIES:
        return (
            f"{instance_type!r} has K80 GPUs (compute capability 3.7), which CUDA 12 and the "
            "aiaas image no longer support; use ml.g4dn, ml.g5 or newer"
        )
    if kind in ACCELERATOR_FAMILIES:
        return (
            f"{instance_type!r} carries Inferentia/Trainium/Gaudi accelerators, which need "
            "their own runtime; the aiaas image runs on CPUs or NVIDIA GPUs"
        )
    return None


def _regenerate() -> str:
    """The :data:`FAMILIES` table from the installed botocore's service model."""
    import gzip
    import json
    import os

    import botocore

    path = os.path.join(
        os.path.dirname(botocore.__file__), "data/sagemaker/2017-07-24/service-2.json.gz"
    )
    with gzip.open(path) as model:
        enum = json.load(model)["shapes"]["ProductionVariantInstanceType"]["enum"]
    families: dict[str, list[str]] = {}
    for name in enum:
        _, kind, size = name.split(".", 2)
        families.setdefault(kind, []).append(size)
    rows = [f"    {k!r}: {tuple(v)!r}," for k, v in sorted(families.items())]
    return "FAMILIES = {\n" + "\n".join(rows) + "\n}"


if __name__ == "__main__":
    print(_regenerate())
