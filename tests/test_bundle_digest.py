"""A bundle is checked against its own digest whenever it is opened (serve, deploy, upload)."""

from __future__ import annotations

import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_probe_variant, tampered_archive

from adapters.local.provider import LocalProvider
from aiaas.bundle import (
    BuiltBundle,
    _content_digest,
    _file_facts,
    _write_archive,
    open_bundle,
    verify_archive,
    verify_bundle_dir,
)
from aiaas.errors import BundleError
from aiaas.manifest import MANIFEST_FILE, read_manifest

WEIGHTS = "artifacts/scale.txt"


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


def test_manifest_lists_every_file_with_its_sha256(probe_bundle: BuiltBundle) -> None:
    files = probe_bundle.manifest.files
    assert sorted(files) == ["artifacts/scale.txt", "code/probe_model.py"]
    assert all(len(sha) == 64 for sha in files.values())
    assert verify_archive(probe_bundle.path) == probe_bundle.manifest


def test_a_changed_weight_in_the_archive_is_refused(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    bad = tampered_archive(probe_bundle.path, tmp_path / "bad.tar.gz", {WEIGHTS: b"3.0\n"})
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match=rf"bad.tar.gz: {WEIGHTS} does not match its digest"):
        open_bundle(bad, cache_dir=cache)
    assert list(cache.iterdir()) == []  # nothing unpacked is left to be trusted later
    with pytest.raises(BundleError, match=rf"{WEIGHTS} does not match its digest"):
        verify_archive(bad)  # the check an upload makes without unpacking


