"""The Azure ML control plane (adapters/azureml/provider.py and steps.py) against the emulated
Azure, for what the conformance suite does not see: the smoke test pinned before any traffic,
each traffic step of a linear rollout as the endpoint received it, a failed provisioning that
leaves the traffic on the old deployment (its state, Azure's reason and its logs in the
error), no write at all for the live digest and only what is new for a new one, the plan
naming the calls a deploy would make, key mode through ``listKeys``, and azure-ai-ml's
progress dots kept off stdout. One emulator and four deploys for the module.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure_emulated import emulated_azure
from conformance.harnesses.azureml import azureml_yaml
from conftest import PROJECTS

from adapters.azureml import names
from adapters.azureml.provider import AzureMLProvider
from adapters.base import DeploymentStatus
from aiaas.bundle import BuiltBundle, build_bundle
from aiaas.config import load_config
from aiaas.errors import DeployFailed
from emulators.azure import AzureEmulator

MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
SERVER_YAML = "server:\n  max_queue_size: 4\n  queue_wait_ms: 0\n"
LINEAR = "deploy:\n  rollout:\n    strategy: linear\n    step_percent: 50\n    wait_s: 0\n"


@dataclass(frozen=True)
class Bundles:
    v1: BuiltBundle
    v2: BuiltBundle
    v3: BuiltBundle


def _build(work: Path, salt: str) -> BuiltBundle:
    project = work / f"v{salt}"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(MODEL_YAML)
    model = project / "probe_model.py"
    model.write_text(model.read_text().replace('VERSION_SALT = "1"', f'VERSION_SALT = "{salt}"'))
    return build_bundle(project, work / f"v{salt}.tar.gz")


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureEmulator]:
    """The module's emulated Azure, its variables set."""
    with emulated_azure(tmp_path_factory.mktemp("azure")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    work = tmp_path_factory.mktemp("azureml-bundles")
    return Bundles(_build(work, "1"), _build(work, "2"), _build(work, "3"))


def _project(root: Path, azure: AzureEmulator, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    yaml = MODEL_YAML + "provider: azureml\n" + azureml_yaml(azure, "tests") + SERVER_YAML
    (root / "aiaas.yaml").write_text(yaml + extra)
    return root


@pytest.fixture(scope="module")
def provider(
    azure: AzureEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AzureMLProvider]:
    root = _project(tmp_path_factory.mktemp("azureml-project") / "p", azure, LINEAR)
    made = AzureMLProvider.from_config(load_config(root))
    try:
        yield made
    finally:
        made.close()


def _endpoint_puts(azure: AzureEmulator, endpoint: str, since: int) -> list[dict[str, int]]:
    """The traffic maps of the endpoint's PUTs since call ``since``, in order."""
    return [
        c.body["properties"]["traffic"]
        for c in azure.calls()[since:]
        if c.method == "PUT" and c.path.lower().endswith(f"/onlineendpoints/{endpoint}")
    ]


def test_first_deploy_is_smoke_tested_pinned_before_any_traffic_and_prints_no_dots(
    azure: AzureEmulator,
    provider: AzureMLProvider,
    bundles: Bundles,
    capfd: pytest.CaptureFixture[str],
) -> None:
    endpoint = names.endpoint_name("probe", provider.settings)
    seen_at_smoke: list[dict[str, int]] = []

    def progress(message: str, _fraction: float | None) -> None:
        if message.startswith("smoke test"):
            seen_at_smoke.append(azure.endpoint_traffic(endpoint))

    deployment = provider.deploy(bundles.v1.path, progress=progress)
    assert (deployment.status, deployment.version) == (
        DeploymentStatus.READY,
        bundles.v1.manifest.version,
    )
    dep = deployment.details["deployment"]
    assert seen_at_smoke == [{}]  # the endpoint sent nothing anywhere yet
    pinned = [c for c in azure.scoring_calls() if c.pinned]
    assert [(c.pinned, c.deployment, c.status) for c in pinned] == [(dep, dep, 200)]
    assert azure.endpoint_traffic(endpoint) == {dep: 100}
    assert deployment.endpoint and deployment.endpoint.endswith("/score")
    captured = capfd.readouterr()
    assert "." not in captured.out, captured.out  # azure-ai-ml's poller dots
    assert "AZUREML_CURRENT_CLOUD" not in os.environ
    # the routes and environment the deployment runs with
    environment = next(c for c in azure.calls() if c.method == "PUT" and "/environments/" in c.path)
    routes = environment.body["properties"]["inferenceConfig"]
    assert {k: v["path"] for k, v in routes.items()} == {
        "livenessRoute": "/",
        "readinessRoute": "/ready",
        "scoringRoute": "/score",
    }
    container = next(c for c in azure.containers() if c.deployment == dep)
    assert container.environment["AIAAS_SERVER__MAX_QUEUE_SIZE"] == "4"
    assert "AIAAS_DEVICE" not in container.environment  # a CPU SKU


def test_the_live_digest_writes_nothing_and_plans_nothing(
    azure: AzureEmulator,
    provider: AzureMLProvider,
    bundles: Bundles,
) -> None:
    provider.deploy(bundles.v1.path)  # live (a no-op after the test before)
    before = azure.writes()
    again = provider.deploy(bundles.v1.path)
    assert azure.writes() == before
    assert again.version == bundles.v1.manifest.version
    assert provider.plan(bundles.v1.path).unchanged


def test_the_plan_names_the_calls_a_deploy_would_make(
    azure: AzureEmulator,
    provider: AzureMLProvider,
    bundles: Bundles,
) -> None:
    provider.deploy(bundles.v1.path)  # v1 is live
    before = azure.writes()
    plan = provider.plan(bundles.v3.path)
    assert azure.writes() == before
    endpoint = names.endpoint_name("probe", provider.settings)
    shown = {(c.action, c.kind): c.detail for c in plan.changes}
    assert "PUT the manifest, then the archive" in shown[("create", "blob")]
    assert shown[("create", "model version")].startswith(f"PUT models/{endpoint}:")
    assert shown[("keep", "environment version")] == "registered"  # the one image, once
    assert (
        f"PUT onlineEndpoints/{endpoint}/deployments/v-" in shown[("create", "online deployment")]
    )
    assert "(linear)" in shown[("update", "online endpoint")]
    assert shown[("delete", "online deployment")].startswith(f"DELETE onlineEndpoints/{endpoint}")
    # a settings change of the same digest is a new deployment beside the live one
    other = load_config(provider.config.root)
    changed = other.deploy.model_copy(update={"instance_count": 2})
    with AzureMLProvider.from_config(other.model_copy(update={"deploy": changed})) as bigger:
        replan = bigger.plan(bundles.v1.path)
    kinds = {(c.action, c.kind) for c in replan.changes}
    assert ("create", "online deployment") in kinds and ("keep", "model version") in kinds
    assert azure.writes() == before


def test_a_linear_rollout_steps_the_traffic_after_a_pinned_smoke_test(
    azure: AzureEmulator,
    provider: AzureMLProvider,
    bundles: Bundles,
) -> None:
    provider.deploy(bundles.v1.path)  # v1 is live
    endpoint = names.endpoint_name("probe", provider.settings)
    old = provider.describe("probe").details["deployment"]
    since, scored, wrote = len(azure.calls()), len(azure.scoring_calls()), len(azure.writes())
    deployment = provider.deploy(bundles.v2.path)
    new = deployment.details["deployment"]
    assert _endpoint_puts(azure, endpoint, since) == [
        {new: 50, old: 50},
        {new: 100},  # the SDK leaves zero shares out of the map
    ]
    first_pinned = next(c for c in azure.scoring_calls()[scored:] if c.pinned == new)
    assert first_pinned.deployment == new and first_pinned.status == 200
    writes = [w.split(f"/workspaces/{azure.workspace}/")[1] for w in azure.writes()[wrote:]]
    assert not any(w.startswith("environments/") for w in writes)  # registered once
    assert writes[-1] == f"onlineEndpoints/{endpoint}/deployments/{old}"  # removed last
    assert azure.endpoint_traffic(endpoint) == {new: 100}
    assert [v.version for v in deployment.versions] == [bundles.v2.manifest.version]


def test_a_failed_provisioning_leaves_the_traffic_on_the_old_deployment(
    azure: AzureEmulator,
    provider: AzureMLProvider,
    bundles: Bundles,
) -> None:
    endpoint = names.endpoint_name("probe", provider.settings)
    live = provider.describe("probe")
    serving = live.details["deployment"]
    since = len(azure.calls())
    azure.fail_next_deployment("The image cannot be pulled: manifest unknown.")
    with pytest.raises(DeployFailed) as failed:
        provider.deploy(bundles.v3.path)
    message = failed.value.message
    assert "is Failed" in message and "The image cannot be pulled" in message, message
    assert _endpoint_puts(azure, endpoint, since) == []  # no traffic ever moved
    assert azure.endpoint_traffic(endpoint) == {serving: 100}
    after = provider.describe("probe")
    assert (after.status, after.version) == (DeploymentStatus.READY, live.version)
    assert list(after.details["deployments"]) == [serving]  # the failed one was deleted


def test_key_mode_smoke_tests_with_the_endpoint_key(
    azure: AzureEmulator,
    bundles: Bundles,
    tmp_path: Path,
) -> None:
    root = _project(tmp_path / "key", azure, "")
    yaml = (root / "aiaas.yaml").read_text()
    (root / "aiaas.yaml").write_text(yaml.replace("azureml:\n", "azureml:\n  auth_mode: key\n"))
    since = len(azure.calls())
    keyed = AzureMLProvider.from_config(load_config(root))
    with keyed:
        try:
            deployment = keyed.deploy(bundles.v1.path, name="probe-key")
            assert deployment.details["auth_mode"] == "key"
            assert deployment.status is DeploymentStatus.READY
            endpoint = names.endpoint_name("probe-key", keyed.settings)
            put = next(
                c
                for c in azure.calls()[since:]
                if c.method == "PUT" and "/onlineEndpoints/" in c.path
            )
            assert json.dumps(put.body).count('"Key"') == 1  # authMode Key
            assert any(c.path.endswith(f"{endpoint}/listKeys") for c in azure.calls()[since:])
            assert keyed.logs("probe-key", tail=3)
        finally:
            assert keyed.delete("probe-key") is True
        assert keyed.delete("probe-key") is False
