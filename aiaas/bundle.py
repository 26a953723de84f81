"""Build, open and inspect bundles: a deterministic ``model.tar.gz`` that every cloud takes.

Layout (at the archive root, as SageMaker extracts it to ``/opt/ml/model``)::

    aiaas-manifest.json
    code/        the project's files (``bundle.include`` patterns)
    artifacts/   weights written by ``Model.prepare`` or copied from the project

Same inputs give the same bytes: entries are sorted, timestamps, owners and modes are
normalised, and the gzip header carries no name or time.

Opening a bundle (:func:`open_bundle`, :func:`verify_archive`) recomputes its content digest
and refuses a bundle whose files no longer match it, naming the file that differs.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aiaas.config import NAME_PATTERN, ProjectConfig, load_config
from aiaas.errors import BundleError
from aiaas.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    Batching,
    Manifest,
    Resources,
    read_manifest,
)
from aiaas.model import Model

CODE_DIR = "code"
ARTIFACTS_DIR = "artifacts"
_GZIP_LEVEL = 6
_CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
log = logging.getLogger("aiaas.bundle")


@dataclass(frozen=True)
class BuiltBundle:
    """A bundle archive on disk and its manifest."""

    path: Path
    manifest: Manifest


def load_model_class(code_dir: Path, entrypoint: str) -> type[Model[Any, Any]]:
    """Import ``module:Class`` from ``code_dir`` and check it is an :class:`aiaas.Model`.

    Modules under ``code_dir`` are compiled from their (digest-checked) source on every
    import: bytecode in a ``__pycache__`` there is never read, and none is written there.
    """
    module_name, _, class_name = entrypoint.partition(":")
    path = str(code_dir.resolve())
    _forget_module_from_elsewhere(module_name, code_dir.resolve())
    _install_source_only_finder(code_dir.resolve())
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BundleError(
            f"entrypoint {entrypoint!r}: cannot import {module_name!r} from {code_dir}: {exc}"
        ) from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise BundleError(
            f"entrypoint {entrypoint!r}: {class_name!r} is not an aiaas.Model subclass"
        )
    if not hasattr(cls, "input_schema") or not hasattr(cls, "output_schema"):
        raise BundleError(f"entrypoint {entrypoint!r}: set input_schema and output_schema")
    return cls


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the source every time: without source stats, ``SourceLoader.get_code``
    neither reads nor writes cached bytecode."""

    def path_stats(self, path: str) -> Mapping[str, Any]:
        raise OSError(f"{path}: bytecode caching is off for bundle code")


_SOURCE_ONLY_ROOTS: set[Path] = set()


def _source_only_hook(entry: str) -> importlib.abc.PathEntryFinder:
    """``sys.path_hooks`` entry: folders under a bundle's code dir get a finder that loads
    sources (via :class:`_SourceOnlyLoader`) and extension modules, never bare bytecode."""
    where = Path(entry or ".").resolve()
    if not any(where.is_relative_to(root) for root in _SOURCE_ONLY_ROOTS):
        raise ImportError("not bundle code")  # the next hook handles it
    return importlib.machinery.FileFinder(
        str(where),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES),
    )


def _install_source_only_finder(code_dir: Path) -> None:
    _SOURCE_ONLY_ROOTS.add(code_dir)
    if _source_only_hook not in sys.path_hooks:
        sys.path_hooks.insert(0, _source_only_hook)
    for entry in list(sys.path_importer_cache):  # finders made before the hook was there
        with contextlib.suppress(ValueError, OSError):
            if Path(entry or ".").resolve().is_relative_to(code_dir):
                del sys.path_importer_cache[entry]


