"""What the CLI prints a user: whole messages, usage errors, the version, copyable secrets.

Every test runs the real ``aiaas`` command in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from aiaas.config import ModelSection
from functions.auth import KEYS_FILE


def _cli(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "aiaas", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


NAME_PATTERN = next(m.pattern for m in ModelSection.model_fields["name"].metadata)


def test_error_messages_with_square_brackets_arrive_whole(tmp_path: Path) -> None:
    (tmp_path / "aiaas.yaml").write_text("model:\n  entrypoint: m:M\n  name: Bad_Name\n")
    r = _cli("status", "--config", str(tmp_path))
    assert r.returncode == 1
    assert f"model.name: String should match pattern '{NAME_PATTERN}'" in r.stderr
    assert NAME_PATTERN == "^[a-z0-9][a-z0-9-]{0,62}$"  # brackets are what rich would eat
    r = _cli("init", str(tmp_path / "p"), "--name", "[red]x")
    assert r.returncode == 1 and "--name '[red]x'" in r.stderr


def test_a_bracketed_option_value_is_echoed_whole(tmp_path: Path) -> None:
    (tmp_path / "aiaas.yaml").write_text("model:\n  entrypoint: m:M\n")
    r = _cli("usage", "--config", str(tmp_path), "--by", "[bold]x[/bold]")
    assert r.returncode == 1
    assert "--by [bold]x[/bold]: use key, model or provider" in r.stderr


def test_init_refuses_a_name_the_config_would_refuse(tmp_path: Path) -> None:
    r = _cli("init", str(tmp_path / "p"), "--name", "Bad_Name")
    assert r.returncode == 1
    assert f"--name 'Bad_Name': a model name must match {NAME_PATTERN}" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "p").exists()  # nothing half-created
    r = _cli("init", str(tmp_path / "q"), "--name", "good-name-2")
    assert r.returncode == 0, r.stderr
    assert "name: good-name-2" in (tmp_path / "q" / "aiaas.yaml").read_text()


def test_a_mistyped_option_is_a_usage_error_with_a_suggestion() -> None:
    r = _cli("status", "--porvider", "local")
    assert r.returncode == 2  # click's exit status for usage errors
    assert "did you mean --provider?" in r.stderr
    assert "Usage:" in r.stderr and "status" in r.stderr
    assert "--debug" not in r.stderr and "NoSuchOption" not in r.stderr
    r = _cli("deploy", "--nothing-like-it")
    assert r.returncode == 2 and "No such option: --nothing-like-it" in r.stderr
    assert "did you mean" not in r.stderr
    r = _cli("bundle", "inspect")  # other usage errors keep click's own message
    assert r.returncode == 2 and "error: Missing argument 'path'." in r.stderr
    r = _cli("serve", "x", "--port", "[abc]")
    assert r.returncode == 2 and "Invalid value for '--port'" in r.stderr


def test_version() -> None:
    r = _cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"aiaas {version('aiaas')}"


def test_the_key_record_is_printed_on_one_line_on_a_narrow_terminal(tmp_path: Path) -> None:
    (tmp_path / "aiaas.yaml").write_text("model:\n  entrypoint: m:M\n")
    r = _cli("keys", "create", "--config", str(tmp_path), columns=40)
    assert r.returncode == 0, r.stderr
    stored = (tmp_path / ".aiaas" / KEYS_FILE).read_text().split()
    assert len(stored) == 1 and len(stored[0]) > 40
    assert stored[0] in r.stderr.splitlines()  # the record, whole, on a line of its own
    key_line = next(line for line in r.stdout.splitlines() if line.startswith("API key "))
    assert re.fullmatch(r"API key aiaas_[0-9a-f]{8}_\S{40,}", key_line)
