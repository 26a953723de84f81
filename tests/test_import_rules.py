"""ARCHITECTURE.md's import rules: the function tier and the core never load torch."""

from __future__ import annotations

import ast
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


# -- the tiers' import direction (ARCHITECTURE.md): core -> adapters -> functions, CLI on top --

ROOT = Path(__file__).resolve().parent.parent
# The composition root, which may import every tier: the whole CLI package, `python -m
# aiaas`, and the Python API the CLI sits on (it builds a provider's control plane).
# aiaas.cli_support moved into the package (aiaas.cli.support): an import of it is still caught.
CLI_MODULES = {
    "aiaas.__main__", "aiaas.api", "aiaas.cli", "aiaas.cli_support",
    *(f"aiaas.cli.{p.stem}" for p in (ROOT / "aiaas" / "cli").glob("*.py") if p.stem != "__init__"),
}  # fmt: skip
CONTROL_PLANE_SDKS = (
    "boto3", "botocore", "azure.ai.ml", "azure.mgmt", "alibabacloud_eas20210701",
    "alibabacloud_tea_openapi", "moto",
)  # fmt: skip


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every module ``path`` imports, wherever the import statement is (top level, inside a
    function, under ``if TYPE_CHECKING``): a lazy import is still a dependency."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
    return found


def _forbidden(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (None: allowed)."""

    def within(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    if importer in CLI_MODULES:
        return None
    if any(within(imported, cli) for cli in CLI_MODULES):
        return "nothing imports the CLI (the composition root)"
    top = importer.split(".")[0]
    if top == "aiaas" and (within(imported, "adapters") or within(imported, "functions")):
        return "the core does not import a higher tier"
    if top == "adapters" and (within(imported, "functions") or within(imported, "aiaas.runtime")):
        return "adapters import the core's contracts only (never the model server)"
    if top == "functions" and within(imported, "aiaas.runtime"):
        return "the function tier never loads the model server"
    if top != "emulators" and within(imported, "emulators"):
        return "only the CLI and the tests load the emulated clouds"
    if top == "emulators" and (within(imported, "adapters") or within(imported, "functions")):
        return "the emulators know the clouds, not aiaas's providers"
    return None


def tier_violations(root: Path) -> list[str]:
    """``file:line: importer -> imported (why)`` for every import against the tiers' direction
    in the ``aiaas``, ``adapters``, ``functions`` and ``emulators`` packages under ``root``."""
    found = []
    for package in ("aiaas", "adapters", "functions", "emulators"):
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(path, root)
            for line, imported in _imports(path, module):
                why = _forbidden(module, imported)
                if why:
                    found.append(f"{path.relative_to(root)}:{line}: {module} -> {imported} ({why})")
    return found


def test_no_tier_imports_a_higher_one() -> None:
    assert tier_violations(ROOT) == []


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("aiaas/config.py", "from adapters.local import LocalSection\n", "the core does not"),
        ("aiaas/errors.py", "def f():\n    import functions.app\n", "the core does not"),
        (
            "aiaas/manifest.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from adapters import base\n",
            "the core does not",
        ),
        ("adapters/base.py", "from aiaas.runtime import app\n", "never the model server"),
        ("adapters/local/state.py", "from ...functions import edge\n", "contracts only"),
        ("functions/edge.py", "from aiaas.runtime.batcher import Batcher\n", "function tier"),
        ("functions/app.py", "from aiaas.cli import app\n", "nothing imports the CLI"),
        (
            "adapters/local/provider.py",
            "from aiaas.cli_support import server_options\n",
            "nothing imports the CLI",
        ),
        ("adapters/base.py", "from emulators.aws import AwsEmulator\n", "load the emulated"),
        ("functions/app.py", "import emulators.fleet\n", "load the emulated"),
        ("emulators/aws.py", "from adapters.sagemaker import names\n", "not aiaas's providers"),
    ],
)
def test_the_walker_catches_each_kind_of_violation(
    tmp_path: Path, where: str, source: str, expected: str
) -> None:
    """A scratch tree (never the repository) with one bad import planted."""
    for package in ("aiaas", "adapters", "functions", "emulators"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    target = tmp_path / where
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.parent / "__init__.py").touch()
    target.write_text(source)
    found = tier_violations(tmp_path)
    assert len(found) == 1 and expected in found[0], found


def test_each_providers_invoke_path_loads_no_control_plane_sdk_and_no_torch() -> None:
    """What a function loads for its provider: the spec and the invoke path, in a fresh
    interpreter, for every installed provider."""
    from aiaas.plugins import installed_providers

    code = (
        "import sys\n"
        "from aiaas.plugins import provider_spec\n"
        "import functions.bootstrap, functions.app\n"
        "provider_spec(sys.argv[1]).load_invoker()\n"
        f"heavy = {(*CONTROL_PLANE_SDKS, 'torch', 'transformers')!r}\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    providers = sorted(installed_providers())
    assert providers, "no provider is installed"
    for name in providers:
        r = subprocess.run(
            [sys.executable, "-c", code, name], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "", f"{name}'s invoke path loaded {r.stdout.strip()}"
