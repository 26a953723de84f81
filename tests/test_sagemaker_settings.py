"""The ``sagemaker:`` section, the neutral ``deploy:`` keys SageMaker refuses, and what the
neutral rollout and scaling settings compile to (no AWS call: config and pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.sagemaker import SageMakerSection, names
from adapters.sagemaker.instance_types import INSTANCE_TYPES, check_instance_type, is_gpu
from adapters.sagemaker.rollout import deployment_config, scaling_policy, scaling_target
from aiaas.config import ProjectConfig, RolloutSection, ScalingSection, load_config
from aiaas.errors import ConfigError
from aiaas.plugins import provider_spec

BASE = """model:
  entrypoint: m:M
provider: sagemaker
sagemaker:
  role_arn: arn:aws:iam::123456789012:role/aiaas
  bucket: my-models
  image_uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/aiaas-server:1.0
"""


def load(tmp_path: Path, extra: str = "", env: dict[str, str] | None = None) -> ProjectConfig:
    (tmp_path / "aiaas.yaml").write_text(BASE + extra)
    return load_config(tmp_path, env=env or {})


def refused(tmp_path: Path, extra: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, extra, env)
    return error.value.message


def test_a_minimal_section_loads_with_a_gpu_default(tmp_path: Path) -> None:
    settings = load(tmp_path).provider_settings("sagemaker", SageMakerSection)
    assert settings.instance == "ml.g4dn.xlarge" and is_gpu(settings.instance)
    assert (settings.prefix, settings.serverless, settings.tags) == ("aiaas", None, {})


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    (tmp_path / "aiaas.yaml").write_text("model:\n  entrypoint: m:M\nprovider: sagemaker\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path, env={})
    for key in ("sagemaker.role_arn", "sagemaker.bucket", "sagemaker.image_uri"):
        assert key in error.value.message


def test_an_instance_type_typo_gets_a_did_you_mean(tmp_path: Path) -> None:
    message = refused(tmp_path, "  instance_type: ml.g4dn.xlarg\n")
    assert "sagemaker.instance_type" in message and "did you mean ml.g4dn.xlarge" in message
    assert check_instance_type("ml.zz9.huge") is not None
    assert "ml.g5.xlarge" in INSTANCE_TYPES and check_instance_type("ml.g5.xlarge") is None


def test_instance_types_the_one_image_cannot_run_are_refused(tmp_path: Path) -> None:
    assert "Arm" in refused(tmp_path, "  instance_type: ml.c7g.xlarge\n")
    assert "Inferentia" in refused(tmp_path, "  instance_type: ml.inf2.xlarge\n")


def test_k80_instances_outside_cuda_12_are_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "  instance_type: ml.p2.xlarge\n")
    assert "sagemaker.instance_type" in message and "K80" in message and "CUDA 12" in message


def test_a_gpu_type_gets_an_ami_for_the_images_cuda_and_gpu_sized_start_windows(
    tmp_path: Path,
) -> None:
    gpu = load(tmp_path).provider_settings("sagemaker", SageMakerSection)  # ml.g4dn.xlarge
    assert gpu.variant_settings() == {
        "InferenceAmiVersion": "al2023-ami-sagemaker-inference-gpu-4-1",  # driver 580
        "ContainerStartupHealthCheckTimeoutInSeconds": 900,
        "ModelDataDownloadTimeoutInSeconds": 900,
    }
    chosen = load(
        tmp_path,
        "  inference_ami_version: al2-ami-sagemaker-inference-gpu-3-1\n"
        "  startup_timeout_s: 1200\n  model_download_timeout_s: 60\n",
    ).provider_settings("sagemaker", SageMakerSection)
    assert chosen.variant_settings() == {
        "InferenceAmiVersion": "al2-ami-sagemaker-inference-gpu-3-1",
        "ContainerStartupHealthCheckTimeoutInSeconds": 1200,
        "ModelDataDownloadTimeoutInSeconds": 60,
    }
    cpu = load(tmp_path, "  instance_type: ml.m5.xlarge\n")
    assert cpu.provider_settings("sagemaker", SageMakerSection).variant_settings() == {}
    serverless = load(tmp_path, "  serverless:\n    memory_mb: 2048\n")
    assert serverless.provider_settings("sagemaker", SageMakerSection).variant_settings() == {}


def test_ami_and_start_windows_are_checked(tmp_path: Path) -> None:
    message = refused(tmp_path, "  inference_ami_version: al2-ami-latest\n")
    assert "sagemaker.inference_ami_version" in message
    assert "al2023-ami-sagemaker-inference-gpu-4-1 (driver 580" in message
    message = refused(
        tmp_path,
        "  instance_type: ml.m5.xlarge\n"
        "  inference_ami_version: al2023-ami-sagemaker-inference-gpu-4-1\n",
    )
    assert "inference_ami_version" in message and "no NVIDIA GPU" in message
    assert "sagemaker.startup_timeout_s" in refused(tmp_path, "  startup_timeout_s: 30\n")
    message = refused(tmp_path, "  model_download_timeout_s: 4000\n")
    assert "sagemaker.model_download_timeout_s" in message
    message = refused(tmp_path, "  serverless:\n    memory_mb: 2048\n  startup_timeout_s: 600\n")
    assert "startup_timeout_s" in message and "serverless" in message


@pytest.mark.parametrize("strategy", ["canary", "linear"])
def test_canary_and_linear_need_two_instances(tmp_path: Path, strategy: str) -> None:
    """CanarySize is at most 50 % and LinearStepSize 10-50 % of the variant's instances:
    one instance has no such share (botocore's TrafficRoutingConfig)."""
    rollout = f"  rollout:\n    strategy: {strategy}\n    step_percent: 50\n"
    message = refused(tmp_path, "deploy:\n" + rollout)
    assert "deploy.instance_count" in message and "2 or more" in message
    assert load(tmp_path, "deploy:\n  instance_count: 2\n" + rollout)
    scaled = "deploy:\n  scaling:\n    min_instances: 2\n    max_instances: 4\n" + rollout
    assert load(tmp_path, scaled)  # the fleet starts at 2 within the bounds


def test_serverless_with_a_gpu_instance_type_is_refused(tmp_path: Path) -> None:
    message = refused(
        tmp_path, "  instance_type: ml.g5.xlarge\n  serverless:\n    memory_mb: 2048\n"
    )
    assert "sagemaker" in message and "GPU" in message and "serverless" in message


def test_serverless_memory_and_concurrency_are_checked(tmp_path: Path) -> None:
    message = refused(tmp_path, "  serverless:\n    memory_mb: 1500\n")
    assert "sagemaker.serverless.memory_mb" in message and "1024, 2048" in message
    message = refused(tmp_path, "  serverless:\n    max_concurrency: 500\n")
    assert "sagemaker.serverless.max_concurrency" in message
    message = refused(
        tmp_path, "  serverless:\n    max_concurrency: 2\n    provisioned_concurrency: 5\n"
    )
    assert "provisioned_concurrency" in message


def test_serverless_refuses_instances_scaling_and_guardrails(tmp_path: Path) -> None:
    serverless = "  serverless:\n    memory_mb: 2048\n"
    message = refused(tmp_path, serverless + "deploy:\n  rollout:\n    strategy: canary\n")
    assert "deploy.rollout.strategy" in message and "serverless" in message
    message = refused(tmp_path, serverless + "deploy:\n  instance_count: 2\n")
    assert "deploy.instance_count" in message
    message = refused(tmp_path, serverless + "deploy:\n  scaling:\n    max_instances: 3\n")
    assert "deploy.scaling" in message


def test_rollout_limits_are_sagemakers(tmp_path: Path) -> None:
    message = refused(
        tmp_path, "deploy:\n  rollout:\n    strategy: canary\n    canary_percent: 60\n"
    )
    assert "deploy.rollout.canary_percent" in message and "50%" in message
    message = refused(tmp_path, "deploy:\n  rollout:\n    strategy: linear\n    step_percent: 5\n")
    assert "deploy.rollout.step_percent" in message
    message = refused(tmp_path, "deploy:\n  scaling:\n    min_instances: 0\n")
    assert "deploy.scaling.min_instances" in message
    alarms = "".join(f"      - alarm-{i}\n" for i in range(11))
    message = refused(tmp_path, f"deploy:\n  rollout:\n    rollback_alarms:\n{alarms}")
    assert "deploy.rollout.rollback_alarms" in message and "at most 10" in message


def test_a_rollout_that_outwaits_the_deploy_timeout_is_refused(tmp_path: Path) -> None:
    """Linear 25% steps wait three times (25 -> 50 -> 75 -> 100): 3 x 600 s = 1800 s, the
    default deploy_timeout_s. Every such deploy would time out mid-rollout."""
    linear = (
        "deploy:\n  instance_count: 2\n"
        "  rollout:\n    strategy: linear\n    step_percent: 25\n    wait_s: 600\n"
    )
    message = refused(tmp_path, linear)
    assert "deploy.rollout.wait_s" in message and "1800s" in message
    assert "sagemaker.deploy_timeout_s" in message
    raised = "  deploy_timeout_s: 2400\n" + linear
    assert load(tmp_path, raised).deploy.rollout.wait_s == 600  # room for it: loads
    canary = "deploy:\n  instance_count: 2\n  rollout:\n    strategy: canary\n    wait_s: 1800\n"
    assert "deploy.rollout.wait_s" in refused(tmp_path, canary)
    assert load(tmp_path, "deploy:\n  rollout:\n    wait_s: 3600\n")  # all at once: no wait


def test_reserved_and_malformed_tags_are_refused(tmp_path: Path) -> None:
    assert "reserved" in refused(tmp_path, "  tags:\n    'aiaas:project': x\n")
    assert "sagemaker.tags" in refused(tmp_path, "  tags:\n    'bad#key': x\n")


def test_an_environment_variable_is_named_for_a_bad_value(tmp_path: Path) -> None:
    message = refused(tmp_path, "", env={"AIAAS_SAGEMAKER__REGION": "Mars"})
    assert "AIAAS_SAGEMAKER__REGION" in message and "sagemaker.region" in message


def test_each_rollout_strategy_compiles_to_its_deployment_config() -> None:
    policy = deployment_config(RolloutSection(), max_execution_s=1800)["DeploymentConfig"]
    routing = policy["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
    assert "AutoRollbackConfiguration" not in policy
    canary = deployment_config(
        RolloutSection(strategy="canary", canary_percent=20, wait_s=120, rollback_alarms=["5xx"]),
        max_execution_s=1800,
    )["DeploymentConfig"]
    assert canary["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "WaitIntervalInSeconds": 120,
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20},
    }
    assert canary["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": "5xx"}]}
    linear = deployment_config(
        RolloutSection(strategy="linear", step_percent=25, wait_s=60), max_execution_s=1800
    )
    assert linear["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "LINEAR",
        "WaitIntervalInSeconds": 60,
        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
    }


