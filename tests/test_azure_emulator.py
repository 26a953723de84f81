"""The emulated Azure (emulators/azure.py, azure_scoring.py, identity.py, azurite.py) driven by
the real clients: azure-ai-ml's MLClient through its cloud override, azure-identity's
credentials on the managed-identity emulator, azure-storage-blob on Azurite over TLS, and
httpx on the scoring URIs. One emulator for the module; the probe deployed once."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import netguard
import pytest
from azure_emulated import (
    CPU_SKU,
    INFERENCE_CONFIG,
    arm,
    azure,
    blob_service,
    credential,
    ml_client,
    scoring_client,
    upload,
)

from aiaas.bundle import BuiltBundle
from emulators.azure import AzureEmulator
from emulators.azure_scoring import EndpointView, Route, ScoringServer
from emulators.faults import CallLog, Faults
from emulators.httpserver import HttpServer, KeepAliveHandler
from emulators.identity import claims_of

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

__all__ = ["azure"]  # a fixture, used by name

T = TypeVar("T")
ENDPOINT = "ep-key"
BLUE, GREEN = "blue", "green"
MODEL, ENVIRONMENT = "probe", "aiaas-image"
PREDICT = {"inputs": [{"value": 2.0}]}


def done(poller: Any) -> Any:
    """``poller.result()`` without the SDK's progress dots on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        return poller.result()


def status_of(call: Callable[[], Any]) -> int:
    """The HTTP status of the azure-core error ``call`` raises."""
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as info:
        call()
    assert info.value.status_code is not None
    return int(info.value.status_code)


@dataclass
class Live:
    """The key endpoint with ``blue`` taking all traffic."""

    ml: MLClient
    scoring_uri: str
    key: str


@pytest.fixture(scope="module")
def green(azure: AzureEmulator, live: Live) -> list[str]:
    """``green`` on the key endpoint, by reference, no traffic, a 1 s request timeout and one
    concurrent request: the ARM writes it took."""
    from azure.ai.ml.entities import OnlineRequestSettings

    before = len(azure.writes())
    settings = OnlineRequestSettings(
        request_timeout_ms=1000, max_concurrent_requests_per_instance=1
    )
    deploy_ref(live.ml, ENDPOINT, GREEN, request_settings=settings)
    return azure.writes()[before:]


@pytest.fixture(scope="module")
def ml(azure: AzureEmulator) -> MLClient:
    return ml_client(azure)


@pytest.fixture(scope="module")
def live(azure: AzureEmulator, ml: MLClient, probe_bundle: BuiltBundle) -> Live:
    """The probe uploaded to the default datastore, registered (model and environment
    objects: their PUTs), deployed as ``blue`` on a key endpoint and given all traffic."""
    from azure.ai.ml.entities import (
        Environment,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        Model,
        OnlineRequestSettings,
    )

    path = upload(azure, probe_bundle.path, "aiaas/probe-1")
    done(ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=ENDPOINT)))
    deployment = ManagedOnlineDeployment(
        name=BLUE,
        endpoint_name=ENDPOINT,
        model=Model(name=MODEL, version="1", type="custom_model", path=path),
        environment=Environment(
            name=ENVIRONMENT, version="1", image="example.azurecr.io/aiaas:1",
            inference_config=INFERENCE_CONFIG,
        ),
        instance_type=CPU_SKU,
        instance_count=1,
        request_settings=OnlineRequestSettings(
            request_timeout_ms=5000, max_concurrent_requests_per_instance=2
        ),
        environment_variables={"AIAAS_PORT": "8080", "AIAAS_SERVER__MAX_QUEUE_SIZE": "8"},
    )  # fmt: skip
    done(ml.online_deployments.begin_create_or_update(deployment))
    endpoint = ml.online_endpoints.get(ENDPOINT)
    endpoint.traffic = {BLUE: 100}
    done(ml.online_endpoints.begin_create_or_update(endpoint))
    keys = ml.online_endpoints.get_keys(ENDPOINT)
    return Live(ml, endpoint.scoring_uri, keys.primary_key)


