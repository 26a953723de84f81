"""How aiaas names and tags what it creates on SageMaker, and what its states mean (shared by
both halves; no AWS SDK).

- the **endpoint** is the deployment's name: an aiaas deployment name (``[a-z0-9-]``, at
  most 63) that does not end with ``-``, as SageMaker's names may not;
- each **model** and **endpoint config** is ``<base>-<version>-<hash>``: ``base`` the
  deployment's name (cut to 40 characters, with a hash of the whole name when cut), the
  bundle's 16-digit version, and 5 hex digits of everything else that resource holds (image,
  role, environment; instance type and count), so a changed setting is a new resource and an
  unchanged one is found by name, with no write. 40 + 1 + 16 + 1 + 5 = 63, SageMaker's limit.
- every resource carries the tags :data:`DEPLOYMENT_TAG`, :data:`VERSION_TAG` and
  :data:`PROJECT_TAG` (``s3://<bucket>/<prefix>``: projects that keep their bundles in the
  same place are one project), and ``list`` shows only endpoints tagged with this project.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from adapters.base import DeploymentStatus

ENDPOINT_STATUS = {
    "Creating": DeploymentStatus.CREATING,
    "InService": DeploymentStatus.READY,
    "Updating": DeploymentStatus.UPDATING,
    "SystemUpdating": DeploymentStatus.UPDATING,
    "RollingBack": DeploymentStatus.UPDATING,
    "Failed": DeploymentStatus.FAILED,
    # An update whose rollback failed: it serves, on a mix of the old and new configs
    # (DescribeEndpoint's EndpointStatus reference); the next deploy updates it.
    "UpdateRollbackFailed": DeploymentStatus.READY,
    "OutOfService": DeploymentStatus.STOPPED,
    "Deleting": DeploymentStatus.DELETING,
}
"""DescribeEndpoint's ``EndpointStatus`` in every provider's terms."""

SETTLING = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
"""The endpoint statuses that move on by themselves: deploy polls, and starts nothing, while
an endpoint is in one."""

FAILED = frozenset({"Failed"})
"""The endpoint statuses only DeleteEndpoint works on (deploy removes the endpoint first).
``UpdateRollbackFailed`` is not one: it serves, and is updated, never deleted."""

MIXED = "UpdateRollbackFailed"
"""An endpoint serving a mix of configs after a failed rollback: updated even to the config
it names, so that one config serves again."""

OUT_OF_SERVICE = "OutOfService"
"""An endpoint that takes no requests and that deploy refuses to touch (see the message)."""

ENDPOINT_NAME = r"^[a-z0-9](-*[a-z0-9]){0,62}$"
"""A deployment name SageMaker takes as an endpoint name: botocore's ``EndpointName``
pattern, lowercase (aiaas's deployment names are)."""
_ENDPOINT_NAME = re.compile(ENDPOINT_NAME)


def check_endpoint_name(name: str) -> str | None:
    """Why ``name`` cannot be a SageMaker endpoint's name (None when it can)."""
    if len(name) <= MAX_NAME and _ENDPOINT_NAME.fullmatch(name):  # the pattern allows more
        return None
    return (
        f"invalid deployment name {name!r}: a SageMaker endpoint name is 1-63 lowercase "
        "letters, digits and '-', starting and ending with a letter or digit"
    )


VARIANT = "AllTraffic"
"""The one production variant of an aiaas endpoint (SageMaker's own default name)."""

DEPLOYMENT_TAG = "aiaas:deployment"
VERSION_TAG = "aiaas:version"
PROJECT_TAG = "aiaas:project"
MAX_NAME = 63
_BASE = 40
_RESOURCE = re.compile(r"^(?P<base>[a-z0-9-]{1,40})-(?P<version>[0-9a-f]{16})-[0-9a-f]{5}$")


def short_hash(value: Any, length: int) -> str:
    """``length`` hex digits of SHA-256 over ``value`` as canonical JSON."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def base_name(deployment: str) -> str:
    """The deployment's part of its resources' names (at most 40 characters)."""
    if len(deployment) <= _BASE:
        return deployment
    return f"{deployment[: _BASE - 7].rstrip('-')}-{short_hash(deployment, 6)}"


def resource_name(deployment: str, version: str, spec: Any) -> str:
    """The name of the model or endpoint config of ``version`` holding ``spec``."""
    name = f"{base_name(deployment)}-{version}-{short_hash(spec, 5)}"
    assert len(name) <= MAX_NAME, name
    return name


def version_of(resource: str) -> str | None:
    """The bundle version in a model's or endpoint config's name (None if not ours)."""
    match = _RESOURCE.fullmatch(resource)
    return match["version"] if match else None


def deployment_of(resource: str) -> str | None:
    """The deployment part (:func:`base_name`) of a model's or endpoint config's name."""
    match = _RESOURCE.fullmatch(resource)
    return match["base"] if match else None


def project_id(bucket: str, prefix: str) -> str:
    """The project's identity in tags: where its bundles live."""
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def bundle_key(prefix: str, digest: str) -> str:
    """The S3 key of a bundle archive: content-addressed by its full digest (the hex of
    ``sha256:<hex>``: no ``:`` in keys, which some tools quote)."""
    key = f"bundles/{digest.removeprefix('sha256:')}/model.tar.gz"
    return f"{prefix}/{key}" if prefix else key


def log_group(endpoint: str) -> str:
    """Where SageMaker writes the endpoint's container output."""
    return f"/aws/sagemaker/Endpoints/{endpoint}"


def scaling_resource_id(endpoint: str) -> str:
    """The Application Auto Scaling resource of the endpoint's variant."""
    return f"endpoint/{endpoint}/variant/{VARIANT}"
