"""Deploying the version that is already live never touches the live server's unpacked
bundle, even when it no longer matches its digest (a model's ``load`` wrote into it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import tampered_archive

from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from aiaas.errors import BundleError

BODY = json.dumps({"inputs": [{"value": 3}]}).encode()


def test_redeploy_keeps_the_live_bundle_dir(probe_bundle: BuiltBundle, tmp_path: Path) -> None:
    provider = LocalProvider(state_dir=str(tmp_path / "state"))
    try:
        first = provider.deploy(probe_bundle.path)
        state = json.loads((provider.root / "local" / "probe" / "deployment.json").read_text())
        live_dir = Path(state["bundle_dir"])
        inode = os.stat(live_dir).st_ino
        (live_dir / "artifacts" / "written-by-load.bin").write_bytes(b"\0")
        again = provider.deploy(probe_bundle.path)
        assert again.details["pid"] == first.details["pid"]  # already live
        assert os.stat(live_dir).st_ino == inode  # the same folder, not removed and unpacked
        assert (live_dir / "artifacts" / "written-by-load.bin").is_file()
        bad = tampered_archive(
            probe_bundle.path, tmp_path / "bad.tar.gz", {"artifacts/scale.txt": b"3.0\n"}
        )
        with pytest.raises(BundleError, match=r"scale.txt does not match its digest"):
            provider.deploy(bad)  # a broken archive is still refused
        assert (
            json.loads(provider.invoker.invoke_sync("probe", BODY).body)["outputs"][0]["value"]
            == 6.0
        )
    finally:
        provider.delete("probe")
