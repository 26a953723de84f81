"""The Alibaba Cloud template (``iac/alibaba/template.json``, ROS) and its parameters,
rendered from the ``pai:`` section by the provider's own rules (no Alibaba Cloud SDK).

What comes from ``aiaas.yaml`` (never set by hand, so the stack and the provider agree):

- ``Region``: ``pai.region`` (the stack is created in it: ``aliyun ros CreateStack
  --RegionId``, which the notes name);
- ``DeploymentName`` (the function's ``AIAAS_DEPLOYMENT``), ``ServiceName`` (the EAS service
  ``aiaas deploy`` creates for it, :func:`.names.service_name`: ``<deployment>_<6 hex>``, also
  the function's name) and ``ProjectHash`` (the 6 hex digits, :func:`.names.project_hash`:
  the deploying role may touch only services that end with them);
- ``FunctionHash``: 8 hex digits of the service's name, naming the function's role and log
  project (RAM and Simple Log Service names take no underscore);
- ``BucketName``, ``BundlePrefix``: ``pai.oss_bucket`` and ``pai.oss_prefix``, where the
  provider uploads bundles (``<prefix>/<version>/model.tar.gz``);
- ``ImageRepository``: ``pai.image`` without its registry host, tag and digest (Container
  Registry's ``<namespace>/<repository>``), the one repository CI's infrastructure role may
  push to (:func:`image_repository`);
- ``FunctionTimeoutS``: above ``function.invoke_timeout_s``; ``FunctionAuthType``: the HTTP
  trigger's ``anonymous`` for ``function.auth: api_key`` (our keys guard the URL),
  ``function`` for ``platform``; ``FunctionCodeKey`` and ``FunctionPython``: the zip from
  ``aiaas function package --target alibaba`` (content-addressed under
  ``<prefix>/functions/``) and the Python it was packaged for (the template maps it to a
  custom runtime whose ``python3`` is that Python).

The parameter file holds the arguments ``aliyun ros CreateStack`` / ``UpdateStack`` /
``PreviewStack`` take for parameters (the ROS API's ``Parameters.N.ParameterKey`` and
``Parameters.N.ParameterValue``), one per line, for ``mapfile -t params < file`` and
``"${params[@]}"``: the CLI reads them from its command line, not from a file.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.iac import (
    IacTarget,
    Rendered,
    RenderOptions,
    check_function_environment,
    refuse_unsettable,
)
from adapters.pai import names
from aiaas.errors import ConfigError

if TYPE_CHECKING:
    from aiaas.config import ProjectConfig

TIMEOUT_MARGIN_S = 5
"""How much longer the function may run than ``function.invoke_timeout_s``: the function's
own deadline (and its 504) comes first, then the answer is written."""
MAX_FC_TIMEOUT_S = 86400
MAX_FC_ENVIRONMENT_BYTES = 4096
"""Function Compute's limit on a function's environment variables, names and values together
(4 KB, as Lambda's; the API keys' hashes are most of it, about 106 bytes a key)."""
RUNTIMES = ("3.11", "3.12")
"""The Python versions the template's ``FunctionPython`` takes: ``custom.debian12``'s
``python3`` is 3.11, and it carries 3.12 under ``/opt/python3.12`` (Function Compute's custom
runtime page)."""
ARCH = "x86_64"
"""Function Compute's custom runtimes run on x86_64 only."""
FUNCTION_HASH_DIGITS = 8
TEMPLATE = "iac/alibaba/template.json"

FREE = frozenset(
    {
        "EasEndpoint",
        "FunctionMemoryMB",
        "FunctionInstanceConcurrency",
        "LogRetentionDays",
        "GitHubSubject",
        "GitHubOidcProviderArn",
    }
)
"""Template parameters ``aiaas.yaml`` does not hold (``aiaas iac render --set``)."""
DERIVED = frozenset(
    {
        "Region", "DeploymentName", "ServiceName", "ProjectHash", "FunctionHash", "BucketName",
        "BundlePrefix", "ImageRepository", "FunctionTimeoutS", "FunctionAuthType", "FunctionPython",
    }
)  # fmt: skip
"""Template parameters rendered from ``aiaas.yaml`` (every render writes them)."""
_INTEGERS = frozenset(
    {
        "FunctionMemoryMB", "FunctionInstanceConcurrency", "LogRetentionDays",
    }
)  # fmt: skip


