"""The Python API (``aiaas.deploy``, ``plan``, ``status``, ``deployments``, ``invoke``,
``logs``, ``delete``): what the CLI runs, returning the contract's typed objects, tried for
real against the local provider on a copy of the probe project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECTS

import aiaas
from adapters.base import Deployment, DeploymentStatus, InvokeResult, Plan
from aiaas import api
from aiaas.errors import ConfigError, NotFound


def test_import_aiaas_stays_light_and_lends_the_api() -> None:
    """``import aiaas`` (a function's cold start does it) loads neither the API nor the
    adapters; the first use of ``aiaas.deploy`` does."""
    code = (
        "import sys, aiaas\n"
        "print(sorted(m for m in ('aiaas.api', 'adapters', 'aiaas.cli') if m in sys.modules))\n"
        "aiaas.deploy\n"
        "print('aiaas.api' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"]
    for name in aiaas.API:
        assert getattr(aiaas, name) is getattr(api, name)
    with pytest.raises(AttributeError, match="no attribute 'deploy_all'"):
        aiaas.deploy_all  # noqa: B018 - the attribute lookup is the test


def test_deploy_status_invoke_logs_delete_on_the_local_provider(tmp_path: Path) -> None:
    project = tmp_path / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    plan = aiaas.plan(project)
    assert isinstance(plan, Plan) and not plan.unchanged
    assert not (project / "dist").exists()  # a plan writes nothing, not even the bundle
    progress: list[tuple[str, float | None]] = []
    deployed = aiaas.deploy(project, progress=lambda m, f: progress.append((m, f)))
    try:
        assert isinstance(deployed, Deployment)
        assert deployed.name == "probe" and deployed.provider == "local"
        assert deployed.status == DeploymentStatus.READY
        assert progress[0] == ("building bundle", None) and len(progress) > 1
        assert aiaas.plan(project / "aiaas.yaml").unchanged  # the live digest: no change

        described = aiaas.status(project)
        assert (described.name, described.version) == ("probe", deployed.version)
        assert [d.name for d in aiaas.deployments(project)] == ["probe"]
        assert [(v.version, v.traffic_pct) for v in described.versions] == [(deployed.version, 100)]
        # `aiaas status` shows each version with its share of traffic.
        assert f"versions {deployed.version} 100% ready" in _cli("status", "probe", "-c", project)
        every = _cli("status", "-c", project)
        assert "traffic" in every and deployed.version in every and "100%" in every

        answer = aiaas.invoke(project, '{"inputs": [{"value": 2}]}')
        assert isinstance(answer, InvokeResult) and answer.version == deployed.version
        assert b'"value":4.0' in answer.body.replace(b" ", b"")
        default = aiaas.invoke(project)  # the bundle's example request
        assert default.version == deployed.version

        lines = aiaas.logs(project, tail=5)
        assert isinstance(lines, list) and 0 < len(lines) <= 5
    finally:
        removed = aiaas.delete(project)
    assert removed is True
    assert aiaas.delete(project) is False  # idempotent
    with pytest.raises(NotFound):
        aiaas.status(project)


def _cli(*args: str | Path) -> str:
    """``aiaas <args>``'s output, on a terminal wide enough that no line is wrapped, with
    each run of spaces as one."""
    env = {**os.environ, "COLUMNS": "300"}
    aiaas_cli = Path(sys.executable).parent / "aiaas"
    done = subprocess.run([aiaas_cli, *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())


def test_the_provider_override_and_a_loaded_config(tmp_path: Path) -> None:
    project = tmp_path / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    with pytest.raises(ConfigError, match="--provider nope: unknown provider; installed: "):
        aiaas.status(project, provider="nope")
    config = api.load_project(project, provider="local")
    assert api.load_project(config) is config
    assert aiaas.deployments(config) == []
    with pytest.raises(ValueError, match="pass the path instead"):
        aiaas.deployments(config, provider="local")
    with pytest.raises(ConfigError, match=r"model\.name is not set; pass the deployment name"):
        api.deployment_name(config)  # no model.name and no bundle built yet
    assert api.deployment_name(config, "other") == "other"
