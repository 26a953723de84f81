"""How aiaas names and labels what it creates on PAI-EAS (shared by both halves; stdlib only,
the invoke path imports it).

- the **service** is ``<deployment>_<project hash>``, dashes written as underscores: EAS
  service names are unique per account and *region*, so two projects (or workspaces) deploying
  ``iris`` in one region must not collide; the hash is 6 hex digits of
  ``<region>/<workspace id>/<prefix>`` (:func:`project_hash`). ``a-b`` and ``a_b`` name the
  same service: the control plane tells them apart by the :data:`DEPLOYMENT_LABEL`;
- every service carries the labels :data:`PROJECT_LABEL` (the prefix), :data:`DEPLOYMENT_LABEL`
  and :data:`VERSION_LABEL`; ``list`` asks ListServices for the project's label only.

The rule for service names, checked before any call: a lower-case letter first, then
lower-case letters, digits and underscores, at most :data:`MAX_NAME` characters. EAS's docs
and console say "lowercase letters, digits and underscores, starting with a letter"; the
exact length limit is not documented in what was read ([U] in
``shared/notes/azure-pai-2026-12.md`` §6): 63 is an assumption, the common DNS-label bound.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol
from urllib.parse import urlsplit

from aiaas.errors import ConfigError

PROJECT_LABEL = "aiaas:project"
DEPLOYMENT_LABEL = "aiaas:deployment"
VERSION_LABEL = "aiaas:version"

NAME = r"^[a-z][a-z0-9_]*$"
"""A service name's characters: a lower-case letter, then lower-case letters, digits and
underscores."""
_NAME = re.compile(NAME)
MAX_NAME = 63
HASH_DIGITS = 6


class Project(Protocol):
    """What names read of the ``pai:`` settings (the pydantic section or the light
    invoke-path settings)."""

    @property
    def region(self) -> str: ...

    @property
    def workspace_id(self) -> str | None: ...

    @property
    def prefix(self) -> str: ...


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid EAS service name (None: it is)."""
    if not 1 <= len(value) <= MAX_NAME:
        return f"{len(value)} characters, at most {MAX_NAME}"
    if not _NAME.fullmatch(value):
        return (
            "EAS takes a lower-case letter first, then lower-case letters, digits and underscores"
        )
    return None


def check_name(value: str) -> str:
    """``value`` if EAS takes it as a service name, else a ConfigError naming the rule."""
    problem = name_problem(value)
    if problem is not None:
        raise ConfigError(f"service name {value!r} is not valid on PAI-EAS: {problem}")
    return value


def project_hash(settings: Project) -> str:
    """6 hex digits naming this project in its region (see the module's docstring)."""
    key = "/".join((settings.region, settings.workspace_id or "", settings.prefix))
    return hashlib.sha256(key.lower().encode()).hexdigest()[:HASH_DIGITS]


def service_name(deployment: str, settings: Project) -> str:
    """The EAS service that serves aiaas deployment ``deployment``; a ConfigError naming the
    deployment when the result is not a valid name (too long, a digit or capital first,
    characters other than letters, digits, ``-`` and ``_``)."""
    name = f"{deployment.replace('-', '_')}_{project_hash(settings)}"
    problem = name_problem(name)
    if problem is not None:
        raise ConfigError(
            f"deployment name {deployment!r} gives PAI-EAS service {name!r}, which is not "
            f"valid: {problem} (a deployment name for pai is a lower-case letter, then "
            f"lower-case letters, digits, '-' and '_', at most {MAX_NAME - HASH_DIGITS - 1} "
            "characters)"
        )
    return name


def project_labels(settings: Project, deployment: str, version: str) -> dict[str, str]:
    """The labels of the service that runs ``version`` of ``deployment``."""
    return {
        PROJECT_LABEL: settings.prefix,
        DEPLOYMENT_LABEL: deployment,
        VERSION_LABEL: version,
    }


#: The domain of EAS's gateways: ``<uid>.<region>.pai-eas.aliyuncs.com`` (public) and
#: ``<uid>.vpc.<region>.pai-eas.aliyuncs.com`` (a VPC's).
EAS_DOMAIN = ".pai-eas.aliyuncs.com"


def over_tls(endpoint: str) -> str:
    """``endpoint`` (DescribeService's ``InternetEndpoint``) over https when it is an
    ``http://`` URL of EAS's public gateway without a port: every call carries the service's
    token in its ``Authorization`` header, and the gateway serves the same endpoint over TLS
    (PAI's "Call a service over a public endpoint": "replace http with https for more secure
    encrypted transmission"). Anything else as it is: a VPC endpoint, an explicit port, another
    host (a dedicated gateway's own domain, an emulator)."""
    try:
        split = urlsplit(endpoint.strip())
        port = split.port
    except ValueError:
        return endpoint
    host = (split.hostname or "").lower()
    public = host.endswith(EAS_DOMAIN) and "vpc" not in host.split(".")
    if split.scheme.lower() != "http" or port is not None or not public:
        return endpoint
    return split._replace(scheme="https").geturl()