def _forget_module_from_elsewhere(module_name: str, code_dir: Path) -> None:
    """Drop a cached module of that name that was imported from another folder.

    Every project may call its module ``model``; without this, the second bundle loaded in
    one process would silently get the first one's code.
    """
    top = module_name.split(".")[0]
    cached = sys.modules.get(top)
    origin = getattr(cached, "__file__", None) if cached is not None else None
    if cached is None or (origin is not None and Path(origin).resolve().is_relative_to(code_dir)):
        return
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def build_bundle(project_dir: Path | str, output: Path | str | None = None) -> BuiltBundle:
    """Build ``model.tar.gz`` for the project in ``project_dir`` (which holds ``aiaas.yaml``).

    Imports the model class (to read its schemas and run ``prepare``), stages code and
    artifacts, computes the content digest, and writes the archive deterministically.
    """
    project = Path(project_dir).resolve()
    config = load_config(project)
    out = Path(output) if output is not None else project / config.bundle.output
    with tempfile.TemporaryDirectory(prefix="aiaas-bundle-") as tmp:
        stage = Path(tmp)
        _stage_code(project, config, stage / CODE_DIR)
        cls = load_model_class(stage / CODE_DIR, config.model.entrypoint)
        try:
            artifacts = stage / ARTIFACTS_DIR
            artifacts.mkdir()
            if (project / ARTIFACTS_DIR).is_dir():
                shutil.copytree(project / ARTIFACTS_DIR, artifacts, dirs_exist_ok=True)
            cls.prepare(artifacts)
            manifest = _make_manifest(cls, config)
        finally:
            with contextlib.suppress(ValueError):  # the staging folder is about to go
                sys.path.remove(str((stage / CODE_DIR).resolve()))
        files = _file_facts(stage)
        manifest.files = {rel: sha for rel, (_, sha) in files.items()}
        manifest.digest = "sha256:" + _content_digest(manifest, files)
        manifest.version = manifest.digest.removeprefix("sha256:")[:16]
        (stage / MANIFEST_FILE).write_bytes(_manifest_bytes(manifest))
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_archive(stage, [MANIFEST_FILE, *sorted(files)], out)
    return BuiltBundle(out, manifest)


def _stage_code(project: Path, config: ProjectConfig, code_dir: Path) -> None:
    code_dir.mkdir(parents=True)
    skip = {ARTIFACTS_DIR, ".aiaas", ".venv", "dist", "__pycache__"}
    for pattern in config.bundle.include:
        for src in sorted(project.glob(pattern)):
            rel = src.relative_to(project)
            if not src.is_file() or rel.parts[0] in skip or "__pycache__" in rel.parts:
                continue
            dst = code_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def _make_manifest(cls: type[Model[Any, Any]], config: ProjectConfig) -> Manifest:
    m = config.model
    example = {"inputs": [cls.example_input]}
    try:
        cls.input_schema.model_validate(cls.example_input)
    except ValidationError as exc:
        raise BundleError(
            f"{cls.__name__}.example_input does not match input_schema: {exc}"
        ) from None
    name = m.name or cls.name
    if not re.fullmatch(NAME_PATTERN, name):
        raise BundleError(
            f"model name {name!r} does not match {NAME_PATTERN} (lowercase letters, digits "
            f"and '-'): set model.name in aiaas.yaml or {cls.__name__}.name"
        )
    return Manifest(
        name=name,
        entrypoint=m.entrypoint,
        input_schema=cls.input_schema.model_json_schema(),
        output_schema=cls.output_schema.model_json_schema(),
        example_request=example,
        batching=Batching(
            max_batch_size=m.max_batch_size or cls.max_batch_size,
            max_delay_ms=cls.max_delay_ms if m.max_delay_ms is None else m.max_delay_ms,
        ),
        resources=Resources(
            gpu_count=cls.gpu_count if m.gpu_count is None else m.gpu_count,
            memory_mb=m.memory_mb or cls.memory_mb,
        ),
    )


def _walk(stage: Path) -> Iterator[str]:
    # Every file, ``__pycache__`` included: Python runs bytecode found there (an
    # unchecked-hash ``.pyc`` without looking at its source), so bytecode the manifest does
    # not list is an extra file like any other. The model server never writes any there
    # (see :func:`load_model_class`).
    for root, _dirs, names in os.walk(stage):
        for name in names:
            rel = Path(root, name).relative_to(stage).as_posix()
            if rel != MANIFEST_FILE:
                yield rel


FileFacts = dict[str, tuple[str, str]]
"""Every file of a bundle (the manifest aside): path → (exec bit ``x``/``-``, SHA-256 hex)."""


def _file_facts(root: Path) -> FileFacts:
    return {rel: (_exec_bit(root / rel), _file_sha256(root / rel)) for rel in sorted(_walk(root))}


