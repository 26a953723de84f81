"""The Azure ML invoke path (adapters/azureml/invoke.py) against real HTTP(S) servers on
127.0.0.1: a managed-identity endpoint (both protocols), ARM's online endpoint GET and one
scoring front end per endpoint, each over TLS with a throwaway CA (trustme), as Azure serves
them.

These are small stand-ins written here, not the Azure emulator (emulators/azure.py): they
answer exactly what each case needs (a 408, a 424 with the container's status header, a 502,
a ``retry-after-ms``), which the emulator cannot all be scripted to do, and need no deploy,
so the whole error map runs in about a second. The end-to-end cases through a deployed bundle
on the emulator follow them (one deploy for the module), then the function tier with
``provider: azureml``: the Azure Functions entrypoint, and the packaged zip run by a fresh
``python -S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure_emulated import CPU_SKU, INFERENCE_CONFIG, emulated_azure, ml_client, upload
from conftest import PROJECTS
from wheel_cache import shared_wheel_cache

from adapters.auth import IDENTITY_API_VERSION, MSI_API_VERSION, ManagedIdentityBearer
from adapters.azureml import SCORING_RESOURCE, AzureMLSettings, names
from adapters.azureml.invoke import ARM_API_VERSION, PIN_HEADER, AzureMLInvoker
from adapters.base import DeploymentStatus
from aiaas.bundle import BuiltBundle
from aiaas.config import load_config
from aiaas.errors import (
    AccessDenied,
    BadRequest,
    ConfigError,
    DeadlineExceeded,
    InvalidInput,
    ModelError,
    NotFound,
    NotReady,
    Overloaded,
    ProviderError,
    Throttled,
    Unavailable,
)
from aiaas.manifest import MANIFEST_FILE, read_manifest_file
from aiaas.packaged import FunctionConfig
from aiaas.retry import TIMEOUT_HEADER, RetryBudget
from emulators.azure import AzureEmulator
from emulators.httpserver import HttpServer, KeepAliveHandler
from functions.auth import create_key
from functions.packaging import (
    imported_modules,
    invoke_path_modules,
    package_function,
    packaging_of,
)

SETTINGS = AzureMLSettings(
    subscription_id="00000000-0000-4000-8000-000000000017", resource_group="rg", workspace="ws"
)
ENDPOINT = names.endpoint_name("probe", SETTINGS)
EXAMPLE = b'{"inputs": [{"value": 3}]}'
IDENTITY_SECRET = "identity-header-secret"
MSI_SECRET = "msi-secret"
KEY = "endpoint-key-1"


def answer(version: str = "v1digest") -> bytes:
    return json.dumps(
        {"outputs": [{"value": 6.0}], "model": "probe", "version": version}, separators=(",", ":")
    ).encode()


# -- the stand-ins -----------------------------------------------------------------------------


class Identity:
    """The managed-identity endpoint: both protocols on one route; tokens name their resource
    (``tok-<n>-<resource>``) and can all be revoked at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.issued: dict[str, str] = {}  # token: resource
        self.revoked: set[str] = set()
        self.asked: list[tuple[str | None, str | None]] = []  # (api-version, resource)

    def answer(self, handler: KeepAliveHandler) -> tuple[int, dict[str, Any]]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(handler.path).query).items()}
        version, resource = query.get("api-version"), query.get("resource")
        with self.lock:
            self.asked.append((version, resource))
        if version == IDENTITY_API_VERSION:
            ok = handler.headers.get("X-IDENTITY-HEADER") == IDENTITY_SECRET
        elif version == MSI_API_VERSION:
            ok = handler.headers.get("secret") == MSI_SECRET
        else:
            return 400, {"error": "unsupported api-version"}
        if not ok or not resource:
            return 401, {"error": "bad secret or no resource"}
        token = self.issue(resource)
        expires = int(time.time()) + 3600
        if version == MSI_API_VERSION:  # the older protocol: a date string (Linux hosts' form)
            expires_on: str = time.strftime("%m/%d/%Y %H:%M:%S +00:00", time.gmtime(expires))
        else:
            expires_on = str(expires)
        return 200, {"access_token": token, "expires_on": expires_on, "resource": resource}

    def issue(self, resource: str) -> str:
        with self.lock:
            token = f"tok-{len(self.issued) + 1}-{resource}"
            self.issued[token] = resource
        return token

    def valid(self, authorization: str | None, resource: str) -> bool:
        token = (authorization or "").removeprefix("Bearer ")
        with self.lock:
            return self.issued.get(token) == resource and token not in self.revoked

    def revoke(self) -> None:
        with self.lock:
            self.revoked |= set(self.issued)