def deploy_ref(ml: MLClient, endpoint: str, name: str, **options: Any) -> Any:
    """A deployment referencing the registered model and environment by name."""
    from azure.ai.ml.entities import ManagedOnlineDeployment

    options.setdefault("instance_type", CPU_SKU)
    options.setdefault("environment_variables", {"AIAAS_PORT": "8080"})
    deployment = ManagedOnlineDeployment(
        name=name, endpoint_name=endpoint, model=f"azureml:{MODEL}:1",
        environment=f"azureml:{ENVIRONMENT}:1", instance_count=1, **options,
    )  # fmt: skip
    return done(ml.online_deployments.begin_create_or_update(deployment))


def set_traffic(ml: MLClient, traffic: dict[str, int], mirror: dict[str, int] | None = None) -> Any:
    endpoint = ml.online_endpoints.get(ENDPOINT)
    endpoint.traffic = traffic
    endpoint.mirror_traffic = mirror or {}
    return done(ml.online_endpoints.begin_create_or_update(endpoint))


def post(
    azure: AzureEmulator, uri: str, token: str, body: Any = PREDICT, **headers: str
) -> httpx.Response:
    with scoring_client(azure, timeout=30) as client:
        return client.post(uri, json=body, headers={"Authorization": f"Bearer {token}", **headers})


# -- identity, ARM, Blob ---------------------------------------------------------------------------
def test_managed_identity_serves_both_protocols(
    azure: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential

    identity = azure.identity
    with httpx.Client() as client:
        new = client.get(
            identity.endpoint,
            params={"resource": "https://ml.azure.com", "api-version": "2019-08-01"},
            headers={"X-IDENTITY-HEADER": identity.header_secret},
        )
        old = client.get(
            identity.endpoint,
            params={"resource": "https://ml.azure.com", "api-version": "2017-09-01"},
            headers={"secret": identity.msi_secret},
        )
        wrong = client.get(
            identity.endpoint,
            params={"resource": "https://ml.azure.com", "api-version": "2019-08-01"},
            headers={"X-IDENTITY-HEADER": "not-it"},
        )
    assert new.status_code == old.status_code == 200
    assert wrong.status_code == 401
    assert new.json()["expires_on"].isdigit()  # 2019-08-01: epoch seconds
    assert old.json()["expires_on"].endswith(" +00:00")  # 2017-09-01: a UTC date
    claims = claims_of(new.json()["access_token"])
    assert claims is not None
    assert claims["aud"] == "https://ml.azure.com"
    assert claims["iss"] == f"https://sts.windows.net/{identity.tenant_id}/"
    assert claims["exp"] > time.time()
    # azure-identity on each protocol: App Service's variables, then the older MSI ones.
    token = ManagedIdentityCredential().get_token("https://ml.azure.com/.default").token
    assert azure.identity.verify(token, frozenset({"https://ml.azure.com"})) is None
    for name in identity.env():
        monkeypatch.delenv(name)
    for name, value in identity.msi_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(identity, "msi_epoch", True)  # Azure ML compute's form: what it reads
    legacy = ManagedIdentityCredential().get_token("https://ml.azure.com/.default")
    assert legacy.expires_on > time.time() + 600
    assert identity.requests()[-1].api_version == "2017-09-01"


def test_arm_needs_an_arm_token_and_a_known_api_version(azure: AzureEmulator) -> None:
    ok = arm(azure, "GET", "")
    assert ok.status_code == 200 and ok.json()["location"] == azure.region
    missing = arm(azure, "GET", "", token="")
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "AuthenticationFailed")
    scoring_token = arm(azure, "GET", "", token=azure.token("https://ml.azure.com"))
    assert scoring_token.status_code == 401
    assert scoring_token.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    forged = arm(azure, "GET", "", token="e30.e30.c2ln")
    assert forged.json()["error"]["code"] == "InvalidAuthenticationToken"
    public = arm(azure, "GET", "", token=azure.token("https://management.azure.com"))
    assert public.status_code == 200
    old = arm(azure, "GET", "", api_version="2023-04-01-preview")
    assert (old.status_code, old.json()["error"]["code"]) == (400, "NoRegisteredProviderFound")
    assert arm(azure, "GET", "", api_version="").status_code == 400
    # Revoked tokens are refused; a new one works.
    token = azure.token()
    azure.revoke_tokens()
    assert arm(azure, "GET", "", token=token).status_code == 401
    assert arm(azure, "GET", "").status_code == 200