def ros_parameters(parameters: Mapping[str, str]) -> str:
    """The ``aliyun ros CreateStack`` arguments for ``parameters``, one per line:
    ``--Parameters.N.ParameterKey``, the name, ``--Parameters.N.ParameterValue``, the value."""
    lines: list[str] = []
    for n, (key, value) in enumerate(parameters.items(), start=1):
        if "\n" in value or "\r" in value:
            raise ConfigError(f"parameter {key}: a value on one line (it holds a line break)")
        lines += [f"--Parameters.{n}.ParameterKey", key, f"--Parameters.{n}.ParameterValue", value]
    return "\n".join(lines) + "\n"


def read_ros_parameters(text: str) -> dict[str, str]:
    """The parameters of a file :func:`ros_parameters` wrote (the inverse)."""
    lines = text.splitlines()
    if len(lines) % 4:
        raise ValueError("not a ROS parameter file: lines come in fours")
    found: dict[str, str] = {}
    for i in range(0, len(lines), 4):
        n = i // 4 + 1
        key_flag, key, value_flag, value = lines[i : i + 4]
        if (key_flag, value_flag) != (
            f"--Parameters.{n}.ParameterKey",
            f"--Parameters.{n}.ParameterValue",
        ):
            raise ValueError(f"not a ROS parameter file: line {i + 1}: {key_flag!r}")
        found[key] = value
    return found


def function_code_key(prefix: str, zip_path: Path) -> str:
    """Where the packaged function's zip goes in the bucket: content-addressed, so a stack
    update with a new zip is a new key (ROS updates the function's code only then)."""
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    return f"{prefix}/functions/{digest}/{zip_path.name}"


def image_repository(image: str) -> str:
    """``image`` (``pai.image``, ``[registry/]repository[:tag][@sha256:digest]``) without its
    registry host, tag and digest: ``registry-vpc.cn-hangzhou.aliyuncs.com/ns/server:1.0`` is
    ``ns/server``. The first component is a registry host as Docker reads one: it holds a
    ``.`` or a ``:``, or is ``localhost``."""
    name = image.split("@", 1)[0]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest
    head, _, last = name.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def function_hash(service: str) -> str:
    """8 hex digits naming the function's role and log project, from its service's name."""
    return hashlib.sha256(service.encode()).hexdigest()[:FUNCTION_HASH_DIGITS]


def _check_arch(options: RenderOptions) -> None:
    named = None
    if options.function_zip is not None:
        match = re.fullmatch(
            r"function-alibaba-(?P<arch>[a-z0-9_]+)\.zip", options.function_zip.name
        )
        named = match["arch"] if match else None
    for given, where in ((options.arch, "--arch"), (named, f"{options.function_zip} (its name)")):
        if given not in (None, ARCH):
            raise ConfigError(
                f"{where}: {given}; Function Compute's custom runtime runs {ARCH} only"
            )


def _check_github(parameters: Mapping[str, str]) -> None:
    """The template's Rules.GitHubNeedsItsProvider, before ROS: a role trusting GitHub names
    the account's OIDC provider."""
    if parameters.get("GitHubSubject") and not parameters.get("GitHubOidcProviderArn"):
        raise ConfigError(
            "--set GitHubSubject needs --set GitHubOidcProviderArn=acs:ram::<uid>:oidc-provider/"
            "<name> (the account's OIDC provider for GitHub): the role's trust names both"
        )


