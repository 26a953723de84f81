"""The ``azureml`` provider under the conformance suite, against the emulated Azure.

:class:`emulators.azure.AzureEmulator` stands in for ARM and Azure ML's control plane (over
TLS, every call with a managed-identity token), Azurite for the workspace's blob storage, and
each endpoint's scoring host runs every deployment's bundle through the container entrypoint
with Azure ML's layout (see emulators/azure.py for where it differs from Azure). What the
provider wrote is counted at the emulators (every ARM write, and every blob with its ETag),
and which versions still run is read from ARM's deployment list and the running containers,
not from the provider. Throttling is the scoring host answering 429, as Azure does past
``2 x max_concurrent_requests_per_instance x instances`` requests in flight.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Hashable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from adapters.azureml import names
from adapters.azureml.provider import AzureMLProvider
from adapters.azureml.settings import AzureMLSection
from adapters.base import Provider
from conformance.harness import Harness, register
from emulators import azurite
from emulators.azure import AzureEmulator
from emulators.azurite import ACCOUNT, ACCOUNT_KEY

AZURE_PREFIXES = ("AZURE_", "MSI_", "IDENTITY_", "AZUREML_", "IMDS_")
IMAGE = "aiaasregistry.azurecr.io/aiaas-server:1.0"
CPU_SKU = "Standard_DS3_v2"  # the emulated container runs the CPU build here
DEPLOYMENTS_API = "2023-04-01-preview"


def azureml_yaml(emulator: AzureEmulator, prefix: str) -> str:
    """An ``azureml:`` section for the emulated workspace (a CPU SKU), polling fast, with
    Azure's in-flight bound (2 x 2 per instance) within the server's queue of 4."""
    return (
        "azureml:\n"
        f"  subscription_id: {emulator.subscription_id}\n"
        f"  resource_group: {emulator.resource_group}\n"
        f"  workspace: {emulator.workspace}\n"
        f"  region: {emulator.region}\n"
        f"  image: {IMAGE}\n  instance_type: {CPU_SKU}\n  prefix: {prefix}\n"
        "  max_concurrent_requests_per_instance: 2\n"
        "  poll_interval_s: 0.05\n  deploy_timeout_s: 120\n"
    )


@register
class AzureMLHarness(Harness):
    """``provider: azureml`` against the emulated ARM, Azure ML, Azurite and identity."""

    name = "azureml"
    azure: AzureEmulator

    @classmethod
    def unavailable(cls) -> str | None:
        return azurite.unavailable()

    def start(self) -> None:
        for variable in list(os.environ):  # nothing of this machine's Azure may steer a client
            if variable.startswith(AZURE_PREFIXES):
                self._saved_env.setdefault(variable, os.environ.pop(variable))
        self.azure = AzureEmulator(self.workdir / "azure")
        self.azure.start()
        for key, value in self.azure.env().items():
            self.setenv(key, value)

    def config_yaml(self) -> str:
        return (
            "provider: azureml\n"
            + azureml_yaml(self.azure, "conformance")
            # a small queue and no waiting for room, as the local harness (same server)
            + "server:\n  max_queue_size: 4\n  queue_wait_ms: 0\n"
        )

    def _blobs(self) -> tuple[tuple[str, str], ...]:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient(
            self.azure.blob_url,
            credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
            connection_verify=str(self.azure.ca_file),
        ) as service:
            container = service.get_container_client(self.azure.blob_container)
            return tuple(sorted((b.name, str(b.etag)) for b in container.list_blobs()))

    def writes(self) -> Hashable:
        return tuple(self.azure.writes()), self._blobs()

    def running_versions(self, name: str) -> set[str]:
        endpoint = names.endpoint_name(name, self._settings())
        url = (
            f"{self.azure.arm_url}{self.azure.workspace_arm_id}/onlineEndpoints/{endpoint}"
            "/deployments"
        )
        with httpx.Client(verify=str(self.azure.ca_file)) as client:
            answer = client.get(
                url,
                params={"api-version": DEPLOYMENTS_API},
                headers={"Authorization": f"Bearer {self.azure.token()}"},
            )
        listed = answer.json().get("value", []) if answer.status_code == 200 else []
        versions = {names.version_of(d["name"]) for d in listed}
        versions |= {c.version for c in self.azure.containers() if c.endpoint.lower() == endpoint}
        return {v for v in versions if v}

    @contextlib.contextmanager
    def throttled(self, name: str) -> Iterator[None]:
        endpoint = names.endpoint_name(name, self._settings())
        self.azure.fault(endpoint, 429)
        try:
            yield
        finally:
            self.azure.clear_faults()

    def foreign(self, name: str, bundle: Path) -> AbstractContextManager[None]:
        # Another project in the same workspace: another prefix, so another project tag and
        # another endpoint name (the hash covers the prefix).
        return self.another_projects_deployment(name, bundle)

    def _settings(self) -> AzureMLSection:
        return self.config.provider_settings("azureml", AzureMLSection)

    def clients_closed(self, provider: Provider) -> bool:
        assert isinstance(provider, AzureMLProvider)
        return not provider.clients_open

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if hasattr(self, "azure"):
                self.azure.stop()
