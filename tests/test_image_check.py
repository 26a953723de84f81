"""``make image-check`` on a machine without podman says what to run instead (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_without_podman_it_says_to_run_make_image_first(tmp_path: Path) -> None:
    empty = tmp_path / "bin"  # a PATH on which no podman can be found
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "image_check.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": str(empty)},
    )
    assert done.returncode == 2, done.stderr
    assert "podman is not installed: run `make image` first" in done.stderr
    assert "Traceback" not in done.stderr