@pytest.mark.parametrize(("timeout", "sent"), [(1800, 1800), (120, 600), (6 * 3600, 21600)])
def test_aws_gives_up_on_an_update_when_aiaas_does(timeout: float, sent: int) -> None:
    """MaximumExecutionTimeoutInSeconds is deploy_timeout_s within AWS's 600-28800."""
    config = deployment_config(RolloutSection(), max_execution_s=timeout)["DeploymentConfig"]
    assert config["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"] == sent


def test_scaling_compiles_to_a_target_and_a_target_tracking_policy() -> None:
    scaling = ScalingSection(min_instances=1, max_instances=4, target_concurrency=2)
    target = scaling_target("ep", scaling)
    assert target["ResourceId"] == "endpoint/ep/variant/AllTraffic"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    policy = scaling_policy("ep", scaling)["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"] == {  # requests in flight, every 10 s
        "PredefinedMetricType": "SageMakerVariantConcurrentRequestsPerModelHighResolution"
    }
    assert policy["TargetValue"] == 2.0  # target_concurrency itself, whatever the latency


def test_resource_names_fit_sagemakers_limit_and_carry_the_version() -> None:
    version = "0123456789abcdef"
    short = names.resource_name("probe", version, {"a": 1})
    assert short.startswith("probe-0123456789abcdef-") and names.version_of(short) == version
    assert names.resource_name("probe", version, {"a": 2}) != short  # what it holds is named
    long = "a" * 63
    cut = names.resource_name(long, version, {"a": 1})
    assert len(cut) == 63 and names.version_of(cut) == version
    other = names.resource_name("a" * 62 + "b", version, {"a": 1})
    assert other != cut  # two long names with one prefix stay apart
    assert names.version_of("someone-elses-model") is None


