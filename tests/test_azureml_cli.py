"""``provider: azureml`` end to end, as a user drives it: the ``aiaas`` command in a shell
(deploy, status, invoke, logs, a dry run, delete) against the emulated Azure (ARM and Azure ML
over TLS, Azurite, the managed identity). The emulators run in this process; each ``aiaas``
process reaches them through the variables ``aiaas emulate azure`` prints
(``AIAAS_AZURE_ARM_URL``, ``AIAAS_AZURE_CA_BUNDLE``, ``AIAAS_AZURE_BLOB_URL``,
``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``), and azure-identity's default chain takes the
managed identity from them, as it would on an Azure host."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from azure_emulated import azure
from conformance.harnesses.azureml import azureml_yaml
from conftest import PROJECTS, aiaas_in_shell

from emulators.azure import AzureEmulator

__all__ = ["azure"]  # a fixture, used by name

MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
SERVER_YAML = "server:\n  max_queue_size: 8\n"  # >= 2 x max_concurrent_requests_per_instance


@pytest.fixture(scope="module")
def project(azure: AzureEmulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe project with ``provider: local`` in its file: ``--provider azureml`` switches
    it to Azure ML, whose section sits beside."""
    root = tmp_path_factory.mktemp("azureml-cli") / "probe"
    shutil.copytree(PROJECTS / "probe", root)
    yaml = MODEL_YAML + "provider: local\n" + SERVER_YAML + azureml_yaml(azure, "cli")
    (root / "aiaas.yaml").write_text(yaml)
    return root


def aiaas(
    azure: AzureEmulator, project: Path, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """``aiaas <args> --provider azureml`` from a shell holding only the emulated cloud's
    variables."""
    env = {**azure.env()}
    return aiaas_in_shell(project, [*args, "--provider", "azureml"], env, ok=ok)


def test_deploy_status_invoke_logs_delete_from_the_cli(azure: AzureEmulator, project: Path) -> None:
    deployed = aiaas(azure, project, "deploy")
    assert "probe" in deployed.stdout
    assert "..." not in deployed.stdout  # azure-ai-ml's progress dots stay off the terminal
    endpoint = next(c.endpoint for c in azure.containers())
    assert endpoint.startswith("probe-")  # the deployment's name and the project's hash
    assert sum(azure.endpoint_traffic(endpoint).values()) == 100

    status = aiaas(azure, project, "status", "probe")
    assert "ready" in status.stdout and "azureml" in status.stdout

    answer = aiaas(azure, project, "invoke", "probe", "-d", '{"inputs": [{"value": 21}]}')
    body = json.loads(answer.stdout)
    assert body["outputs"][0]["value"] == 42.0 and body["model"] == "probe"
    served = [c for c in azure.scoring_calls() if c.status == 200]
    assert served and served[-1].endpoint == endpoint  # through the scoring host, not around

    logs = aiaas(azure, project, "logs", "probe")
    assert logs.stdout.strip()  # the container's own output, read with getLogs

    writes = len(azure.writes())
    dry = aiaas(azure, project, "deploy", "--dry-run")
    assert "keep" in dry.stdout and len(azure.writes()) == writes

    deleted = aiaas(azure, project, "delete", "probe")
    assert "probe" in deleted.stdout
    assert not azure.containers()
    gone = aiaas(azure, project, "status", "probe", ok=False)
    assert gone.returncode == 1 and "probe" in gone.stdout + gone.stderr
