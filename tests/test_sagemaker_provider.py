"""What the SageMaker control plane asks of AWS, seen at the emulators: names and tags, the
DeploymentConfig of each rollout strategy, no write for the live digest, autoscaling,
deletion and listing, serverless. Real boto3 clients against moto's server and the runtime
emulator (emulators/aws.py); the failure paths are tests/test_sagemaker_failures.py; the
conformance suite covers the contract itself."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from conformance.harnesses.sagemaker import BUCKET, sagemaker_yaml
from conftest import PROJECTS
from sagemaker_emulated import (
    MODEL_YAML,
    assert_nothing_left,
    calls,
    models_and_configs,
    provider,
    tags_of,
)

from adapters.base import DeploymentStatus
from adapters.sagemaker import names
from adapters.sagemaker import provider as provider_module
from adapters.sagemaker.provider import SageMakerProvider
from aiaas.bundle import BuiltBundle, build_bundle
from aiaas.config import load_config
from aiaas.errors import DeployFailed, ProviderError
from emulators.aws import AwsEmulator


def test_names_tags_upload_and_container_environment(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    v1 = bundles[0].manifest
    with provider(tmp_path) as sm:
        deployment = sm.deploy(bundles[0].path)
    assert (deployment.name, deployment.version) == ("probe", v1.version)
    assert deployment.details["instance_type"] == "ml.m5.xlarge"
    assert deployment.details["instance_count"] == 1
    [model] = calls(fresh, "CreateModel")
    [config] = calls(fresh, "CreateEndpointConfig")
    [endpoint] = calls(fresh, "CreateEndpoint")
    assert endpoint["EndpointName"] == "probe"
    for resource in (model["ModelName"], config["EndpointConfigName"]):
        assert resource.startswith(f"probe-{v1.version}-") and len(resource) <= 63
    assert endpoint["EndpointConfigName"] == config["EndpointConfigName"]
    variant = config["ProductionVariants"][0]
    assert variant == {
        "VariantName": "AllTraffic",
        "ModelName": model["ModelName"],
        "InstanceType": "ml.m5.xlarge",
        "InitialInstanceCount": 1,
    }
    container = model["PrimaryContainer"]
    digest = v1.digest.removeprefix("sha256:")
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/tests/bundles/{digest}/model.tar.gz"
    assert container["Environment"] == {  # the server's timeout below SageMaker's 60 s
        "AIAAS_SERVER__MAX_QUEUE_SIZE": "4",
        "AIAAS_SERVER__REQUEST_TIMEOUT_S": "55",
    }
    expected = {
        names.PROJECT_TAG: f"s3://{BUCKET}/tests",
        names.DEPLOYMENT_TAG: "probe",
        names.VERSION_TAG: v1.version,
        "team": "search",
    }
    for call in (model, config, endpoint):
        assert {t["Key"]: t["Value"] for t in call["Tags"]} == expected
    # Whether the bundle is there is asked with ListObjectsV2 on its key (what the
    # documented policy's prefix-conditioned s3:ListBucket allows), never HeadObject (403
    # on a missing key without an unconditioned ListBucket).
    key = f"tests/bundles/{digest}/model.tar.gz"
    listed = [c["query"].get("prefix") for c in calls(fresh, "ListObjectsV2")]
    assert [key] in listed and calls(fresh, "HeadObject") == []
    with contextlib.closing(boto3.client("s3")) as s3:
        head = s3.head_object(Bucket=BUCKET, Key=f"tests/bundles/{digest}/model.tar.gz")
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ContentLength"] == bundles[0].path.stat().st_size
    with contextlib.closing(boto3.client("sagemaker")) as client:
        arn = client.describe_endpoint(EndpointName="probe")["EndpointArn"]
    assert tags_of(arn) == expected


def test_the_live_digest_makes_no_write_call_and_plans_unchanged(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    with provider(tmp_path) as sm:
        sm.deploy(bundles[0].path)
        before = len(fresh.calls)
        writes = fresh.writes()
        again = sm.deploy(bundles[0].path)
        assert sm.plan(bundles[0].path).unchanged
        assert fresh.writes() == writes  # counted at the emulator: not one write call
        assert all(not c.write for c in fresh.calls[before:])
        assert again.version == bundles[0].manifest.version


def test_plan_lists_the_calls_a_new_digest_needs_and_makes_none(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    with provider(tmp_path) as sm:
        live = sm.deploy(bundles[0].path)
        writes = fresh.writes()
        plan = sm.plan(bundles[1].path)
        assert fresh.writes() == writes
    actions = {(c.action, c.kind) for c in plan.changes}
    assert {
        ("create", "s3 object"),
        ("create", "model"),
        ("create", "endpoint config"),
        ("update", "endpoint"),
    } <= actions
    update = next(c for c in plan.changes if c.kind == "endpoint")
    assert live.details["endpoint_config"] in update.detail


@pytest.mark.parametrize(
    ("rollout", "routing"),
    [
        ("strategy: all_at_once", {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}),
        (
            "strategy: canary\n    canary_percent: 20\n    wait_s: 1",
            {
                "Type": "CANARY",
                "WaitIntervalInSeconds": 1,
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20},
            },
        ),
        (
            "strategy: linear\n    step_percent: 50\n    wait_s: 1\n    rollback_alarms: [p-5xx]",
            {
                "Type": "LINEAR",
                "WaitIntervalInSeconds": 1,
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
            },
        ),
    ],
    ids=["all_at_once", "canary", "linear"],
)
def test_each_rollout_strategy_reaches_update_endpoint_as_its_deployment_config(
    fresh: AwsEmulator,
    bundles: list[BuiltBundle],
    tmp_path: Path,
    rollout: str,
    routing: dict[str, Any],
) -> None:
    extra = f"deploy:\n  instance_count: 2\n  rollout:\n    {rollout}\n"
    fresh.wait_scale = 0.2  # the emulator holds a step 0.2 s, not the 1 s asked for
    with provider(tmp_path, extra) as sm:
        first = sm.deploy(bundles[0].path)
        if "alarms" in rollout:  # AWS refuses alarms that do not exist, before any change
            with pytest.raises(DeployFailed, match=r"\[p-5xx\] .* do not exist"):
                sm.deploy(bundles[1].path)
            with contextlib.closing(boto3.client("cloudwatch")) as cloudwatch:
                cloudwatch.put_metric_alarm(
                    AlarmName="p-5xx", MetricName="Invocation5XXErrors",
                    Namespace="AWS/SageMaker", Statistic="Sum", Period=60,
                    EvaluationPeriods=1, Threshold=1.0,
                    ComparisonOperator="GreaterThanOrEqualToThreshold",
                )  # fmt: skip
        mark = len(fresh.calls)
        second = sm.deploy(bundles[1].path)
    update = calls(fresh, "UpdateEndpoint")[-1]
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == routing
    alarms = update["DeploymentConfig"].get("AutoRollbackConfiguration")
    assert alarms == ({"Alarms": [{"AlarmName": "p-5xx"}]} if "alarms" in rollout else None)
    assert update["EndpointConfigName"] == second.details["endpoint_config"]
    assert second.version == bundles[1].manifest.version
    assert second.details["instance_count"] == 2  # deploy.instance_count
    # the old version's model and config are gone once the update succeeded
    after = [c for c in fresh.calls[mark:] if c.action in ("DeleteEndpointConfig", "DeleteModel")]
    deleted = {c.params.get("EndpointConfigName") or c.params["ModelName"] for c in after}
    assert deleted == {first.details["endpoint_config"], first.details["model"]}


def test_scaling_registers_a_target_and_policy_and_delete_removes_them(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    extra = "deploy:\n  scaling:\n    min_instances: 1\n    max_instances: 3\n"
    extra += "    target_concurrency: 2\n"
    with provider(tmp_path, extra) as sm:
        sm.deploy(bundles[0].path)
        [target] = calls(fresh, "RegisterScalableTarget")
        assert target == {
            "ServiceNamespace": "sagemaker",
            "ResourceId": "endpoint/probe/variant/AllTraffic",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "MinCapacity": 1,
            "MaxCapacity": 3,
        }
        [policy] = calls(fresh, "PutScalingPolicy")
        tracking = policy["TargetTrackingScalingPolicyConfiguration"]
        assert policy["PolicyType"] == "TargetTrackingScaling"
        assert tracking["PredefinedMetricSpecification"] == {
            "PredefinedMetricType": "SageMakerVariantConcurrentRequestsPerModelHighResolution"
        }
        assert tracking["TargetValue"] == 2.0
        writes = fresh.writes()
        sm.deploy(bundles[0].path)  # unchanged, scaling included: no write
        assert fresh.writes() == writes
        fresh.scale_to("probe", 3)  # autoscaling scaled out under load
        sm.deploy(bundles[1].path)
        [update] = calls(fresh, "UpdateEndpoint")
        assert update["RetainAllVariantProperties"] is True  # the new fleet keeps 3
        assert "ExcludeRetainedVariantProperties" not in update  # instance_count unchanged
        with contextlib.closing(boto3.client("sagemaker")) as client:
            variant = client.describe_endpoint(EndpointName="probe")["ProductionVariants"][0]
        assert variant["CurrentInstanceCount"] == 3
        assert sm.delete("probe") is True
    assert len(calls(fresh, "DeregisterScalableTarget")) == 1
    with contextlib.closing(boto3.client("application-autoscaling")) as scaling:
        left = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")
    assert left["ScalableTargets"] == []


def test_delete_removes_everything_and_leaves_another_projects_endpoint(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    with provider(tmp_path, prefix="theirs") as theirs:
        theirs.deploy(bundles[0].path, name="shared")
        with provider(tmp_path) as ours:
            with pytest.raises(DeployFailed) as taken:
                ours.deploy(bundles[0].path, name="shared")
            assert "not this project's" in taken.value.message
            assert ours.delete("shared") is False  # not ours to remove
            ours.deploy(bundles[1].path)
            assert [d.name for d in ours.list()] == ["probe"]
            assert ours.logs("probe", tail=200)  # the container's output, from CloudWatch Logs
            assert len(ours.logs("probe", tail=2)) == 2
            assert ours.logs("probe", tail=0) == []
            assert ours.logs("probe", tail=50_000)  # past GetLogEvents' limit: capped, no error
            assert ours.delete("probe") is True
            assert ours.delete("probe") is False
        assert [d.name for d in theirs.list()] == ["shared"]
        assert theirs.delete("shared") is True
    assert_nothing_left()
    assert fresh.containers() == []


def test_list_counts_an_endpoint_whose_tags_it_may_not_read_as_anothers(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """A deployer whose policy names only its own endpoints cannot ListTags the rest of the
    account: list shows its own instead of failing on the first foreign one."""
    with provider(tmp_path, prefix="theirs") as theirs:
        theirs.deploy(bundles[0].path, name="shared")
    with contextlib.closing(boto3.client("sagemaker")) as client:
        arn = client.describe_endpoint(EndpointName="shared")["EndpointArn"]
    with provider(tmp_path) as ours:
        ours.deploy(bundles[1].path)
    denied = (
        "User: arn:aws:sts::123456789012:assumed-role/ci is not authorized to perform: "
        f"sagemaker:ListTags on resource: {arn} (simulated)"
    )

    def deny() -> None:
        fresh.refuse_next(
            "sagemaker", "ListTags", "AccessDeniedException", denied, matching={"ResourceArn": arn}
        )

    deny()
    with provider(tmp_path) as ours:
        assert [d.name for d in ours.list()] == ["probe"]
        deny()
        with pytest.raises(ProviderError) as refused:  # deleting it needs to know: an error
            ours.delete("shared")
        assert "AccessDeniedException" in refused.value.message
        assert ours.delete("probe") is True


def test_delete_leaves_another_projects_models_whose_endpoint_is_gone(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """With no endpoint to ask, the models and configs named for a deployment are checked
    one by one: another project's leftovers of the same name are not ours to remove."""
    with provider(tmp_path, prefix="theirs") as theirs:
        described = theirs.deploy(bundles[0].path, name="shared")
        with contextlib.closing(boto3.client("sagemaker")) as client:
            client.delete_endpoint(EndpointName="shared")  # their endpoint gone, rest left
        with provider(tmp_path) as ours:
            assert ours.delete("shared") is False
            planned = ours.plan(bundles[0].path, name="shared")  # planning asks the same
            assert [c for c in planned.changes if c.action == "delete"] == []
        with contextlib.closing(boto3.client("sagemaker")) as client:
            models = [m["ModelName"] for m in client.list_models()["Models"]]
            configs = [
                c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]
            ]
        assert models == [described.details["model"]]
        assert configs == [described.details["endpoint_config"]]
        assert theirs.delete("shared") is True
    assert models_and_configs() == (set(), set())