def test_a_deployment_name_sagemaker_cannot_take_is_named() -> None:
    """aiaas's names allow a trailing '-'; SageMaker's endpoint names do not."""
    assert names.check_endpoint_name("probe-b2") is None
    assert names.check_endpoint_name("a" * 63) is None
    for bad in ("probe-", "-probe", "Probe", "a" * 64, "a" + "-" * 70 + "b", "pro_be"):
        problem = names.check_endpoint_name(bad)
        assert problem is not None and repr(bad) in problem


def test_a_prefix_that_cannot_be_in_the_project_tag_is_refused(tmp_path: Path) -> None:
    """The prefix is part of the aiaas:project tag's value: characters a tag value refuses
    (or S3 keys treat specially), or a length past its 256, fail at load, not at CreateModel."""
    for prefix in ("models(v1)", "a*b", "it's", "x" * 181):
        message = refused(tmp_path, f'  prefix: "{prefix}"\n')
        assert "sagemaker.prefix" in message, prefix
    settings = load(tmp_path, "  prefix: team-a/models_v1.2\n").provider_settings(
        "sagemaker", SageMakerSection
    )
    assert len(names.project_id(settings.bucket, settings.prefix)) <= 256


def test_price_and_request_limit_follow_the_settings(tmp_path: Path) -> None:
    spec = provider_spec("sagemaker")
    default = load(tmp_path)
    assert spec.hourly_price(default).value == 0.736  # ml.g4dn.xlarge
    assert spec.limits_for(default).max_request_bytes == 6_291_456  # real-time: 6 MB
    cpu = load(tmp_path, "  instance_type: ml.m5.xlarge\n")
    assert spec.hourly_price(cpu).value == 0.23
    assert "ml.m5.xlarge" in spec.hourly_price(cpu).source
    serverless = load(tmp_path, "  serverless:\n    memory_mb: 4096\n")
    price = spec.hourly_price(serverless)
    assert price.value == pytest.approx(0.00002 * 3600 * 4)  # per GB-second of 4 GB
    assert spec.limits_for(serverless).max_request_bytes == 4_194_304  # serverless: 4 MB
    unlisted = spec.hourly_price(load(tmp_path, "  instance_type: ml.c6i.large\n"))
    assert unlisted.value == 0.0 and "pricing.endpoint_hourly_usd" in unlisted.source
