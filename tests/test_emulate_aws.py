"""``aiaas emulate aws``'s refusal of a project it cannot serve, run as ``main`` in this
process. The rehearsal itself, as docs/rehearse.md walks it (the emulated AWS in its own
process, and ``aiaas`` deploying, invoking, with a real prediction from the real model
server, and deleting through the variables it prints; the emulator stopping with every
container on SIGTERM), is tests/test_iac_workflow.py's run of the workflow's rehearse job,
which runs the same commands for every cloud."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators.cli import main


def test_a_project_without_a_sagemaker_section_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "aiaas.yaml").write_text("model:\n  entrypoint: m:M\n")
    assert main(["aws", "-c", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"aiaas emulate: {tmp_path}: aiaas.yaml has no sagemaker: section (its bucket)\n"
