"""The Azure template (iac/azure/template.json, ARM) and ``aiaas iac render --cloud azure``
(issue 19).

Nothing offline deploys ARM, so the template is checked three ways, each shown to catch a
planted mistake so that none passes silently:

- ``iac/check_arm.py``'s schema check (``make iac-check``): resource types, apiVersions and
  properties against ``iac/azure/schemas/arm-subset.json``, generated from the Azure SDK
  packages' REST models (a misspelled property, a read-only one, a wrong JSON type, an
  unknown apiVersion or type, an undeclared parameter and a broken file are reported);
- checkov ``--framework arm`` as ``iac/check_arm.py`` runs it (a real process under the
  network guard: a storage account that takes TLS 1.0, a check skipped without a reason and
  a broken file are reported; the committed template is clean in ``make iac-check``);
- the project's own rules, read from the template: the function's identity may only score
  (the custom role's one data action), storage takes no anonymous blob access and TLS 1.2
  at least, and the function's app settings are what the function tier reads (loaded
  through ``aiaas.config`` as a packaged function loads them).

Not shown offline (Azure only): that ARM accepts each resource as written (``az deployment
group what-if`` in the workflow), the role assignments' effect, Flex Consumption's start.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from iac_scripts import load_script, own_home
from typer.testing import CliRunner

from adapters.azureml import SPEC, AzureMLSettings, names
from adapters.azureml.iac import DERIVED, FREE, PARAMETERS_SCHEMA
from adapters.azureml.invoke import KEY_VARIABLE, SCORING_URI_VARIABLE
from adapters.iac import RenderOptions, cloud_of, iac_target
from aiaas.cli import app
from aiaas.config import load_config
from aiaas.errors import ConfigError
from functions.auth import KEYS_ENV

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "iac" / "azure" / "template.json"


check_arm = load_script(ROOT / "iac" / "check_arm.py")

SCORE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action"
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
IMAGE = "aiaasregistry.azurecr.io/aiaas-server:1.0"
RECORD = "k1:" + "ab" * 16 + ":" + "cd" * 32  # an API key record: <id>:<salt>:<sha256>


def load_template() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return loaded


def resources(template: dict[str, Any], arm_type: str) -> list[dict[str, Any]]:
    return [r for r in template["resources"] if r["type"] == arm_type]


# -- iac/check_arm.py: the schema check ------------------------------------------------------
def schema_problems(folder: Path) -> list[str]:
    problems: list[str] = check_arm.run_schema_check(folder, check_arm.arm_templates(folder))
    return problems


def test_the_committed_template_passes_the_schema_check() -> None:
    assert schema_problems(ROOT / "iac") == []
    schemas = json.loads(check_arm.SCHEMAS.read_text())
    # Every resource type of the template is in the vendored subset, at its apiVersion.
    used = {(r["type"], r["apiVersion"]) for r in load_template()["resources"]}
    assert used == {(t, s["apiVersion"]) for t, s in schemas["resourceTypes"].items()}


def test_the_workspace_schema_is_azure_ai_mls_api_version() -> None:
    """The Azure ML part of the subset comes from azure-ai-ml, which the project pins: its
    ARM client's apiVersion is the one the subset (and so the template) uses. (Read from the
    client's source: importing azure-ai-ml's models takes seconds.)"""
    spec = importlib.util.find_spec("azure.ai.ml")
    assert spec is not None and spec.origin is not None
    config = Path(spec.origin).parent / "_restclient/arm_ml_service/_configuration.py"
    version = re.search(r'kwargs\.pop\("api_version", "([^"]+)"\)', config.read_text())
    schemas = json.loads(check_arm.SCHEMAS.read_text())["resourceTypes"]
    workspace = schemas["Microsoft.MachineLearningServices/workspaces"]
    assert version and workspace["apiVersion"] == version[1]
    installed = importlib.metadata.version("azure-ai-ml")
    assert workspace["source"].startswith(f"azure-ai-ml {installed}:")


def test_planted_mistakes_fail_the_schema_check(tmp_path: Path) -> None:
    text = TEMPLATE.read_text()
    plants = {
        '"allowBlobPublicAccess"': '"allowBlobPublicAcess"',  # misspelled
        '"minTlsVersion"': '"minTLSVersion"',  # wrong case: ARM's names are camelCase
        '"apiVersion": "2025-11-01"': '"apiVersion": "2099-01-01"',  # the registry's
        '"httpsOnly": true': '"httpsOnly": "yes", "defaultHostName": "x"',  # type; read-only
        "parameters('logRetentionDays')": "parameters('logRetentionDay')",
        '"Microsoft.OperationalInsights/workspaces"': '"Microsoft.OperationalInsight/workspaces"',
    }
    for old, new in plants.items():
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "azure").mkdir()
    (tmp_path / "azure" / "template.json").write_text(text)
    (tmp_path / "azure" / "broken.json").write_text(TEMPLATE.read_text()[:-40])
    problems = schema_problems(tmp_path)
    expected = [
        "broken.json: not JSON",
        "storageAccounts.properties.allowBlobPublicAcess: not a settable property (did you "
        "mean allowBlobPublicAccess?)",
        "siteConfig.minTLSVersion: not a settable property (did you mean minTlsVersion?)",
        "registries: apiVersion '2099-01-01' is not 2025-11-01",
        "sites.properties.httpsOnly: 'yes' is not a boolean",
        "sites.properties.defaultHostName: not a settable property",
        "parameters('logRetentionDay') is named but not declared",
        "Microsoft.OperationalInsight/workspaces: not a resource type the schemas know (did "
        "you mean Microsoft.OperationalInsights/workspaces?)",
    ]
    for one in expected:
        assert sum(one in p for p in problems) >= 1, (one, problems)
    # Both storage accounts carry the misspelling; nothing else is reported.
    assert len(problems) == len(expected) + 1, problems


# -- checkov (iac/check_arm.py) ----------------------------------------------------------------
def test_checkov_fails_its_planted_mistakes(tmp_path: Path) -> None:
    """checkov --framework arm as iac/check_arm.py runs it (a real process, under the network
    guard: it must not fetch), on the template's storage account with TLS 1.0 allowed and a
    skip whose reason is gone, beside a file that no longer parses (checkov exits 0 on that:
    the script reads its report). make iac-check shows the committed template clean."""
    template = load_template()
    storage = resources(template, "Microsoft.Storage/storageAccounts")[0]
    storage["properties"]["minimumTlsVersion"] = "TLS1_0"
    skips = storage["metadata"]["checkov"]
    skips[0] = skips[0].split(":", 2)[0] + ":" + skips[0].split(":", 2)[1]  # no reason
    assert skips[0] == "checkov:skip=CKV_AZURE_35", skips[0]
    small = {k: v for k, v in template.items() if k != "resources"} | {"resources": [storage]}
    (tmp_path / "azure").mkdir()
    (tmp_path / "azure" / "template.json").write_text(json.dumps(small, indent=1))
    (tmp_path / "azure" / "broken.json").write_text(json.dumps(small)[:-40])
    r = subprocess.run(
        [sys.executable, str(ROOT / "iac" / "check_arm.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=own_home(tmp_path),
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    sections: dict[str, list[str]] = {}
    current = ""
    for line in r.stdout.splitlines():
        if line.startswith("  "):
            sections[current].append(line.strip())
        else:
            current = line.split(":", 1)[0]
            sections[current] = []
    checkov = sections["checkov-arm"]
    assert any("CKV_AZURE_44" in p for p in checkov), checkov  # TLS 1.2
    assert any("CKV_AZURE_35 is skipped without a reason" in p for p in checkov), checkov
    assert "checkov could not parse 1 file(s)" in checkov, checkov
    assert "azure/broken.json: checkov checked no resource of it" in checkov, checkov
    assert len(checkov) == 4, checkov
    assert sections["arm-schema"] == [p for p in sections["arm-schema"] if "broken.json" in p]


# -- the project's own rules, read from the template ------------------------------------------
def test_the_functions_identity_may_only_score() -> None:
    template = load_template()
    (role,) = resources(template, "Microsoft.Authorization/roleDefinitions")
    (permissions,) = role["properties"]["permissions"]
    assert permissions["dataActions"] == [SCORE]
    assert permissions["notActions"] == permissions["notDataActions"] == []
    # Actions: none, or reading the endpoint while the function has no scoring URI.
    assert permissions["actions"] == "[variables('scoreActions')]"
    assert template["variables"]["scoreActions"] == (
        "[if(empty(parameters('scoringUri')), createArray('Microsoft.MachineLearningServices/"
        "workspaces/onlineEndpoints/read'), createArray())]"
    )
    assert role["condition"] == "[equals(parameters('authMode'), 'aad_token')]"
    function_principal = "reference(resourceId('Microsoft.Web/sites', variables('functionAppName'))"
    given = {
        (a["scope"], a["properties"]["roleDefinitionId"])
        for a in resources(template, "Microsoft.Authorization/roleAssignments")
        if function_principal in a["properties"]["principalId"]
    }
    workspace = (
        "[format('Microsoft.MachineLearningServices/workspaces/{0}', parameters('workspaceName'))]"
    )
    assert given == {
        # the score role at the workspace: the endpoint is aiaas deploy's, created later
        (workspace,
         "[resourceId('Microsoft.Authorization/roleDefinitions', variables('scoreRoleGuid'))]"),
        # Storage Blob Data Owner on its own host storage (AzureWebJobsStorage by identity)
        ("[format('Microsoft.Storage/storageAccounts/{0}', variables('functionStorageName'))]",
         "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
         "'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')]"),
        # Key Vault Secrets User for its Key Vault references
        ("[format('Microsoft.KeyVault/vaults/{0}', variables('keyVaultName'))]",
         "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
         "'4633458b-17de-408a-b874-0445c86b69e6')]"),
    }  # fmt: skip


def test_storage_takes_no_anonymous_access_and_tls_1_2() -> None:
    """checkov's ARM rules have no check of ``allowBlobPublicAccess``: the project's."""
    accounts = resources(load_template(), "Microsoft.Storage/storageAccounts")
    assert len(accounts) == 2
    for account in accounts:
        props = account["properties"]
        assert props["allowBlobPublicAccess"] is False
        assert props["allowSharedKeyAccess"] is False
        assert props["minimumTlsVersion"] == "TLS1_2"
        assert props["supportsHttpsTrafficOnly"] is True
    for container in resources(
        load_template(), "Microsoft.Storage/storageAccounts/blobServices/containers"
    ):
        assert container["properties"]["publicAccess"] == "None"


def test_the_app_settings_are_what_the_function_tier_reads(tmp_path: Path) -> None:
    """The template's app settings, their expressions evaluated for one deployment, loaded
    through aiaas.config as the packaged function loads its config and overrides: the
    function runs provider azureml with the template's workspace whatever the packaged file
    said."""
    template = load_template()
    values = {
        "[subscription().subscriptionId]": SUBSCRIPTION,
        "[resourceGroup().name]": "my-rg",
        "[parameters('workspaceName')]": "ws-from-template",
        "[parameters('bundlePrefix')]": "aiaas",
        "[parameters('authMode')]": "aad_token",
        "[parameters('deploymentName')]": "minilm",
    }
    settings = {s["name"]: s["value"] for s in template["variables"]["aiaasSettings"]}
    env = {k: values[v] for k, v in settings.items() if v in values} | {
        "AIAAS_PROVIDER": settings["AIAAS_PROVIDER"]
    }
    assert set(env) == {
        "AIAAS_PROVIDER", "AIAAS_DEPLOYMENT", "AIAAS_AZUREML__SUBSCRIPTION_ID",
        "AIAAS_AZUREML__RESOURCE_GROUP", "AIAAS_AZUREML__WORKSPACE", "AIAAS_AZUREML__PREFIX",
        "AIAAS_AZUREML__AUTH_MODE",
    }  # fmt: skip
    # The hashes, from Key Vault.
    assert "'@Microsoft.KeyVault(VaultName={0};SecretName=aiaas-api-keys)'" in settings[KEYS_ENV]
    # The scoring URI and key (optional) by the names the invoke path reads.
    site = resources(template, "Microsoft.Web/sites")[0]["properties"]["siteConfig"]
    assert f"'{SCORING_URI_VARIABLE}'" in site["appSettings"]
    assert f"'{KEY_VARIABLE}'" in site["appSettings"]
    assert SCORING_URI_VARIABLE in SPEC.invoke_environment
    folder = project(tmp_path, workspace="ws-in-the-file")
    raw = yaml.safe_load((folder / "aiaas.yaml").read_text())
    (folder / "aiaas.yaml").write_text(yaml.safe_dump(raw | {"provider": "local"}))
    cfg = load_config(folder, env=env)
    assert cfg.provider == "azureml"
    light = AzureMLSettings.read(cfg.provider_sections()["azureml"])
    assert (light.subscription_id, light.resource_group, light.workspace) == (
        SUBSCRIPTION, "my-rg", "ws-from-template",
    )  # fmt: skip
    assert (light.prefix, light.auth_mode) == ("aiaas", "aad_token")


# -- aiaas iac render --cloud azure -----------------------------------------------------------
def project(tmp_path: Path, **azureml: Any) -> Path:
    """A project whose aiaas.yaml drives the azureml provider."""
    section = {
        "subscription_id": SUBSCRIPTION,
        "resource_group": "my-rg",
        "workspace": "my-workspace",
        "region": "westeurope",
        "image": IMAGE,
        "instance_type": "Standard_DS3_v2",
    } | azureml
    config = {
        "model": {"name": "minilm", "entrypoint": "model:Model"},
        "provider": "azureml",
        "azureml": section,
    }
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / "aiaas.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_rendered_parameters_are_the_templates_and_the_providers_names(tmp_path: Path) -> None:
    folder = project(tmp_path, blob_container="models", prefix="team-a")
    out = tmp_path / "params.json"
    result = CliRunner().invoke(
        app,
        ["iac", "render", "-c", str(folder), "-o", str(out), "--set", "maximumInstanceCount=10"],
        env={KEYS_ENV: RECORD},
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert out.stat().st_mode & 0o777 == 0o600  # it holds the keys' hashes
    document = json.loads(out.read_text())
    assert document["$schema"] == PARAMETERS_SCHEMA and document["contentVersion"] == "1.0.0.0"
    params = {k: v["value"] for k, v in document["parameters"].items()}
    template_params = load_template()["parameters"]
    assert set(params) <= set(template_params)
    # Every parameter is derived from aiaas.yaml, set by hand, or the keys'.
    assert set(template_params) == DERIVED | FREE | {"location", "apiKeyHashes"}
    assert set(params) >= DERIVED
    assert all("defaultValue" in p for k, p in template_params.items() if k not in DERIVED)
    # The provider's own names, from the same aiaas.yaml.
    cfg = load_config(folder)
    settings = cfg.provider_settings("azureml", _section())
    assert cloud_of("azureml") == "azure"
    assert params["workspaceName"] == settings.workspace
    assert params["deploymentName"] == "minilm"
    assert params["endpointName"] == names.endpoint_name("minilm", settings)
    assert params["endpointName"] == f"minilm-{names.project_hash(settings)}"
    assert params["registryName"] == "aiaasregistry" == IMAGE.split(".", 1)[0]
    assert params["blobContainer"] == settings.blob_container == "models"
    assert params["bundlePrefix"] == settings.prefix == "team-a"
    assert params["authMode"] == settings.auth_mode == "aad_token"
    assert params["location"] == settings.region == "westeurope"
    assert params["maximumInstanceCount"] == 10  # an int, as the template's parameter
    assert params["apiKeyHashes"] == RECORD
    assert template_params["apiKeyHashes"]["type"] == "securestring"
    assert "az deployment group create --subscription " + SUBSCRIPTION in result.stderr


def _section() -> Any:
    from adapters.azureml.settings import AzureMLSection

    return AzureMLSection


def test_render_refuses_what_the_template_cannot_follow(tmp_path: Path) -> None:
    azure = iac_target("azure")
    cfg = load_config(project(tmp_path, image="docker.io/library/aiaas-server:1.0"))
    with pytest.raises(ConfigError, match="not in an Azure Container Registry"):
        azure.render(cfg, RenderOptions(deployment="minilm"))
    cfg = load_config(project(tmp_path))
    cases = {
        "--set workspaceName: comes from aiaas.yaml": {"values": {"workspaceName": "x"}},
        "--set apiKeyHashes: comes from `aiaas keys`": {"values": {"apiKeyHashes": "x"}},
        "--set nope: not a parameter of iac/azure/template.json": {"values": {"nope": "x"}},
        "--set functionMemoryMB=big: a whole number": {"values": {"functionMemoryMB": "big"}},
        "--python 3.13": {"python": "3.13"},
        "--arch arm64: Flex Consumption runs x86_64 only": {"arch": "arm64"},
    }
    for expected, options in cases.items():
        with pytest.raises(ConfigError, match=re.escape(expected)):
            azure.render(cfg, RenderOptions(deployment="minilm", **options))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="gives Azure ML endpoint"):
        azure.render(cfg, RenderOptions(deployment="a-deployment-name-far-too-long"))
    # Key mode: the function needs the scoring URI; render says how to get it.
    cfg = load_config(project(tmp_path, auth_mode="key"))
    rendered = azure.render(cfg, RenderOptions(deployment="minilm"))
    assert rendered.parameters["authMode"] == "key"
    assert any("aiaas-endpoint-key" in note and "scoringUri" in note for note in rendered.notes)