@dataclass
class Scoring:
    """One endpoint's scoring front end: checks the key or the Entra token, routes by traffic
    (404 with none) or the pin header, and answers a scripted reply when one is queued."""

    identity: Identity
    mode: str = "aad_token"
    traffic: dict[str, int] = field(default_factory=lambda: {"v-v1digest": 100})
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    calls: list[dict[str, str]] = field(default_factory=list)  # lower-cased headers
    server: HttpServer | None = None
    connections: list[socket.socket] = field(default_factory=list)

    def answer(self, handler: KeepAliveHandler) -> tuple[int, dict[str, str], bytes]:
        handler.body()
        self.calls.append({k.lower(): v for k, v in handler.headers.items()})
        auth = handler.headers.get("Authorization")
        if self.mode == "key":
            if auth != f"Bearer {KEY}":
                return 401, {}, b'{"message": "key auth failed"}'
        elif not self.identity.valid(auth, SCORING_RESOURCE):
            return 401, {}, b'{"message": "token invalid or expired"}'
        if self.script:
            return self.script.pop(0)
        pinned = handler.headers.get(PIN_HEADER)
        live = [d for d, share in self.traffic.items() if share > 0]
        if not pinned and not live:
            return 404, {}, b'{"message": "No valid deployments to route to."}'
        deployment = pinned or live[0]
        version = names.version_of(deployment) or ""
        return 200, {PIN_HEADER: deployment}, answer(version)


class SharedCaServer(HttpServer):
    """An HTTPS stand-in whose certificate comes from the one test CA (an invoker trusts one
    bundle, read when built: an endpoint created later must be trusted too)."""

    authority: Any = None

    def _tls_context(self) -> ssl.SSLContext:
        import trustme

        if SharedCaServer.authority is None:
            SharedCaServer.authority = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        SharedCaServer.authority.issue_cert("127.0.0.1").configure_cert(context)
        return context


class Azure:
    """ARM's endpoint GET (TLS) and the scoring front ends (TLS, one port each), all trusted
    through one CA bundle; the identity endpoint is plain HTTP on loopback, as in Azure."""

    def __init__(self, workdir: Path) -> None:
        self.identity = Identity()
        self.endpoints: dict[str, Scoring] = {}
        self.states: dict[str, str] = {}
        self.arm_calls: list[tuple[str, str | None]] = []  # (endpoint, api-version)
        self.refuse_reads = False
        self.arm_url = ""
        self.ca_bundle = workdir / "ca-bundle.pem"
        self._servers: list[HttpServer] = []
        azure = self

        class IdentityHandler(KeepAliveHandler):
            def do_GET(self) -> None:
                status, body = azure.identity.answer(self)
                self.send(status, {"content-type": "application/json"}, json.dumps(body).encode())

        class ArmHandler(KeepAliveHandler):
            def do_GET(self) -> None:
                status, body = azure.arm(self)
                self.send(status, {"content-type": "application/json"}, json.dumps(body).encode())

        self.identity_server = self._start(HttpServer(IdentityHandler, name="identity"))
        arm = self._start(SharedCaServer(ArmHandler, name="arm", tls=True))
        self.arm_url = arm.url
        SharedCaServer.authority.cert_pem.write_to_path(str(self.ca_bundle))

    def _start(self, server: HttpServer) -> HttpServer:
        server.start()
        self._servers.append(server)
        return server

    def arm(self, handler: KeepAliveHandler) -> tuple[int, dict[str, Any]]:
        split = urlsplit(handler.path)
        version = parse_qs(split.query).get("api-version", [None])[0]
        endpoint = split.path.rsplit("/", 1)[-1]
        self.arm_calls.append((endpoint, version))
        prefix = (
            f"/subscriptions/{SETTINGS.subscription_id}/resourceGroups/{SETTINGS.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{SETTINGS.workspace}"
            "/onlineEndpoints/"
        )
        if not split.path.startswith(prefix) or version != ARM_API_VERSION:
            return 400, {"error": {"code": "InvalidApiVersionParameter"}}
        if not self.identity.valid(handler.headers.get("Authorization"), self.arm_url):
            return 401, {"error": {"code": "InvalidAuthenticationToken"}}
        if self.refuse_reads:  # the identity has the score action, not the read action
            return 403, {"error": {"code": "AuthorizationFailed"}}
        scoring = self.endpoints.get(endpoint)
        if scoring is None or scoring.server is None:
            return 404, {"error": {"code": "ResourceNotFound"}}
        properties = {
            "authMode": "AADToken" if scoring.mode == "aad_token" else "Key",
            "scoringUri": scoring.server.url + "/score",
            "provisioningState": self.states.get(endpoint, "Succeeded"),
            "traffic": scoring.traffic,
        }
        return 200, {"name": endpoint, "properties": properties}

    def endpoint(self, name: str, mode: str = "aad_token") -> Scoring:
        """A (new) endpoint ``name`` with its own scoring port."""
        scoring = Scoring(self.identity, mode=mode)

        class ScoringHandler(KeepAliveHandler):
            def setup(self) -> None:
                super().setup()
                scoring.connections.append(self.connection)

            def do_POST(self) -> None:
                status, headers, body = scoring.answer(self)
                self.send(status, {"content-type": "application/json", **headers}, body)

        scoring.server = self._start(SharedCaServer(ScoringHandler, name=f"score-{name}", tls=True))
        self.endpoints[name] = scoring
        return scoring

    def close(self, name: str) -> None:
        """The endpoint deleted: its scoring port and open connections closed, and ARM no
        longer knows it."""
        scoring = self.endpoints.pop(name)
        assert scoring.server is not None
        for connection in scoring.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        scoring.server.stop()
        scoring.server = None

    def env(self) -> dict[str, str]:
        return {
            "AIAAS_AZURE_ARM_URL": self.arm_url,
            "AIAAS_AZURE_CA_BUNDLE": str(self.ca_bundle),
            "IDENTITY_ENDPOINT": self.identity_server.url + "/msi/token",
            "IDENTITY_HEADER": IDENTITY_SECRET,
        }

    def stop(self) -> None:
        for server in self._servers:
            if server._server is not None:
                server.stop()


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azure]:
    stand_in = Azure(tmp_path_factory.mktemp("azureml-invoke"))
    stand_in.endpoint(ENDPOINT)
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture
def scoring(azure: Azure) -> Iterator[Scoring]:
    """The probe's endpoint, its script and traffic reset after the test."""
    endpoint = azure.endpoints[ENDPOINT]
    yield endpoint
    endpoint.script.clear()
    endpoint.traffic = {"v-v1digest": 100}
    azure.states.pop(ENDPOINT, None)