def _content_digest(manifest: Manifest, files: FileFacts) -> str:
    """The bundle's digest: the manifest's canonical form, then each file's path, exec bit
    and SHA-256 in path order."""
    h = hashlib.sha256()
    h.update(json.dumps(manifest.canonical_for_digest(), sort_keys=True).encode())
    for rel in sorted(files):
        exec_bit, sha = files[rel]
        h.update(b"\0" + rel.encode() + b"\0" + exec_bit.encode())
        h.update(sha.encode())
    return h.hexdigest()


def verify_files(where: Path | str, manifest: Manifest, files: FileFacts) -> None:
    """Check ``files`` (what a bundle holds) against ``manifest``'s digest.

    Raises :class:`BundleError` naming the first file that is missing, extra or changed, or
    saying that the digest does not match when no single file can be named (a format-1
    manifest has no per-file digests; a changed manifest or executable bit).
    """
    if manifest.format_version > FORMAT_VERSION:
        raise BundleError(
            f"{where}: bundle format {manifest.format_version} is newer than this aiaas "
            f"reads ({FORMAT_VERSION}); upgrade aiaas"
        )
    rebuild = "the bundle was changed after it was built; rebuild it (aiaas bundle build)"
    _check_version(where, manifest, rebuild)
    if manifest.files:
        for rel in sorted(set(manifest.files) | set(files)):
            if rel not in files:
                raise BundleError(f"{where}: {rel} is missing: {rebuild}")
            if rel not in manifest.files:
                raise BundleError(f"{where}: {rel} is not in the manifest: {rebuild}")
            if files[rel][1] != manifest.files[rel]:
                raise BundleError(
                    f"{where}: {rel} does not match its digest in the manifest "
                    f"(sha256 {files[rel][1][:12]}…, expected {manifest.files[rel][:12]}…): "
                    f"{rebuild}"
                )
    if "sha256:" + _content_digest(manifest, files) != manifest.digest:
        which = (
            "the manifest or a file's executable bit differs"
            if manifest.files
            else "this format-1 bundle lists no per-file digests to name the file"
        )
        raise BundleError(
            f"{where}: content does not match digest {manifest.digest or '(none)'} "
            f"({which}): {rebuild}"
        )


def _check_version(where: Path | str, manifest: Manifest, rebuild: str) -> None:
    """``version`` is what deployments and caches are keyed on: it must be the digest's."""
    expected = manifest.digest.removeprefix("sha256:")[:16]
    if not _DIGEST.fullmatch(manifest.digest) or manifest.version != expected:
        raise BundleError(
            f"{where}: version {manifest.version!r} is not the first 16 hex digits of digest "
            f"{manifest.digest or '(none)'}: {rebuild}"
        )


def verify_bundle_dir(bundle_dir: Path, manifest: Manifest | None = None) -> Manifest:
    """Verify an unpacked bundle against its digest (hashing every file once); return its
    manifest. Raises :class:`BundleError` naming the file that differs."""
    manifest = manifest or read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest, _file_facts(bundle_dir))
    return manifest


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _exec_bit(path: Path) -> str:
    return "x" if os.access(path, os.X_OK) else "-"


def _manifest_bytes(manifest: Manifest) -> bytes:
    return json.dumps(manifest.model_dump(), indent=2, sort_keys=True).encode() + b"\n"


def _write_archive(stage: Path, files: list[str], out: Path) -> None:
    tmp_out = out.with_name(out.name + ".partial")
    with (
        tmp_out.open("wb") as raw,
        gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=_GZIP_LEVEL
        ) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in files:
            src = stage / rel
            info = tarfile.TarInfo(rel)
            info.size = src.stat().st_size
            info.mode = 0o755 if _exec_bit(src) == "x" else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with src.open("rb") as f:
                tar.addfile(info, f)
    tmp_out.replace(out)


