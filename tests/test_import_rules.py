"""ARCHITECTURE.md's import rules: the function tier and the core never load torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "moto", "boto3", "azure.ai.ml", "alibabacloud_eas20210701")


@pytest.mark.parametrize(
    "module",
    [
        "aiaas",
        "aiaas.cli",
        "aiaas.bundle",
        "aiaas.config",
        "adapters",
        "adapters.local",
        "functions.app",
    ],
)
def test_light_modules_do_not_import_heavy_packages(module: str) -> None:
    # A fresh interpreter: this test process has torch loaded already.
    code = (
        f"import sys, {module}\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"{module} imported {r.stdout.strip()}"


def test_the_runtime_is_the_only_core_package_that_imports_torch() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = []
    for package in ("aiaas", "adapters", "functions"):
        for path in (root / package).rglob("*.py"):
            if package == "aiaas" and "runtime" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                else:
                    continue
                if any(n.split(".")[0] in ("torch", "transformers") for n in names):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_plain_install_does_not_pull_torch() -> None:
    from importlib.metadata import requires

    base = [r for r in requires("aiaas") or [] if "extra ==" not in r]
    assert base, "the core must declare its dependencies"
    heavy = [
        r
        for r in base
        if r.split(">")[0].split("=")[0].split("[")[0].strip() in ("torch", "transformers")
    ]
    assert heavy == []
    serve = [r for r in requires("aiaas") or [] if 'extra == "serve"' in r]
    assert any(r.startswith("torch==2.13.0") for r in serve)


@pytest.mark.parametrize(
    "entrypoint", ["functions.aws_lambda", "functions.azure_functions", "functions.alibaba_fc"]
)
def test_platform_entrypoints_stay_light(entrypoint: str, tmp_path: Path) -> None:
    """Each entrypoint builds its app at import, as at a cold start, and loads nothing heavy:
    no torch, transformers or moto, and no cloud SDK the local provider does not use."""
    import os

    from conftest import PROJECTS

    from aiaas.bundle import build_bundle
    from aiaas.manifest import MANIFEST_FILE

    built = build_bundle(PROJECTS / "probe", tmp_path / "probe.tar.gz")
    (tmp_path / MANIFEST_FILE).write_text(built.manifest.model_dump_json())
    env = {
        **os.environ,
        "AIAAS_CONFIG": str(PROJECTS / "probe" / "aiaas.yaml"),
        "AIAAS_MANIFEST": str(tmp_path / MANIFEST_FILE),
        "AIAAS_API_KEYS": "",
    }
    code = f"import sys, {entrypoint}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"{entrypoint} imported {r.stdout.strip()}"