def config(auth_mode: str = "aad_token") -> FunctionConfig:
    """A packaged function's light view of ``azureml:`` (what a function builds from)."""
    section = {**SETTINGS.__dict__, "auth_mode": auth_mode}
    return FunctionConfig("azureml", Path("."), AzureMLSettings.read(section))


def invoker(azure: Azure, **env: str) -> AzureMLInvoker:
    built = AzureMLInvoker.from_config(config(env.pop("mode", "aad_token")), {**azure.env(), **env})
    built.retry = type(built.retry)(budget=RetryBudget(allowance=100), base=0.01, cap=0.05)
    return built


def run(built: AzureMLInvoker, make: Callable[[], Any]) -> Any:
    async def main() -> Any:
        try:
            return await make()
        finally:
            await built.aclose()

    return asyncio.run(main())


# -- the tests ---------------------------------------------------------------------------------


def test_a_call_finds_the_scoring_uri_once_and_carries_token_id_and_deadline(
    azure: Azure, scoring: Scoring
) -> None:
    client = invoker(azure)
    arm_before, scored_before = len(azure.arm_calls), len(scoring.calls)
    result = client.invoke_sync("probe", EXAMPLE, request_id="rid-1", timeout=20)
    assert json.loads(result.body)["outputs"][0]["value"] == 6.0
    assert result.version == "v1digest"
    asynced = run(client, lambda: client.invoke("probe", EXAMPLE, timeout=20))
    assert asynced.body == result.body
    # ARM asked once (its own token: the ARM URL as the resource), then the URI is cached
    assert azure.arm_calls[arm_before:] == [(ENDPOINT, ARM_API_VERSION)]
    first = scoring.calls[scored_before]
    assert azure.identity.valid(first["authorization"], SCORING_RESOURCE)
    assert first["x-request-id"] == first["x-ms-client-request-id"] == "rid-1"
    assert 0 < int(first[TIMEOUT_HEADER]) <= 20_000
    assert PIN_HEADER not in first
    asked = {resource for _, resource in azure.identity.asked}
    assert {SCORING_RESOURCE, azure.arm_url} <= asked
    client.close()


def test_a_pinned_call_names_the_deployment_and_gets_its_answer(
    azure: Azure, scoring: Scoring
) -> None:
    scoring.traffic = {"v-v1digest": 100, "v-v2digest": 0}
    client = invoker(azure)
    pinned = client.invoke_sync("probe", EXAMPLE, deployment="v-v2digest")
    assert pinned.version == "v2digest" and scoring.calls[-1][PIN_HEADER] == "v-v2digest"
    assert client.invoke_sync("probe", EXAMPLE).version == "v1digest"
    with pytest.raises(ConfigError, match="not valid on Azure ML"):
        client.invoke_sync("probe", EXAMPLE, deployment="2-bad--name")


def test_a_revoked_token_is_fetched_again_once_and_the_call_answers(
    azure: Azure, scoring: Scoring
) -> None:
    client = invoker(azure)
    client.invoke_sync("probe", EXAMPLE)
    bearer = client.scoring_auth
    assert isinstance(bearer, ManagedIdentityBearer)
    fetched = bearer.fetches
    azure.identity.revoke()  # every token issued so far is refused now
    mark = len(scoring.calls)
    assert client.invoke_sync("probe", EXAMPLE).version == "v1digest"
    assert bearer.fetches == fetched + 1 and bearer.refreshes == 1
    assert len(scoring.calls) - mark == 2  # the 401, then the same call with the new token
    azure.identity.revoke()
    assert run(client, lambda: client.invoke("probe", EXAMPLE)).version == "v1digest"
    assert bearer.refreshes == 2


def test_a_token_refused_twice_is_access_denied_naming_the_score_action(
    azure: Azure, scoring: Scoring
) -> None:
    scoring.script = [(401, {}, b'{"message": "principal lacks the action"}')] * 2
    mark = len(scoring.calls)
    with pytest.raises(AccessDenied) as denied:
        invoker(azure).invoke_sync("probe", EXAMPLE)
    assert "onlineEndpoints/score/action" in denied.value.message
    assert "principal lacks" not in denied.value.message  # Azure's words: the log's only
    assert denied.value.cloud_text and "principal lacks" in denied.value.cloud_text
    assert len(scoring.calls) - mark == 2  # one refresh, then the answer stands
    scoring.script = [(403, {}, b"{}")]
    with pytest.raises(AccessDenied):
        invoker(azure).invoke_sync("probe", EXAMPLE)


