"""The Azure ML control plane (adapters/azureml/provider.py and steps.py) against the emulated
Azure, for what the conformance suite does not see: the smoke test pinned before any traffic,
each traffic step of a linear rollout as the endpoint received it, the mirror phase before
the first traffic step, a failed provisioning that leaves the traffic on the old deployment
(its state, Azure's reason and its logs in the error), a failed first deploy that removes the
deployment then the endpoint, an ambiguous endpoint create that removes nothing, no write at
all for the live digest and only what is new for a new one, the plan naming the calls a
deploy would make, key mode through ``listKeys``, delete's order, and azure-ai-ml's progress
dots kept off stdout. One emulator for the module; each test deploys what it needs (any
order, any subset).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure_emulated import blob_service, emulated_azure, scoring_client
from conformance.harnesses.azureml import azureml_yaml
from conftest import PROJECTS

from adapters.azureml import names
from adapters.azureml.provider import AzureMLProvider
from adapters.base import DeploymentStatus
from adapters.rollout import StillSettling
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
    v3: BuiltBundle  # only planned, never deployed
    broken: BuiltBundle  # its model fails to load: the container exits


LOAD = 'time.sleep(float(os.environ.get("PROBE_LOAD_DELAY_S", "0")))'
BROKEN_LOAD = (
    'print("\\x1b[31mopening the store with password=hunter22\\x1b[0m", flush=True); '
    'raise RuntimeError("the weights are missing from the bundle")'
)
"""The broken model's load: a line with a terminal escape and a secret, then the failure."""