def test_blob_takes_an_entra_token_over_tls(azure: AzureEmulator) -> None:
    store = arm(azure, "GET", "/datastores/workspaceblobstore").json()["properties"]
    assert store["containerName"] == azure.blob_container
    assert (store["accountName"], store["protocol"]) == ("devstoreaccount1", "https")
    with blob_service(azure) as service:
        container = service.get_container_client(azure.blob_container)
        container.upload_blob("entra/check.txt", b"hello", overwrite=True)
        assert container.download_blob("entra/check.txt").readall() == b"hello"
    assert azure.identity.requests()[-1].resource == "https://storage.azure.com"


def test_the_az_and_pwsh_guard() -> None:
    # The test-wide guard (tests/guarded_site/netguard.py) refuses and records them.
    assert netguard.cloud_cli_in(["/bin/sh", "-c", "az account get-access-token"]) == "az"
    assert netguard.cloud_cli_in(["pwsh", "-NoProfile"]) == "pwsh"
    assert netguard.cloud_cli_in(["/usr/bin/python3", "-c", "print(1)"]) is None
    with netguard.expected_refusals():
        seen = len(netguard.violations)
        with pytest.raises(netguard.CloudCliRefused):
            subprocess.run(["az", "--version"], check=False)
        assert "az started" in netguard.violations[seen]


# -- deploy and score ----------------------------------------------------------------------------
def test_a_deployment_serves_real_predictions(azure: AzureEmulator, live: Live) -> None:
    answer = post(azure, live.scoring_uri, live.key)
    assert answer.status_code == 200, answer.text
    assert answer.headers["azureml-model-deployment"] == BLUE
    assert answer.json()["outputs"][0]["value"] == 4.0
    assert post(azure, live.scoring_uri, "wrong-key").status_code == 401
    (container,) = [c for c in azure.containers() if c.endpoint == ENDPOINT]
    assert (container.deployment, container.model, container.version) == (BLUE, MODEL, "1")
    model_dir = Path(container.environment["AZUREML_MODEL_DIR"])
    assert model_dir.parts[-3:] == ("azureml-models", MODEL, "1")
    assert (model_dir / "probe-1" / "probe.tar.gz").is_file()  # the folder keeps its name
    assert container.environment["AIAAS_SERVER__MAX_QUEUE_SIZE"] == "8"
    assert azure.scoring_calls()[-1].status == 401


def test_pinning_traffic_and_mirror_rules(
    azure: AzureEmulator, live: Live, green: list[str]
) -> None:
    from azure.core.exceptions import HttpResponseError

    assert [w.split("/")[-1] for w in green] == [GREEN]  # by reference: one write
    pinned = post(azure, live.scoring_uri, live.key, **{"azureml-model-deployment": GREEN})
    assert pinned.headers["azureml-model-deployment"] == GREEN
    assert post(azure, live.scoring_uri, live.key).headers["azureml-model-deployment"] == BLUE
    assert status_of(lambda: set_traffic(live.ml, {BLUE: 90, GREEN: 0})) == 400
    assert status_of(lambda: set_traffic(live.ml, {BLUE: 100}, {GREEN: 60})) == 400
    assert status_of(lambda: set_traffic(live.ml, {BLUE: 50, GREEN: 50}, {GREEN: 10})) == 400
    assert status_of(lambda: set_traffic(live.ml, {BLUE: 100}, {BLUE: 10})) == 400
    assert azure.endpoint_traffic(ENDPOINT) == {BLUE: 100}
    set_traffic(live.ml, {BLUE: 100}, {GREEN: 50})
    for _ in range(4):
        assert post(azure, live.scoring_uri, live.key).headers["azureml-model-deployment"] == BLUE
    deadline = time.monotonic() + 10
    while len([c for c in azure.scoring_calls() if c.mirrored]) < 2:
        assert time.monotonic() < deadline, azure.scoring_calls()
        time.sleep(0.05)
    assert {c.deployment for c in azure.scoring_calls() if c.mirrored} == {GREEN}
    set_traffic(live.ml, {BLUE: 100})
    # A deployment that takes traffic cannot be deleted.
    with pytest.raises(HttpResponseError) as info:
        done(live.ml.online_deployments.begin_delete(BLUE, ENDPOINT))
    assert info.value.status_code == 400