def test_a_424_is_our_containers_own_error(azure: Azure, scoring: Scoring) -> None:
    """The container's status comes from ms-azureml-model-error-statuscode and its JSON body
    passes through: a 422 stays InvalidInput with index and field, a 503 Overloaded with its
    Retry-After; a 424 without our body is a ModelError in our words. None is sent again."""
    invalid = {"error": {"code": "invalid_input", "message": "inputs[1].value: not a number",
                         "details": [{"index": 1, "field": "value"}]}}  # fmt: skip
    overloaded = {"error": {"code": "overloaded", "message": "queue full"}}
    scoring.script = [
        (424, {"ms-azureml-model-error-statuscode": "422",
               "ms-azureml-model-error-reason": "Unprocessable"}, json.dumps(invalid).encode()),
        (424, {"ms-azureml-model-error-statuscode": "503", "retry-after": "2"},
         json.dumps(overloaded).encode()),
        (424, {"ms-azureml-model-error-statuscode": "500"}, b"upstream connect error"),
    ]  # fmt: skip
    client = invoker(azure)
    mark = len(scoring.calls)
    with pytest.raises(InvalidInput) as bad:
        client.invoke_sync("probe", EXAMPLE)
    assert [(d["index"], d["field"]) for d in bad.value.details] == [(1, "value")]
    with pytest.raises(Overloaded) as busy:
        client.invoke_sync("probe", EXAMPLE)
    assert busy.value.retry_after == 2.0
    with pytest.raises(ModelError) as failed:
        client.invoke_sync("probe", EXAMPLE)
    assert "without an answer" in failed.value.message
    assert failed.value.cloud_text == "upstream connect error"
    assert len(scoring.calls) - mark == 3


def test_408_429_5xx_and_404_map_to_their_errors(azure: Azure, scoring: Scoring) -> None:
    client = invoker(azure)
    scoring.script = [(408, {}, b"request timeout")]
    with pytest.raises(DeadlineExceeded, match="request_timeout_ms"):
        client.invoke_sync("probe", EXAMPLE)
    scoring.script = [(429, {"retry-after-ms": "20"}, b"Too many pending requests")] * 2
    assert client.invoke_sync("probe", EXAMPLE, timeout=10).version == "v1digest"  # retried
    scoring.script = [(429, {"retry-after": "3"}, b"Too many pending requests")] * 9
    with pytest.raises(Throttled) as throttled:
        client.invoke_sync("probe", EXAMPLE, timeout=1)
    assert throttled.value.retry_after >= 3.0
    scoring.script = [(503, {}, b"busy")]
    assert client.invoke_sync("probe", EXAMPLE).version == "v1digest"  # Azure's own: retried
    scoring.script = [(500, {}, b"infra")] * 9
    with pytest.raises(Unavailable):
        client.invoke_sync("probe", EXAMPLE, timeout=0.5)
    scoring.script = [(502, {}, b"container crashed")]
    with pytest.raises(ModelError):
        client.invoke_sync("probe", EXAMPLE)
    scoring.script = []
    scoring.traffic = {"v-v1digest": 0}  # no deployment takes traffic: 404, the endpoint lives
    mark = len(azure.arm_calls)
    with pytest.raises(NotReady, match="no deployment taking traffic") as not_ready:
        run(client, lambda: client.invoke("probe", EXAMPLE))
    assert not_ready.value.retry_after
    assert len(azure.arm_calls) - mark == 1  # ARM asked whether the endpoint is gone: no


def test_an_identity_without_the_read_action_still_gets_not_ready_not_access_denied(
    azure: Azure, scoring: Scoring
) -> None:
    """With the scoring URI given, a function's identity may hold only the score action:
    ARM's refusal cannot settle a 404, so the call's own finding (NotReady) stands; the
    readiness route's status says what is missing."""
    assert scoring.server is not None
    client = invoker(azure, AIAAS_AZUREML_SCORING_URI=scoring.server.url + "/score")
    scoring.traffic = {"v-v1digest": 0}
    azure.refuse_reads = True
    try:
        with pytest.raises(NotReady, match="ARM could not tell"):
            client.invoke_sync("probe", EXAMPLE)
        with pytest.raises(AccessDenied, match="onlineEndpoints/read"):
            run(client, lambda: client.status("probe"))
    finally:
        azure.refuse_reads = False


def test_status_is_arms_provisioning_state(azure: Azure, scoring: Scoring) -> None:
    client = invoker(azure)
    cases = [("Succeeded", {"v-a": 100}, DeploymentStatus.READY),
             ("Succeeded", {}, DeploymentStatus.CREATING),
             ("Creating", {}, DeploymentStatus.CREATING),
             ("Updating", {"v-a": 90, "v-b": 10}, DeploymentStatus.UPDATING),
             ("Deleting", {"v-a": 100}, DeploymentStatus.DELETING),
             ("Failed", {}, DeploymentStatus.FAILED),
             ("Canceled", {"v-a": 100}, DeploymentStatus.READY)]  # fmt: skip
    for state, traffic, expected in cases:
        azure.states[ENDPOINT], scoring.traffic = state, traffic
        assert run(client, lambda: client.status("probe")) is expected, state
    with pytest.raises(NotFound):
        run(client, lambda: client.status("never-deployed"))
    with pytest.raises(NotFound):
        client.invoke_sync("never-deployed", EXAMPLE)
    with pytest.raises(BadRequest):
        client.invoke_sync("../../other", EXAMPLE)


