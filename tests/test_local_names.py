"""Deployment names become folders under the state dir: one that could reach outside it
(``..``, ``a/b``) is refused before anything is read, written, locked or deleted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECTS

from adapters.local.provider import LocalProvider
from aiaas.bundle import (
    BuiltBundle,
    _content_digest,
    _file_facts,
    _write_archive,
    open_bundle,
)
from aiaas.config import NAME_PATTERN
from aiaas.errors import BadRequest, BundleError
from aiaas.manifest import MANIFEST_FILE, read_manifest

#: "<absolute>" stands for an absolute path to a folder of this test's own (see below). Every
#: name here resolves inside the test's tmp_path even if the check regressed: a real system
#: folder such as /etc must never be one, since a regression would empty it.
BAD_NAMES = ["..", "../..", "../x", "a/b", "<absolute>", ".hidden", "Upper", ""]


def _project(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A copy of the probe project with the state files a real one has."""
    project = tmp_path / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    (project / ".aiaas" / "local").mkdir(parents=True)
    precious = [
        project / ".aiaas" / "api-keys",
        project / ".aiaas" / "usage.sqlite",
        project / "aiaas.yaml",
        project / "probe_model.py",
    ]
    for path in precious[:2]:
        path.write_text("keep me\n")
    return project, precious


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_name_is_refused_by_every_operation(tmp_path: Path, name: str) -> None:
    project, precious = _project(tmp_path)
    if name == "<absolute>":  # an absolute name would replace the state dir in a path join
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "canary").write_text("keep me\n")
        precious.append(outside / "canary")
        name = str(outside)
    provider = LocalProvider(state_dir=project / ".aiaas")
    for operation in (
        lambda: provider.delete(name),
        lambda: provider.describe(name),
        lambda: provider.logs(name),
        lambda: provider.invoker.invoke_sync(name, b"{}"),
    ):
        with pytest.raises(BadRequest) as caught:
            operation()
        assert repr(name) in caught.value.message and NAME_PATTERN in caught.value.message
    assert all(p.is_file() for p in precious)
    assert sorted(p.name for p in (project / ".aiaas").iterdir()) == [
        "api-keys", "local", "usage.sqlite",
    ]  # fmt: skip


def test_cli_delete_of_a_parent_folder_deletes_nothing(tmp_path: Path) -> None:
    project, precious = _project(tmp_path)
    for name in ("..", "../.."):
        r = subprocess.run(
            [sys.executable, "-m", "aiaas", "delete", name],
            cwd=project, capture_output=True, text=True, timeout=120,
            env={**os.environ, "HOME": str(tmp_path / "home")},
        )  # fmt: skip
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"invalid deployment name {name!r}" in r.stderr
        assert "Traceback" not in r.stderr
    assert all(p.is_file() for p in precious)


def test_a_bundle_named_like_a_path_is_refused(probe_bundle: BuiltBundle, tmp_path: Path) -> None:
    unpacked, _ = open_bundle(probe_bundle.path, cache_dir=tmp_path / "cache")
    stage = tmp_path / "stage"
    shutil.copytree(unpacked, stage)
    manifest = read_manifest(stage).model_copy(update={"name": "../../x"})
    files = _file_facts(stage)
    manifest.digest = "sha256:" + _content_digest(manifest, files)  # otherwise consistent
    manifest.version = manifest.digest.removeprefix("sha256:")[:16]
    (stage / MANIFEST_FILE).write_text(manifest.model_dump_json())
    archive = tmp_path / "named.tar.gz"
    _write_archive(stage, [MANIFEST_FILE, *sorted(files)], archive)
    state = tmp_path / "project" / "state"
    provider = LocalProvider(state_dir=str(state))
    for bundle in (archive, stage):
        with pytest.raises(BundleError, match=r"name: String should match pattern"):
            provider.deploy(bundle)
    with pytest.raises(BadRequest, match=r"invalid deployment name '\.\./y'"):
        provider.deploy(probe_bundle.path, name="../y")
    assert not (tmp_path / "x").exists() and not (state.parent / "x").exists()
    assert not (state / "local").exists() or list((state / "local").iterdir()) == []
