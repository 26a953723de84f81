"""How aiaas names and tags what it creates on Azure ML (shared by both halves; stdlib only,
the invoke path imports it).

- the **online endpoint** is ``<deployment>-<project hash>``: Azure ML endpoint names are
  unique per *region*, not per workspace, so two projects (or workspaces) deploying ``iris``
  in one region must not collide; the hash is 6 hex digits of
  ``<subscription>/<resource group>/<workspace>/<prefix>`` (:func:`project_hash`);
- each **online deployment** (one per version and deployment settings) is
  ``v-<the bundle's version>-<settings hash>``, cut to fit;
- the **model** is registered as ``<endpoint>`` at version ``<the bundle's version>``, the
  **environment** (the one image) as ``aiaas-image`` at a version naming the image;
- everything carries the tags :data:`PROJECT_TAG` (the prefix), :data:`DEPLOYMENT_TAG` and
  :data:`VERSION_TAG`; ``list`` shows only endpoints tagged with this project.

Names follow Azure's rule for endpoints and deployments: a letter first, 3-32 characters,
letters, digits and single dashes, not ending with a dash ("Manage and increase quotas ...
for Azure Machine Learning": endpoint name rules). They are checked before any call: the
SDK's own check runs only after it has written the environment and the model.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from aiaas.errors import ConfigError

PROJECT_TAG = "aiaas:project"
DEPLOYMENT_TAG = "aiaas:deployment"
VERSION_TAG = "aiaas:version"

NAME = r"^[A-Za-z](-?[A-Za-z0-9])*$"
"""An endpoint or deployment name's characters: a letter first, then letters, digits and
single dashes, ending with a letter or digit."""
_NAME = re.compile(NAME)
MIN_NAME, MAX_NAME = 3, 32
HASH_DIGITS = 6
ENVIRONMENT_NAME = "aiaas-image"


class Workspace(Protocol):
    """What names read of the ``azureml:`` settings (the pydantic section or the light
    invoke-path settings)."""

    @property
    def subscription_id(self) -> str: ...

    @property
    def resource_group(self) -> str: ...

    @property
    def workspace(self) -> str: ...

    @property
    def prefix(self) -> str: ...


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid endpoint or deployment name (None: it is)."""
    if not MIN_NAME <= len(value) <= MAX_NAME:
        return f"{len(value)} characters, Azure ML takes {MIN_NAME}-{MAX_NAME}"
    if not _NAME.fullmatch(value):
        return (
            "Azure ML takes a letter first, then letters, digits and single dashes, ending "
            "with a letter or digit"
        )
    return None


def check_name(kind: str, value: str) -> str:
    """``value`` if Azure ML takes it as an endpoint or deployment name, else a ConfigError
    naming ``kind`` and the rule."""
    problem = name_problem(value)
    if problem is not None:
        raise ConfigError(f"{kind} name {value!r} is not valid on Azure ML: {problem}")
    return value


def project_hash(settings: Workspace) -> str:
    """6 hex digits naming this project in its region (see the module's docstring)."""
    parts = (settings.subscription_id, settings.resource_group, settings.workspace, settings.prefix)
    key = "/".join(parts)
    return hashlib.sha256(key.lower().encode()).hexdigest()[:HASH_DIGITS]


def endpoint_name(deployment: str, settings: Workspace) -> str:
    """The online endpoint that serves aiaas deployment ``deployment``; a ConfigError when
    the result is not a valid name (the deployment's name is too long, or starts with a
    digit)."""
    name = f"{deployment}-{project_hash(settings)}"
    problem = name_problem(name)
    if problem is not None:
        raise ConfigError(
            f"deployment name {deployment!r} gives Azure ML endpoint {name!r}, which is not "
            f"valid: {problem} (the name may be at most {MAX_NAME - HASH_DIGITS - 1} "
            "characters, starting with a letter)"
        )
    return name


def deployment_name(version: str, spec: str = "") -> str:
    """The online deployment that runs bundle version ``version`` (its digest) with the
    deployment settings hashed into ``spec`` (a few hex digits; empty: none). A settings
    change of the same digest (another SKU, instance count, server setting) is a new
    deployment beside the live one, as Azure ML cannot change a deployment's SKU in place."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", version).strip("-").lower()
    suffix = f"-{spec.lower()}" if spec else ""
    head = f"v-{cleaned}"[: MAX_NAME - len(suffix)].rstrip("-")
    return check_name("deployment", head + suffix)


def version_of(deployment: str) -> str | None:
    """The bundle version a deployment named by :func:`deployment_name` runs (None for
    another name)."""
    if not deployment.startswith("v-"):
        return None
    return deployment[2:].split("-", 1)[0] or None
