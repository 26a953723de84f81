"""Generate ``arm-subset.json``: the ARM resource types ``iac/azure/template.json`` uses, each
at one apiVersion, with the properties a template may set, derived from the REST models of
the Azure SDK packages (MIT-licensed) that define that apiVersion.

Run by hand when a template takes a new resource type or apiVersion; ``iac/check_arm.py``
reads only the generated file, so the check needs none of these packages:

    pip install --no-deps --target /tmp/azsdk azure-mgmt-web==11.0.1 azure-mgmt-storage==25.3.0 \
        azure-mgmt-keyvault==14.1.0 azure-mgmt-containerregistry==15.0.0 \
        azure-mgmt-loganalytics==14.0.0 azure-mgmt-applicationinsights==4.1.0 \
        azure-mgmt-authorization==4.0.0 azure-common==1.1.28
    PYTHONPATH=/tmp/azsdk .venv/bin/python iac/azure/schemas/generate.py

(azure-common: the multi-version packages import ``azure.profiles``; azure-ai-ml, in the
project's environment, has the Azure ML workspace.) Two model styles
are read: the TypeSpec-generated ``rest_field`` models (their REST names and visibility:
read-only fields are left out, so a template that sets one fails) and the older msrest
models (``_attribute_map`` with flattened ``properties.x`` keys, ``_validation`` readonly).
A model with subtypes takes the union of their fields (polymorphic bodies).
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import importlib.metadata
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "arm-subset.json"

# ARM type -> (the models module, the PUT body's model, the package it came from)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "Microsoft.Storage/storageAccounts": (
        "azure.mgmt.storage.models", "StorageAccountCreateParameters", "azure-mgmt-storage"),
    "Microsoft.Storage/storageAccounts/blobServices/containers": (
        "azure.mgmt.storage.models", "BlobContainer", "azure-mgmt-storage"),
    "Microsoft.KeyVault/vaults": (
        "azure.mgmt.keyvault.models", "VaultCreateOrUpdateParameters", "azure-mgmt-keyvault"),
    "Microsoft.KeyVault/vaults/secrets": (
        "azure.mgmt.keyvault.models", "SecretCreateOrUpdateParameters", "azure-mgmt-keyvault"),
    "Microsoft.OperationalInsights/workspaces": (
        "azure.mgmt.loganalytics.models", "Workspace", "azure-mgmt-loganalytics"),
    "Microsoft.Insights/components": (
        "azure.mgmt.applicationinsights.v2020_02_02.models", "ApplicationInsightsComponent",
        "azure-mgmt-applicationinsights"),
    "Microsoft.ContainerRegistry/registries": (
        "azure.mgmt.containerregistry.models", "Registry", "azure-mgmt-containerregistry"),
    "Microsoft.MachineLearningServices/workspaces": (
        "azure.ai.ml._restclient.arm_ml_service.models", "Workspace", "azure-ai-ml"),
    "Microsoft.Web/serverfarms": ("azure.mgmt.web.models", "AppServicePlan", "azure-mgmt-web"),
    "Microsoft.Web/sites": ("azure.mgmt.web.models", "Site", "azure-mgmt-web"),
    "Microsoft.Authorization/roleDefinitions": (
        "azure.mgmt.authorization.v2022_04_01.models", "RoleDefinition",
        "azure-mgmt-authorization"),
    "Microsoft.Authorization/roleAssignments": (
        "azure.mgmt.authorization.v2022_04_01.models", "RoleAssignmentCreateParameters",
        "azure-mgmt-authorization"),
}  # fmt: skip

TEMPLATE_KEYS = ["type", "apiVersion", "name", "dependsOn", "condition", "scope", "copy",
                 "comments", "metadata"]  # fmt: skip
"""What every resource of a template may carry besides its body (ARM's template syntax)."""


def api_version(models: str) -> str:
    """The apiVersion a models package speaks: the client configuration's default."""
    package = models.rsplit(".models", 1)[0]
    if package.split(".")[-1].startswith("v20"):  # a multi-version package's folder
        return package.split(".")[-1][1:].replace("_", "-")
    config = importlib.import_module(package + "._configuration")
    source = Path(config.__file__ or "").read_text()
    marker = 'kwargs.pop("api_version", "'
    start = source.index(marker) + len(marker)
    return source[start : source.index('"', start)]


class Builder:
    """Turns model classes into schema nodes, each model once (``definitions``)."""

    def __init__(self) -> None:
        self.definitions: dict[str, Any] = {}

    def ref(self, cls: type) -> dict[str, Any]:
        key = f"{cls.__module__.split('.models')[0]}.{cls.__name__}"
        if key not in self.definitions:
            self.definitions[key] = {}  # placeholder: recursive models
            self.definitions[key] = self.model(cls)
        return {"$ref": key}

    def model(self, cls: type) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for one in [cls, *_subclasses(cls)]:
            tree = self.msrest(one) if hasattr(one, "_attribute_map") else self.typespec(one)
            _merge(fields, tree)
        return {"type": "object", "properties": fields}

    def typespec(self, cls: type) -> dict[str, Any]:
        module = sys.modules[cls.__module__]
        package = sys.modules[cls.__module__.rsplit(".", 1)[0]]
        hints = typing.get_type_hints(cls, globalns={**vars(module), "_models": package})
        with contextlib.suppress(TypeError):
            cls()  # the model's metaclass fills _attr_to_rest_field on first use
        fields: dict[str, Any] = {}
        for attr, field in cls._attr_to_rest_field.items():  # type: ignore[attr-defined]
            visibility = field._visibility
            if visibility and not {"create", "update"} & set(visibility):
                continue  # read-only
            fields[field._rest_name] = self.annotation(hints.get(attr, Any))
        return fields

    def annotation(self, hint: Any) -> dict[str, Any]:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in args if a is not type(None)]
            if any(a is str for a in options):
                return {"type": "string"}
            return self.annotation(options[0]) if len(options) == 1 else {}
        if origin is typing.Literal:
            return {"type": "string"}
        if origin in (list, typing.List):  # noqa: UP006
            return {"type": "array", "items": self.annotation(args[0]) if args else {}}
        if origin in (dict, typing.Dict):  # noqa: UP006
            return {"type": "object", "additionalProperties": self.annotation(args[1])}
        if isinstance(hint, type):
            if issubclass(hint, bool):
                return {"type": "boolean"}
            if issubclass(hint, (int, float)):
                return {"type": "number"}
            if issubclass(hint, (str, enum.Enum)):
                return {"type": "string"}
            if _is_model(hint):
                return self.ref(hint)
        return {}  # anything (datetime as text, Any, ...)

    def msrest(self, cls: type) -> dict[str, Any]:
        module = sys.modules[cls.__module__.rsplit(".", 1)[0]]
        readonly = {k for k, v in getattr(cls, "_validation", {}).items() if v.get("readonly")}
        fields: dict[str, Any] = {}
        for attr, spec in cls._attribute_map.items():  # type: ignore[attr-defined]
            if attr in readonly or not spec["key"]:
                continue
            path = [p.replace("\\.", ".") for p in spec["key"].replace("\\.", "\0").split(".")]
            path = [p.replace("\0", ".") for p in path]
            node = fields
            for part in path[:-1]:
                node = node.setdefault(part, {"type": "object", "properties": {}})["properties"]
            node[path[-1]] = self.msrest_type(spec["type"], module)
        return fields

    def msrest_type(self, name: str, module: Any) -> dict[str, Any]:
        if name.startswith("[") and name.endswith("]"):
            return {"type": "array", "items": self.msrest_type(name[1:-1], module)}
        if name.startswith("{") and name.endswith("}"):
            return {"type": "object", "additionalProperties": self.msrest_type(name[1:-1], module)}
        simple = {"str": "string", "bool": "boolean", "int": "number", "float": "number",
                  "long": "number"}  # fmt: skip
        if name in simple:
            return {"type": simple[name]}
        cls = getattr(module, name, None)
        if isinstance(cls, type) and hasattr(cls, "_attribute_map"):
            return self.ref(cls)
        return {}


