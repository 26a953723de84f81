"""Config validation, bundle determinism and the CLI's user-facing behaviour."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import PROJECTS

from adapters.local import LocalSection
from aiaas.bundle import build_bundle, inspect_archive, open_bundle
from aiaas.config import load_config
from aiaas.errors import BundleError, ConfigError
from aiaas.manifest import MANIFEST_FILE


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiaas", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


class TestConfig:
    def test_defaults_and_env_overrides(self, tmp_path: Path) -> None:
        f = _write(tmp_path / "aiaas.yaml", "model:\n  entrypoint: m:M\n")
        cfg = load_config(
            f,
            env={
                "AIAAS_PROVIDER": "local",
                "AIAAS_SERVER__MAX_QUEUE_SIZE": "7",
                "AIAAS_LOCAL__READY_TIMEOUT_S": "9",
                "AIAAS_API_KEY": "x",
            },
        )
        assert cfg.provider == "local"
        assert cfg.provider_settings("local", LocalSection).ready_timeout_s == 9
        assert cfg.server.max_queue_size == 7
        assert cfg.root == tmp_path
        assert load_config(tmp_path, env={}).provider == "local"

    def test_bad_value_names_file_and_key(self, tmp_path: Path) -> None:
        f = _write(tmp_path / "aiaas.yaml", "model:\n  entrypoint: m:M\n  max_batch_size: 0\n")
        with pytest.raises(
            ConfigError, match=r"aiaas.yaml: model.max_batch_size: Input should be greater"
        ):
            load_config(f, env={})

    def test_unknown_key_is_named(self, tmp_path: Path) -> None:
        f = _write(tmp_path / "aiaas.yaml", "model:\n  entrypoint: m:M\nservr:\n  x: 1\n")
        with pytest.raises(ConfigError, match=r"servr: unknown key"):
            load_config(f, env={})

    def test_bad_env_override_names_the_variable(self, tmp_path: Path) -> None:
        f = _write(tmp_path / "aiaas.yaml", "model:\n  entrypoint: m:M\n")
        with pytest.raises(
            ConfigError,
            match=r"AIAAS_SERVER__MAX_QUEUE_SIZE \(overrides .*\): server.max_queue_size",
        ):
            load_config(f, env={"AIAAS_SERVER__MAX_QUEUE_SIZE": "lots"})

    def test_missing_and_malformed_files(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="config file not found"):
            load_config(tmp_path / "nope.yaml", env={})
        f = _write(tmp_path / "aiaas.yaml", "model: [unclosed\n")
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_config(f, env={})
        _write(f, "model:\n  entrypoint: m:M\nlocal:\n  host: 10.0.0.1\n")
        with pytest.raises(ConfigError, match=r"local\.host"):
            load_config(f, env={})


class TestBundle:
    def test_build_is_deterministic(self, tmp_path: Path) -> None:
        a = build_bundle(PROJECTS / "probe", tmp_path / "a.tar.gz")
        b = build_bundle(PROJECTS / "probe", tmp_path / "b.tar.gz")
        assert a.manifest.digest == b.manifest.digest and a.manifest.digest.startswith("sha256:")
        assert a.path.read_bytes() == b.path.read_bytes()
        assert a.manifest.version == a.manifest.digest[7:23]

    def test_archive_layout_and_manifest(self, tmp_path: Path) -> None:
        built = build_bundle(PROJECTS / "probe", tmp_path / "p.tar.gz")
        with tarfile.open(built.path) as tar:
            names = tar.getnames()
            assert names[0] == MANIFEST_FILE
            assert set(names) == {MANIFEST_FILE, "code/probe_model.py", "artifacts/scale.txt"}
            assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
        m = inspect_archive(built.path)
        assert m.name == "probe" and m.entrypoint == "probe_model:Probe"
        assert m.input_schema["required"] == ["value"]
        assert m.example_request == {"inputs": [{"value": 1.0}]}
        assert m.batching.max_batch_size == 8 and m.batching.max_delay_ms == 20
        bundle_dir, again = open_bundle(built.path, cache_dir=tmp_path / "cache")
        assert again == m and (bundle_dir / "artifacts" / "scale.txt").read_text() == "2.0\n"

    def test_changed_code_changes_digest(self, tmp_path: Path) -> None:
        import shutil

        project = tmp_path / "p"
        shutil.copytree(PROJECTS / "probe", project)
        before = build_bundle(project, tmp_path / "1.tar.gz").manifest.digest
        (project / "probe_model.py").write_text(
            (project / "probe_model.py").read_text() + "\n# changed\n"
        )
        assert build_bundle(project, tmp_path / "2.tar.gz").manifest.digest != before

    def test_bad_entrypoint_and_bad_archive(self, tmp_path: Path) -> None:
        _write(tmp_path / "p" / "aiaas.yaml", "model:\n  entrypoint: nomodule:Thing\n")
        with pytest.raises(BundleError, match="cannot import 'nomodule'"):
            build_bundle(tmp_path / "p")
        junk = _write(tmp_path / "junk.tar.gz", "not a tarball")
        with pytest.raises(BundleError, match="not a bundle archive"):
            inspect_archive(junk)


class TestCli:
    def test_errors_are_one_line_without_traceback(self, tmp_path: Path) -> None:
        _write(tmp_path / "aiaas.yaml", "model:\n  entrypoint: m:M\n  max_delay_ms: soon\n")
        r = _cli("status", "--config", str(tmp_path))
        assert r.returncode == 1
        assert "model.max_delay_ms" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2  # one message (rich may wrap it once)
        r = _cli("bundle", "inspect", str(tmp_path / "aiaas.yaml"))
        assert (
            r.returncode == 1 and "not a bundle archive" in r.stderr and "Traceback" not in r.stderr
        )
        r = _cli("invoke", "--config", str(PROJECTS / "probe"), "--data", "{nope")
        assert r.returncode == 1 and "--data is not valid JSON" in r.stderr
        r = _cli("--debug", "bundle", "inspect", str(tmp_path / "aiaas.yaml"))
        assert r.returncode != 0 and "Traceback" in r.stderr

    def test_unknown_provider_is_named(self, tmp_path: Path) -> None:
        r = _cli("status", "--config", str(PROJECTS / "probe"), "--provider", "nocloud")
        assert r.returncode == 1 and "--provider nocloud: unknown provider" in r.stderr
        assert "installed: azureml, local, pai, sagemaker" in r.stderr

    def test_init_scaffold_builds_and_serves_predictions(self, tmp_path: Path) -> None:
        project = tmp_path / "proj"
        r = _cli("init", str(project), "--name", "scorer")
        assert r.returncode == 0, r.stderr
        r = _cli("bundle", "build", str(project), "-o", str(tmp_path / "s.tar.gz"))
        assert r.returncode == 0, r.stderr
        m = inspect_archive(tmp_path / "s.tar.gz")
        assert m.name == "scorer" and m.input_schema["properties"]["x"]["type"] == "array"
        r = _cli("init", str(project))
        assert r.returncode == 1 and "already exists" in r.stderr

    def test_deploy_invoke_status_delete_through_the_cli(self, tmp_path: Path) -> None:
        import shutil

        project = tmp_path / "probe"
        shutil.copytree(PROJECTS / "probe", project)
        try:
            r = _cli("deploy", "--config", str(project))
            assert r.returncode == 0, r.stderr
            assert "ready" in r.stdout and "http://127.0.0.1:" in r.stdout
            r = _cli(
                "invoke", "probe", "--config", str(project), "--data", '{"inputs": [{"value": 4}]}'
            )
            assert r.returncode == 0, r.stderr
            assert '"value":8.0' in r.stdout
            body = _write(tmp_path / "req.json", '{"inputs": [{"value": "four"}]}')
            r = _cli("invoke", "probe", "--config", str(project), "--data", f"@{body}")
            assert r.returncode == 1 and "inputs[0].value" in r.stderr
            r = _cli("invoke", "probe", "--config", str(project), "--data", "[1]")
            assert r.returncode == 1  # the server's message, square brackets and all
            assert 'expected a JSON object {"inputs": [item, ...]}' in r.stderr
            r = _cli("status", "--config", str(project))
            assert "probe" in r.stdout and "ready" in r.stdout
            r = _cli("logs", "probe", "--config", str(project), "--tail", "50")
            assert "loaded on cpu" in r.stdout
        finally:
            r = _cli("delete", "probe", "--config", str(project))
        assert r.returncode == 0 and "deleted probe" in r.stdout
        assert "nothing to delete" in _cli("delete", "probe", "--config", str(project)).stdout


def test_doctor_warns_when_another_distribution_owns_adapters(tmp_path: Path) -> None:
    assert _cli("doctor").returncode == 0
    # AdapterHub's package is also imported as `adapters`: fake its installed metadata.
    dist = tmp_path / "adapters-1.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: adapters\nVersion: 1.0.0\n")
    (dist / "top_level.txt").write_text("adapters\n")
    r = _cli("doctor", env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 1
    assert "also installed by adapters" in r.stdout


def test_two_projects_with_the_same_module_name_build_in_one_process(tmp_path: Path) -> None:
    import shutil

    probe = tmp_path / "probe"
    shutil.copytree(PROJECTS / "probe", probe)
    (probe / "probe_model.py").rename(probe / "model.py")
    (probe / "aiaas.yaml").write_text("model:\n  entrypoint: model:Probe\n")
    assert _cli("init", str(tmp_path / "scorer"), "--name", "scorer").returncode == 0
    first = build_bundle(probe, tmp_path / "1.tar.gz")
    second = build_bundle(tmp_path / "scorer", tmp_path / "2.tar.gz")  # also `model:...`
    assert (first.manifest.name, second.manifest.name) == ("probe", "scorer")
    assert "x" in second.manifest.input_schema["properties"]
