"""What the SageMaker control plane asks of AWS, seen at the emulators: names and tags, the
DeploymentConfig of each rollout strategy, no write for the live digest, autoscaling, the
failure reason, and cleanup. Real boto3 clients against moto's server and the runtime
emulator (tests/emulators/aws.py); the conformance suite covers the contract itself."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conformance.harnesses.sagemaker import BUCKET, sagemaker_yaml
from conftest import PROJECTS

from adapters.base import DeploymentStatus, Provider
from adapters.sagemaker import names
from adapters.sagemaker import provider as provider_module
from adapters.sagemaker.provider import SageMakerProvider
from aiaas.bundle import BuiltBundle, build_bundle
from aiaas.config import load_config
from aiaas.errors import ConfigError, DeployFailed, ProviderError
from emulators.aws import AwsEmulator

MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEmulator]:
    emulator = AwsEmulator(tmp_path_factory.mktemp("aws"))
    emulator.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in emulator.env().items():
                mp.setenv(key, value)
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def fresh(aws: AwsEmulator) -> Iterator[AwsEmulator]:
    """The emulators with nothing in them but the bundle bucket."""
    aws.reset()
    with contextlib.closing(boto3.client("s3")) as s3:
        s3.create_bucket(Bucket=BUCKET)
    yield aws
    aws.reset()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[BuiltBundle]:
    """The probe at three versions."""
    work = tmp_path_factory.mktemp("sagemaker-bundles")
    built = []
    for salt in "123":
        project = work / f"v{salt}"
        shutil.copytree(PROJECTS / "probe", project)
        (project / "aiaas.yaml").write_text(MODEL_YAML)
        model = project / "probe_model.py"
        model.write_text(
            model.read_text().replace('VERSION_SALT = "1"', f'VERSION_SALT = "{salt}"')
        )
        built.append(build_bundle(project, work / f"v{salt}.tar.gz"))
    return built


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    """A probe that answers its load-time warm-up (so it passes SageMaker's ping), then fails
    every prediction: the smoke test included."""
    project = tmp_path_factory.mktemp("sagemaker-failing") / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(MODEL_YAML)
    model = project / "probe_model.py"
    source = model.read_text()
    first = "        if any(item.fail for item in batch):\n"
    assert first in source
    after_warm_up = (
        '        if getattr(self, "warmed_up", False):\n'
        '            raise RuntimeError("probe fails after its warm-up")\n'
        "        self.warmed_up = True\n"
    )
    model.write_text(source.replace(first, after_warm_up + first))
    return build_bundle(project, project.parent / "failing.tar.gz")


def provider(
    tmp_path: Path, extra: str = "", prefix: str = "tests", section: str = ""
) -> SageMakerProvider:
    """A control plane over a project whose aiaas.yaml ends with ``extra``; ``section``:
    lines replacing or added to the ``sagemaker:`` section's (``  instance_type: ...``)."""
    project = tmp_path / f"project-{prefix}"
    project.mkdir(exist_ok=True)
    lines = sagemaker_yaml(prefix)
    for line in section.splitlines(keepends=True):
        key = line.split(":", 1)[0] + ":"
        kept = [x for x in lines.splitlines(keepends=True) if not x.startswith(key)]
        lines = "".join(kept) + line
    (project / "aiaas.yaml").write_text(
        MODEL_YAML
        + "provider: sagemaker\n"
        + lines
        + "  tags:\n    team: search\n"
        + "server:\n  max_queue_size: 4\n"
        + extra
    )
    return SageMakerProvider.from_config(load_config(project))


def calls(aws: AwsEmulator, action: str) -> list[dict[str, Any]]:
    """The parameters of every ``action`` call the emulators received."""
    return [c.params for c in aws.calls if c.action == action]


def models_and_configs() -> tuple[set[str], set[str]]:
    """The names of every SageMaker model and endpoint config in the emulated account."""
    with contextlib.closing(boto3.client("sagemaker")) as client:
        models = {m["ModelName"] for m in client.list_models()["Models"]}
        configs = {
            c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]
        }
    return models, configs


def assert_nothing_left() -> None:
    """No endpoint, model or endpoint config is left in the emulated account."""
    with contextlib.closing(boto3.client("sagemaker")) as client:
        assert client.list_endpoints()["Endpoints"] == []
    assert models_and_configs() == (set(), set())