def test_a_deleted_endpoint_is_not_found_with_aad_token_and_not_ready_with_a_key(
    azure: Azure,
) -> None:
    """Its host stops resolving (here: its scoring port closes): with aad_token, ARM settles
    it (NotFound); a key-only function cannot ask, so it stays NotReady."""
    name = names.endpoint_name("gone", SETTINGS)
    scoring = azure.endpoint(name)
    assert scoring.server is not None
    uri = scoring.server.url + "/score"
    client = invoker(azure)
    keyed = invoker(azure, mode="key", AIAAS_AZUREML_KEY=KEY, AIAAS_AZUREML_SCORING_URI=uri)
    scoring.mode = "key"
    assert keyed.invoke_sync("gone", EXAMPLE).version == "v1digest"
    scoring.mode = "aad_token"
    assert client.invoke_sync("gone", EXAMPLE).version == "v1digest"  # its URI now cached
    azure.close(name)
    mark = len(azure.arm_calls)
    counted = CountingBudget(allowance=100)
    keyed.retry = type(keyed.retry)(budget=counted, base=0.01, cap=0.05)
    with pytest.raises(NotFound):
        client.invoke_sync("gone", EXAMPLE)
    with pytest.raises(NotFound):
        run(client, lambda: client.invoke("gone", EXAMPLE))
    with pytest.raises(NotReady, match="not reachable"):
        keyed.invoke_sync("gone", EXAMPLE)
    assert run(keyed, lambda: keyed.status("gone")) is DeploymentStatus.UNKNOWN
    # One ARM GET settles each aad_token call (the sync one after its connect error; the
    # async one finds no URI left to try); the key-only path asks ARM nothing and gives up
    # after its attempts, each a connect error, no back-off past its cap.
    assert azure.arm_calls[mark:] == [(name, ARM_API_VERSION)] * 2
    assert counted.calls == keyed.retry.max_attempts


class CountingBudget(RetryBudget):
    """A retry budget that counts the upstream calls it was told of (one per attempt)."""

    calls = 0

    def record(self, ok: bool) -> None:
        self.calls += 1
        super().record(ok)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"properties": "tok-secret-arm"}', "without a properties object (a str)"),
        (b'{"name": "tok-secret-arm"}', "without a properties object (missing)"),
        (b'["tok-secret-arm"]', "without a properties object (missing)"),
        (b'{"properties": {"traffic": ["tok-secret-arm"]}}', "traffic that is not a map"),
        (b'{"properties": {"traffic": {"v": "tok-secret-arm"}}}', "traffic that is not a map"),
        (b"<html>tok-secret-arm", "not JSON"),
    ],
)
def test_a_malformed_arm_200_is_never_echoed(azure: Azure, body: bytes, named: str) -> None:
    """ARM's 200 is never quoted in an error (neither its message nor ``cloud_text``): only
    what is missing or malformed, by key and type."""
    client = invoker(azure)
    with pytest.raises(ProviderError) as info:
        client._arm_answer(ENDPOINT, httpx.Response(200, content=body))
    assert named in info.value.message
    seen = [info.value.message, str(info.value), info.value.cloud_text or ""]
    assert not any("tok-secret" in text for text in seen)


def test_an_endpoint_recreated_elsewhere_is_found_again_through_arm(azure: Azure) -> None:
    """A cached scoring URI that no longer answers is read again from ARM, and the call goes
    to the new one (an endpoint deleted and created again has a new scoring port here)."""
    name = names.endpoint_name("moved", SETTINGS)
    azure.endpoint(name)
    client = invoker(azure)
    assert client.invoke_sync("moved", EXAMPLE).version == "v1digest"
    azure.close(name)
    azure.endpoint(name)
    assert client.invoke_sync("moved", EXAMPLE).version == "v1digest"
    azure.close(name)
    azure.endpoint(name)
    assert run(client, lambda: client.invoke("moved", EXAMPLE)).version == "v1digest"


def test_key_mode_sends_the_key_and_needs_it_and_the_scoring_uri(
    azure: Azure, scoring: Scoring
) -> None:
    assert scoring.server is not None
    uri = scoring.server.url + "/score"
    scoring.mode = "key"
    try:
        keyed = invoker(azure, mode="key", AIAAS_AZUREML_KEY=KEY, AIAAS_AZUREML_SCORING_URI=uri)
        mark = len(azure.arm_calls)
        assert run(keyed, lambda: keyed.invoke("probe", EXAMPLE)).version == "v1digest"
        assert scoring.calls[-1]["authorization"] == f"Bearer {KEY}"
        assert azure.arm_calls[mark:] == []  # a key-only function never calls ARM
        wrong = invoker(azure, mode="key", AIAAS_AZUREML_KEY="old", AIAAS_AZUREML_SCORING_URI=uri)
        with pytest.raises(AccessDenied, match="AIAAS_AZUREML_KEY"):
            wrong.invoke_sync("probe", EXAMPLE)
    finally:
        scoring.mode = "aad_token"
    with pytest.raises(ConfigError, match="AIAAS_AZUREML_KEY"):
        invoker(azure, mode="key", AIAAS_AZUREML_SCORING_URI=uri)
    with pytest.raises(ConfigError, match="AIAAS_AZUREML_SCORING_URI"):
        invoker(azure, mode="key", AIAAS_AZUREML_KEY=KEY)
    env = {k: v for k, v in azure.env().items() if not k.startswith("IDENTITY_")}
    with pytest.raises(ConfigError, match="IDENTITY_ENDPOINT"):
        AzureMLInvoker.from_config(config(), env)


