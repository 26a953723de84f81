"""`aiaas function package`: target-platform wheels, no torch, within limits, and a zip that
runs on its own (a fresh interpreter with no site-packages answers a Lambda event)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import FunctionSetup

from aiaas.config import load_config
from aiaas.errors import BundleError, ConfigError
from aiaas.manifest import read_manifest_file
from aiaas.packaging import TARGETS, package_function

HEAVY = ("torch/", "transformers/", "boto3/", "botocore/", "moto/", "azure/ai/ml/")


@pytest.fixture(scope="module")
def packaged(
    probe_function: FunctionSetup, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    config = load_config(probe_function.env["AIAAS_CONFIG"], env={})
    manifest = read_manifest_file(Path(probe_function.env["AIAAS_MANIFEST"]))
    out = tmp_path_factory.mktemp("packages")
    zips = {}
    for target, arch in [
        ("aws", "x86_64"),
        ("aws", "arm64"),
        ("azure", "x86_64"),
        ("alibaba", "x86_64"),
    ]:
        zips[f"{target}-{arch}"] = package_function(
            config, manifest, target, out / f"{target}-{arch}.zip", arch=arch
        ).path
    return zips


def _names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def test_each_zip_has_its_entrypoint_target_wheels_and_no_torch(packaged: dict[str, Path]) -> None:
    for key, path in packaged.items():
        names = _names(path)
        target, arch = key.split("-")
        site = TARGETS[target].site_packages
        assert f"functions/{TARGETS[target].entrypoint}" in names
        assert "aiaas-manifest.json" in names and "aiaas.yaml" in names
        assert not [n for n in names if n.startswith(HEAVY) or f"/{HEAVY[0]}" in n]
        assert not [n for n in names if n.startswith("aiaas/runtime/") or n == "aiaas/cli.py"]
        core = [n for n in names if "pydantic_core/_pydantic_core" in n and n.endswith(".so")]
        machine = "aarch64" if arch == "arm64" else "x86_64"
        assert len(core) == 1 and machine in core[0] and core[0].startswith(site)
        assert path.stat().st_size < 10 * 1024 * 1024  # the target for the AWS zip
    assert "function_app.py" in _names(packaged["azure-x86_64"]) and "host.json" in _names(
        packaged["azure-x86_64"]
    )
    with zipfile.ZipFile(packaged["alibaba-x86_64"]) as zf:
        assert (zf.getinfo("bootstrap").external_attr >> 16) & 0o111


def test_packaging_is_deterministic(
    probe_function: FunctionSetup, packaged: dict[str, Path], tmp_path: Path
) -> None:
    config = load_config(probe_function.env["AIAAS_CONFIG"], env={})
    manifest = read_manifest_file(Path(probe_function.env["AIAAS_MANIFEST"]))
    again = package_function(config, manifest, "aws", tmp_path / "again.zip").path
    assert again.read_bytes() == packaged["aws-x86_64"].read_bytes()


def test_the_aws_zip_runs_on_its_own(
    probe_function: FunctionSetup, packaged: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "task"
    with zipfile.ZipFile(packaged["aws-x86_64"]) as zf:
        zf.extractall(root)
    http = {"method": "POST", "path": "/predict", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"}
    event = {
        "version": "2.0", "routeKey": "$default", "rawPath": "/predict", "rawQueryString": "",
        "headers": {"content-type": "application/json",
                    "authorization": f"Bearer {probe_function.api_key}"},
        "requestContext": {"http": http, "requestId": "r", "stage": "$default"},
        "body": '{"inputs": [{"value": 4}]}', "isBase64Encoded": False,
    }  # fmt: skip
    code = (
        "import json, sys\n"
        "from functions.aws_lambda import handler\n"
        f"response = handler(json.loads({json.dumps(json.dumps(event))}), None)\n"
        "heavy = [m for m in ('torch', 'transformers', 'boto3') if m in sys.modules]\n"
        "print(json.dumps({'response': response, 'heavy': heavy, 'path': sys.path}))\n"
    )
    # -S: no site-packages at all; only the zip's own files are importable, as in Lambda.
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(root),
        "AIAAS_CONFIG": probe_function.env["AIAAS_CONFIG"],
        "AIAAS_API_KEYS": probe_function.env["AIAAS_API_KEYS"],
        "HOME": str(tmp_path),
    }
    # cwd=root too: `-c` puts the working directory first on sys.path, as Lambda's task root is.
    cmd = [sys.executable, "-S", "-c", code]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=root)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert not [p for p in result["path"] if "site-packages" in p or p.startswith("/work/main")]
    assert result["response"]["statusCode"] == 200, result["response"]
    assert json.loads(result["response"]["body"])["outputs"][0]["value"] == 8.0


def test_bad_target_arch_and_limit(
    probe_function: FunctionSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(probe_function.env["AIAAS_CONFIG"], env={})
    manifest = read_manifest_file(Path(probe_function.env["AIAAS_MANIFEST"]))
    with pytest.raises(ConfigError, match="--target gcp"):
        package_function(config, manifest, "gcp", tmp_path / "x.zip")
    with pytest.raises(ConfigError, match="--arch sparc"):
        package_function(config, manifest, "aws", tmp_path / "x.zip", arch="sparc")
    import dataclasses

    tiny = dataclasses.replace(TARGETS["aws"], max_zip_bytes=1024)
    monkeypatch.setitem(TARGETS, "aws", tiny)
    with pytest.raises(BundleError, match=r"would be .* MB; the limit is 0 MB \(Lambda"):
        package_function(config, manifest, "aws", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
