"""Bundles unpack safely on every Python 3.11: ``tarfile``'s ``data`` filter exists from
3.11.4 only (Debian 12, a container base, ships 3.11.2), so before it aiaas checks members.

The filter's absence is simulated by removing ``tarfile.data_filter`` for the test: the only
way to run the older interpreter's code path on this one.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from aiaas.bundle import BuiltBundle, open_bundle
from aiaas.errors import BundleError


@pytest.fixture(params=["with data filter", "without (Python < 3.11.4)"])
def filter_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param.startswith("without"):
        monkeypatch.delattr(tarfile, "data_filter")
    return str(request.param)


def test_a_real_bundle_unpacks(filter_mode: str, probe_bundle: BuiltBundle, tmp_path: Path) -> None:
    directory, manifest = open_bundle(probe_bundle.path, cache_dir=tmp_path / "cache")
    assert manifest.digest == probe_bundle.manifest.digest
    assert (directory / "aiaas-manifest.json").is_file()


@pytest.mark.parametrize("evil", ["../escape.txt", "<absolute>", "link"])
def test_members_outside_the_bundle_are_refused(
    filter_mode: str, evil: str, probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    # An absolute name points into this test's own folder: were it written, it stays there.
    evil = str(tmp_path / "escape.txt") if evil == "<absolute>" else evil
    src = tmp_path / "evil.tar.gz"
    with tarfile.open(probe_bundle.path, "r:gz") as tar, tarfile.open(src, "w:gz") as out:
        for member in tar:
            out.addfile(member, tar.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(evil)
        if evil == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            out.addfile(info)
        else:
            info.size = 4
            out.addfile(info, io.BytesIO(b"evil"))
    # Refused while unpacking, or (the data filter strips a leading "/") as a file the
    # manifest does not list; either way nothing lands outside the unpacking folder.
    with pytest.raises(BundleError, match=r"cannot unpack|not in the manifest"):
        open_bundle(src, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "cache" / "escape.txt").exists()