def test_a_scoring_uri_from_the_environment_skips_arm_and_the_older_msi_protocol_works(
    azure: Azure, scoring: Scoring
) -> None:
    assert scoring.server is not None
    env = {k: v for k, v in azure.env().items() if not k.startswith("IDENTITY_")}
    env |= {"MSI_ENDPOINT": azure.identity_server.url + "/msi/token", "MSI_SECRET": MSI_SECRET,
            "AIAAS_AZUREML_SCORING_URI": scoring.server.url + "/score"}  # fmt: skip
    client = AzureMLInvoker.from_config(config(), env)
    arm_mark, asked_mark = len(azure.arm_calls), len(azure.identity.asked)
    assert client.invoke_sync("probe", EXAMPLE).version == "v1digest"
    assert azure.arm_calls[arm_mark:] == []
    assert azure.identity.asked[asked_mark:] == [(MSI_API_VERSION, SCORING_RESOURCE)]
    # status still asks ARM, with its own token
    assert run(client, lambda: client.status("probe")) is DeploymentStatus.READY


def test_the_control_planes_invoker_signs_with_its_credential(
    azure: Azure, scoring: Scoring
) -> None:
    """The control plane's smoke test: its azure-identity credential (here a stand-in with
    azure-core's get_token) signs ARM's GET and the pinned scoring call."""

    @dataclass
    class AccessToken:
        token: str
        expires_on: int

    class Credential:
        def __init__(self) -> None:
            self.scopes: list[str] = []

        def get_token(self, *scopes: str, **_kwargs: Any) -> AccessToken:
            self.scopes.extend(scopes)
            resource = scopes[0].removesuffix("/.default")
            return AccessToken(azure.identity.issue(resource), int(time.time()) + 3600)

    credential = Credential()
    scoring.traffic = {"v-v1digest": 100, "v-v2digest": 0}
    client = AzureMLInvoker.for_control_plane(
        SETTINGS, credential, arm_url=azure.arm_url, ca_bundle=str(azure.ca_bundle)
    )
    assert client.invoke_sync("probe", EXAMPLE, deployment="v-v2digest").version == "v2digest"
    assert credential.scopes == [azure.arm_url + "/.default", SCORING_RESOURCE + "/.default"]


# -- end to end, on the emulated Azure ----------------------------------------------------------
# The probe deployed once on emulators/azure.py (azure-ai-ml through its cloud override, the
# bundle in Azurite, the container entrypoint running it): real predictions through the
# scoring host, which checks the managed identity's tokens and maps the container's errors.
# The deploy is azure-ai-ml's own calls here, not the provider's (tests of its own do that):
# this module needs one aad_token endpoint named as the invoke path names it.


@dataclass
class Deployed:
    emulator: AzureEmulator
    settings: AzureMLSettings
    endpoint: str
    deployment: str
    version: str
    ml: Any

    def config(self, auth_mode: str = "aad_token") -> FunctionConfig:
        section = {**self.settings.__dict__, "auth_mode": auth_mode}
        return FunctionConfig("azureml", Path("."), AzureMLSettings.read(section))

    def invoker(self, **env: str) -> AzureMLInvoker:
        mode = env.pop("mode", "aad_token")
        return AzureMLInvoker.from_config(self.config(mode), {**self.emulator.env(), **env})

    def yaml(self) -> str:
        s = self.settings
        return (
            f"provider: azureml\nazureml:\n  subscription_id: {s.subscription_id}\n"
            f"  resource_group: {s.resource_group}\n  workspace: {s.workspace}\n"
            "  image: aiaas/server:test\n  instance_type: Standard_DS3_v2\n"
        )


def _done(poller: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):  # the SDK's progress dots
        return poller.result()


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory, probe_bundle: BuiltBundle
) -> Iterator[Deployed]:
    from azure.ai.ml.entities import (
        Environment,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        Model,
        OnlineRequestSettings,
    )

    with emulated_azure(tmp_path_factory.mktemp("azureml-e2e")) as emulator:
        settings = AzureMLSettings(
            emulator.subscription_id, emulator.resource_group, emulator.workspace
        )
        endpoint = names.endpoint_name("probe", settings)
        version = probe_bundle.manifest.version
        deployment = names.deployment_name(version)
        ml = ml_client(emulator)
        path = upload(emulator, probe_bundle.path, f"aiaas/{version}")
        _done(ml.online_endpoints.begin_create_or_update(
            ManagedOnlineEndpoint(name=endpoint, auth_mode="aad_token")
        ))  # fmt: skip
        _done(ml.online_deployments.begin_create_or_update(ManagedOnlineDeployment(
            name=deployment, endpoint_name=endpoint, instance_type=CPU_SKU, instance_count=1,
            model=Model(name=endpoint, version="1", type="custom_model", path=path),
            environment=Environment(name="aiaas-image", version="1", image="aiaas/server:test",
                                    inference_config=INFERENCE_CONFIG),
            request_settings=OnlineRequestSettings(max_concurrent_requests_per_instance=2),
            environment_variables={"AIAAS_PORT": "8080"},
        )))  # fmt: skip
        live = ml.online_endpoints.get(endpoint)
        live.traffic = {deployment: 100}
        _done(ml.online_endpoints.begin_create_or_update(live))
        yield Deployed(emulator, settings, endpoint, deployment, version, ml)


