"""The SageMaker provider against the emulator's slower, AWS-like lifecycle (issue 16,
item 35; findings 16 and 48): an endpoint that stays ``Deleting`` for a while after
DeleteEndpoint, and DescribeEndpoint still answering the old view just after UpdateEndpoint.
Real boto3 clients and real containers (emulators/aws.py)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import boto3
from sagemaker_emulated import assert_nothing_left, calls, provider

from aiaas.bundle import BuiltBundle
from emulators.aws import AwsEmulator

DELETING_S = 0.6


def test_a_deploy_waits_out_deleting_and_delete_waits_until_the_name_is_free(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    fresh.deleting_s = DELETING_S
    with provider(tmp_path) as sm:
        sm.deploy(bundles[0].path)
        # A delete not waited for (another process's): the deploy right after finds the
        # endpoint Deleting, waits for it to go, then creates it instead of failing on the
        # name.
        with contextlib.closing(boto3.client("sagemaker")) as client:
            client.delete_endpoint(EndpointName="probe")
            assert client.describe_endpoint(EndpointName="probe")["EndpointStatus"] == "Deleting"
        again = sm.deploy(bundles[1].path)
        assert again.version == bundles[1].manifest.version
        assert len(calls(fresh, "CreateEndpoint")) == 2
        started = time.monotonic()
        assert sm.delete("probe")
        assert time.monotonic() - started >= DELETING_S  # it waited until the name was free
    assert_nothing_left()


def test_an_update_is_not_judged_on_a_stale_in_service_answer(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    with provider(tmp_path) as sm:
        sm.deploy(bundles[0].path)
        fresh.stale_describes = 1  # the first DescribeEndpoint after the update is stale
        updated = sm.deploy(bundles[1].path)
    assert updated.version == bundles[1].manifest.version