def render(config: ProjectConfig, options: RenderOptions) -> Rendered:
    """The template's parameters for ``config``'s ``pai:`` section and function."""
    from adapters.pai.settings import PaiSection

    settings = config.provider_settings("pai", PaiSection)
    service = names.service_name(options.deployment, settings)
    if not settings.oss_prefix:
        raise ConfigError(
            "pai.oss_prefix: empty; the template scopes the deploying role and the bundles' "
            "lifecycle rule to <oss_prefix>/: set one (the default is 'aiaas')"
        )
    timeout = math.ceil(config.function.invoke_timeout_s) + TIMEOUT_MARGIN_S
    if timeout > MAX_FC_TIMEOUT_S:
        raise ConfigError(
            f"function.invoke_timeout_s: {config.function.invoke_timeout_s} s leaves no room "
            f"under Function Compute's {MAX_FC_TIMEOUT_S} s (the function needs "
            f"{TIMEOUT_MARGIN_S} s more)"
        )
    if options.python not in RUNTIMES:
        raise ConfigError(
            f"--python {options.python}: Function Compute's custom runtime here takes "
            f"{', '.join(RUNTIMES)}"
        )
    _check_arch(options)
    parameters = {
        "Region": settings.region,
        "DeploymentName": options.deployment,
        "ServiceName": service,
        "ProjectHash": names.project_hash(settings),
        "FunctionHash": function_hash(service),
        "BucketName": settings.oss_bucket,
        "BundlePrefix": settings.oss_prefix,
        "ImageRepository": image_repository(settings.image),
        "FunctionTimeoutS": str(timeout),
        "FunctionAuthType": "anonymous" if config.function.auth == "api_key" else "function",
        "FunctionPython": f"python{options.python}",
    }
    stack = f"aliyun ros CreateStack --RegionId {settings.region}"
    notes = [
        f"create the stack in {settings.region}: {stack} --StackName <name> --TemplateBody "
        f'"$(cat {TEMPLATE})" "${{params[@]}}" (mapfile -t params < <this file>)',
        "update it with UpdateStack, the same arguments and always --UsePreviousParameters "
        "true: a parameter this file leaves out (ApiKeyHashes without keys, FunctionCodeKey "
        "without --function-zip) then keeps its value; without it the function, its trigger, "
        "role and log project are deleted",
    ]
    if options.function_zip is not None:
        if not options.function_zip.is_file():
            raise ConfigError(f"--function-zip {options.function_zip}: no such file")
        key = function_code_key(settings.oss_prefix, options.function_zip)
        parameters["FunctionCodeKey"] = key
        notes.append(
            f"upload the function first: aliyun oss cp {options.function_zip} "
            f"oss://{settings.oss_bucket}/{key} --region {settings.region}"
        )
    else:
        notes.append(
            "no --function-zip: the stack creates the bucket and the deploying role (and, with "
            "GitHubSubject, CI's infrastructure role: output InfraRoleArn is the workflow's "
            "ALIBABA_INFRA_ROLE_ARN); render again with the packaged zip to add the function "
            "and its URL"
        )
    if options.api_keys is not None:
        variables = {
            "AIAAS_PROVIDER": "pai",
            "AIAAS_DEPLOYMENT": options.deployment,
            "AIAAS_API_KEYS": options.api_keys,
            "AIAAS_PAI_ENDPOINT": options.values.get("EasEndpoint", ""),
            "PATH": "/opt/python3.12/bin:/usr/local/bin:/usr/bin:/bin",
        }
        check_function_environment(variables, MAX_FC_ENVIRONMENT_BYTES, "Function Compute")
        parameters["ApiKeyHashes"] = options.api_keys
    origins = {**dict.fromkeys(DERIVED, "comes from aiaas.yaml: change it there"),
               "FunctionCodeKey": "comes from --function-zip",
               "ApiKeyHashes": "comes from `aiaas keys` (AIAAS_API_KEYS)"}  # fmt: skip
    refuse_unsettable(options.values, FREE, origins, TEMPLATE)
    for name, value in options.values.items():
        if name in _INTEGERS and not value.isdigit():
            raise ConfigError(f"--set {name}={value}: a whole number")
        parameters[name] = value
    _check_github(parameters)
    if "ApiKeyHashes" in parameters:
        notes.append(
            "ApiKeyHashes goes on the aliyun command line: salted hashes of the keys, not the "
            "keys, but keep the file (0600) and the command out of logs"
        )
    return Rendered(parameters, notes, ros_parameters(parameters))


TARGET = IacTarget(
    cloud="alibaba",
    provider="pai",
    template="alibaba/template.json",
    parameter_format=(
        "aliyun CLI arguments, one per line: --Parameters.N.ParameterKey NAME "
        "--Parameters.N.ParameterValue VALUE (mapfile -t params < file; aliyun ros "
        'CreateStack ... "${params[@]}")'
    ),
    free_parameters=FREE,
    secret_parameter="ApiKeyHashes",
    render=render,
)
"""The Alibaba Cloud target of :mod:`adapters.iac`."""