def test_emulated_a_real_prediction_its_version_and_request_id(deployed: Deployed) -> None:
    client = deployed.invoker()
    result = client.invoke_sync("probe", EXAMPLE, request_id="rid-azure-e2e")
    assert json.loads(result.body)["outputs"][0]["value"] == 6.0
    assert result.version == deployed.version
    asynced = run(client, lambda: client.invoke("probe", EXAMPLE, timeout=30))
    assert json.loads(asynced.body)["outputs"][0]["value"] == 6.0
    assert run(client, lambda: client.status("probe")) is DeploymentStatus.READY
    pinned = client.invoke_sync("probe", EXAMPLE, deployment=deployed.deployment)
    assert pinned.version == deployed.version
    calls = deployed.emulator.scoring_calls()[-3:]
    assert [c.status for c in calls] == [200, 200, 200]
    # one id from the function to the model: the server logs a failing request under it
    with pytest.raises(ModelError):
        client.invoke_sync(
            "probe", b'{"inputs": [{"value": 1, "fail": true}]}', request_id="rid-az"
        )
    deadline = time.monotonic() + 10
    while "request_id=rid-az" not in (
        output := deployed.emulator.container_output(deployed.endpoint, deployed.deployment)
    ):
        assert time.monotonic() < deadline, output[-2000:]
        time.sleep(0.05)


def test_emulated_revoked_tokens_are_fetched_again_once(deployed: Deployed) -> None:
    client = deployed.invoker()
    client.invoke_sync("probe", EXAMPLE)
    bearer = client.scoring_auth
    assert isinstance(bearer, ManagedIdentityBearer)
    deployed.emulator.revoke_tokens()
    assert json.loads(client.invoke_sync("probe", EXAMPLE).body)["outputs"][0]["value"] == 6.0
    assert bearer.refreshes == 1 and bearer.fetches == 2
    assert [c.status for c in deployed.emulator.scoring_calls()[-2:]] == [401, 200]
    deployed.emulator.revoke_tokens()  # ARM's token too: the status call refreshes its own
    assert run(client, lambda: client.status("probe")) is DeploymentStatus.READY


def test_emulated_container_errors_throttling_and_no_traffic(deployed: Deployed) -> None:
    client = deployed.invoker()
    with pytest.raises(InvalidInput) as invalid:  # our server's 422, through Azure's 424
        client.invoke_sync("probe", b'{"inputs": [{"value": 1}, {"value": "x"}]}')
    assert [(d.get("index"), d.get("field")) for d in invalid.value.details] == [(1, "value")]
    with pytest.raises(ModelError):
        client.invoke_sync("probe", b'{"inputs": [{"value": 1, "fail": true}]}')
    assert [c.status for c in deployed.emulator.scoring_calls()[-2:]] == [424, 424]
    deployed.emulator.fault(deployed.endpoint, 429)
    try:
        with pytest.raises(Throttled) as throttled:
            client.invoke_sync("probe", EXAMPLE, timeout=5)
        assert throttled.value.retry_after
    finally:
        deployed.emulator.clear_faults()
    early = names.endpoint_name("early", deployed.settings)  # no deployment yet
    ml = ml_client(deployed.emulator)  # a new credential: tokens may have been revoked
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    _done(ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name=early, auth_mode="aad_token")
    ))  # fmt: skip
    with pytest.raises(NotReady, match="no deployment taking traffic"):
        client.invoke_sync("early", EXAMPLE)
    assert run(client, lambda: client.status("early")) is DeploymentStatus.CREATING
    uri = client.describe_sync(early).scoring_uri or ""
    keyed = deployed.invoker(mode="key", AIAAS_AZUREML_KEY="k", AIAAS_AZUREML_SCORING_URI=uri)
    _done(ml.online_endpoints.begin_delete(early))  # its scoring port closes
    with pytest.raises(NotFound):
        client.invoke_sync("early", EXAMPLE)
    with pytest.raises(NotFound):
        run(client, lambda: client.status("early"))
    with pytest.raises(NotReady, match="not reachable"):  # a key cannot ask ARM
        keyed.invoke_sync("early", EXAMPLE)


