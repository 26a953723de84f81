"""The Azure template (``iac/azure/template.json``, ARM) and its parameters, rendered from the
``azureml:`` section by the provider's own rules (no Azure SDK).

What comes from ``aiaas.yaml`` (never set by hand, so the template and the provider agree):

- ``workspaceName``: ``azureml.workspace``; the deployment's resource group and subscription
  are ``azureml.resource_group`` and ``subscription_id`` (``az deployment group create
  --subscription ... -g ...``: the notes say so; the template reads them back as
  ``resourceGroup()`` and ``subscription()`` for the function's settings);
- ``location``: ``azureml.region`` when set (else the resource group's, the template's
  default);
- ``deploymentName`` (the function's ``AIAAS_DEPLOYMENT``) and ``endpointName``: the
  endpoint ``aiaas deploy`` creates for it (:func:`.names.endpoint_name`:
  ``<deployment>-<project hash>``);
- ``registryName``: the registry of ``azureml.image`` (``<name>.azurecr.io/...``), created as
  the workspace's registry (the endpoint's identity pulls from it with the ``AcrPull`` Azure
  ML gives it);
- ``blobContainer``: ``azureml.blob_container`` (empty: the default datastore's);
  ``bundlePrefix``: ``azureml.prefix``; ``authMode``: ``azureml.auth_mode``;
- ``pythonVersion``: the Python the function zip was packaged for (``--python``);
- ``apiKeyHashes``: the API keys' salted hashes (``aiaas iac render`` adds them), stored in
  Key Vault as ``aiaas-api-keys``.

The parameter file is ARM's (``deploymentParameters.json``), which ``az deployment group
create --parameters @file`` and ``what-if`` read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from adapters.azureml import names
from adapters.iac import IacTarget, Rendered, RenderOptions, refuse_unsettable
from aiaas.errors import ConfigError

if TYPE_CHECKING:
    from aiaas.config import ProjectConfig

PARAMETERS_SCHEMA = (
    "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"
)
RUNTIMES = ("3.11", "3.12")
"""The Python versions the template's ``pythonVersion`` takes (Flex Consumption's)."""
ARCH = "x86_64"
"""Flex Consumption runs Linux on x86_64 only."""

_REGISTRY = re.compile(r"^(?P<name>[A-Za-z0-9]{5,50})\.azurecr\.(io|cn|us)/")

FREE = frozenset(
    {
        "scoringUri",
        "functionMemoryMB",
        "maximumInstanceCount",
        "storageSku",
        "logRetentionDays",
        "deployerPrincipalId",
        "deployerPrincipalType",
    }
)
"""Template parameters ``aiaas.yaml`` does not hold (``aiaas iac render --set``)."""
DERIVED = frozenset(
    {
        "workspaceName", "deploymentName", "endpointName", "registryName", "blobContainer",
        "bundlePrefix", "authMode", "pythonVersion",
    }
)  # fmt: skip
"""Template parameters rendered from ``aiaas.yaml`` (every render writes them); ``location``
too when ``azureml.region`` is set."""


def arm_parameters(parameters: Mapping[str, str | int]) -> str:
    """ARM's parameter file: ``{"$schema", "contentVersion", "parameters": {name: {value}}}``,
    which ``az deployment group create --parameters @file`` reads."""
    document = {
        "$schema": PARAMETERS_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {name: {"value": value} for name, value in parameters.items()},
    }
    return json.dumps(document, indent=2) + "\n"


def registry_name(image: str) -> str:
    """The Azure Container Registry of ``image`` (``<name>.azurecr.io/...``); a ConfigError
    for an image elsewhere (the template creates the workspace's registry under this name)."""
    match = _REGISTRY.match(image)
    if match is None:
        raise ConfigError(
            f"azureml.image: {image} is not in an Azure Container Registry "
            "(<registry>.azurecr.io/<repository>:<tag>); the template creates the workspace's "
            "registry, where the endpoint's identity may pull: push the image there"
        )
    return match["name"]


_INTEGERS = frozenset({"functionMemoryMB", "maximumInstanceCount", "logRetentionDays"})


def render(config: ProjectConfig, options: RenderOptions) -> Rendered:
    """The template's parameters for ``config``'s ``azureml:`` section and function."""
    from adapters.azureml.settings import AzureMLSection

    settings = config.provider_settings("azureml", AzureMLSection)
    endpoint = names.endpoint_name(options.deployment, settings)
    if options.python not in RUNTIMES:
        raise ConfigError(
            f"--python {options.python}: Flex Consumption here takes {', '.join(RUNTIMES)}"
        )
    if options.arch not in (None, ARCH):
        raise ConfigError(f"--arch {options.arch}: Flex Consumption runs {ARCH} only")
    parameters: dict[str, str | int] = {
        "workspaceName": settings.workspace,
        "deploymentName": options.deployment,
        "endpointName": endpoint,
        "registryName": registry_name(settings.image),
        "blobContainer": settings.blob_container or "",
        "bundlePrefix": settings.prefix,
        "authMode": settings.auth_mode,
        "pythonVersion": options.python,
    }
    if settings.region:
        parameters["location"] = settings.region
    if options.api_keys is not None:
        parameters["apiKeyHashes"] = options.api_keys
    origins = dict.fromkeys(DERIVED | {"location"}, "comes from aiaas.yaml: change it there")
    origins["apiKeyHashes"] = "comes from `aiaas keys` (AIAAS_API_KEYS)"
    refuse_unsettable(options.values, FREE, origins, "iac/azure/template.json")
    for name, value in options.values.items():
        if name in _INTEGERS:
            if not value.isdigit():
                raise ConfigError(f"--set {name}={value}: a whole number")
            parameters[name] = int(value)
        else:
            parameters[name] = value
    group = f"--subscription {settings.subscription_id} -g {settings.resource_group}"
    notes = [
        f"deploy it in resource group {settings.resource_group}: az deployment group create "
        f"{group} --template-file iac/azure/template.json --parameters @<this file>",
    ]
    if options.function_zip is not None:
        if not options.function_zip.is_file():
            raise ConfigError(f"--function-zip {options.function_zip}: no such file")
        notes.append(
            f"then the function's code: az functionapp deployment source config-zip {group} "
            f"-n <the functionAppName output> --src {options.function_zip}"
        )
    show = (
        f"az ml online-endpoint show -n {endpoint} -g {settings.resource_group} "
        f"-w {settings.workspace} --query scoring_uri -o tsv"
    )
    if settings.auth_mode == "key" and not options.values.get("scoringUri"):
        notes.append(
            "azureml.auth_mode key: after the first aiaas deploy, put the endpoint's key in "
            "Key Vault as aiaas-endpoint-key and render again with --set scoringUri=<its "
            f"scoring URI> ({show}; a key-only function cannot read it from the endpoint)"
        )
    elif not options.values.get("scoringUri"):
        notes.append(
            "no scoringUri: the function reads it from the endpoint, so its role also holds "
            "onlineEndpoints/read; after aiaas deploy, --set scoringUri=<the endpoint's "
            f"scoring URI> ({show}) leaves only the score action"
        )
    return Rendered({k: str(v) for k, v in parameters.items()}, notes, arm_parameters(parameters))


TARGET = IacTarget(
    cloud="azure",
    provider="azureml",
    template="azure/template.json",
    parameter_format=(
        'ARM parameter file, {"$schema": ..., "parameters": {name: {"value": ...}}} '
        "(az deployment group create --parameters @file)"
    ),
    free_parameters=FREE,
    secret_parameter="apiKeyHashes",
    render=render,
)
"""The Azure target of :mod:`adapters.iac`."""