def wait_until_ready(sm: Provider, name: str = "probe") -> None:
    """Poll describe until the emulated endpoint has settled back to ready."""
    deadline = time.monotonic() + 60
    while sm.describe(name).status is not DeploymentStatus.READY:
        assert time.monotonic() < deadline, "the emulated update never settled"
        time.sleep(0.1)


SCALING = "deploy:\n  scaling:\n    min_instances: 1\n    max_instances: {max}\n"


def scaling_now() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every scalable target and scaling policy of the emulated account (times left out)."""
    with contextlib.closing(boto3.client("application-autoscaling")) as scaling:
        targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")
        policies = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")
    drop = {"CreationTime", "ResponseMetadata", "Alarms", "PolicyARN", "ScalableTargetARN"}
    return (
        [{k: v for k, v in t.items() if k not in drop} for t in targets["ScalableTargets"]],
        [{k: v for k, v in p.items() if k not in drop} for p in policies["ScalingPolicies"]],
    )


def tags_of(arn: str) -> dict[str, str]:
    with contextlib.closing(boto3.client("sagemaker")) as sm:
        return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


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
    with provider(tmp_path, extra) as sm:
        first = sm.deploy(bundles[0].path)
        second = sm.deploy(bundles[1].path)
    [update] = calls(fresh, "UpdateEndpoint")
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == routing
    alarms = update["DeploymentConfig"].get("AutoRollbackConfiguration")
    assert alarms == ({"Alarms": [{"AlarmName": "p-5xx"}]} if "alarms" in rollout else None)
    assert update["EndpointConfigName"] == second.details["endpoint_config"]
    assert second.version == bundles[1].manifest.version
    assert second.details["instance_count"] == 2  # deploy.instance_count
    # the old version's model and config are gone once the update succeeded
    deleted = {c["EndpointConfigName"] for c in calls(fresh, "DeleteEndpointConfig")}
    assert deleted == {first.details["endpoint_config"]}
    assert {c["ModelName"] for c in calls(fresh, "DeleteModel")} == {first.details["model"]}


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


def test_a_failed_update_surfaces_the_reason_and_the_old_version_serves(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    with provider(tmp_path) as sm:
        live = sm.deploy(bundles[0].path)
        fresh.fail_next_start("probe", "Insufficient capacity for ml.m5.xlarge (simulated)")
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(bundles[1].path)
        assert "Insufficient capacity for ml.m5.xlarge (simulated)" in failed.value.message
        now = sm.describe("probe")
        assert (now.version, now.details["endpoint_config"]) == (
            live.version,
            live.details["endpoint_config"],
        )
        assert isinstance(sm, SageMakerProvider)
        answer = sm.invoker.invoke_sync("probe", b'{"inputs": [{"value": 2}]}')
        assert answer.version == live.version
        # the failed version's model and config were removed; the live ones stay
        left = {c.model_name for c in fresh.containers()}
        assert left == {live.details["model"]}
        configs = {c["EndpointConfigName"] for c in calls(fresh, "DeleteEndpointConfig")}
        assert live.details["endpoint_config"] not in configs and len(configs) == 1


def test_a_version_failing_its_smoke_test_is_rolled_back_and_removed(
    fresh: AwsEmulator,
    bundles: list[BuiltBundle],
    failing: BuiltBundle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It passes SageMaker's ping, so the update completes and it takes the traffic; its
    smoke test fails, so the endpoint goes back to the old config, as if never switched: its
    instance type, and the autoscaling the type change had taken off, exactly as it was."""
    with provider(tmp_path, SCALING.format(max=2)) as sm:
        live = sm.deploy(bundles[0].path)
    before = scaling_now()
    assert [t["MaxCapacity"] for t in before[0]] == [2] and len(before[1]) == 1
    monkeypatch.setenv("AIAAS_SAGEMAKER__INSTANCE_TYPE", "ml.m5.2xlarge")
    with provider(tmp_path, SCALING.format(max=5)) as sm:
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(failing.path)
        message = failed.value.message
        assert "smoke test failed" in message and "probe fails after its warm-up" in message
        assert message.endswith(f"rolled back: {live.version} serves")  # nothing else failed
        updates = [c["EndpointConfigName"] for c in calls(fresh, "UpdateEndpoint")]
        assert len(updates) == 2 and updates[1] == live.details["endpoint_config"]
        now = sm.describe("probe")
        assert (now.version, now.details) == (live.version, live.details)
        assert isinstance(sm, SageMakerProvider)
        answer = sm.invoker.invoke_sync("probe", b'{"inputs": [{"value": 2}]}')
        assert answer.version == live.version
    assert {c.model_name for c in fresh.containers()} == {live.details["model"]}
    assert models_and_configs() == ({live.details["model"]}, {live.details["endpoint_config"]})
    assert len(calls(fresh, "DeregisterScalableTarget")) == 1  # for the instance type change
    assert scaling_now() == before  # max 2, as it was: not the failed deploy's 5


