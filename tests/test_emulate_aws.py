"""A rehearsal with no account, as docs/rehearse.md walks it: the emulated AWS in its own
process, and the ``aiaas`` command pointed at it by the variables it prints, deploying,
invoking (a real prediction from the real model server) and deleting."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conformance.harnesses.sagemaker import sagemaker_yaml
from conftest import PROJECTS, guard_environment

AIAAS = str(Path(sys.executable).with_name("aiaas"))
EMULATE = [AIAAS, "emulate", "aws"]  # `python -m emulators aws` is the same command
MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"


def _exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rehearse") / "probe"
    shutil.copytree(PROJECTS / "probe", root)
    (root / "aiaas.yaml").write_text(MODEL_YAML + "provider: sagemaker\n" + sagemaker_yaml("r"))
    return root


@pytest.fixture(scope="module")
def emulated(project: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    env_file = project.parent / "aws.env"
    proc = subprocess.Popen(
        [*EMULATE, "-c", str(project), "--env-file", str(env_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=project.parent,
    )
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists() or not env_file.read_text().endswith("\n"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the emulator never printed its variables"
            time.sleep(0.05)
        yield proc, _exports(env_file.read_text())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def aiaas(env: dict[str, str], project: Path, *args: str) -> str:
    shell = {"PATH": "/usr/bin:/bin", "HOME": str(project.parent), "HF_HUB_OFFLINE": "1"}
    shell.update(guard_environment())
    done = subprocess.run(
        [AIAAS, *args, "-c", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**shell, **env},
        cwd=project.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_deploy_invoke_delete_against_the_emulated_aws(
    emulated: tuple[subprocess.Popen[str], dict[str, str]], project: Path
) -> None:
    proc, env = emulated
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"].startswith("http://127.0.0.1:")
    assert "probe" in aiaas(env, project, "deploy")
    answer = json.loads(aiaas(env, project, "invoke", "probe", "-d", '{"inputs": [{"value": 4}]}'))
    assert answer["outputs"][0]["value"] == 8.0 and answer["model"] == "probe"
    assert "probe" in aiaas(env, project, "delete", "probe")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0  # every container stopped with it


def test_a_project_without_a_sagemaker_section_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "aiaas.yaml").write_text("model:\n  entrypoint: m:M\n")
    done = subprocess.run([*EMULATE, "-c", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "no sagemaker: section" in done.stderr and "Traceback" not in done.stderr