def _build(work: Path, salt: str, *, broken: bool = False) -> BuiltBundle:
    project = work / f"v{salt}"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(MODEL_YAML)
    model = project / "probe_model.py"
    code = model.read_text().replace('VERSION_SALT = "1"', f'VERSION_SALT = "{salt}"')
    if broken:
        assert LOAD in code
        code = code.replace(LOAD, BROKEN_LOAD)
    model.write_text(code)
    return build_bundle(project, work / f"v{salt}.tar.gz")


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureEmulator]:
    """The module's emulated Azure, its variables set."""
    with emulated_azure(tmp_path_factory.mktemp("azure")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    work = tmp_path_factory.mktemp("azureml-bundles")
    return Bundles(
        _build(work, "1"), _build(work, "2"), _build(work, "3"), _build(work, "4", broken=True)
    )


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
    return [m for m, _ in _endpoint_maps(azure, endpoint, since)]


def _endpoint_maps(
    azure: AzureEmulator, endpoint: str, since: int
) -> list[tuple[dict[str, int], dict[str, int]]]:
    """The (traffic, mirror traffic) maps of the endpoint's PUTs since call ``since``."""
    return [
        (c.body["properties"].get("traffic") or {}, c.body["properties"].get("mirrorTraffic") or {})
        for c in azure.calls()[since:]
        if c.method == "PUT" and c.path.lower().endswith(f"/onlineendpoints/{endpoint}")
    ]


def _writes(azure: AzureEmulator, since: int) -> list[str]:
    """The ARM writes since write ``since``, under the workspace: ``DELETE onlineEndpoints/x``."""
    marker = f"/workspaces/{azure.workspace}/"
    return [" ".join((w.split(" ", 1)[0], w.split(marker)[1])) for w in azure.writes()[since:]]


def _gone(azure: AzureEmulator, endpoint: str) -> bool:
    try:
        azure.endpoint_traffic(endpoint)
    except KeyError:
        return True
    return False


def test_first_deploy_is_smoke_tested_pinned_before_any_traffic_and_prints_no_dots(
    azure: AzureEmulator,
    provider: AzureMLProvider,
    bundles: Bundles,
    capfd: pytest.CaptureFixture[str],
) -> None:
    name = "first"
    endpoint = names.endpoint_name(name, provider.settings)
    seen_at_smoke: list[dict[str, int]] = []

    def progress(message: str, _fraction: float | None) -> None:
        if message.startswith("smoke test"):
            seen_at_smoke.append(azure.endpoint_traffic(endpoint))

    since, scored = len(azure.calls()), len(azure.scoring_calls())
    try:
        deployment = provider.deploy(bundles.v1.path, name=name, progress=progress)
        assert (deployment.status, deployment.version) == (
            DeploymentStatus.READY,
            bundles.v1.manifest.version,
        )
        dep = deployment.details["deployment"]
        assert seen_at_smoke == [{}]  # the endpoint sent nothing anywhere yet
        pinned = [c for c in azure.scoring_calls()[scored:] if c.pinned]
        assert [(c.pinned, c.deployment, c.status) for c in pinned] == [(dep, dep, 200)]
        assert azure.endpoint_traffic(endpoint) == {dep: 100}
        assert _endpoint_maps(azure, endpoint, since) == [({}, {}), ({dep: 100}, {})]
        assert deployment.endpoint and deployment.endpoint.endswith("/score")
        captured = capfd.readouterr()
        assert "." not in captured.out, captured.out  # azure-ai-ml's poller dots
        assert "AZUREML_CURRENT_CLOUD" not in os.environ
        # the routes and environment the deployment runs with (registered once per module)
        environment = next(
            c for c in azure.calls() if c.method == "PUT" and "/environments/" in c.path
        )
        routes = environment.body["properties"]["inferenceConfig"]
        assert {k: v["path"] for k, v in routes.items()} == {
            "livenessRoute": "/",
            "readinessRoute": "/ready",
            "scoringRoute": "/score",
        }
        container = next(c for c in azure.containers() if c.deployment == dep)
        assert container.environment["AIAAS_SERVER__MAX_QUEUE_SIZE"] == "4"
        assert "AIAAS_DEVICE" not in container.environment  # a CPU SKU
    finally:
        provider.delete(name)


def test_the_live_digest_writes_nothing_and_plans_nothing(
    azure: AzureEmulator,
    provider: AzureMLProvider,
    bundles: Bundles,
) -> None:
    provider.deploy(bundles.v1.path)  # live (a no-op when an earlier test made it so)
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
    plan = provider.plan(bundles.v3.path)  # never deployed: blob and model are new
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
    assert "mirror" not in shown[("update", "online endpoint")]  # no azureml.mirror here
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
    assert _endpoint_maps(azure, endpoint, since) == [
        ({new: 50, old: 50}, {}),
        ({new: 100}, {}),  # the SDK leaves zero shares out of the map
    ]
    first_pinned = next(c for c in azure.scoring_calls()[scored:] if c.pinned == new)
    assert first_pinned.deployment == new and first_pinned.status == 200
    writes = _writes(azure, wrote)
    assert not any(w.startswith("PUT environments/") for w in writes)  # registered once
    assert writes[-1] == f"DELETE onlineEndpoints/{endpoint}/deployments/{old}"  # removed last
    assert azure.endpoint_traffic(endpoint) == {new: 100}
    assert [v.version for v in deployment.versions] == [bundles.v2.manifest.version]


def test_a_failed_provisioning_leaves_the_traffic_on_the_old_deployment(
    azure: AzureEmulator,
    provider: AzureMLProvider,
    bundles: Bundles,
) -> None:
    provider.deploy(bundles.v1.path)  # v1 is live
    endpoint = names.endpoint_name("probe", provider.settings)
    live = provider.describe("probe")
    serving = live.details["deployment"]
    since = len(azure.calls())
    with pytest.raises(DeployFailed) as failed:
        provider.deploy(bundles.broken.path)  # its container exits while loading the model
    message = failed.value.message
    assert "is Failed" in message and "User container has crashed" in message, message
    assert "; its logs end: " in message, message
    assert "the weights are missing from the bundle" in message.split("; its logs end: ")[1]
    assert "opening the store with password=[redacted]" in message, message  # quoted safely
    assert "hunter22" not in message and "\x1b" not in message, message
    assert _endpoint_puts(azure, endpoint, since) == []  # no traffic ever moved
    assert azure.endpoint_traffic(endpoint) == {serving: 100}
    after = provider.describe("probe")
    assert (after.status, after.version) == (DeploymentStatus.READY, live.version)
    assert list(after.details["deployments"]) == [serving]  # the failed one was deleted


def test_a_failed_first_deploy_removes_the_deployment_then_the_endpoint(
    azure: AzureEmulator,
    provider: AzureMLProvider,
    bundles: Bundles,
) -> None:
    name = "firstfail"
    endpoint = names.endpoint_name(name, provider.settings)
    wrote = len(azure.writes())
    azure.fail_next_deployment("The image cannot be pulled: manifest unknown.")
    with pytest.raises(DeployFailed, match="The image cannot be pulled"):
        provider.deploy(bundles.v1.path, name=name)
    deletes = [w for w in _writes(azure, wrote) if w.startswith("DELETE")]
    assert len(deletes) == 2 and deletes[0].startswith(f"DELETE onlineEndpoints/{endpoint}/dep")
    assert deletes[1] == f"DELETE onlineEndpoints/{endpoint}"
    assert _gone(azure, endpoint)


def test_an_ambiguous_endpoint_create_removes_nothing(
    azure: AzureEmulator,
    bundles: Bundles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The endpoint's create outlasts deploy_timeout_s (Azure takes minutes; scripted here by
    holding the emulator's operation): the deploy fails, and the endpoint it may still be
    creating stays (nothing removed); the next deploy goes on from it."""
    root = _project(tmp_path / "slow", azure)
    yaml = (root / "aiaas.yaml").read_text().replace("deploy_timeout_s: 120", "deploy_timeout_s: 1")
    (root / "aiaas.yaml").write_text(yaml)
    name = "slowcreate"
    held: list[str] = []  # the operation ids held InProgress
    handle = azure.handle

    def slow_endpoint_create(
        method: str, raw_path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any]:
        status, out, answer = handle(method, raw_path, headers, raw)
        if method == "PUT" and status == 201 and "/onlineendpoints/slowcreate-" in raw_path.lower():
            op = out["Azure-AsyncOperation"].split("/")[-1].split("?")[0]
            with azure._lock:
                azure._ops[op].status, azure._ops[op].ended = "InProgress", None
                found = next(e for e in azure._endpoints.values() if e.name.startswith(name))
                found.doc["properties"]["provisioningState"] = "Creating"
            held.append(op)
        return status, out, answer

    monkeypatch.setattr(azure, "handle", slow_endpoint_create)
    slow = AzureMLProvider.from_config(load_config(root))
    with slow:
        endpoint = names.endpoint_name(name, slow.settings)
        wrote = len(azure.writes())
        try:
            with pytest.raises(StillSettling) as failed:
                slow.deploy(bundles.v1.path, name=name)
            message = failed.value.message
            assert "still running after 1s" in message, message
            assert "it goes on in Azure" in message, message
            assert not [w for w in _writes(azure, wrote) if w.startswith("DELETE")]
            assert not _gone(azure, endpoint)
        finally:
            monkeypatch.undo()
            with azure._lock:
                for op in held:
                    azure._ops[op].finish()
                for e in azure._endpoints.values():
                    if e.name.startswith(name):
                        e.doc["properties"]["provisioningState"] = "Succeeded"
            slow.delete(name)
    assert held and _gone(azure, endpoint)


def test_a_mirror_copies_live_traffic_to_the_new_deployment_before_it_takes_any(
    azure: AzureEmulator,
    bundles: Bundles,
    tmp_path: Path,
) -> None:
    """``azureml.mirror``: a first deploy has no live traffic to mirror (skipped); a deploy
    whose traffic step fails after the mirror was set clears the mirror and removes its
    deployment; the next deploy, after its pinned smoke test, mirrors 50 % of the live calls
    to the new deployment (traffic unchanged) for the hold, then the traffic step clears the
    mirror."""
    root = _project(tmp_path / "mirror", azure)
    yaml = (root / "aiaas.yaml").read_text()
    mirror = "azureml:\n  mirror: {percent: 50, duration_s: 0.3}\n"
    (root / "aiaas.yaml").write_text(yaml.replace("azureml:\n", mirror))
    name = "mirrored"
    body = json.dumps(bundles.v1.manifest.example_request).encode()
    mirroring = AzureMLProvider.from_config(load_config(root))
    with mirroring:
        endpoint = names.endpoint_name(name, mirroring.settings)
        since = len(azure.calls())
        try:
            first = mirroring.deploy(bundles.v1.path, name=name)
            old = first.details["deployment"]
            assert all(m == {} for _, m in _endpoint_maps(azure, endpoint, since))  # skipped
            assert first.endpoint is not None
            token = azure.token("https://ml.azure.com")
            during: list[tuple[dict[str, int], dict[str, int]]] = []

            def live_calls(message: str, _fraction: float | None) -> None:
                if not message.startswith("holding the mirror"):
                    return
                during.append(
                    (azure.endpoint_traffic(endpoint), azure.endpoint_mirror_traffic(endpoint))
                )
                with scoring_client(azure) as client:
                    for _ in range(4):
                        answer = client.post(
                            first.endpoint or "",
                            content=body,
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        assert answer.status_code == 200, answer.text

            # a failure after the mirror was set (the traffic step refused) clears it, so
            # the new deployment can be removed
            def refuse_the_step(message: str, _fraction: float | None) -> None:
                if message.startswith("holding the mirror"):
                    azure.refuse_next(
                        "PUT", f"/onlineendpoints/{endpoint}", 400, "BadArgument", "No traffic."
                    )

            with pytest.raises(DeployFailed, match="No traffic") as refused:
                mirroring.deploy(bundles.v2.path, name=name, progress=refuse_the_step)
            assert "could not be removed" not in refused.value.message, refused.value.message
            assert azure.endpoint_mirror_traffic(endpoint) == {}
            assert azure.endpoint_traffic(endpoint) == {old: 100}
            assert list(mirroring.describe(name).details["deployments"]) == [old]

            since, scored = len(azure.calls()), len(azure.scoring_calls())
            second = mirroring.deploy(bundles.v2.path, name=name, progress=live_calls)
            new = second.details["deployment"]
            assert during == [({old: 100}, {new: 50})]
            assert _endpoint_maps(azure, endpoint, since) == [
                ({old: 100}, {new: 50}),
                ({new: 100}, {}),  # all at once: the one step clears the mirror
            ]
            calls = azure.scoring_calls()[scored:]
            pinned = next(i for i, c in enumerate(calls) if c.pinned == new)
            mirrored = [c for c in calls if c.mirrored]
            assert len(mirrored) == 2, calls  # half of the 4 live calls, copied
            assert {(c.deployment, c.status) for c in mirrored} == {(new, 200)}
            assert all(i > pinned for i, c in enumerate(calls) if c.mirrored)
            live = [c for c in calls if not c.pinned and not c.mirrored]
            assert {c.deployment for c in live} == {old}  # the live answers stayed on v1
            assert azure.endpoint_mirror_traffic(endpoint) == {}
            assert azure.endpoint_traffic(endpoint) == {new: 100}
        finally:
            mirroring.delete(name)


def test_key_mode_smoke_tests_with_the_endpoint_key_and_delete_goes_in_order(
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
            wrote = len(azure.writes())
            assert keyed.delete("probe-key") is True
        dep = deployment.details["deployment"]
        # the traffic to 0, the deployment, then the endpoint (each waited for)
        assert _writes(azure, wrote) == [
            f"PUT onlineEndpoints/{endpoint}",
            f"DELETE onlineEndpoints/{endpoint}/deployments/{dep}",
            f"DELETE onlineEndpoints/{endpoint}",
        ]
        assert _endpoint_maps(azure, endpoint, since)[-1] == ({}, {})
        assert _gone(azure, endpoint)
        wrote = len(azure.writes())
        assert keyed.delete("probe-key") is False  # already gone: no write
        assert azure.writes()[wrote:] == []


def test_a_custom_blob_container_is_uploaded_to_and_served_from(
    azure: AzureEmulator, bundles: Bundles, tmp_path: Path
) -> None:
    # Another container of the account: the model is registered by the archive's https URL
    # (not a datastore path), and the endpoint's container is started from it.
    with blob_service(azure) as service:
        service.create_container("aiaas-models")
    root = _project(tmp_path / "custom", azure, "")
    yaml = (root / "aiaas.yaml").read_text()
    yaml = yaml.replace("azureml:\n", "azureml:\n  blob_container: aiaas-models\n")
    (root / "aiaas.yaml").write_text(yaml)
    since = len(azure.calls())
    with AzureMLProvider.from_config(load_config(root)) as custom:
        try:
            deployment = custom.deploy(bundles.v2.path, name="probe-blob")
            assert deployment.status is DeploymentStatus.READY
            model_puts = [
                c.body["properties"]["modelUri"]
                for c in azure.calls()[since:]
                if c.method == "PUT" and "/models/" in c.path
            ]
            assert model_puts and all(
                uri.startswith("https://") and "/aiaas-models/" in uri for uri in model_puts
            )
            with blob_service(azure) as service:
                stored = [b.name for b in service.get_container_client("aiaas-models").list_blobs()]
            assert any(
                name.endswith(f"{bundles.v2.manifest.version}/model.tar.gz") for name in stored
            )
        finally:
            custom.delete("probe-blob")
