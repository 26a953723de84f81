"""The SageMaker provider's failure paths, seen at the emulators: a failed or refused
update, a smoke test that fails, rollbacks, timeouts, quotas, states AWS moves an endpoint
to, resources not visible yet, and what a first deploy checks before it writes. Real boto3
clients against moto's server and the runtime emulator (emulators/aws.py)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from sagemaker_emulated import (
    SCALING,
    assert_nothing_left,
    calls,
    models_and_configs,
    provider,
    scaling_now,
    wait_until_ready,
)

from adapters.base import DeploymentStatus
from adapters.sagemaker.provider import SageMakerProvider
from aiaas.bundle import BuiltBundle
from aiaas.errors import ConfigError, DeployFailed
from emulators.aws import AwsEmulator


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
