"""The bundle manifest: everything a server or function needs to know without model code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiaas.errors import BundleError
from aiaas.packaged import MANIFEST_FILE as MANIFEST_FILE  # a function reads it without pydantic
from aiaas.packaged import NAME_PATTERN

FORMAT_VERSION = 2
"""2 added ``files`` (per-file SHA-256); format 1 bundles are still read and verified whole."""


class Batching(BaseModel):
    """Dynamic-batching hints for the model server."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(ge=1)
    max_delay_ms: float = Field(ge=0)


class Resources(BaseModel):
    """What the model needs from an instance; clouds map these to instance types."""

    model_config = ConfigDict(extra="forbid")
    gpu_count: int = Field(ge=0)
    memory_mb: int = Field(ge=128)


class Manifest(BaseModel):
    """``aiaas-manifest.json`` at the root of every bundle.

    ``digest`` is the SHA-256 over the bundle's files and this manifest (without the
    digest fields), so identical inputs give an identical digest; ``version`` is its first
    16 hex digits and is what deployments are keyed on. ``files`` maps every file's path in
    the bundle to its SHA-256, so a bundle that no longer matches its digest can say which
    file differs.
    """

    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    name: str = Field(pattern=NAME_PATTERN)  # a folder and a URL segment: no "/" or ".."
    version: str = ""
    digest: str = ""
    entrypoint: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    example_request: dict[str, Any]
    batching: Batching
    resources: Resources
    files: dict[str, str] = Field(default_factory=dict)

    def canonical_for_digest(self) -> dict[str, Any]:
        """The manifest as hashed into the digest: the digest fields left out, and ``files``
        too (the files themselves are hashed into the digest)."""
        return self.model_dump(exclude={"version", "digest", "files"})


def read_manifest(bundle_dir: Path) -> Manifest:
    """Read and validate the manifest of an unpacked bundle directory."""
    if not (bundle_dir / MANIFEST_FILE).is_file():
        raise BundleError(
            f"{bundle_dir}: no {MANIFEST_FILE}; is this a bundle? (aiaas bundle build)"
        )
    return read_manifest_file(bundle_dir / MANIFEST_FILE)


def read_manifest_file(path: Path) -> Manifest:
    """Read and validate a manifest file; errors name the file and the key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the manifest: {exc.strerror}") from None
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{path}: {key}: {first['msg']}") from None
