"""The IAM policies docs/providers/sagemaker.md documents, run as written (issue 16, item 33).

The emulated AWS enforces IAM (:meth:`emulators.aws.AwsEmulator.enforce_iam`): each policy is
parsed from the docs' JSON blocks, given to an IAM user as its only policy, and the real
provider (deploy with autoscaling, status, list, logs, delete) and the real invoke path
(InvokeEndpoint and the readiness route's DescribeEndpoint) run with that user's keys. A
missing action fails here, naming the permission, not on a first deploy.

What is evaluated: every call's action on its resource ARN, with the condition keys AWS
sets for it (``s3:prefix``, ``iam:PassedToService``, ``iam:AWSServiceName``), and the actions
AWS checks on the caller's behalf (``iam:PassRole``, ``sagemaker:AddTags`` on create,
Application Auto Scaling's). emulators/iam.py names what is not (moto's own access control
checks actions only)."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conformance.harnesses.sagemaker import BUCKET, ROLE
from conftest import REPO
from sagemaker_emulated import SCALING, assert_nothing_left, probes, provider

from adapters.base import DeploymentStatus
from adapters.sagemaker.invoke import SageMakerInvoker
from aiaas.bundle import BuiltBundle
from aiaas.errors import AccessDenied, DeployFailed
from emulators.aws import AwsEmulator
from emulators.iam import evaluate

DOC = REPO / "docs" / "providers" / "sagemaker.md"
NAME, PREFIX = "probe", "tests"
# The actions of the deployer's policy this run does not need, and why (a new one here is
# an action the docs grant that nothing exercises: say why, or drop it from the docs).
NOT_EXERCISED = {
    "s3:AbortMultipartUpload": "only a failed multipart upload (bundles over 64 MB) aborts",
    "sagemaker:UpdateEndpoint": "only an update (a second version) sends it",
    "s3:GetObject": "only live_manifest (a function's follow mode) reads the stored manifest",
}


def documented_policies() -> tuple[dict[str, Any], dict[str, Any]]:
    """The deployer's and the function's policy, parsed from the docs' JSON blocks, with
    the placeholders filled in for the emulated account."""
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.DOTALL)
    deployer, function = (fill(block) for block in blocks[:2])
    assert "Statement" in deployer and "Action" in function, "the docs' JSON blocks moved"
    return deployer, {"Version": "2012-10-17", "Statement": [function]}


def fill(text: str) -> dict[str, Any]:
    values = {
        "REGION": "us-east-1",
        "ACCOUNT": AwsEmulator.ACCOUNT,
        "BUCKET": BUCKET,
        "PREFIX": PREFIX,
        "ROLE": ROLE.rsplit("/", 1)[1],
        "NAME": NAME,
    }
    for placeholder, value in values.items():
        text = re.sub(rf"\b{placeholder}\b", value, text)
    found: dict[str, Any] = json.loads(text)
    return found


def actions_of(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


def without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    """``policy`` less one action (a statement left with none is dropped)."""
    trimmed = copy.deepcopy(policy)
    kept = []
    for statement in trimmed["Statement"]:
        actions = [a for a in actions_of(statement) if a != action]
        if actions:
            kept.append({**statement, "Action": actions})
    trimmed["Statement"] = kept
    return trimmed


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    """The probe at one version (this module deploys no other)."""
    return probes(tmp_path_factory.mktemp("iam-bundle"), "1")[0]


@pytest.fixture
def iam(fresh: AwsEmulator) -> Iterator[AwsEmulator]:
    """The emulated AWS with IAM enforced (the fixture's reset turns it off)."""
    fresh.enforce_iam()
    yield fresh


def as_user(aws: AwsEmulator, mp: pytest.MonkeyPatch, name: str, policy: dict[str, Any]) -> None:
    """boto3 and the invoke path sign as a new IAM user holding exactly ``policy``."""
    key, secret = aws.create_user(name, policy)
    mp.setenv("AWS_ACCESS_KEY_ID", key)
    mp.setenv("AWS_SECRET_ACCESS_KEY", secret)


def test_the_documented_policies_deploy_inspect_invoke_and_delete(
    iam: AwsEmulator, probe: BuiltBundle, tmp_path: Path
) -> None:
    deployer, function = documented_policies()
    scaled = SCALING.format(max=2)
    with pytest.MonkeyPatch.context() as mp:
        as_user(iam, mp, "deployer", deployer)
        deploying = provider(tmp_path, scaled, prefix=PREFIX)
        with deploying as sm:
            live = sm.deploy(probe.path)  # upload, create, wait, smoke test, scaling
            assert sm.describe(NAME).status is DeploymentStatus.READY
            assert [d.name for d in sm.list()] == [NAME]
            assert sm.logs(NAME)  # the container's lines, from CloudWatch Logs
        with pytest.MonkeyPatch.context() as fn:
            as_user(iam, fn, "function", function)
            invoker = SageMakerInvoker.from_config(deploying.config)
            try:
                answer = invoker.invoke_sync(NAME, b'{"inputs": [{"value": 2}]}')
                assert answer.version == live.version
                ready = asyncio.run(invoker.status(NAME))  # the readiness route's call
                assert ready is DeploymentStatus.READY
            finally:
                invoker.close()
        with provider(tmp_path, scaled, prefix=PREFIX) as sm:
            assert sm.delete(NAME)
    assert_nothing_left()  # asked as the account's root
    checks = iam.iam_checks.all()
    # One refusal, documented: the plan-time HeadBucket needs s3:ListBucket with no prefix
    # condition; the provider skips that check when refused.
    denied = {(str(check), verdict) for _, check, verdict in checks if verdict != "allow"}
    assert denied == {(f"s3:ListBucket on arn:aws:s3:::{BUCKET}", "implicit")}
    # Each documented action is needed by this run (without it some check is denied), or
    # is one of the few named above.
    by_user = {
        user.rsplit("/", 1)[1]: [
            c for who, c, verdict in checks if who == user and verdict == "allow"
        ]
        for user in {who for who, _, _ in checks}
    }
    for who, policy in (("deployer", deployer), ("function", function)):
        unneeded = {
            action
            for statement in policy["Statement"]
            for action in actions_of(statement)
            if all(evaluate([without(policy, action)], c) == "allow" for c in by_user[who])
        }
        assert unneeded == (set(NOT_EXERCISED) if who == "deployer" else set()), who


def test_a_missing_action_is_access_denied_naming_the_permission(
    iam: AwsEmulator, probe: BuiltBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployer, function = documented_policies()
    as_user(iam, monkeypatch, "no-create-model", without(deployer, "sagemaker:CreateModel"))
    with provider(tmp_path) as sm, pytest.raises(DeployFailed) as failed:
        sm.deploy(probe.path)
    # The deploy transaction reports a refused write as DeployFailed, caused by the
    # AccessDenied that names the permission and where the policy is documented.
    denied = failed.value.__cause__
    assert isinstance(denied, AccessDenied)
    assert "perform: sagemaker:CreateModel on resource: " in denied.message
    assert "docs/providers/sagemaker.md" in denied.message
    # Checked on the caller's behalf: passing the execution role to SageMaker.
    as_user(iam, monkeypatch, "no-pass-role", without(deployer, "iam:PassRole"))
    with provider(tmp_path) as sm, pytest.raises(DeployFailed) as failed:
        sm.deploy(probe.path)
    assert isinstance(failed.value.__cause__, AccessDenied)
    assert f"iam:PassRole on resource: {ROLE}" in failed.value.message
    assert iam.containers() == []  # refused before anything ran
    # The function's policy less InvokeEndpoint: the invoke path's AccessDenied names it.
    as_user(iam, monkeypatch, "no-invoke", without(function, "sagemaker:InvokeEndpoint"))
    invoker = SageMakerInvoker.from_config(provider(tmp_path).config)
    try:
        with pytest.raises(AccessDenied) as refused:
            invoker.invoke_sync(NAME, b'{"inputs": [{"value": 2}]}')
    finally:
        invoker.close()
    assert "sagemaker:InvokeEndpoint" in refused.value.message


def test_resources_and_conditions_are_evaluated_where_moto_ignores_them(
    iam: AwsEmulator, probe: BuiltBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployer, _ = documented_policies()
    # The bundle check's ListObjectsV2 under a ListBucket grant for another prefix: denied
    # (moto alone would allow it: it ignores Conditions).
    elsewhere = json.loads(json.dumps(deployer).replace(f"{PREFIX}/bundles/*", "other/*"))
    as_user(iam, monkeypatch, "other-prefix", elsewhere)
    with provider(tmp_path) as sm, pytest.raises(AccessDenied) as denied:
        sm.deploy(probe.path)
    assert "s3:ListBucket" in denied.value.message
    # The same policy for another deployment name: its endpoint is not this one's.
    other_name = json.loads(json.dumps(deployer).replace(f"/{NAME}", "/another"))
    as_user(iam, monkeypatch, "other-name", other_name)
    with provider(tmp_path) as sm, pytest.raises(AccessDenied) as denied:
        sm.describe(NAME)
    assert "sagemaker:DescribeEndpoint on resource: " in denied.value.message
    # A missing key is 403 to a caller without an unconditioned s3:ListBucket (finding 2):
    # the documented grant is prefix-conditioned, so HeadObject cannot tell "missing".
    key, secret = iam.create_user("documented", deployer)
    session = boto3.session.Session(key, secret, region_name=iam.region)
    s3 = session.client("s3", endpoint_url=iam.url)
    try:
        key = f"{PREFIX}/bundles/none/model.tar.gz"
        with pytest.raises(s3.exceptions.ClientError) as head:
            s3.head_object(Bucket=BUCKET, Key=key)
        assert head.value.response["Error"]["Code"] == "403"
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=key, MaxKeys=1)
        assert listed["KeyCount"] == 0  # what the provider asks instead: allowed
    finally:
        s3.close()