def test_live_manifest_is_the_serving_versions(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    with provider(tmp_path) as sm:
        assert sm.live_manifest("probe") is None
        sm.deploy(bundles[0].path)
        manifest = sm.live_manifest("probe")
        assert manifest is not None
        assert json.loads(manifest.model_dump_json()) == json.loads(
            bundles[0].manifest.model_dump_json()
        )


def test_a_large_bundle_goes_up_in_parts_encrypted_and_only_once(
    fresh: AwsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The threshold is lowered to S3's smallest part (5 MB) so that a 12 MB bundle shows the
    # multipart path; at the real threshold (64 MB) the test would build a 64 MB bundle.
    monkeypatch.setattr(provider_module, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    project = tmp_path / "big"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(MODEL_YAML)
    # incompressible padding, shipped as code (bundle.include is *.py)
    (project / "padding.py").write_text(f"PADDING = {os.urandom(9 * 1024 * 1024).hex()!r}\n")
    big = build_bundle(project, tmp_path / "big.tar.gz")
    assert big.path.stat().st_size > 10 * 1024 * 1024
    with provider(tmp_path) as sm:
        uri = sm.upload(big.path)
        writes = fresh.writes()
        assert sm.upload(big.path) == uri  # the digest is there: nothing written again
        assert fresh.writes() == writes
    s3 = [c for c in fresh.calls if c.service == "s3" and c.params.get("key", "").endswith(".gz")]
    actions = [c.action for c in s3 if c.write]
    assert actions[0] == "CreateMultipartUpload" and actions[-1] == "CompleteMultipartUpload"
    assert actions.count("UploadPart") >= 2
    create = next(c for c in s3 if c.action == "CreateMultipartUpload")
    assert create.params["headers"].get("x-amz-server-side-encryption") == "AES256"
    with contextlib.closing(fresh.client("s3")) as client:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        assert (
            client.head_object(Bucket=bucket, Key=key)["ContentLength"] == big.path.stat().st_size
        )


def test_serverless_deploys_a_serverless_config_and_serves(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    project = tmp_path / "serverless"
    project.mkdir()
    section = sagemaker_yaml("serverless").replace("  instance_type: ml.m5.xlarge\n", "")
    (project / "aiaas.yaml").write_text(
        MODEL_YAML + "provider: sagemaker\n" + section
        + "  serverless:\n    memory_mb: 3072\n    max_concurrency: 5\n"
    )  # fmt: skip
    with SageMakerProvider.from_config(load_config(project)) as sm:
        deployment = sm.deploy(bundles[0].path)
        assert deployment.details["instance_type"] == "serverless"
        [config] = calls(fresh, "CreateEndpointConfig")
        variant = config["ProductionVariants"][0]
        assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
        assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
        assert isinstance(sm, SageMakerProvider)
        answer = sm.invoker.invoke_sync("probe", b'{"inputs": [{"value": 2}]}')
        assert json.loads(answer.body)["outputs"][0]["value"] == 4.0
        assert sm.delete("probe") is True


def test_a_deployment_whose_name_extends_another_keeps_its_resources(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """``probe-b``'s models and configs start with ``probe-``: deleting or updating ``probe``
    must not take them."""
    with provider(tmp_path) as sm:
        sm.deploy(bundles[0].path)
        other = sm.deploy(bundles[0].path, name="probe-b")
        sm.deploy(bundles[1].path)  # an update of probe removes probe's old version only
        assert sm.delete("probe") is True
        described = sm.describe("probe-b")
        assert described.details == other.details
        assert models_and_configs() == (
            {other.details["model"]},
            {other.details["endpoint_config"]},
        )
        assert isinstance(sm, SageMakerProvider)
        answer = sm.invoker.invoke_sync("probe-b", b'{"inputs": [{"value": 1}]}')
        assert answer.version == bundles[0].manifest.version


def test_a_replaced_version_that_cannot_be_removed_is_a_warning_the_next_deploy_removes(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """The new version serves: a refused DeleteModel of the old one does not fail the
    deploy, it is a warning, and the next deploy (of the same digest) removes it."""
    denied = "not authorized to perform: sagemaker:DeleteModel (simulated)"
    with provider(tmp_path) as sm:
        old = sm.deploy(bundles[0].path)
        fresh.refuse_next("sagemaker", "DeleteModel", "AccessDeniedException", denied)
        new = sm.deploy(bundles[1].path)
        assert new.version == bundles[1].manifest.version
        [warning] = new.details["warnings"]
        assert old.details["model"] in warning and denied in warning
        assert old.details["model"] in models_and_configs()[0]
        again = sm.deploy(bundles[1].path)
        assert "warnings" not in again.details
    assert models_and_configs() == ({new.details["model"]}, {new.details["endpoint_config"]})


def test_a_serverless_cold_start_is_waited_out_and_its_limits_hold(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """Issue 16, item 36: a serverless endpoint answers 429 ModelNotReadyException for 3 s
    after InService, which the smoke test waits out; bodies over 4 MB are refused (413);
    an idle keep-alive connection closed by the runtime (after 1 s) does not fail the
    next call."""
    fresh.serverless_cold_start_s = 3.0
    fresh.runtime_idle_timeout_s = 1.0
    project = tmp_path / "serverless"
    project.mkdir()
    section = sagemaker_yaml("serverless").replace("  instance_type: ml.m5.xlarge\n", "")
    (project / "aiaas.yaml").write_text(
        MODEL_YAML + "provider: sagemaker\n" + section
        + "  serverless:\n    memory_mb: 2048\n    max_concurrency: 1\n"
    )  # fmt: skip
    with SageMakerProvider.from_config(load_config(project)) as sm:
        assert sm.deploy(bundles[0].path).status is DeploymentStatus.READY
        answered = [(c.status, c.error) for c in fresh.runtime_calls]
        assert answered[0] == (429, "ModelNotReadyException") and answered[-1] == (200, None)
        assert isinstance(sm, SageMakerProvider)
        before = fresh.runtime_connections
        time.sleep(1.5)  # the runtime closes the idle connection
        answer = sm.invoker.invoke_sync("probe", b'{"inputs": [{"value": 2}]}')
        assert json.loads(answer.body)["outputs"][0]["value"] == 4.0
        assert fresh.runtime_connections > before
    runtime = fresh.client("sagemaker-runtime")  # botocore does not retry a 413
    with pytest.raises(runtime.exceptions.ClientError) as refused:
        runtime.invoke_endpoint(EndpointName="probe", Body=b"x" * (4 * 2**20 + 1))
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "exceeded 4194304 bytes" in refused.value.response["Error"]["Message"]