def test_emulated_the_invoke_path_loads_no_azure_sdk_nor_pydantic(
    deployed: Deployed, tmp_path: Path
) -> None:
    """A fresh interpreter builds the invoke path from a packaged config, as a function's cold
    start does, and gets a real prediction: no azure.ai.ml, azure.identity, azure.core nor
    pydantic in sys.modules."""
    (tmp_path / "aiaas.json").write_text(
        json.dumps({"provider": "azureml", "azureml": dict(deployed.settings.__dict__)})
    )
    code = (
        "import json, sys\n"
        "from aiaas.packaged import function_config\n"
        "from adapters import get_invoker\n"
        f"invoker = get_invoker('azureml', function_config({str(tmp_path / 'aiaas.json')!r}))\n"
        f"result = invoker.invoke_sync('probe', {EXAMPLE!r})\n"
        "heavy = ('azure.ai.ml', 'azure.identity', 'azure.core', 'pydantic', 'msal')\n"
        "print(json.dumps([json.loads(result.body)['outputs'][0]['value'],\n"
        "                  [m for m in heavy if m in sys.modules]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **deployed.emulator.env()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [6.0, []]


# -- the function tier with provider: azureml -------------------------------------------------


@pytest.fixture(scope="module")
def function_project(
    deployed: Deployed, probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The probe's project with ``provider: azureml`` on the emulated workspace, and the
    bundle's manifest as a function carries it."""
    work = tmp_path_factory.mktemp("azureml-function")
    project = work / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(
        "model:\n  entrypoint: probe_model:Probe\n" + deployed.yaml()
    )
    manifest = work / MANIFEST_FILE
    manifest.write_text(probe_bundle.manifest.model_dump_json())
    return project, manifest


def test_emulated_the_azure_functions_entrypoint_answers_with_provider_azureml(
    deployed: Deployed, function_project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """functions.azure_functions as the Functions host calls it (the function AsgiFunctionApp
    registers, given an HttpRequest), its invoke path the managed identity's."""
    import azure.functions as func

    project, manifest = function_project
    key, record = create_key()
    monkeypatch.setenv("AIAAS_CONFIG", str(project / "aiaas.yaml"))
    monkeypatch.setenv("AIAAS_MANIFEST", str(manifest))
    monkeypatch.setenv("AIAAS_API_KEYS", str(record))
    sys.modules.pop("functions.azure_functions", None)
    try:
        module = importlib.import_module("functions.azure_functions")
        function = module.app.get_functions()[0].get_user_function()
        request = func.HttpRequest(
            method="POST", url="https://aiaas-fn.azurewebsites.net/predict",
            headers={"content-type": "application/json", "authorization": f"Bearer {key}",
                     "x-request-id": "az-fn-1"},
            body=b'{"inputs": [{"value": 4}]}', route_params={"route": "predict"},
        )  # fmt: skip
        response = asyncio.run(function(request, None))
    finally:
        sys.modules.pop("functions.azure_functions", None)
    assert response.status_code == 200, response.get_body()
    assert json.loads(response.get_body())["outputs"][0]["value"] == 8.0
    assert response.headers["x-request-id"] == "az-fn-1"
    assert deployed.emulator.scoring_calls()[-1].status == 200


# What a fresh interpreter in the unzipped package runs: the Functions worker's path (the
# package's .python_packages), function_app imported, one request through AsgiFunctionApp.
PACKAGED_CALL = """
import asyncio, json, logging, sys
sys.path.append(".python_packages/lib/site-packages")
import azure.functions as func
logging.getLogger("azure.functions.AsgiMiddleware").disabled = True  # lifespan cancelled at exit
import function_app
function = function_app.app.get_functions()[0].get_user_function()
request = func.HttpRequest(method="POST", url="https://aiaas-fn.azurewebsites.net/predict",
    headers={"content-type": "application/json", "authorization": "Bearer " + sys.argv[1]},
    body=b'{"inputs": [{"value": 5}]}', route_params={"route": "predict"})
response = asyncio.run(function(request, None))
heavy = ("azure.ai.ml", "azure.identity", "azure.core", "azure.storage", "msal", "pydantic")
print(json.dumps([response.status_code, json.loads(response.get_body()),
                  [m for m in heavy if m in sys.modules]]))
"""


@pytest.mark.package_index  # pip download of the package's wheels (cached after the first run)
def test_emulated_the_azure_package_holds_the_light_path_alone_and_answers(
    deployed: Deployed, function_project: tuple[Path, Path], tmp_path: Path
) -> None:
    """``aiaas function package --target azure`` with provider: azureml ships the invoke
    path's modules and no control plane (no provider, steps or SDK error mapping; no azure
    SDK but azure-functions), and the unzipped package, run by a fresh ``python -S`` as the
    Functions host would, answers a real prediction without loading any of them."""
    project, manifest_path = function_project
    config = load_config(project, env={})
    manifest = read_manifest_file(manifest_path)
    package = package_function(
        config, manifest, "azure", tmp_path / "fn.zip", wheel_cache=shared_wheel_cache()
    )
    with zipfile.ZipFile(package.path) as zf:
        names_in = zf.namelist()
        zf.extractall(tmp_path / "task")
    ours = {
        n[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for n in names_in
        if n.split("/")[0] in {"aiaas", "adapters", "functions"} and n.endswith(".py")
    }
    expected = {*imported_modules(["functions.azure_functions"]), *invoke_path_modules("azureml")}
    assert ours == expected
    assert "adapters.azureml.invoke" in ours
    assert not ours & {f"adapters.azureml.{m}" for m in ("provider", "steps", "errors")}
    site = packaging_of("azure").site_packages
    sdks = ("azure/ai/", "azure/identity/", "azure/core/", "azure/storage/", "msal/")
    assert not [n for n in names_in if n.removeprefix(site + "/").startswith(sdks)]
    assert f"{site}/azure/functions/__init__.py" in names_in
    key, record = create_key()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path),
           "AIAAS_API_KEYS": str(record), **deployed.emulator.env()}  # fmt: skip
    done = subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-S", "-B", "-c", PACKAGED_CALL, key],
        cwd=tmp_path / "task", env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    status, body, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert (status, body["outputs"][0]["value"], loaded) == (200, 10.0, [])