def open_bundle(path: Path | str, cache_dir: Path | str | None = None) -> tuple[Path, Manifest]:
    """Return an unpacked, verified bundle directory and its manifest.

    ``path`` is an unpacked bundle directory, or a ``.tar.gz`` that is extracted (safely,
    once per digest) under ``cache_dir`` (default ``~/.cache/aiaas/bundles``). Either way the
    files are checked against the manifest's digest (once per call, never per request); a
    mismatch raises :class:`BundleError` naming the file. A cached copy that no longer
    matches is not trusted: it is unpacked again from the archive.
    """
    src = Path(path)
    if src.is_dir():
        return src, verify_bundle_dir(src)
    if not src.is_file():
        raise BundleError(f"{src}: no such bundle file or directory")
    manifest = inspect_archive(src)
    _check_version(src, manifest, "rebuild it (aiaas bundle build)")  # it names the cache dir
    root = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "aiaas" / "bundles"
    target = root / manifest.version
    if (target / MANIFEST_FILE).is_file():
        try:
            cached = read_manifest(target)
            if cached != manifest:  # another bundle under this version's name
                raise BundleError(
                    f"{target}: holds digest {cached.digest}, not {src}'s {manifest.digest}"
                )
            return target, verify_bundle_dir(target, cached)
        except BundleError as exc:
            log.warning("cached bundle not trusted, unpacking %s again: %s", src, exc.message)
            _remove_dir(target, root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{manifest.version}-", dir=root))
    try:
        try:
            with tarfile.open(src, "r:gz") as tar:
                _extract(tar, staging)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(f"{src}: cannot unpack: {exc}") from exc
        if read_manifest(staging) != manifest:
            raise BundleError(f"{src}: the archive holds more than one {MANIFEST_FILE}")
        verify_files(src, manifest, _file_facts(staging))
    except BundleError:
        shutil.rmtree(staging, ignore_errors=True)  # never leave an untrusted copy behind
        raise
    try:
        staging.rename(target)
    except OSError:  # another process unpacked (and verified) the same digest first
        shutil.rmtree(staging, ignore_errors=True)
    return target, manifest


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack ``tar`` into ``dest`` with the ``data`` filter's safety on every Python 3.11.

    The filter exists from 3.11.4 (Debian 12 ships 3.11.2): before it, the members are
    checked here instead. A bundle holds regular files and folders only, so anything else
    (links, devices), an absolute name or a ``..`` is refused.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    members = tar.getmembers()
    for member in members:
        name = Path(member.name)
        if not (member.isfile() or member.isdir()) or name.is_absolute() or ".." in name.parts:
            raise tarfile.TarError(f"{member.name!r}: not a plain file or folder inside the bundle")
        member.mode = (member.mode | 0o600) & 0o755  # as the data filter: no set-id bits
    tar.extractall(dest, members=members)


def _remove_dir(target: Path, root: Path) -> None:
    """Move ``target`` aside in one rename (so no one finds it half-deleted), then delete it."""
    aside = Path(tempfile.mkdtemp(prefix=".untrusted-", dir=root))
    with contextlib.suppress(OSError):  # already moved by another process
        target.rename(aside / "bundle")
    shutil.rmtree(aside, ignore_errors=True)


def verify_archive(path: Path | str) -> Manifest:
    """Verify a bundle archive against its digest without unpacking it to disk (for uploads
    that ship the archive as is); return its manifest. Raises :class:`BundleError`."""
    src = Path(path)
    if src.is_dir():
        return verify_bundle_dir(src)
    manifest = inspect_archive(src)
    files: FileFacts = {}
    try:
        with tarfile.open(src, "r:gz") as tar:
            for member in tar:
                if member.name == MANIFEST_FILE or member.isdir():
                    continue
                f = tar.extractfile(member) if member.isfile() else None
                if f is None:
                    raise BundleError(f"{src}: {member.name} is not a regular file")
                h = hashlib.sha256()
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                files[member.name] = ("x" if member.mode & 0o100 else "-", h.hexdigest())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{src}: cannot read the archive: {exc}") from None
    verify_files(src, manifest, files)
    return manifest


def inspect_archive(path: Path | str) -> Manifest:
    """Read the manifest of a bundle archive (or directory) without unpacking the rest."""
    src = Path(path)
    if src.is_dir():
        return read_manifest(src)
    try:
        with tarfile.open(src, "r:gz") as tar:
            first = tar.next()  # the manifest is written first: no need to read the weights
            member = tar.extractfile(first) if first and first.name == MANIFEST_FILE else None
            if member is None:
                raise KeyError(MANIFEST_FILE)
            data = member.read()
    except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
        raise BundleError(
            f"{src}: not a bundle archive ({MANIFEST_FILE} unreadable: {exc})"
        ) from None
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        raise BundleError(f"{src}: invalid manifest: {key}: {error['msg']}") from None
