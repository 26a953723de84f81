"""The emulated Azure that the Azure ML tests share: one :class:`AzureEmulator` per test module
(ARM + Azure ML over TLS, Azurite, the managed identity), its variables set in this process,
real clients pointed at it (azure-ai-ml's ``MLClient`` through its cloud override,
azure-storage-blob, httpx). The test-wide guard (tests/guarded_site/netguard.py) fails a test
that starts ``az`` or ``pwsh`` (azure-identity's CLI credentials), in every process.

Test modules import what they use: ``from azure_emulated import azure, ...`` (fixtures
included), so each module gets its own emulator and pytest-xdist keeps it on one worker.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from emulators import azurite
from emulators.azure import API_VERSIONS, AzureEmulator

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient

# Variables that steer azure-identity or azure-ai-ml: none may leak in from the machine.
AZURE_PREFIXES = ("AZURE_", "MSI_", "IDENTITY_", "AZUREML_", "IMDS_")
INFERENCE_CONFIG = {
    "liveness_route": {"port": 8080, "path": "/ping"},
    "readiness_route": {"port": 8080, "path": "/ready"},
    "scoring_route": {"port": 8080, "path": "/invocations"},
}
"""The model server's real routes, as a provider's environment declares them."""
CPU_SKU = "Standard_DS3_v2"  # the smallest SKU the SDK does not warn about


# -- the emulator -------------------------------------------------------------------------------
def skip_or_fail_unavailable() -> None:
    """Skip when Azurite cannot run here, unless every provider must run
    (``AIAAS_CONFORMANCE_REQUIRE=all``, as ``make test`` sets): then fail."""
    why = azurite.unavailable()
    if why is None:
        return
    if os.environ.get("AIAAS_CONFORMANCE_REQUIRE") == "all":
        pytest.fail(f"the emulated Azure cannot run: {why}", pytrace=False)
    pytest.skip(f"the emulated Azure cannot run: {why}")


@contextlib.contextmanager
def emulated_azure(workdir: Path, **options: Any) -> Iterator[AzureEmulator]:
    """An :class:`AzureEmulator` started in ``workdir`` (``options``: the emulator's), with no
    Azure variable of this machine left and the emulator's :meth:`~AzureEmulator.env` set in
    this process (so DefaultAzureCredential takes the managed identity, and providers find ARM,
    Blob and the CA) until it stops."""
    skip_or_fail_unavailable()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(AZURE_PREFIXES):
                mp.delenv(name)
        emulator = AzureEmulator(workdir, **options)
        emulator.start()
        try:
            for key, value in emulator.env().items():
                mp.setenv(key, value)
            yield emulator
        finally:
            emulator.stop()


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureEmulator]:
    """The module's emulated Azure, its variables set."""
    with emulated_azure(tmp_path_factory.mktemp("azure")) as emulator:
        yield emulator


# -- real clients -------------------------------------------------------------------------------
def credential() -> TokenCredential:
    """azure-identity's DefaultAzureCredential: with ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``
    set it takes the managed identity (no IMDS probe, no CLI)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def ml_client(emulator: AzureEmulator, cred: TokenCredential | None = None) -> MLClient:
    """azure-ai-ml's MLClient on the emulated workspace, through its cloud override (the
    provider's route); ``AZUREML_CURRENT_CLOUD``, which it sets, is put back."""
    from azure.ai.ml import MLClient

    url = emulator.arm_url
    before = os.environ.get("AZUREML_CURRENT_CLOUD")
    try:
        return MLClient(
            cred or credential(),
            emulator.subscription_id,
            emulator.resource_group,
            emulator.workspace,
            cloud=f"AiaasEmulated{url.rsplit(':', 1)[1]}",
            cloud_metadata={
                "azure_portal": url,
                "resource_manager": url + "/",
                "active_directory": url,
                "aml_resource_id": url,
                "storage_endpoint": "core.windows.net",
                "registry_discovery_endpoint": url,
            },
            connection_verify=str(emulator.ca_file),
            enable_telemetry=False,
            show_progress=False,
        )
    finally:
        if before is None:
            os.environ.pop("AZUREML_CURRENT_CLOUD", None)
        else:
            os.environ["AZUREML_CURRENT_CLOUD"] = before


def blob_service(emulator: AzureEmulator, cred: Any = None) -> BlobServiceClient:
    """azure-storage-blob on Azurite over TLS, with an Entra credential by default
    (``cred``: another credential, or the shared key as a dict)."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(
        emulator.blob_url, credential=cred or credential(), connection_verify=str(emulator.ca_file)
    )


def upload(emulator: AzureEmulator, files: Path, prefix: str) -> str:
    """Upload ``files`` (a file, or a folder's files) under ``prefix/`` in the workspace's
    default datastore; the model path to register: ``azureml://datastores/.../paths/prefix/``."""
    prefix = prefix.strip("/")
    with blob_service(emulator) as service:
        container = service.get_container_client(emulator.blob_container)
        items = [files] if files.is_file() else sorted(p for p in files.rglob("*") if p.is_file())
        for item in items:
            name = item.name if item == files else str(item.relative_to(files))
            container.upload_blob(f"{prefix}/{name}", item.read_bytes(), overwrite=True)
    return f"azureml://datastores/workspaceblobstore/paths/{prefix}/"


def arm(
    emulator: AzureEmulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    api_version: str | None = None,
    token: str | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    """One raw ARM request (``path`` under the workspace, e.g. ``/onlineEndpoints/x``), with a
    fresh ARM token unless ``token`` is given ("" sends none); the api-version is the one
    azure-ai-ml sends for that resource type unless given. ``body`` is sent as JSON;
    ``content``, raw bytes, instead."""
    if api_version is None:
        low = path.lower()
        kind = (
            "deployments"
            if "/deployments" in low
            else next((k for k in API_VERSIONS if low.startswith(f"/{k.lower()}")), "workspaces")
        )
        api_version = API_VERSIONS[kind][0]
    token = emulator.token() if token is None else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=str(emulator.ca_file)) as client:
        return client.request(
            method,
            f"{emulator.arm_url}{emulator.workspace_arm_id}{path}",
            params={"api-version": api_version} if api_version else None,
            json=body if content is None else None,
            content=content,
            headers=headers,
        )


def scoring_client(emulator: AzureEmulator, **kwargs: Any) -> httpx.Client:
    """An httpx client that trusts the emulator's CA (for scoring URIs)."""
    return httpx.Client(verify=str(emulator.ca_file), **kwargs)


def unique(prefix: str) -> str:
    """``prefix-<6 hex>``: a name no other test of the module uses."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