def test_a_failed_update_leaves_autoscaling_as_it_was(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    with provider(tmp_path, SCALING.format(max=2)) as sm:
        sm.deploy(bundles[0].path)
    before = scaling_now()
    assert [t["MaxCapacity"] for t in before[0]] == [2] and len(before[1]) == 1
    with provider(tmp_path, SCALING.format(max=5)) as sm:
        fresh.fail_next_start("probe", "Insufficient capacity (simulated)")
        with pytest.raises(DeployFailed):
            sm.deploy(bundles[1].path)
    assert scaling_now() == before
    with provider(tmp_path) as sm:  # deploy.scaling removed, and a failed deploy again
        fresh.fail_next_start("probe", "Insufficient capacity (simulated)")
        with pytest.raises(DeployFailed):
            sm.deploy(bundles[1].path)
    assert scaling_now() == before


def test_a_rollback_that_fails_says_so_and_removes_nothing_serving(
    fresh: AwsEmulator, bundles: list[BuiltBundle], failing: BuiltBundle, tmp_path: Path
) -> None:
    with provider(tmp_path) as sm:
        live = sm.deploy(bundles[0].path)
        fresh.refuse_next(
            "sagemaker",
            "UpdateEndpoint",
            "ResourceLimitExceeded",
            QUOTA,
            matching={"EndpointConfigName": live.details["endpoint_config"]},  # the way back
        )
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(failing.path)
        message = failed.value.message
        assert "smoke test failed" in message and "probe fails after its warm-up" in message
        assert "rolling back to" in message and QUOTA in message
        assert failing.manifest.version in message
        now = sm.describe("probe")
        assert now.version == failing.manifest.version  # what serves, told as it is
        models, configs = models_and_configs()
        assert {now.details["model"], live.details["model"]} <= models  # nothing removed
        assert {now.details["endpoint_config"], live.details["endpoint_config"]} <= configs


def test_a_first_deploy_failing_its_smoke_test_leaves_nothing(
    fresh: AwsEmulator, failing: BuiltBundle, tmp_path: Path
) -> None:
    extra = "deploy:\n  scaling:\n    min_instances: 1\n    max_instances: 2\n"
    with provider(tmp_path, extra) as sm:
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(failing.path)
        assert "smoke test failed" in failed.value.message
        assert "rolled back" not in failed.value.message
        assert sm.list() == []
    assert_nothing_left()
    assert calls(fresh, "RegisterScalableTarget") == []
    assert fresh.containers() == []


def test_a_failed_update_of_the_instance_type_keeps_autoscaling(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS refuses to change the instance type of a scaled variant, so deploy deregisters the
    target first; when the update then fails, the old version gets its autoscaling back."""
    extra = "deploy:\n  scaling:\n    min_instances: 1\n    max_instances: 3\n"
    with provider(tmp_path, extra) as sm:
        live = sm.deploy(bundles[0].path)
    monkeypatch.setenv("AIAAS_SAGEMAKER__INSTANCE_TYPE", "ml.m5.2xlarge")
    with provider(tmp_path, extra) as sm:
        fresh.fail_next_start("probe", "Insufficient capacity for ml.m5.2xlarge (simulated)")
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(bundles[0].path)
        assert "Insufficient capacity" in failed.value.message
        assert "autoscaling" not in failed.value.message
        now = sm.describe("probe").details
        assert (now["model"], now["instance_type"]) == (live.details["model"], "ml.m5.xlarge")
    assert len(calls(fresh, "DeregisterScalableTarget")) == 1
    with contextlib.closing(boto3.client("application-autoscaling")) as scaling:
        [target] = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
            "ScalableTargets"
        ]
        [policy] = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
            "ScalingPolicies"
        ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
    assert policy["ResourceId"] == "endpoint/probe/variant/AllTraffic"


def test_a_deploy_that_times_out_removes_nothing_the_endpoint_moves_to(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past deploy_timeout_s the update goes on in AWS: its model and config must stay. The
    next deploy, once it settled, removes what is no longer used."""
    with provider(tmp_path) as sm:
        old = sm.deploy(bundles[0].path)
    with monkeypatch.context() as env:
        env.setenv("AIAAS_SAGEMAKER__DEPLOY_TIMEOUT_S", "0.2")
        hasty = provider(tmp_path)
    with hasty as sm:
        with pytest.raises(DeployFailed) as late:
            sm.deploy(bundles[1].path)
        assert "still Updating" in late.value.message
        assert calls(fresh, "DeleteModel") == calls(fresh, "DeleteEndpointConfig") == []
    with provider(tmp_path) as sm:
        wait_until_ready(sm)
        assert sm.describe("probe").version == bundles[1].manifest.version
        new = sm.deploy(bundles[1].path)  # live already: it only removes the old version
        assert [c["ModelName"] for c in calls(fresh, "DeleteModel")] == [old.details["model"]]
        assert new.details["model"] != old.details["model"]


def test_a_failed_first_deploy_surfaces_the_reason_and_leaves_nothing(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    fresh.fail_next_start("probe", "The primary container did not pass the ping (simulated)")
    with provider(tmp_path) as sm:
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(bundles[0].path)
        assert "did not pass the ping (simulated)" in failed.value.message
        assert sm.list() == []
        assert sm.delete("probe") is False  # nothing was left to remove
    assert_nothing_left()


def test_a_gpu_endpoint_gets_a_driver_for_its_cuda_and_fails_loudly_without_one(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """A GPU instance type: the variant names an inference AMI whose driver runs the image's
    CUDA 12.8 and GPU-sized startup windows, and the container is told a GPU is expected.
    Where the container cannot use it (an AMI with an older driver: emulated), it does not
    serve on the CPU: the deploy fails, and the endpoint's log says why."""
    fresh.gpu_unusable = True
    section = "  instance_type: ml.g4dn.xlarge\n"
    with provider(tmp_path, section=section) as sm, pytest.raises(DeployFailed) as failed:
        sm.deploy(bundles[0].path)
    assert "did not pass the ping health check" in failed.value.message
    [config] = calls(fresh, "CreateEndpointConfig")
    variant = config["ProductionVariants"][0]
    assert variant["InferenceAmiVersion"] == "al2023-ami-sagemaker-inference-gpu-4-1"
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 900
    [model] = calls(fresh, "CreateModel")
    assert model["PrimaryContainer"]["Environment"]["AIAAS_DEVICE"] == "cuda"
    with contextlib.closing(boto3.client("logs")) as logs:
        events = logs.filter_log_events(logGroupName="/aws/sagemaker/Endpoints/probe")
    said = "\n".join(e["message"] for e in events["events"])
    assert "device 'cuda' was asked for" in said and "sees no CUDA GPU" in said, said
    assert_nothing_left()


def test_an_endpoint_aws_moved_to_another_state_is_updated_or_refused_as_it_needs(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """OutOfService takes no requests and no update: refused, saying what to do.
    UpdateRollbackFailed still serves (a mix of configs): updated, never deleted."""
    with provider(tmp_path) as sm:
        live = sm.deploy(bundles[0].path)
        fresh.set_status("probe", "OutOfService")
        with pytest.raises(DeployFailed) as refused:
            sm.deploy(bundles[1].path)
        assert "OutOfService" in refused.value.message
        assert "aiaas delete probe" in refused.value.message
        fresh.set_status("probe", "UpdateRollbackFailed", "rollback failed (simulated)")
        assert sm.describe("probe").status is DeploymentStatus.READY  # it serves
        plan = sm.plan(bundles[0].path)  # even to the config it names: one config again
        assert ("update", "endpoint") in {(c.action, c.kind) for c in plan.changes}
        deployed = sm.deploy(bundles[1].path)
    assert calls(fresh, "DeleteEndpoint") == []
    [update] = calls(fresh, "UpdateEndpoint")
    assert update["EndpointConfigName"] == deployed.details["endpoint_config"]
    assert (deployed.version, deployed.status) == (
        bundles[1].manifest.version,
        DeploymentStatus.READY,
    )
    assert live.details["endpoint_config"] != deployed.details["endpoint_config"]


def test_an_image_or_bucket_outside_the_endpoints_region_is_refused_before_any_write(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """SageMaker pulls the image and reads the model data only in its own region, and a
    bucket that does not exist is found at plan time: each named by its key, nothing
    written."""
    with contextlib.closing(boto3.client("s3", region_name="us-west-2")) as s3:
        s3.create_bucket(
            Bucket="models-west", CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
        )
    writes = fresh.writes()
    elsewhere = "  image_uri: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/aiaas-server:1\n"
    for section, key, said in [
        (elsewhere, "sagemaker.image_uri", "ECR's eu-west-1, the endpoint in us-east-1"),
        ("  bucket: models-west\n", "sagemaker.bucket", "is in us-west-2"),
        ("  bucket: no-such-models\n", "sagemaker.bucket", "no such S3 bucket"),
    ]:
        with provider(tmp_path, section=section) as sm, pytest.raises(ConfigError) as refused:
            sm.deploy(bundles[0].path)
        assert refused.value.message.startswith(key) and said in refused.value.message
    assert fresh.writes() == writes


def test_a_model_and_config_not_visible_yet_are_waited_for(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """AWS: a call naming a model or config just created can fail with a validation error
    until it is visible; retry (CreateEndpoint's reference). Scripted here as AWS answers."""
    unseen_model = 'Could not find model "arn:aws:sagemaker:us-east-1:123456789012:model/x".'
    unseen_config = 'Could not find endpoint configuration "arn:...:endpoint-config/x".'
    fresh.refuse_next("sagemaker", "CreateEndpointConfig", "ValidationException", unseen_model)
    for _ in range(2):
        fresh.refuse_next("sagemaker", "CreateEndpoint", "ValidationException", unseen_config)
    with provider(tmp_path) as sm:
        deployed = sm.deploy(bundles[0].path)
    assert deployed.status is DeploymentStatus.READY
    assert len(calls(fresh, "CreateEndpointConfig")) == 2
    assert len(calls(fresh, "CreateEndpoint")) == 3


QUOTA = (
    "The account-level service limit 'ml.m5.xlarge for endpoint usage' is 1 Instances, with "
    "current utilization of 1 Instances and a request delta of 1 Instances. (simulated)"
)


ALARMS = "The alarm(s) [probe-5xx] named in AutoRollbackConfiguration do not exist. (simulated)"


@pytest.mark.parametrize(
    ("code", "message"),
    [("ResourceLimitExceeded", QUOTA), ("ValidationException", ALARMS)],
    ids=["quota", "bad-alarm"],
)
def test_a_refused_update_call_keeps_the_old_version_and_removes_the_new_one(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path, code: str, message: str
) -> None:
    """UpdateEndpoint refused outright: no Failed endpoint to read a reason from, so the
    reason is AWS's answer to the call (the error texts are assumed, marked simulated)."""
    with provider(tmp_path) as sm:
        live = sm.deploy(bundles[0].path)
        fresh.refuse_next("sagemaker", "UpdateEndpoint", code, message)
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(bundles[1].path)
        assert code in failed.value.message and message in failed.value.message
        assert sm.describe("probe").details == live.details
        assert isinstance(sm, SageMakerProvider)
        answer = sm.invoker.invoke_sync("probe", b'{"inputs": [{"value": 2}]}')
        assert answer.version == live.version
        assert models_and_configs() == ({live.details["model"]}, {live.details["endpoint_config"]})
        assert sm.deploy(bundles[1].path).version == bundles[1].manifest.version  # quota freed


def test_an_update_taken_though_its_answer_failed_keeps_what_it_moves_to(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """UpdateEndpoint carried out, its answer a 500: botocore tries again, AWS says the
    endpoint is busy. The endpoint moves to the new config: removing it would break that."""
    with provider(tmp_path) as sm:
        sm.deploy(bundles[0].path)
        fresh.refuse_next(
            "sagemaker", "UpdateEndpoint", "InternalFailure", "(simulated)", status=500, taken=True
        )
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(bundles[1].path)
        assert "nothing removed, deploy again once it settles" in failed.value.message
        assert calls(fresh, "DeleteModel") == calls(fresh, "DeleteEndpointConfig") == []
        wait_until_ready(sm)
        assert sm.describe("probe").version == bundles[1].manifest.version
        assert isinstance(sm, SageMakerProvider)
        answer = sm.invoker.invoke_sync("probe", b'{"inputs": [{"value": 2}]}')
        assert answer.version == bundles[1].manifest.version


def test_a_refused_create_call_leaves_nothing(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    fresh.refuse_next("sagemaker", "CreateEndpoint", "ResourceLimitExceeded", QUOTA)
    with provider(tmp_path) as sm:
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(bundles[0].path)
        assert QUOTA in failed.value.message
        assert sm.list() == []
    assert_nothing_left()
    assert fresh.containers() == []


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


class _AnswersBody(http.server.BaseHTTPRequestHandler):
    """A stand-in runtime that answers any request with 200 and the text ``body`` (as a
    stock moto_server's runtime does)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"body")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_smoke_answer_that_is_only_a_200_fails_the_deploy_and_rolls_back(
    fresh: AwsEmulator,
    bundles: list[BuiltBundle],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tried against a runtime that answers ``200 body``, deploy reported success (and
    ``aiaas invoke`` printed ``body``): the smoke test now checks what it got."""
    with provider(tmp_path) as sm:
        live = sm.deploy(bundles[0].path)
    stand_in = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnswersBody)
    thread = threading.Thread(target=stand_in.serve_forever, daemon=True)
    thread.start()
    try:
        port = stand_in.server_address[1]
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{port}")
        with provider(tmp_path) as sm:
            with pytest.raises(DeployFailed) as failed:
                sm.deploy(bundles[1].path)
            assert sm.describe("probe").details == live.details
    finally:
        stand_in.shutdown()
        stand_in.server_close()
        thread.join()
    message = failed.value.message
    assert "smoke test failed: the answer is not JSON: 'body'" in message
    assert message.endswith(f"; rolled back: {live.version} serves")
    assert models_and_configs() == ({live.details["model"]}, {live.details["endpoint_config"]})


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


def test_eventual_consistency_a_missing_key_as_403_and_the_instance_quota_as_aws_has_them(
    fresh: AwsEmulator, bundles: list[BuiltBundle], tmp_path: Path
) -> None:
    """The emulator's own AWS rules, not scripted answers (issue 16, item 35): each new
    model and config invisible to the next two calls naming it, a missing key's HeadObject
    a 403 (the provider asks ListObjectsV2), and a quota of one ml.m5.xlarge: the first
    deploy fits, the blue/green update (old and new fleet) does not, and the old serves."""
    fresh.eventual_consistency = 2
    fresh.head_missing_is_403 = True
    fresh.quota = {"ml.m5.xlarge": 1}
    with provider(tmp_path) as sm:
        live = sm.deploy(bundles[0].path)
        assert live.status is DeploymentStatus.READY
        assert len(calls(fresh, "CreateEndpointConfig")) == 3  # two "Could not find model"
        assert len(calls(fresh, "CreateEndpoint")) == 3  # two "Could not find endpoint config"
        with pytest.raises(DeployFailed) as failed:
            sm.deploy(bundles[1].path)
        message = failed.value.message
        assert (
            "AWS said ResourceLimitExceeded: The account-level service limit 'ml.m5.xlarge "
            "for endpoint usage' is 1 Instances, with current utilization of 1 Instances and "
            "a request delta of 1 Instances." in message
        )
        assert "must cover twice the instance count" in message
        assert sm.describe("probe").details == live.details
        assert isinstance(sm, SageMakerProvider)
        answer = sm.invoker.invoke_sync("probe", b'{"inputs": [{"value": 2}]}')
        assert answer.version == live.version
    assert models_and_configs() == ({live.details["model"]}, {live.details["endpoint_config"]})
    assert fresh.violations.all() == []
    assert "HeadObject" not in [c.action for c in fresh.calls]


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
