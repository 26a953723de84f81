"""The ``azureml:`` section, its SKU table, names, the neutral settings it refuses and the one
Azure error mapping: pure checks, no emulator (milliseconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from pydantic import ValidationError

from adapters.azureml import SPEC, AzureMLSettings, check_deploy, hourly_price, names
from adapters.azureml.errors import azure_error, brief
from adapters.azureml.settings import AzureMLSection, MirrorSection, server_problems
from adapters.azureml.skus import check_instance_type, is_gpu, sku_price
from aiaas.config import DeploySection, RolloutSection, ScalingSection, ServerSection, load_config
from aiaas.errors import (
    AccessDenied,
    ConfigError,
    DeployFailed,
    NotFound,
    ProviderError,
    Throttled,
)

GOOD: dict[str, Any] = {
    "subscription_id": "00000000-0000-4000-8000-000000000017",
    "resource_group": "aiaas-rg",
    "workspace": "aiaas-ws",
    "image": "aiaasregistry.azurecr.io/aiaas-server:1.0",
}


def problems(**changes: Any) -> list[str]:
    """The messages of a section with ``changes``, each prefixed by its key."""
    try:
        AzureMLSection(**{**GOOD, **changes})
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return []


def test_a_minimal_section_takes_the_defaults() -> None:
    section = AzureMLSection(**GOOD)
    assert (section.instance_type, section.auth_mode, section.prefix) == (
        "Standard_NC4as_T4_v3",
        "aad_token",
        "aiaas",
    )
    assert section.gpu and section.request_timeout_ms == 90_000
    light = AzureMLSettings.read(GOOD)
    assert names.project_hash(light) == names.project_hash(section)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"subscription_id": "my-sub"},
            "subscription_id: Value error, 'my-sub' is not a subscription id",
        ),
        ({"workspace": "w"}, "workspace: String should have at least 3 characters"),
        ({"resource_group": "rg."}, "resource_group: String should match pattern"),
        ({"image": "Not An Image"}, "image: Value error, 'Not An Image' is not a container image"),
        ({"instance_type": "Standard_NC4as_T4"}, "did you mean Standard_NC4as_T4_v3 (GPU: 1 T4)"),
        ({"instance_type": "m5.large"}, "is not an Azure ML managed online endpoint SKU (e.g."),
        ({"auth_mode": "aml_token"}, "auth_mode: Input should be 'aad_token' or 'key'"),
        ({"request_timeout_ms": 200_000}, "request_timeout_ms: Value error, 200000 ms: Azure ML's"),
        ({"liveness_probe": {"success_threshold": 2}}, "liveness_probe: Value error, success_thr"),
        ({"readiness_probe": {"period": 0}}, "readiness_probe.period: Input should be greater"),
        ({"blob_container": "Models"}, "blob_container: String should match pattern"),
        ({"tags": {"aiaas:project": "x"}}, "tags: Value error, tag 'aiaas:project': the aiaas:"),
        ({"tags": {"a/b": "x"}}, "tags: Value error, tag 'a/b': keys are 1-512 characters"),
        ({"poll_interval_s": 50, "deploy_timeout_s": 10}, "poll_interval_s (50) is not below"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"mirror": {"percent": 60, "duration_s": 1}}, "mirror.percent: Input should be less"),
        ({"mirror": {"percent": 0, "duration_s": 1}}, "mirror.percent: Input should be greater"),
        ({"mirror": {"percent": 10, "duration_s": 0}}, "mirror.duration_s: Input should be gre"),
        ({"mirror": {"percent": 10}}, "mirror.duration_s: Field required"),
        ({"mirror": {"percent": 10, "duration_s": 1, "to": "x"}}, "mirror.to: Extra inputs"),
    ],
)
def test_each_bad_key_is_named(changes: dict[str, Any], expected: str) -> None:
    found = problems(**changes)
    assert any(expected in p for p in found), found


def test_sku_names_match_without_case_and_keep_azures_spelling() -> None:
    assert (
        AzureMLSection(**GOOD, instance_type="standard_ds3_v2").instance_type == "Standard_DS3_v2"
    )
    assert not AzureMLSection(**GOOD, instance_type="Standard_DS3_v2").gpu
    assert is_gpu("STANDARD_NC24ADS_A100_V4") and not is_gpu("Standard_F8s_v2")
    assert check_instance_type("Standard_NV36ads_A10_v5") is None


def test_sku_prices_are_marked_estimates() -> None:
    price = sku_price("Standard_NC4as_T4_v3")
    assert price.value > 0 and price.unit == "hour"
    assert "Standard_NC4as_T4_v3" in price.source and "estimate" in price.as_of
    assert sku_price("Standard_FX4mds").value == 0  # listed, no price known: says so
    assert "pricing.endpoint_hourly_usd" in sku_price("Standard_FX4mds").source
    assert hourly_price(AzureMLSettings.read(GOOD)) == price
    assert SPEC.price(AzureMLSection(**GOOD, instance_type="Standard_DS3_v2")).value == 0.293


def test_names_are_checked_before_any_call() -> None:
    section = AzureMLSection(**GOOD)
    endpoint = names.endpoint_name("iris", section)
    assert endpoint.startswith("iris-") and len(endpoint) == len("iris-") + 6
    other = AzureMLSection(**{**GOOD, "prefix": "other"})
    assert names.endpoint_name("iris", other) != endpoint  # unique per region, per project
    with pytest.raises(ConfigError, match="at most 25 characters"):
        names.endpoint_name("a" * 26, section)
    with pytest.raises(ConfigError, match="starting with a letter"):
        names.endpoint_name("9lives", section)
    dep = names.deployment_name("0123456789abcdef", "a1b2c3")
    assert dep == "v-0123456789abcdef-a1b2c3" and names.version_of(dep) == "0123456789abcdef"
    assert names.version_of("blue") is None


def test_server_settings_must_leave_azure_to_answer_first() -> None:
    section = AzureMLSection(**GOOD, max_concurrent_requests_per_instance=8)
    assert server_problems(section, ServerSection(), 2) == []
    slow = ServerSection(request_timeout_s=100.0)
    (key, why), *_ = server_problems(section, slow, 1)
    assert key == "azureml.request_timeout_ms" and "server.request_timeout_s (100 s)" in why
    small = ServerSection(max_queue_size=10)
    (key, why), *_ = server_problems(section, small, 3)
    assert key == "azureml.max_concurrent_requests_per_instance"
    assert "2 x 8 = 16 requests in flight per instance (48 for 3)" in why
    assert "lower it to 5" in why


def test_check_deploy_refuses_what_azure_ml_cannot_do_by_name() -> None:
    section = AzureMLSection(**GOOD, deploy_timeout_s=600)
    assert check_deploy(DeploySection(), section) == []
    canary = DeploySection(rollout=RolloutSection(strategy="canary", wait_s=60))
    assert check_deploy(canary, section) == []
    refused = dict(
        check_deploy(
            DeploySection(
                instance_count=51,
                scaling=ScalingSection(min_instances=1, max_instances=3),
                rollout=RolloutSection(strategy="linear", step_percent=10, wait_s=100),
            ),
            section,
        )
    )
    assert "new deployment" in refused["deploy.scaling"]
    assert "at most 50" in refused["deploy.instance_count"]
    assert "holds 900s in all" in refused["deploy.rollout.wait_s"]
    alarms = DeploySection(rollout=RolloutSection(rollback_alarms=["errors"]))
    assert "deploy.rollout.rollback_alarms" in dict(check_deploy(alarms, section))
    # the mirror's hold and the rollout's waits must end before deploy_timeout_s
    mirrored = AzureMLSection(
        **GOOD, deploy_timeout_s=600, mirror=MirrorSection(percent=10, duration_s=300)
    )
    assert check_deploy(DeploySection(), mirrored) == []
    slow_canary = DeploySection(rollout=RolloutSection(strategy="canary", wait_s=300))
    (key, why), *_ = check_deploy(slow_canary, mirrored)
    assert key == "azureml.mirror.duration_s" and "600s in all" in why, why


def test_config_load_names_the_key_and_the_provider(tmp_path: Path) -> None:
    lines = ["model:", "  entrypoint: m:M", "provider: azureml", "azureml:"]
    lines += [f"  {k}: {v}" for k, v in GOOD.items()] + ["  instance_type: Standard_NC4as"]
    lines += ["deploy:", "  scaling:", "    max_instances: 2"]
    (tmp_path / "aiaas.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path)
    assert "azureml.instance_type: 'Standard_NC4as' is not an Azure ML" in error.value.message
    (tmp_path / "aiaas.yaml").write_text("\n".join(lines[:-4] + lines[-3:]) + "\n")
    with pytest.raises(ConfigError, match=r"deploy\.scaling: not supported by provider 'azureml'"):
        load_config(tmp_path)


def _http_error(status: int, message: str, headers: dict[str, str] | None = None) -> Exception:
    class Response:
        def __init__(self) -> None:
            self.status_code = status
            self.headers = headers or {}
            self.reason = "reason"

        def text(self) -> str:
            return ""

    error = HttpResponseError(message=message)
    error.status_code = status
    error.response = Response()  # type: ignore[assignment]
    return error


def test_azure_errors_map_once_to_one_line() -> None:
    missing = azure_error(
        ResourceNotFoundError("(ResourceNotFound) no endpoint x\nCode: x"), "read"
    )
    assert isinstance(missing, NotFound) and "\n" not in missing.message
    denied = azure_error(_http_error(403, "(AuthorizationFailed) no access"), "create endpoint x")
    assert isinstance(denied, AccessDenied) and "AzureML Data Scientist" in denied.message
    token = azure_error(ClientAuthenticationError("no token"), "list endpoints")
    assert isinstance(token, AccessDenied) and "could not get a token" in token.message
    slow = azure_error(_http_error(429, "busy", {"retry-after-ms": "2500"}), "read")
    assert isinstance(slow, Throttled) and slow.retry_after == 2.5
    failed = azure_error(HttpResponseError(message="(DeploymentFailed) container crashed"), "d")
    assert isinstance(failed, DeployFailed) and "container crashed" in failed.message
    unreachable = azure_error(ServiceRequestError("connection refused"), "read endpoint x")
    assert isinstance(unreachable, ProviderError) and "AIAAS_AZURE_ARM_URL" in unreachable.message
    assert brief("(BadArgument) text\nCode: BadArgument\nMessage: text") == "text"


def test_close_passes_over_a_client_that_fails_to_close(tmp_path: Path) -> None:
    """close() runs after a failed deploy too: one client's failing close must neither raise
    (hiding the deploy's error) nor keep the others open."""
    from adapters.azureml.provider import AzureMLProvider

    lines = ["model:", "  entrypoint: m:M", "provider: azureml", "azureml:"]
    lines += [f"  {k}: {v}" for k, v in GOOD.items()] + [
        "  max_concurrent_requests_per_instance: 1"
    ]
    (tmp_path / "aiaas.yaml").write_text("\n".join(lines) + "\n")
    provider = AzureMLProvider.from_config(load_config(tmp_path))
    closed: list[str] = []

    class Client:
        def __init__(self, name: str, fails: bool) -> None:
            self.name, self.fails = name, fails

        def close(self) -> None:
            closed.append(self.name)
            if self.fails:
                raise OSError(f"{self.name} would not close")

    provider._ml = Client("ml", True)
    provider._blob_service = Client("blob", True)
    provider._credential = Client("credential", True)
    provider._invoker = Client("invoker", False)  # type: ignore[assignment]
    provider.close()
    assert closed == ["ml", "blob", "credential", "invoker"]
    assert not provider.clients_open
