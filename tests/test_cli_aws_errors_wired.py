"""Issue 16, item 28 end to end: what ``aiaas`` prints for a missing bucket, a region that
does not exist, a refused control-plane call and a wrong secret on ``invoke``, against the
AWS emulators. Fails until provider.py and invoke.py call the mapping of
``adapters/sagemaker/errors.py`` and ``aws.refused_credentials``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conformance.harnesses.sagemaker import sagemaker_yaml
from conftest import PROJECTS

from emulators.aws import AwsEmulator

AIAAS = str(Path(sys.executable).with_name("aiaas"))


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEmulator]:
    emulator = AwsEmulator(tmp_path_factory.mktemp("aws"))  # no bucket created
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aws-errors") / "probe"
    shutil.copytree(PROJECTS / "probe", root)
    (root / "aiaas.yaml").write_text(
        "model:\n  entrypoint: probe_model:Probe\n  name: probe\nprovider: sagemaker\n"
        + sagemaker_yaml("err")
    )
    return root


def fails(aws: AwsEmulator, project: Path, *args: str, **env: str) -> str:
    """``aiaas <args>``'s one error line (exit 1, no traceback)."""
    shell = {"PATH": "/usr/bin:/bin", "HOME": str(project.parent), **aws.env(), **env}
    done = subprocess.run(
        [AIAAS, *args, "-c", str(project)],
        capture_output=True, text=True, timeout=300, env=shell, cwd=project.parent,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0].removeprefix("error: ")


def test_a_missing_bucket_is_found_at_plan_time(aws: AwsEmulator, project: Path) -> None:
    for args in (["deploy", "--dry-run"], ["deploy"]):
        line = fails(aws, project, *args)
        assert line.startswith("sagemaker.bucket") and "'aiaas-conformance'" in line
        assert "no S3 bucket" in line or "no such S3 bucket" in line


def test_a_region_that_does_not_exist_is_named(aws: AwsEmulator, project: Path) -> None:
    line = fails(aws, project, "status", AWS_REGION="us-north-9", AWS_DEFAULT_REGION="us-north-9")
    assert line.startswith("sagemaker.region 'us-north-9' is not a region SageMaker runs in")


def test_a_refused_control_plane_call_names_the_permission(aws: AwsEmulator, project: Path) -> None:
    aws.refuse_next(
        "sagemaker", "ListEndpoints", "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/ci is not authorized", status=403,
    )  # fmt: skip
    assert fails(aws, project, "status") == (
        "list endpoints: AWS refused the credentials (AccessDeniedException): the principal "
        "is not allowed to list endpoints: see docs/providers/sagemaker.md for the IAM policy "
        "aiaas needs (AWS: User: arn:aws:iam::123456789012:user/ci is not authorized)"
    )


def test_a_wrong_secret_on_invoke_names_the_secret(aws: AwsEmulator, project: Path) -> None:
    line = fails(aws, project, "invoke", "probe", "-d", "{}", AWS_SECRET_ACCESS_KEY="wrong")
    assert "the secret access key does not match the access key id" in line
    assert "role" not in line