def test_scoring_errors_as_azure_answers_them(
    azure: AzureEmulator, live: Live, green: list[str]
) -> None:
    bad = post(azure, live.scoring_uri, live.key, {"inputs": [{"nope": 1}]})
    assert bad.status_code == 424
    assert bad.headers["ms-azureml-model-error-statuscode"] == "422"
    assert "error" in bad.json()  # the container's own body, passed through
    azure.fault(ENDPOINT, 429, times=1)
    assert post(azure, live.scoring_uri, live.key).status_code == 429
    assert post(azure, live.scoring_uri, live.key).status_code == 200
    pin = {"azureml-model-deployment": GREEN}  # request_timeout_ms 1000, 1 concurrent request
    # 2 x 1 request x 1 instance in flight at most: two calls held in flight (their slots
    # taken, the container not reached yet), a third is refused at once.
    mark = len(azure.scoring_calls())
    with ThreadPoolExecutor(2) as pool, azure.hold(ENDPOINT) as hold:
        held = [pool.submit(post, azure, live.scoring_uri, live.key, **pin) for _ in range(2)]
        hold.wait_held(2)
        assert post(azure, live.scoring_uri, live.key, **pin).status_code == 429
        hold.release()
        assert [f.result().status_code for f in held] == [200, 200]
    answered = [(c.deployment, c.status) for c in azure.scoring_calls()[mark:]]
    assert answered == [(GREEN, 429), (GREEN, 200), (GREEN, 200)]
    # Past request_timeout_ms: 408 (last here: the container goes on with it a while).
    slow = {"inputs": [{"value": 1.0, "sleep_ms": 1500}]}
    assert post(azure, live.scoring_uri, live.key, slow, **pin).status_code == 408
    assert azure.scoring_calls()[-1].status == 408


def test_an_update_swaps_the_container_once_ready(
    azure: AzureEmulator, live: Live, green: list[str]
) -> None:
    from azure.ai.ml.entities import OnlineRequestSettings

    (old,) = [c for c in azure.containers() if c.deployment == GREEN]
    settings = OnlineRequestSettings(
        request_timeout_ms=1000, max_concurrent_requests_per_instance=1
    )
    variables = {"AIAAS_PORT": "8080", "AIAAS_SERVER__MAX_QUEUE_SIZE": "4"}
    deploy_ref(live.ml, ENDPOINT, GREEN, request_settings=settings, environment_variables=variables)
    (new,) = [c for c in azure.containers() if c.deployment == GREEN]
    assert new.pid != old.pid and new.environment["AIAAS_SERVER__MAX_QUEUE_SIZE"] == "4"
    assert Path(new.environment["AZUREML_MODEL_DIR"]) != Path(old.environment["AZUREML_MODEL_DIR"])
    pinned = post(azure, live.scoring_uri, live.key, **{"azureml-model-deployment": GREEN})
    assert pinned.status_code == 200 and pinned.headers["azureml-model-deployment"] == GREEN


def test_a_failed_deployment_leaves_traffic_alone(azure: AzureEmulator, live: Live) -> None:
    azure.fail_next_deployment("scripted: image pull failed")
    with pytest.raises(Exception, match="scripted: image pull failed"):
        deploy_ref(live.ml, ENDPOINT, "red")
    assert azure.deployment_state(ENDPOINT, "red") == "Failed"
    assert azure.endpoint_traffic(ENDPOINT) == {BLUE: 100}
    assert status_of(lambda: set_traffic(live.ml, {BLUE: 50, "red": 50})) == 400
    # The container listens on AIAAS_PORT; a probe on another port never succeeds.
    with pytest.raises(Exception, match="ResourceNotReady"):
        deploy_ref(live.ml, ENDPOINT, "orange", environment_variables={"AIAAS_PORT": "9000"})
    assert post(azure, live.scoring_uri, live.key).headers["azureml-model-deployment"] == BLUE