def test_extra_and_missing_files_in_the_archive_are_refused(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    extra = tampered_archive(
        probe_bundle.path, tmp_path / "extra.tar.gz", {"code/sitecustomize.py": b"print(1)\n"}
    )
    for check in (verify_archive, lambda p: open_bundle(p, cache_dir=tmp_path / "c1")):
        with pytest.raises(BundleError, match=r"code/sitecustomize.py is not in the manifest"):
            check(extra)
    missing = tampered_archive(probe_bundle.path, tmp_path / "missing.tar.gz", {WEIGHTS: None})
    for check in (verify_archive, lambda p: open_bundle(p, cache_dir=tmp_path / "c2")):
        with pytest.raises(BundleError, match=rf"{WEIGHTS} is missing"):
            check(missing)


def test_a_changed_unpacked_directory_is_refused(probe_bundle: BuiltBundle, tmp_path: Path) -> None:
    unpacked, _ = open_bundle(probe_bundle.path, cache_dir=tmp_path / "cache")
    bundle_dir = tmp_path / "dir"
    shutil.copytree(unpacked, bundle_dir)
    assert open_bundle(bundle_dir)[1] == probe_bundle.manifest  # intact: accepted
    _flip_a_byte(bundle_dir / WEIGHTS)
    with pytest.raises(BundleError, match=rf"dir: {WEIGHTS} does not match its digest"):
        open_bundle(bundle_dir)
    shutil.copyfile(unpacked / WEIGHTS, bundle_dir / WEIGHTS)
    (bundle_dir / "artifacts" / "extra.bin").write_bytes(b"\0")
    with pytest.raises(BundleError, match=r"artifacts/extra.bin is not in the manifest"):
        open_bundle(bundle_dir)
    (bundle_dir / "artifacts" / "extra.bin").unlink()
    (bundle_dir / "code" / "probe_model.py").unlink()
    with pytest.raises(BundleError, match=r"code/probe_model.py is missing"):
        open_bundle(bundle_dir)


PYC = "code/__pycache__/probe_model.cpython-311.pyc"


def _injected_pyc(bundle_dir: Path, where: Path) -> bytes:
    """An unchecked-hash ``.pyc`` of the probe's code with ``VERSION_SALT`` changed: Python
    would run it without comparing it to the source beside it."""
    edited = where / "probe_model.py"
    source = (bundle_dir / "code" / "probe_model.py").read_text()
    edited.write_text(source.replace('VERSION_SALT = "1"', 'VERSION_SALT = "injected"'))
    cfile = where / "probe_model.pyc"
    py_compile.compile(
        str(edited), cfile=str(cfile), doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )  # fmt: skip
    return cfile.read_bytes()


def test_bytecode_in_pycache_is_refused(probe_bundle: BuiltBundle, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    unpacked, _ = open_bundle(probe_bundle.path, cache_dir=cache)
    pyc = _injected_pyc(unpacked, tmp_path)
    bad = tampered_archive(probe_bundle.path, tmp_path / "pyc.tar.gz", {PYC: pyc})
    for check in (verify_archive, lambda p: open_bundle(p, cache_dir=tmp_path / "c1")):
        with pytest.raises(BundleError, match=rf"{PYC} is not in the manifest"):
            check(bad)
    bundle_dir = tmp_path / "dir"
    shutil.copytree(unpacked, bundle_dir)
    (bundle_dir / PYC).parent.mkdir()
    (bundle_dir / PYC).write_bytes(pyc)
    with pytest.raises(BundleError, match=rf"{PYC} is not in the manifest"):
        open_bundle(bundle_dir)
    (unpacked / PYC).parent.mkdir()  # planted in a cached copy verified before
    (unpacked / PYC).write_bytes(pyc)
    again, _ = open_bundle(probe_bundle.path, cache_dir=cache)
    assert not (again / "code" / "__pycache__").exists()  # not trusted: unpacked afresh


def test_bundle_code_is_imported_from_source_only(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    """Even bytecode that appears after verification is never run, and importing the
    bundle's code writes no ``__pycache__`` into it (the next open would refuse it)."""
    unpacked, _ = open_bundle(probe_bundle.path, cache_dir=tmp_path / "cache")
    pyc = _injected_pyc(unpacked, tmp_path)
    bundle_dir = tmp_path / "dir"
    shutil.copytree(unpacked, bundle_dir)
    script = (
        "import sys; from pathlib import Path; from aiaas.bundle import load_model_class\n"
        "cls = load_model_class(Path(sys.argv[1]) / 'code', 'probe_model:Probe')\n"
        "print(sys.modules[cls.__module__].VERSION_SALT)\n"
    )
    clean = subprocess.run(
        [sys.executable, "-c", script, str(bundle_dir)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert clean.stdout.strip() == "1"
    assert not (bundle_dir / "code" / "__pycache__").exists()
    assert open_bundle(bundle_dir)[1] == probe_bundle.manifest
    (bundle_dir / PYC).parent.mkdir()
    (bundle_dir / PYC).write_bytes(pyc)
    planted = subprocess.run(
        [sys.executable, "-c", script, str(bundle_dir)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert planted.stdout.strip() == "1"  # the source ran, not the injected bytecode


def test_an_edited_manifest_or_exec_bit_breaks_the_digest(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    unpacked, _ = open_bundle(probe_bundle.path, cache_dir=tmp_path / "cache")
    bundle_dir = tmp_path / "dir"
    shutil.copytree(unpacked, bundle_dir)
    os.chmod(bundle_dir / WEIGHTS, 0o755)
    with pytest.raises(BundleError, match=r"content does not match digest sha256:"):
        open_bundle(bundle_dir)
    os.chmod(bundle_dir / WEIGHTS, 0o644)
    manifest = read_manifest(bundle_dir)
    manifest.batching.max_batch_size += 1  # e.g. someone "tuned" the manifest by hand
    (bundle_dir / MANIFEST_FILE).write_text(manifest.model_dump_json())
    with pytest.raises(BundleError, match=r"the manifest or a file's executable bit differs"):
        open_bundle(bundle_dir)


def test_a_tampered_cache_is_not_trusted(probe_bundle: BuiltBundle, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    unpacked, _ = open_bundle(probe_bundle.path, cache_dir=cache)
    original = (unpacked / WEIGHTS).read_bytes()
    (unpacked / WEIGHTS).write_bytes(b"1000.0\n")
    again, manifest = open_bundle(probe_bundle.path, cache_dir=cache)
    assert manifest == probe_bundle.manifest
    assert (again / WEIGHTS).read_bytes() == original  # unpacked afresh from the archive
    assert sorted(p.name for p in cache.iterdir()) == [manifest.version]


def _forge(probe_bundle: BuiltBundle, tmp_path: Path) -> tuple[Path, Path]:
    """A bundle with changed weights whose ``files`` and ``digest`` were recomputed but whose
    ``version`` still says the original's: (its directory, its archive)."""
    unpacked, _ = open_bundle(probe_bundle.path, cache_dir=tmp_path / "forge-cache")
    stage = tmp_path / "forged"
    shutil.copytree(unpacked, stage)
    (stage / WEIGHTS).write_bytes(b"3.0\n")
    files = _file_facts(stage)
    forged = read_manifest(stage)
    forged.files = {rel: sha for rel, (_, sha) in files.items()}
    forged.digest = "sha256:" + _content_digest(forged, files)
    assert forged.version == probe_bundle.manifest.version
    (stage / MANIFEST_FILE).write_text(forged.model_dump_json())
    archive = tmp_path / "forged.tar.gz"
    _write_archive(stage, [MANIFEST_FILE, *sorted(files)], archive)
    return stage, archive


def test_a_version_that_is_not_the_digest_is_refused(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    stage, archive = _forge(probe_bundle, tmp_path)
    version = probe_bundle.manifest.version
    refused = rf"version '{version}' is not the first 16 hex digits of digest sha256:"
    for check in (
        verify_bundle_dir,
        lambda _: verify_archive(archive),
        lambda _: open_bundle(archive, cache_dir=tmp_path / "fresh"),
    ):
        with pytest.raises(BundleError, match=refused):
            check(stage)
    cache = tmp_path / "cache"
    real, _ = open_bundle(probe_bundle.path, cache_dir=cache)  # the real V is cached
    with pytest.raises(BundleError, match=refused):
        open_bundle(archive, cache_dir=cache)  # never answered with the cached real V
    assert (real / WEIGHTS).read_bytes() != b"3.0\n"  # and the cache still holds the real V


def test_a_cache_hit_must_hold_the_archives_digest(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    other = build_probe_variant(tmp_path, 'VERSION_SALT = "1"', 'VERSION_SALT = "other"')
    cache = tmp_path / "cache"
    misplaced, _ = open_bundle(other.path, cache_dir=cache)
    misplaced.rename(cache / probe_bundle.manifest.version)  # a valid bundle, wrong name
    got, manifest = open_bundle(probe_bundle.path, cache_dir=cache)
    assert manifest == probe_bundle.manifest
    assert read_manifest(got) == probe_bundle.manifest  # unpacked afresh, not the other one
    assert verify_bundle_dir(got) == probe_bundle.manifest


def test_a_format_1_bundle_is_verified_whole(probe_bundle: BuiltBundle, tmp_path: Path) -> None:
    unpacked, _ = open_bundle(probe_bundle.path, cache_dir=tmp_path / "cache")
    bundle_dir = tmp_path / "old"
    shutil.copytree(unpacked, bundle_dir)
    old = probe_bundle.manifest.model_copy(update={"format_version": 1, "files": {}})
    old.digest = "sha256:" + _content_digest(old, _file_facts(bundle_dir))  # as 0.1 built it
    old.version = old.digest.removeprefix("sha256:")[:16]
    (bundle_dir / MANIFEST_FILE).write_text(old.model_dump_json(exclude={"files"}))
    assert open_bundle(bundle_dir)[1].format_version == 1
    _flip_a_byte(bundle_dir / WEIGHTS)
    with pytest.raises(BundleError, match=r"format-1 bundle lists no per-file digests"):
        open_bundle(bundle_dir)


def test_deploy_and_serve_refuse_a_changed_weight(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    bad = tampered_archive(probe_bundle.path, tmp_path / "bad.tar.gz", {WEIGHTS: b"3.0\n"})
    provider = LocalProvider(state_dir=str(tmp_path / "state"))
    with pytest.raises(BundleError, match=rf"{WEIGHTS} does not match its digest"):
        provider.deploy(bad)
    assert provider.list() == []  # no server was started
    unpacked, _ = open_bundle(probe_bundle.path, cache_dir=tmp_path / "cache")
    bundle_dir = tmp_path / "dir"
    shutil.copytree(unpacked, bundle_dir)
    _flip_a_byte(bundle_dir / WEIGHTS)
    for bundle in (bad, bundle_dir):
        r = subprocess.run(
            [sys.executable, "-m", "aiaas", "serve", str(bundle), "--port", "9"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "HOME": str(tmp_path / "home")},  # its own bundle cache
        )  # fmt: skip
        assert r.returncode == 1, r.stderr
        assert f"{WEIGHTS} does not match its digest" in r.stderr
        assert "Traceback" not in r.stderr
