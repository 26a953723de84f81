"""The emulated control plane's AWS rules that need no container: every JSON-protocol call
checked against botocore's model (issue 16, item 34), eventual consistency, the instance
quota and S3's 403 for a missing key (item 35). Real boto3 clients; their own parameter
validation is off where a test sends what botocore's client would refuse, so the emulator's
is what answers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from emulators.aws import AwsEmulator, running
from emulators.validation import java_pattern, validator

ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/aiaas:latest"
UNCHECKED = Config(parameter_validation=False, retries={"total_max_attempts": 1})
AT = "failed to satisfy constraint: "


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEmulator]:
    with running(tmp_path_factory.mktemp("aws")) as aws:
        yield aws


@pytest.fixture
def aws(emulator: AwsEmulator) -> AwsEmulator:
    emulator.reset()
    return emulator


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    err = exc.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"], err["Error"]["Message"]


def _variant(**changes: Any) -> dict[str, Any]:
    return {
        "VariantName": "AllTraffic",
        "ModelName": "m",
        "InstanceType": "ml.m5.xlarge",
        "InitialInstanceCount": 1,
        **changes,
    }


def _model(sm: Any, name: str = "m") -> None:
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://models/m/model.tar.gz"},
    )


# -- item 34: botocore's model, in full --------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "member", "rule", "count"),
    [  # 64 characters break the pattern's {0,62} too: AWS names both (as reported)
        ({"VariantName": "V" * 64}, "variantName",
         "Member must have length less than or equal to 63", 2),
        ({"InstanceType": "ml.m5.huge"}, "instanceType",
         "Member must satisfy enum value set: [", 1),
        ({"ModelName": "my_model"}, "modelName",
         "Member must satisfy regular expression pattern: ", 1),
        ({"InitialInstanceCount": 0}, "initialInstanceCount",
         "Member must have value greater than or equal to 1", 1),
    ],
    ids=["max-length", "enum", "pattern", "min-value"],
)  # fmt: skip
def test_a_create_endpoint_config_breaking_the_model_is_refused_naming_the_member(
    aws: AwsEmulator, changes: dict[str, Any], member: str, rule: str, count: int
) -> None:
    sm = aws.client("sagemaker", config=UNCHECKED)
    _model(sm)
    with pytest.raises(ClientError) as exc:
        sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[_variant(**changes)])
    status, code, message = _error(exc)
    assert (status, code) == (400, "ValidationException")
    errors = f"{count} validation error{'s' if count > 1 else ''}"
    assert message.startswith(f"{errors} detected: Value '")
    assert f"' at 'productionVariants.1.member.{member}' {AT}{rule}" in message
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []  # moto never saw it
    [(service, action, said)] = aws.violations.all()
    assert (service, action, said) == ("sagemaker", "CreateEndpointConfig", message)
    assert aws.writes() == ["sagemaker:CreateModel", "sagemaker:CreateEndpointConfig"]


def test_a_list_too_long_and_several_violations_are_named_together(aws: AwsEmulator) -> None:
    sm = aws.client("sagemaker", config=UNCHECKED)
    _model(sm)
    tags = [{"Key": f"k{n}", "Value": "v"} for n in range(51)]
    with pytest.raises(ClientError) as exc:
        sm.create_endpoint_config(
            EndpointConfigName="bad_name", ProductionVariants=[_variant()], Tags=tags
        )
    message = _error(exc)[2]
    assert message.startswith("2 validation errors detected: Value 'bad_name' at ")
    assert f"at 'endpointConfigName' {AT}Member must satisfy regular expression" in message
    assert f"at 'tags' {AT}Member must have length less than or equal to 50" in message

    # Finding 42's UpdateEndpoint: botocore's client let every one of these through.
    alarms = [{"AlarmName": f"a{n}"} for n in range(11)]
    with pytest.raises(ClientError) as exc:
        sm.update_endpoint(
            EndpointName="e" * 80,
            EndpointConfigName="c",
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARYX",
                        "WaitIntervalInSeconds": 5000,
                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 90},
                    }
                },
                "AutoRollbackConfiguration": {"Alarms": alarms},
            },
        )
    status, code, message = _error(exc)
    assert (status, code) == (400, "ValidationException")
    assert message.startswith("5 validation errors detected: ")
    route = "deploymentConfig.blueGreenUpdatePolicy.trafficRoutingConfiguration"
    for said in (
        f"at 'endpointName' {AT}Member must have length less than or equal to 63",
        f"at 'endpointName' {AT}Member must satisfy regular expression pattern: ",
        f"Value 'CANARYX' at '{route}.type' {AT}Member must satisfy enum value set: [",
        f"Value '5000' at '{route}.waitIntervalInSeconds' {AT}Member must have value less "
        "than or equal to 3600",
        f"at 'deploymentConfig.autoRollbackConfiguration.alarms' {AT}Member must have "
        "length less than or equal to 10",
    ):
        assert said in message


def test_the_other_json_services_are_checked_too_and_the_switch_turns_it_off(
    aws: AwsEmulator,
) -> None:
    scaling = aws.client("application-autoscaling", config=UNCHECKED)
    with pytest.raises(ClientError) as exc:
        scaling.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId="endpoint/e/variant/AllTraffic",
            ScalableDimension="sagemaker:variant:Instances",
            MinCapacity=1,
            MaxCapacity=2,
        )
    status, code, message = _error(exc)
    assert (status, code) == (400, "ValidationException")
    assert f"at 'scalableDimension' {AT}Member must satisfy enum value set" in message

    logs = aws.client("logs", config=UNCHECKED)
    with pytest.raises(ClientError) as exc:  # CloudWatch Logs says InvalidParameterException
        logs.create_log_group(logGroupName="image:latest")
    status, code, message = _error(exc)
    assert (status, code) == (400, "InvalidParameterException")
    assert message == (
        "1 validation error detected: Value 'image:latest' at 'logGroupName' failed to "
        r"satisfy constraint: Member must satisfy regular expression pattern: [\.\-_/#A-Za-z0-9]+"
    )

    aws.validate = False  # moto alone accepts what AWS refuses
    logs.create_log_group(logGroupName="image:latest")
    assert [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]] == ["image:latest"]


def test_validation_is_compiled_once_per_operation_and_cheap() -> None:
    checks = validator("sagemaker")
    ok = {"EndpointConfigName": "c", "ProductionVariants": [_variant()]}
    assert checks.problem("CreateEndpointConfig", ok) is None
    compiled = checks._operations["CreateEndpointConfig"]
    started = time.perf_counter()
    for _ in range(200):
        assert checks.problem("CreateEndpointConfig", ok) is None
    assert (time.perf_counter() - started) / 200 < 0.005  # measured ~0.05 ms
    assert checks._operations["CreateEndpointConfig"] is compiled
    assert checks.problem("NoSuchOperation", {}) is None  # not in the model: not judged


def test_every_pattern_of_the_served_models_compiles_and_java_classes_translate() -> None:
    for service in ("sagemaker", "application-autoscaling", "logs"):
        model = validator(service).model
        for name in model.shape_names:
            pattern = model.shape_for(name).metadata.get("pattern")
            if pattern:
                java_pattern(pattern)
    tag = java_pattern(r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$")
    assert tag.fullmatch("aiaas:project team=search é")
    assert not tag.fullmatch("a<b") and not tag.fullmatch("a\tb")
    text = java_pattern(r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\t]*")
    assert text.fullmatch("emoji \U0001f600\t") and not text.fullmatch("\x01")
    assert java_pattern(r"[\w-_]*").fullmatch("a-b_c")
    not_control = java_pattern(r"s3://[a-z0-9.\-]+(/[^\s\p{Cc}\p{Cf}]*)?")
    assert not_control.fullmatch("s3://b/ключ") and not not_control.fullmatch("s3://b/a\x7f")
    assert java_pattern(r"\p{Print}+").fullmatch("x y") and not java_pattern(
        r"\p{Print}+"
    ).fullmatch("x\ny")


# -- item 35: eventual consistency, the quota, S3's 403 ------------------------------------------
def test_a_new_model_and_config_are_invisible_to_the_next_n_calls_naming_them(
    aws: AwsEmulator,
) -> None:
    aws.eventual_consistency = 2
    sm = aws.client("sagemaker", config=UNCHECKED)
    _model(sm)
    unseen_model = 'Could not find model "arn:aws:sagemaker:us-east-1:123456789012:model/m".'
    with pytest.raises(ClientError) as exc:
        sm.describe_model(ModelName="m")
    assert _error(exc) == (400, "ValidationException", unseen_model)
    with pytest.raises(ClientError) as exc:
        sm.create_endpoint_config(EndpointConfigName="C", ProductionVariants=[_variant()])
    assert _error(exc)[2] == unseen_model
    sm.create_endpoint_config(EndpointConfigName="C", ProductionVariants=[_variant()])
    naming_the_config: list[Callable[[], Any]] = [
        lambda: sm.create_endpoint(EndpointName="e", EndpointConfigName="C"),
        lambda: sm.describe_endpoint_config(EndpointConfigName="C"),
    ]
    for call in naming_the_config:
        with pytest.raises(ClientError) as exc:
            call()
        assert _error(exc) == (
            400,
            "ValidationException",
            'Could not find endpoint configuration "arn:aws:sagemaker:us-east-1:123456789012:'
            'endpoint-config/c".',
        )
    assert sm.describe_endpoint_config(EndpointConfigName="C")["EndpointConfigName"] == "C"
    assert sm.list_endpoints()["Endpoints"] == []  # the refused CreateEndpoint created nothing


def test_a_create_over_the_instance_quota_is_refused_with_awss_text(aws: AwsEmulator) -> None:
    aws.quota = {"ml.m5.xlarge": 1}
    sm = aws.client("sagemaker", config=UNCHECKED)
    _model(sm)
    sm.create_endpoint_config(
        EndpointConfigName="two", ProductionVariants=[_variant(InitialInstanceCount=2)]
    )
    with pytest.raises(ClientError) as exc:
        sm.create_endpoint(EndpointName="e", EndpointConfigName="two")
    assert _error(exc) == (
        400,
        "ResourceLimitExceeded",
        "The account-level service limit 'ml.m5.xlarge for endpoint usage' is 1 Instances, "
        "with current utilization of 0 Instances and a request delta of 2 Instances. Please "
        "use AWS Service Quotas to request an increase for this quota.",
    )
    assert sm.list_endpoints()["Endpoints"] == []
    # Another instance type is not limited (no container is started: the create fails).
    sm.create_endpoint_config(
        EndpointConfigName="big", ProductionVariants=[_variant(InstanceType="ml.m5.2xlarge")]
    )
    aws.fail_next_start("e", "scripted")
    sm.create_endpoint(EndpointName="e", EndpointConfigName="big")


def test_a_missing_key_answers_403_for_a_caller_without_list_bucket(aws: AwsEmulator) -> None:
    s3 = aws.client("s3", config=Config(retries={"total_max_attempts": 1}))
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="there", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket="models", Key="missing")
    assert _error(exc)[:2] == (404, "404")  # the switch is off by default
    aws.head_missing_is_403 = True
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket="models", Key="missing")
    assert _error(exc) == (403, "403", "Forbidden")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="models", Key="missing")
    assert _error(exc) == (403, "AccessDenied", "Access Denied")
    assert s3.head_object(Bucket="models", Key="there")["ContentLength"] == 1
    listed = s3.list_objects_v2(Bucket="models", Prefix="missing", MaxKeys=1)
    assert listed["KeyCount"] == 0  # what the provider asks instead


# -- item 35: what takes time on AWS ------------------------------------------------------------
def _status(sm: Any, name: str) -> str:
    try:
        return str(sm.describe_endpoint(EndpointName=name)["EndpointStatus"])
    except ClientError:
        return "gone"


def test_a_deleted_endpoint_is_deleting_for_a_while_and_its_name_is_taken_meanwhile(
    aws: AwsEmulator,
) -> None:
    """DeleteEndpoint under ``deleting_s``: Deleting, then gone. Meanwhile a CreateEndpoint
    of the name fails as for any existing endpoint, an update is refused as in progress,
    and a second delete changes nothing. (The model data is missing: the endpoint fails
    without a container, which is all a delete needs.)"""
    sm = aws.client("sagemaker", config=UNCHECKED)
    _model(sm)
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[_variant()])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    deadline = time.monotonic() + 10
    while _status(sm, "ep") != "Failed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    aws.deleting_s = 0.6
    sm.delete_endpoint(EndpointName="ep")
    assert _status(sm, "ep") == "Deleting"
    with pytest.raises(ClientError) as exc:
        sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    assert _error(exc)[1:] == (
        "ValidationException",
        'Cannot create already existing endpoint "arn:aws:sagemaker:us-east-1:123456789012:'
        'endpoint/ep".',
    )
    with pytest.raises(ClientError) as exc:
        sm.update_endpoint(EndpointName="ep", EndpointConfigName="c")
    assert "Cannot update in-progress endpoint" in _error(exc)[2]
    sm.delete_endpoint(EndpointName="ep")
    seen = set()
    while (now := _status(sm, "ep")) != "gone":
        seen.add(now)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert seen == {"Deleting"}
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")  # the name is free again


def test_describe_endpoint_just_after_an_update_can_still_show_the_old_view(
    aws: AwsEmulator,
) -> None:
    """``stale_describes``: the first DescribeEndpoint after UpdateEndpoint answers as before
    it (InService on the old config, nothing pending); the next one is current. (The
    endpoint is set InService without a container: an update needs no more here.)"""
    sm = aws.client("sagemaker", config=UNCHECKED)
    _model(sm)
    for config in ("old", "new"):
        sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[_variant()])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="old")
    deadline = time.monotonic() + 10
    while _status(sm, "ep") != "Failed":  # no model data: no container to wait for
        assert time.monotonic() < deadline
        time.sleep(0.05)
    aws.set_status("ep", "InService")
    aws.stale_describes = 1
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="new")
    stale = sm.describe_endpoint(EndpointName="ep")
    assert (stale["EndpointStatus"], stale["EndpointConfigName"]) == ("InService", "old")
    assert "PendingDeploymentSummary" not in stale
    current = sm.describe_endpoint(EndpointName="ep")
    assert current["EndpointStatus"] == "Updating"
    assert current["PendingDeploymentSummary"]["EndpointConfigName"] == "new"