def test_names_skus_and_limits_are_checked(azure: AzureEmulator, live: Live) -> None:
    body = {"location": azure.region, "properties": {"authMode": "Key"}}
    for bad in ("1abc", "ab", "a--b", "ends-", "x" * 33, "under_score"):
        answer = arm(azure, "PUT", f"/onlineEndpoints/{bad}", body)
        assert answer.status_code == 400, bad
    assert "letter" in answer.json()["error"]["message"]
    assert (
        status_of(lambda: deploy_ref(live.ml, ENDPOINT, "sku-x", instance_type="Standard_X9"))
        == 400
    )
    assert azure.deployment_state(ENDPOINT, "sku-x") is None


def test_get_logs_returns_the_container_output(live: Live) -> None:
    logs = live.ml.online_deployments.get_logs(BLUE, ENDPOINT, lines=50)
    assert "Uvicorn running on http://127.0.0.1" in logs
    init = live.ml.online_deployments.get_logs(
        BLUE, ENDPOINT, lines=10, container_type="storage-initializer"
    )
    assert "Downloaded aiaas/probe-1/probe.tar.gz" in init


def test_aad_endpoint_then_delete_closes_its_port(azure: AzureEmulator, live: Live) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint
    from azure.core.exceptions import ResourceNotFoundError

    ml = live.ml
    done(ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name="ep-aad", auth_mode="aad_token")
    ))  # fmt: skip
    deploy_ref(ml, "ep-aad", "solo")
    endpoint = ml.online_endpoints.get("ep-aad")
    endpoint.traffic = {"solo": 100}
    done(ml.online_endpoints.begin_create_or_update(endpoint))
    token = credential().get_token("https://ml.azure.com/.default").token
    answer = post(azure, endpoint.scoring_uri, token)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["value"] == 4.0
    assert post(azure, endpoint.scoring_uri, azure.token()).status_code == 401  # ARM's
    assert post(azure, endpoint.scoring_uri, live.key).status_code == 401
    done(ml.online_endpoints.begin_delete("ep-aad"))
    with pytest.raises(httpx.ConnectError):
        post(azure, endpoint.scoring_uri, token)
    assert [c for c in azure.containers() if c.endpoint == "ep-aad"] == []
    with pytest.raises(ResourceNotFoundError):
        ml.online_endpoints.get("ep-aad")
    assert arm(azure, "DELETE", "/onlineEndpoints/ep-aad").status_code == 204  # already gone


