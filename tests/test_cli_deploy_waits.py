"""A deploy started while the endpoint is still Creating (a CI retry right after an
interrupted deploy) waits for it to settle, with progress, then goes on (issue 16, item 27):
the real ``aiaas`` command against the AWS emulators.

Fails until SageMaker's steps raise :class:`adapters.rollout.Busy` (not ``DeployFailed``)
for a settling endpoint in ``SageMakerSteps.diff``: the shared transaction waits on Busy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sagemaker_emulated import emulated_aws_with_bucket
from test_cli_sagemaker_messages import (  # the same project (a module-scoped fixture)
    _endpoint_status,
    _interrupt_while_creating,
    aiaas,
    ok,
    project,
)

from emulators.aws import AwsEmulator

__all__ = ["project"]  # a fixture, imported to be found


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEmulator]:
    # Endpoints stay Creating at least 10 s: the retry (which builds the bundle again) meets
    # the endpoint still Creating.
    with emulated_aws_with_bucket(
        tmp_path_factory.mktemp("aws"), min_transition_s=10.0
    ) as emulator:
        yield emulator


def test_a_deploy_right_after_an_interrupted_one_waits_and_goes_on(
    aws: AwsEmulator, project: Path
) -> None:
    code, stderr = _interrupt_while_creating(aws, project, "retry")
    try:
        assert code == 130, stderr
        assert _endpoint_status(aws, "retry") == "Creating"
        started = time.monotonic()
        again = aiaas(aws, project, "deploy", "--name", "retry")
        assert again.returncode == 0, again.stdout + again.stderr  # not "wait for it to settle"
        assert _endpoint_status(aws, "retry") == "InService"
        assert time.monotonic() - started < 120
    finally:
        ok(aiaas(aws, project, "delete", "retry"))