def _is_model(cls: type) -> bool:
    """A REST model of either style (TypeSpec ``Model`` or msrest ``_attribute_map``)."""
    return hasattr(cls, "_attribute_map") or any(
        base.__name__ == "Model" and "model_base" in base.__module__ for base in cls.__mro__
    )


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _merge(into: dict[str, Any], fields: dict[str, Any]) -> None:
    for name, schema in fields.items():
        if name in into and "properties" in into[name] and "properties" in schema:
            _merge(into[name]["properties"], schema["properties"])
        else:
            into.setdefault(name, schema)


def main() -> int:
    """Write ``arm-subset.json``."""
    builder = Builder()
    resources = {}
    for arm_type, (models, model, package) in RESOURCES.items():
        module = importlib.import_module(models)
        cls = getattr(module, model)
        body = builder.model(cls)["properties"]
        body = {k: v for k, v in body.items() if k not in ("id", "type", "name")}
        version = importlib.metadata.version(package)
        resources[arm_type] = {
            "apiVersion": api_version(models),
            "source": f"{package} {version}: {models}.{model}",
            "properties": {**{k: {} for k in TEMPLATE_KEYS}, **body},
        }
    out = {
        "description": (
            "ARM resource types, each at one apiVersion, and the properties a template may set "
            "on them, generated by iac/azure/schemas/generate.py from the Azure SDK packages' "
            "REST models (MIT); read by iac/check_arm.py."
        ),
        "resourceTypes": resources,
        "definitions": builder.definitions,
    }
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{OUT}: {len(resources)} types, {len(builder.definitions)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
