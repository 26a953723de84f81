"""The ``pai:`` section, its instance-type hints and prices, service names, the neutral
settings it refuses or maps, and the endpoints the environment puts in place of the
section's: pure checks, no emulator, no Alibaba Cloud SDK (milliseconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.pai import (
    GROUP_REASON,
    SPEC,
    PaiSettings,
    check_deploy,
    hourly_price,
    limits,
    names,
    qps_threshold,
)
from adapters.pai.instance_types import check_instance_type, find, hint, instance_price
from adapters.pai.provider import PaiProvider, with_environment
from adapters.pai.settings import PaiSection, RpcSection, server_problems
from aiaas.config import (
    DeploySection,
    RolloutSection,
    ScalingSection,
    ServerSection,
    load_config,
)
from aiaas.errors import ConfigError

GOOD: dict[str, Any] = {
    "region": "cn-hangzhou",
    "workspace_id": "123456",
    "oss_bucket": "aiaas-bundles",
    "image": "registry-vpc.cn-hangzhou.aliyuncs.com/ns/aiaas-server:1.0",
}


def problems(**changes: Any) -> list[str]:
    """The messages of a section with ``changes``, each prefixed by its key."""
    try:
        PaiSection(**{**GOOD, **changes})
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return []


def test_a_minimal_section_takes_the_defaults_and_the_light_view_agrees() -> None:
    section = PaiSection(**GOOD)
    assert (section.instance_type, section.protocol, section.prefix) == (
        "ecs.gn6i-c4g1.xlarge",
        "https",
        "aiaas",
    )
    assert section.on_gpu and section.rpc.keepalive_ms == 90_000
    assert section.control_plane_url == "https://pai-eas.cn-hangzhou.aliyuncs.com"
    assert section.oss_url == "https://oss-cn-hangzhou.aliyuncs.com"
    light = PaiSettings.read(section.model_dump())
    assert names.service_name("iris", light) == names.service_name("iris", section)
    assert light.control_plane_url == section.control_plane_url
    assert PaiSettings.read({**GOOD, "cpu": 4, "memory_mb": 8000}).instance_type is None
    emulated = PaiSection(**GOOD, endpoint="127.0.0.1:8123", protocol="http",
                          oss_endpoint="http://127.0.0.1:8124/")  # fmt: skip
    assert emulated.control_plane_url == "http://127.0.0.1:8123"
    assert emulated.oss_url == "http://127.0.0.1:8124"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"region": "Hangzhou"}, "region: String should match pattern"),
        ({"oss_bucket": "Bad_Bucket"}, "oss_bucket: String should match pattern"),
        ({"image": "Registry/Repo:1"}, "image: Value error, 'Registry/Repo:1' is not a container"),
        ({"instance_type": "gn6i-c4g1.xlarge"}, "(did you mean 'ecs.gn6i-c4g1.xlarge'"),
        (
            {"endpoint": "http://127.0.0.1:80"},
            "endpoint: Value error, 'http://127.0.0.1:80': "
            "write host[:port] without a scheme and set pai.protocol",
        ),
        ({"oss_endpoint": "ftp://x"}, "oss_endpoint: Value error, 'ftp://x' is not"),
        ({"protocol": "tcp"}, "protocol: Input should be 'https' or 'http'"),
        ({"cpu": 4}, "memory_mb not set: a cpu/memory_mb spec needs both"),
        ({"cpu": 4, "memory_mb": 8000}, "without resource_group: EAS's public resources"),
        (
            {
                "cpu": 4,
                "memory_mb": 8000,
                "instance_type": "ecs.c7.large",
                "resource_group": "eas-r-1",
            },
            "instance_type and cpu, memory_mb are both set",
        ),
        ({"rpc": {"keepalive_ms": 10}}, "rpc.keepalive_ms: Input should be greater than or"),
        ({"rpc": {"queue": 1}}, "rpc.queue: Extra inputs are not permitted"),
        ({"labels": {"aiaas:project": "x"}}, "the aiaas: prefix is reserved"),
        ({"oss_prefix": "a/../b"}, "oss_prefix: Value error, 'a/../b': an OSS key prefix"),
        ({"poll_interval_s": 60, "deploy_timeout_s": 30}, "poll_interval_s (60) is not below"),
        ({"scaling_latency_s": 0}, "scaling_latency_s: Input should be greater than 0"),
    ],
)
def test_each_bad_key_is_named(changes: dict[str, Any], expected: str) -> None:
    found = problems(**changes)
    assert any(expected in p for p in found), found


def test_a_resource_group_takes_a_cpu_memory_spec() -> None:
    section = PaiSection(**GOOD, cpu=8, memory_mb=30_000, gpu=1, resource_group="eas-r-abc")
    assert section.instance_type is None and section.on_gpu
    price = hourly_price(section)
    assert price.value == 0 and "resource group" in price.source


def test_instance_types_are_hints_with_estimated_prices() -> None:
    # a well-formed type not in the hint list is taken (EAS's own list is read at plan time)
    assert check_instance_type("ecs.gn8is-c8g1.2xlarge") is None
    assert PaiSection(**GOOD, instance_type="ECS.GN7I-C8G1.2XLARGE").instance_type == (
        "ecs.gn7i-c8g1.2xlarge"
    )
    assert hint("ecs.gn7i-c8g1.2xlarg").startswith(" (did you mean 'ecs.gn7i-c8g1.2xlarge'")
    assert hint("Standard_NC4as_T4_v3") == ""
    t4 = find("ecs.gn6i-c4g1.xlarge")
    assert t4 is not None and t4.gpu and t4.gpu_model == "T4"
    price = instance_price("ecs.gn6i-c4g1.xlarge")
    assert price.value > 0 and "estimate" in price.as_of and price.unit == "instance-hour"
    unknown = instance_price("ecs.gn8is-c8g1.2xlarge")
    assert unknown.value == 0 and "pricing.endpoint_hourly_usd" in unknown.source
    assert hourly_price(PaiSettings.read(GOOD)).value == price.value


def test_service_names_are_checked_before_any_call() -> None:
    section = PaiSection(**GOOD)
    name = names.service_name("iris-v2", section)
    assert name.startswith("iris_v2_") and len(name) == len("iris_v2_") + names.HASH_DIGITS
    other = PaiSection(**{**GOOD, "workspace_id": "654321"})
    assert names.service_name("iris-v2", other) != name  # one region, two workspaces
    for bad in ("Iris", "2iris", "a" * 57, "iris.v2"):
        with pytest.raises(ConfigError, match="is not valid: "):
            names.service_name(bad, section)
    with pytest.raises(ConfigError, match="not valid on PAI-EAS"):
        names.check_name("has-dash")
    assert names.project_labels(section, "iris", "sha256-ab") == {
        "aiaas:project": "aiaas",
        "aiaas:deployment": "iris",
        "aiaas:version": "sha256-ab",
    }


def test_server_settings_must_leave_eas_to_answer_first() -> None:
    section = PaiSection(**GOOD)
    assert server_problems(section, ServerSection()) == []
    short = PaiSection(**GOOD, rpc=RpcSection(keepalive_ms=60_000))
    small = ServerSection(max_queue_size=32)
    found = dict(server_problems(short, small))
    assert (
        "not above the model server's server.request_timeout_s (60 s)"
        in found["pai.rpc.keepalive_ms"]
    )
    assert "69 requests through per instance" in found["pai.rpc.max_queue_size"]
    assert "lower it to 27" in found["pai.rpc.max_queue_size"]


def test_check_deploy_refuses_canary_and_linear_by_name_with_the_reason() -> None:
    section = PaiSection(**GOOD)
    assert check_deploy(DeploySection(), section) == []
    for strategy in ("canary", "linear"):
        (key, why), *_ = check_deploy(
            DeploySection(rollout=RolloutSection(strategy=strategy)), section
        )
        assert key == "deploy.rollout.strategy" and why == f"{strategy}: {GROUP_REASON}"
        assert "weight API is not in the 2021-07-01 client" in why
    alarms = DeploySection(rollout=RolloutSection(rollback_alarms=["errors"]))
    assert "deploy.rollout.rollback_alarms" in dict(check_deploy(alarms, section))
    scaled = DeploySection(scaling=ScalingSection(min_instances=0, max_instances=4))
    assert check_deploy(scaled, section) == []  # honoured: an autoscaler


def test_target_concurrency_maps_to_a_qps_threshold_by_the_stated_latency() -> None:
    scaling = ScalingSection(min_instances=1, max_instances=4, target_concurrency=8)
    assert qps_threshold(scaling, PaiSection(**GOOD)) == 8  # 1 s a request
    assert qps_threshold(scaling, PaiSection(**GOOD, scaling_latency_s=0.25)) == 32
    assert qps_threshold(scaling, PaiSection(**GOOD, scaling_latency_s=100)) == 1


def test_the_spec_points_at_the_light_modules() -> None:
    assert SPEC.name == "pai" and SPEC.settings_model() is PaiSection
    assert SPEC.invoker == "adapters.pai.invoke:PaiInvoker"
    assert SPEC.control_plane == "adapters.pai.provider:PaiProvider"
    assert {"AIAAS_PAI_ENDPOINT", "AIAAS_PAI_TOKEN"} <= set(SPEC.invoke_environment)
    assert SPEC.capabilities.scale_to_zero and not SPEC.capabilities.traffic_split
    assert limits(PaiSection(**GOOD)).max_request_bytes is None


def test_the_environment_points_the_control_plane_elsewhere(tmp_path: Path) -> None:
    """``AIAAS_PAI_EAS_URL`` and ``AIAAS_PAI_OSS_URL`` override ``pai.endpoint`` /
    ``pai.protocol`` and ``pai.oss_endpoint`` when the provider is built (no client is made:
    the SDKs load on first use); a malformed one is a ConfigError naming the variable."""
    section = "\n".join(f"  {key}: '{value}'" for key, value in GOOD.items())
    (tmp_path / "aiaas.yaml").write_text(
        "model:\n  entrypoint: m:M\nprovider: pai\npai:\n"
        f"{section}\n  endpoint: pai-eas.cn-shanghai.aliyuncs.com\n"
    )
    config = load_config(tmp_path)
    as_written = PaiProvider.from_config(config, {})
    assert as_written.settings.control_plane_url == "https://pai-eas.cn-shanghai.aliyuncs.com"
    assert as_written.settings.oss_url == "https://oss-cn-hangzhou.aliyuncs.com"
    env = {"AIAAS_PAI_EAS_URL": "http://127.0.0.1:8123/", "AIAAS_PAI_OSS_URL": "http://[::1]:1"}
    with pytest.raises(ConfigError, match=r"^AIAAS_PAI_OSS_URL='http://\[::1\]:1' is not an"):
        PaiProvider.from_config(config, env)  # IPv6 is not taken (nor by pai.oss_endpoint)
    env["AIAAS_PAI_OSS_URL"] = " https://127.0.0.1:8124 "
    moved = PaiProvider.from_config(config, env).settings
    assert (moved.endpoint, moved.protocol) == ("127.0.0.1:8123", "http")
    assert moved.control_plane_url == "http://127.0.0.1:8123"
    assert moved.oss_endpoint == moved.oss_url == "https://127.0.0.1:8124"  # path style
    assert (moved.region, moved.oss_bucket) == (GOOD["region"], GOOD["oss_bucket"])
    only_oss = with_environment(PaiSection(**GOOD), {"AIAAS_PAI_OSS_URL": "http://h:1"})
    assert only_oss.control_plane_url == "https://pai-eas.cn-hangzhou.aliyuncs.com"
    unchanged = PaiSection(**GOOD)
    assert with_environment(unchanged, {"AIAAS_PAI_EAS_URL": " "}) is unchanged  # blank: unset
    with pytest.raises(ConfigError, match=r"^AIAAS_PAI_EAS_URL='127\.0\.0\.1:8123' is not an"):
        PaiProvider.from_config(config, {"AIAAS_PAI_EAS_URL": "127.0.0.1:8123"})
