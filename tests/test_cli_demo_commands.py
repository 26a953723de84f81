"""The commands ``make demo`` prints work when pasted: run them in a shell, as a user would."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from conftest import EXAMPLES, PROJECTS, free_port


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aiaas_demo", EXAMPLES / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_printed_commands_use_an_existing_aiaas_and_absolute_paths() -> None:
    demo = _demo()
    script = demo.paste_commands(EXAMPLES / "minilm", {"inputs": [{"text": "hi [there]"}]})
    first = shlex.split(script.splitlines()[0])
    aiaas = Path(first[0])
    assert aiaas.is_absolute() and aiaas.is_file() and os.access(aiaas, os.X_OK), aiaas
    assert aiaas.parent == Path(sys.executable).parent  # the venv's, not whatever is on PATH
    assert first[1:] == ["deploy", "-c", str((EXAMPLES / "minilm").resolve())]
    assert "http://127.0.0.1:8000/predict" in script  # function.port of the example's config


def test_pasted_commands_deploy_call_and_clean_up(tmp_path: Path) -> None:
    project = tmp_path / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    demo = _demo()
    script = demo.paste_commands(project, {"inputs": [{"value": 2}]}, port=free_port())
    # A shell whose PATH has no aiaas (nor this venv), run from another directory.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        ["bash", "-c", "set -e\n" + script],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    answers = [line for line in r.stdout.splitlines() if '"outputs"' in line]
    assert len(answers) == 2, r.stdout  # curl through the function app, then aiaas invoke
    assert all('"value":4.0' in line for line in answers)
    assert "deleted probe" in r.stdout
    assert not (project / ".aiaas" / "local" / "probe").exists()