def test_aiaas_emulate_azure_prints_its_variables(tmp_path: Path) -> None:
    """``aiaas emulate azure`` (here ``python -m emulators azure``) serves the workspace it is
    told, prints the exports, and stops cleanly on SIGTERM."""
    env_file = tmp_path / "azure.env"
    command = [sys.executable, "-m", "emulators", "azure", "--workspace", "rehearsal"]
    command += ["--region", "westeurope", "--env-file", str(env_file), "--workdir", str(tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists() or not env_file.read_text().endswith("\n"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the emulator never printed its variables"
            time.sleep(0.05)
        env = {}
        for line in env_file.read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0]
        assert set(env) == {
            "AIAAS_AZURE_ARM_URL",
            "AIAAS_AZURE_CA_BUNDLE",
            "AIAAS_AZURE_BLOB_URL",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
        }
        with httpx.Client(verify=env["AIAAS_AZURE_CA_BUNDLE"]) as client:
            token = client.get(
                env["IDENTITY_ENDPOINT"],
                params={"resource": env["AIAAS_AZURE_ARM_URL"], "api-version": "2019-08-01"},
                headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]},
            ).json()["access_token"]
            workspace = client.get(
                f"{env['AIAAS_AZURE_ARM_URL']}/subscriptions/00000000-0000-0000-0000-000000000000"
                "/resourceGroups/aiaas-rg/providers/Microsoft.MachineLearningServices"
                "/workspaces/rehearsal",
                params={"api-version": "2024-10-01-preview"},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert workspace.json()["location"] == "westeurope"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == env_file.read_text()


def test_arm_throttling_is_retried_by_the_sdk(azure: AzureEmulator, live: Live) -> None:
    """The SDK waits ARM's ``retry-after-ms`` before it asks again: the two recorded calls
    are at least that far apart (azure-core's first retry without the header is at once)."""
    azure.refuse_next("GET", f"/onlineEndpoints/{ENDPOINT}", 429, retry_after_ms=300)
    assert live.ml.online_endpoints.get(ENDPOINT).traffic[BLUE] == 100
    gets = [c for c in azure.calls() if c.path.endswith(f"/onlineEndpoints/{ENDPOINT}")]
    throttled, answered = gets[-2:]
    assert (throttled.status, answered.status) == (429, 200)
    assert answered.received - throttled.received >= 0.3


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/onlineEndpoints/ep-bad", [{"location": "eastus"}], "a JSON array, not an object"),
        ("/onlineEndpoints/ep-bad", {"location": "eastus", "properties": ["Key"]},
         "properties must be a JSON object, not a JSON array"),
        ("/onlineEndpoints/ep-bad", {"location": "eastus", "properties": {"traffic": [1]}},
         "properties.traffic must be a JSON object"),
        ("/onlineEndpoints/ep-bad", {"location": "eastus", "tags": "x"}, "tags must be"),
        (f"/onlineEndpoints/{ENDPOINT}/deployments/d-bad",
         {"location": "eastus", "properties": {"requestSettings": 5}},
         "properties.requestSettings must be a JSON object, not a JSON number"),
        (f"/onlineEndpoints/{ENDPOINT}/deployments/d-bad", {"location": "eastus", "sku": []},
         "sku must be"),
        ("/models/m-bad/versions/1", {"properties": "azureml://x"}, "not a JSON string"),
        ("/environments/e-bad/versions/1", {"properties": {"inferenceConfig": {
            "scoringRoute": 8080}}}, "properties.inferenceConfig.scoringRoute must be"),
        ("/onlineEndpoints/ep-bad", b'{"location": ', "not JSON"),
    ],
)  # fmt: skip
def test_a_malformed_body_is_a_400_never_a_dropped_connection(
    azure: AzureEmulator, live: Live, path: str, body: Any, named: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    answer = arm(azure, "PUT", path, None if raw else body, content=raw)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "InvalidRequestContent" and named in error["message"]
    assert azure.calls()[-1].status == 400


def test_an_emulator_failure_is_a_500_with_its_traceback_in_the_log(
    azure: AzureEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any) -> Any:
        raise RuntimeError("emulator bug with a secret-ish detail")

    monkeypatch.setattr(azure, "_route", broken)
    with caplog.at_level("ERROR", logger="emulators.azure"):
        answer = arm(azure, "GET", "")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "InternalServerError"
    assert "secret-ish" not in answer.text and "Traceback" not in answer.text
    (record,) = [r for r in caplog.records if r.name == "emulators.azure"]
    assert record.exc_info is not None and "emulator bug" in str(record.exc_info[1])
    monkeypatch.undo()
    assert arm(azure, "GET", "").status_code == 200  # the emulator goes on


def test_a_model_registered_by_an_https_blob_url_is_copied(azure: AzureEmulator) -> None:
    """A model whose URI is an https URL of the emulated storage account (any container, as
    Azurite serves it or as Azure names it) is copied; another account's is refused."""
    from emulators.azure import _Deployment

    with blob_service(azure) as service:
        container = service.get_container_client("custom-models")
        container.create_container()
        container.upload_blob("team/m1/weights.bin", b"w" * 10, overwrite=True)
    uris = [
        f"{azure.blob_url}/custom-models/team/m1/",
        "https://devstoreaccount1.blob.core.windows.net/custom-models/team/m1",
    ]
    for n, uri in enumerate(uris):
        target = azure.workdir / f"https-copy-{n}"
        dep = _Deployment("d", "e", {})
        assert azure._copy_model(dep, {"properties": {"modelUri": uri}}, target) is None
        assert (target / "m1" / "weights.bin").read_bytes() == b"w" * 10
    dep = _Deployment("d", "e", {})
    other = "https://otheraccount.blob.core.windows.net/custom-models/team/m1/"
    problem = azure._copy_model(dep, {"properties": {"modelUri": other}}, azure.workdir / "x")
    assert problem is not None and "devstoreaccount1" in problem
    missing = f"{azure.blob_url}/no-such-container/m/"
    problem = azure._copy_model(dep, {"properties": {"modelUri": missing}}, azure.workdir / "y")
    assert problem is not None and "no-such-container not found" in problem


@pytest.mark.parametrize("azurite_blob", ["missing", "exits at once"])
def test_aiaas_emulate_azure_without_a_working_azurite_says_so_in_one_line(
    tmp_path: Path, azurite_blob: str
) -> None:
    """``AZURITE_BLOB`` naming no file, or one that exits instead of listening: exit 2 and one
    line naming the problem and the fix, no traceback."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the message is about node then")
    binary = tmp_path / "azurite-blob"
    if azurite_blob == "exits at once":
        binary.write_text("#!/bin/sh\necho 'azurite: cannot find module lokijs'\nexit 3\n")
        binary.chmod(0o755)
    env = {**os.environ, "AZURITE_BLOB": str(binary)}
    command = [sys.executable, "-m", "emulators", "azure", "--workdir", str(tmp_path / "w")]
    done_ = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done_.returncode == 2, done_.stderr
    lines = done_.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done_.stderr, done_.stderr
    assert lines[0].startswith("aiaas emulate: ")
    assert "make install" in lines[0] and "AZURITE_BLOB" in lines[0]
    assert "azurite@3.35.0" in lines[0]
    if azurite_blob == "exits at once":
        assert "cannot find module lokijs" in lines[0]
    assert done_.stdout == ""


# -- the scoring front end alone ------------------------------------------------------------------
class _Container(KeepAliveHandler):
    """A model container stand-in: ``/trickle`` answers 20 bytes, one every 0.1 s; ``/block``
    waits for :attr:`release` (set by the test); anything else answers at once."""

    release = threading.Event()
    reached = threading.Event()

    def do_POST(self) -> None:
        self.body()
        if self.path == "/block":
            type(self).reached.set()
            type(self).release.wait(30)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "20" if self.path == "/trickle" else "2")
        self.end_headers()
        with contextlib.suppress(OSError):
            if self.path != "/trickle":
                self.wfile.write(b"{}")
                return
            for _ in range(20):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)


@contextlib.contextmanager
def front_end(routes: dict[str, Route], mirror: dict[str, int]) -> Iterator[ScoringServer]:
    """A :class:`ScoringServer` routing all traffic to ``a`` (key auth) over ``routes``,
    called directly (its port is never opened)."""
    view = EndpointView("ep-unit", "Key", ("k",), {"a": 100}, mirror, routes)
    server = ScoringServer(
        "ep-unit", resolve=lambda _name: view, verify_token=lambda *_: None, calls=CallLog(),
        faults=Faults(), context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        ca_file=Path("unused.pem"),
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def container() -> Iterator[int]:
    """The container stand-in's port."""
    _Container.release.clear()
    _Container.reached.clear()
    server = HttpServer(_Container, name="container-stand-in")
    server.start()
    try:
        yield int(server.url.rsplit(":", 1)[1])
    finally:
        _Container.release.set()
        server.stop()


def test_request_timeout_is_a_total_deadline_even_for_a_trickling_container(
    container: int,
) -> None:
    """A container that sends a byte every 0.1 s never trips a per-read timeout of 0.5 s; the
    deadline is on the whole call, so it is a 408."""
    routes = {"a": Route("a", container, "/trickle", 0.5, 10)}
    with front_end(routes, {}) as server:
        status, _, _ = server.score({"authorization": "Bearer k"}, b"{}", time.monotonic())
        assert status == 408
        assert [c.status for c in server._calls.all()] == [408]


def test_stop_aborts_and_joins_the_mirror_threads(container: int) -> None:
    """Mirrored copies run on their own threads; stop() aborts the one still at its container
    and waits for it: none outlives the endpoint."""
    routes = {
        "a": Route("a", container, "/fast", 30.0, 10),
        "b": Route("b", container, "/block", 30.0, 10),
    }
    with front_end(routes, {"b": 50}) as server:
        for _ in range(2):  # 50 %: the second unpinned call is mirrored
            status, _, _ = server.score({"authorization": "Bearer k"}, b"{}", time.monotonic())
            assert status == 200
        assert _Container.reached.wait(10)
        (mirror,) = server.mirror_threads()
        server.stop()
        assert not mirror.is_alive()
        mirrored = [c for c in server._calls.all() if c.mirrored]
        assert [(c.deployment, c.status) for c in mirrored] == [("b", 502)]
