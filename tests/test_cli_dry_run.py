"""``aiaas deploy --dry-run`` prints what deploy would do and changes nothing (local)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import PROJECTS, build_probe_variant


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "aiaas", *args],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip


def _deployment_files(state: Path) -> list[str]:
    """What the local provider has recorded under the state dir (logs left out, and the
    per-name lock file, which is never deleted by design: see adapters/local/provider.py)."""
    local = state / "local"
    if not local.is_dir():
        return []
    return sorted(
        str(p.relative_to(state))
        for p in local.rglob("*")
        if p.is_file() and p.suffix not in (".log", ".lock")
    )


def test_dry_run_plans_and_changes_nothing(tmp_path: Path) -> None:
    project = tmp_path / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    state = tmp_path / "state"
    with (project / "aiaas.yaml").open("a") as f:
        f.write(f"state_dir: {state}\n")
    # Without --bundle the bundle is built for the plan only: not even dist/ is written.
    unbuilt = _cli("deploy", "--dry-run", "-c", str(project))
    assert unbuilt.returncode == 0, unbuilt.stderr
    assert "create  server process" in unbuilt.stdout
    assert not (project / "dist").exists() and _deployment_files(state) == []
    bundle = project / "dist" / "model.tar.gz"
    first = _cli("bundle", "build", str(project), "--output", str(bundle))
    assert first.returncode == 0, first.stderr
    version = json.loads(_cli("bundle", "inspect", str(bundle)).stdout)["version"]

    # Nothing deployed yet: the plan creates a server process, and nothing is started.
    plan = _cli("deploy", "--dry-run", "-c", str(project), "--bundle", str(bundle))
    assert plan.returncode == 0, plan.stderr
    assert f"deploy of probe {version} to local would:" in plan.stdout
    assert "create" in plan.stdout and "server process" in plan.stdout
    assert _deployment_files(state) == []
    assert not (state / "bundles" / version).exists()  # not even unpacked
    status = _cli("status", "probe", "-c", str(project))
    assert status.returncode == 1 and "no local deployment named 'probe'" in status.stderr

    try:
        deployed = _cli("deploy", "-c", str(project), "--bundle", str(bundle))
        assert deployed.returncode == 0, deployed.stderr
        live = json.loads((state / "local" / "probe" / "deployment.json").read_text())
        recorded = _deployment_files(state)

        same = _cli("deploy", "--dry-run", "-c", str(project), "--bundle", str(bundle))
        assert same.returncode == 0, same.stderr
        assert "already live on local: deploy would change nothing" in same.stdout
        assert "keep" in same.stdout

        v2 = build_probe_variant(tmp_path, 'VERSION_SALT = "1"', 'VERSION_SALT = "2"')
        new = _cli("deploy", "--dry-run", "-c", str(project), "--bundle", str(v2.path))
        assert new.returncode == 0, new.stderr
        assert f"deploy of probe {v2.manifest.version} to local would:" in new.stdout
        assert "update" in new.stdout and f"stop {version}" in new.stdout
        assert f"pid {live['pid']}" in new.stdout
        # Still the first version, same server, same records; the new one never unpacked.
        assert json.loads((state / "local" / "probe" / "deployment.json").read_text()) == live
        assert _deployment_files(state) == recorded
        assert not (state / "bundles" / v2.manifest.version).exists()
        os.kill(live["pid"], 0)  # the live server was not touched
    finally:
        _cli("delete", "probe", "-c", str(project))
    assert _deployment_files(state) == []
