"""The wheel ships top-level ``templates/`` as ``aiaas/templates/`` and the infrastructure
templates of ``iac/<cloud>/`` as ``aiaas/iac/<cloud>/``, and finds them installed.

Builds the real wheel from a copy of the sources (so nothing is written into the checkout),
then installs it into a throwaway ``--target`` folder and asks the installed package where
its templates are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from aiaas.template_files import iac_dir, templates_dir

REPO = Path(__file__).resolve().parent.parent
# What a build reads: the packaging files and the folders that become packages.
BUILD_INPUTS = [
    "pyproject.toml", "setup.py", "README.md", "aiaas", "adapters", "functions", "emulators",
]  # fmt: skip


def repo_templates() -> list[str]:
    """Every file under top-level templates/, relative to it (POSIX form)."""
    root = REPO / "templates"
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in [*BUILD_INPUTS, "templates", "iac"]:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "-w", str(out), str(src)], check=True, timeout=120)
    (built,) = out.glob("aiaas-*.whl")
    return built


def test_templates_are_a_top_level_folder() -> None:
    files = repo_templates()
    assert "container/Dockerfile" in files
    assert "init/model.py.tmpl" in files
    assert "functions/alibaba/bootstrap" in files
    assert not (REPO / "aiaas" / "templates").exists()


def test_source_checkout_finds_top_level_templates() -> None:
    # The tests run from the checkout (editable install): the lookup lands on templates/.
    assert templates_dir() == REPO / "templates"


def test_wheel_holds_every_template_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    expected = {f"aiaas/templates/{name}" for name in repo_templates()}
    assert expected <= names, sorted(expected - names)
    # The import packages ship; no stray top-level `templates` package does.
    for module in ("aiaas/cli/__init__.py", "aiaas/cli/commands.py", "aiaas/api.py",
                   "aiaas/runtime/container.py", "adapters/base.py"):  # fmt: skip
        assert module in names
    assert "functions/app.py" in names and "functions/platforms/aws.py" in names
    assert "emulators/aws.py" in names and "emulators/fleet.py" in names  # aiaas emulate
    assert not any(name.startswith("templates/") for name in names)


#: What the wheel carries of iac/: each cloud's template (the workflow runs from a source tree).
IAC_FILES = {"aws/template.yaml", "azure/template.json", "alibaba/template.json"}


def test_wheel_holds_the_infrastructure_templates_and_not_their_checkers(wheel: Path) -> None:
    assert iac_dir() == REPO / "iac"  # the checkout's own folder, in the tests
    with zipfile.ZipFile(wheel) as zf:
        shipped = {
            n.removeprefix("aiaas/iac/") for n in zf.namelist() if n.startswith("aiaas/iac/")
        }
        names = set(zf.namelist())
    assert shipped == IAC_FILES  # no check.py, check_ros.py, schemas/ or generate.py
    for name in IAC_FILES:  # byte for byte what the checkout holds (and make iac-check checks)
        with zipfile.ZipFile(wheel) as zf:
            assert zf.read(f"aiaas/iac/{name}") == (REPO / "iac" / name).read_bytes()
    assert not any(n.startswith("iac/") for n in names)


def test_installed_wheel_finds_its_templates(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*pip, "--target", str(target), str(wheel)], check=True, timeout=120)
    probe = (
        "import aiaas, aiaas.cli.commands as c, functions.packaging as p,"
        " aiaas.template_files as t;"
        "print(aiaas.__file__); print(t.templates_dir()); print(c.TEMPLATES);"
        "print(p.TEMPLATES); print(t.iac_dir())"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    # Run from tmp_path, so the checkout's own folders are not on the path.
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module, found, cli_templates, function_templates, iac = done.stdout.split("\n")[:5]
    installed = target / "aiaas" / "templates"
    assert Path(module).parent == target / "aiaas"
    assert Path(found) == installed
    assert Path(cli_templates) == installed
    assert Path(function_templates) == installed / "functions"
    assert (installed / "init" / "model.py.tmpl").is_file()
    assert (installed / "container" / "Dockerfile").is_file()
    assert Path(iac) == target / "aiaas" / "iac"
    assert all((Path(iac) / name).is_file() for name in IAC_FILES)


def test_aiaas_iac_template_writes_the_shipped_template(wheel: Path, tmp_path: Path) -> None:
    """A pip user has no checkout: ``aiaas iac template`` of the installed wheel writes the
    template it ships (run from tmp_path, so the checkout's ``iac/`` is not found)."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*pip, "--target", str(target), str(wheel)], check=True, timeout=120)
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = tmp_path / "stack" / "template.yaml"
    command = [sys.executable, "-m", "aiaas", "iac", "template", "--cloud", "aws", "-o", str(out)]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == (REPO / "iac" / "aws" / "template.yaml").read_bytes()
    command[command.index("aws")] = "gcp"
    refused = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "--cloud gcp: unknown cloud; one of aws, azure, alibaba" in refused.stderr
