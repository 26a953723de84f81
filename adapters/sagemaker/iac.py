"""The AWS template (``iac/aws/template.yaml``, CloudFormation) and its parameters, rendered
from the ``sagemaker:`` section by the provider's own rules (no AWS SDK).

What comes from ``aiaas.yaml`` (never set by hand, so the stack and the provider agree):

- ``EndpointName``: the deployment's name, which is the endpoint's (:mod:`.names`);
- ``Region``: ``sagemaker.region``, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, as the
  provider reads it; ``AccountId``: ``sagemaker.role_arn``'s (and ``image_uri``'s) account
  (the template refuses a stack in another region or account);
- ``BucketName``, ``BundlePrefix``, ``KmsKeyId``: where the provider uploads bundles
  (:func:`.names.bundle_key`: ``<prefix>/bundles/<digest>/...``);
- ``RepositoryName``: ``sagemaker.image_uri``'s repository (the stack's ``RepositoryUri``
  is the image URI without its tag); ``ExecutionRoleName``: ``sagemaker.role_arn``'s role;
- ``WatchRollbackAlarms``: whether ``deploy.rollout.rollback_alarms`` names any;
- ``FunctionTimeoutS``: above ``function.invoke_timeout_s``; ``FunctionUrlAuthType``:
  ``NONE`` for ``function.auth: api_key`` (our keys guard the URL), ``AWS_IAM`` for
  ``platform``; ``FunctionCodeKey``, ``FunctionRuntime``, ``FunctionArchitecture``: the zip
  from ``aiaas function package --target aws`` (content-addressed under
  ``<prefix>/functions/``), the Python and architecture it was packaged for.

``GitHubSubject`` (``--set``) makes the stack trust GitHub Actions' OIDC tokens for that
subject and create the two roles CI changes it with (outputs ``InfraRoleArn`` and
``CloudFormationRoleArn``: docs/deploy-from-ci.md). Treat the infrastructure role as an
administrator of the account: its change sets may put any policy on roles GitHub assumes.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.iac import (
    IacTarget,
    Rendered,
    RenderOptions,
    check_function_environment,
    cloudformation_parameters,
    refuse_unsettable,
)
from adapters.sagemaker import aws, names
from aiaas.errors import ConfigError

if TYPE_CHECKING:
    from aiaas.config import ProjectConfig

TIMEOUT_MARGIN_S = 5
"""How much longer the Lambda function may run than ``function.invoke_timeout_s``: the
function's own deadline (and its 504) comes first, then the answer is written."""
MAX_LAMBDA_TIMEOUT_S = 900
MAX_LAMBDA_ENVIRONMENT_BYTES = 4096
"""Lambda's limit on a function's environment variables, names and values together (its
quotas page: 4 KB); the API keys' hashes are most of it (about 106 bytes a key)."""
RUNTIMES = ("3.11", "3.12", "3.13")
"""The Python versions the template's ``FunctionRuntime`` takes (``python3.X``)."""
ARCHES = ("x86_64", "arm64")

_IMAGE = re.compile(
    r"^(?P<account>[0-9]+)\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repository>[^:@]+)"
)
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::(?P<account>[0-9]{12}):role/(?P<name>.+)$")

FREE = frozenset(
    {
        "GitHubSubject",
        "GitHubOidcProviderArn",
        "FunctionMemoryMB",
        "LogRetentionDays",
        "BundleExpirationDays",
        "NoncurrentBundleDays",
    }
)
"""Template parameters ``aiaas.yaml`` does not hold (``aiaas iac render --set``)."""
DERIVED = frozenset(
    {
        "EndpointName", "Region", "AccountId", "BucketName", "BundlePrefix", "KmsKeyId",
        "RepositoryName", "ExecutionRoleName", "WatchRollbackAlarms", "FunctionTimeoutS",
        "FunctionUrlAuthType", "FunctionRuntime", "FunctionArchitecture",
    }
)  # fmt: skip
"""Template parameters rendered from ``aiaas.yaml`` (every render writes them)."""


def function_code_key(prefix: str, zip_path: Path) -> str:
    """Where the packaged function's zip goes in the bucket: content-addressed, so a stack
    update with a new zip is a new key (CloudFormation updates the code only then)."""
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    return f"{prefix}/functions/{digest}/{zip_path.name}"


def _arch(options: RenderOptions) -> str:
    """The architecture the zip was packaged for: ``--arch``, or its name's
    (``aiaas function package`` writes ``function-aws-<arch>.zip``), else x86_64."""
    named = None
    if options.function_zip is not None:
        match = re.fullmatch(r"function-aws-(?P<arch>[a-z0-9_]+)\.zip", options.function_zip.name)
        named = match["arch"] if match else None
    arch = options.arch or named or "x86_64"
    if arch not in ARCHES:
        raise ConfigError(f"--arch {arch}: use one of {', '.join(ARCHES)}")
    if named and named != arch:
        raise ConfigError(
            f"--arch {arch}: {options.function_zip} was packaged for {named} (its name says)"
        )
    return arch


def render(config: ProjectConfig, options: RenderOptions) -> Rendered:
    """The template's parameters for ``config``'s ``sagemaker:`` section and function."""
    from adapters.sagemaker.settings import SageMakerSection

    settings = config.provider_settings("sagemaker", SageMakerSection)
    problem = names.check_endpoint_name(options.deployment)
    if problem:
        raise ConfigError(problem)
    region = aws.region(settings.region, options.env)
    if not settings.prefix:
        raise ConfigError(
            "sagemaker.prefix: empty; the template scopes every policy to "
            "<prefix>/bundles/: set one (the default is 'aiaas')"
        )
    role = _ROLE.fullmatch(settings.role_arn)
    image = _IMAGE.match(settings.image_uri)
    assert role and image, "validated by SageMakerSection"
    if "/" in role["name"]:
        raise ConfigError(
            f"sagemaker.role_arn: {settings.role_arn} has a path; the template creates the "
            "role at the root path: use arn:aws:iam::<account>:role/<name>"
        )
    if image["region"] != region:
        raise ConfigError(
            f"sagemaker.image_uri: its repository is in {image['region']}, the endpoint in "
            f"{region}; the template creates the repository in the endpoint's region"
        )
    if image["account"] != role["account"]:
        raise ConfigError(
            f"sagemaker.image_uri: its repository is in account {image['account']}, "
            f"sagemaker.role_arn in {role['account']}; the template creates both in one account"
        )
    if settings.kms_key_id and not settings.kms_key_id.startswith("arn:"):
        raise ConfigError(
            "sagemaker.kms_key_id: name the key by its ARN (the template's policies grant on it)"
        )
    timeout = math.ceil(config.function.invoke_timeout_s) + TIMEOUT_MARGIN_S
    if timeout > MAX_LAMBDA_TIMEOUT_S:
        raise ConfigError(
            f"function.invoke_timeout_s: {config.function.invoke_timeout_s} s leaves no room "
            f"under Lambda's {MAX_LAMBDA_TIMEOUT_S} s (the function needs "
            f"{TIMEOUT_MARGIN_S} s more)"
        )
    if options.python not in RUNTIMES:
        raise ConfigError(f"--python {options.python}: Lambda here takes {', '.join(RUNTIMES)}")
    arch = _arch(options)
    parameters = {
        "EndpointName": options.deployment,
        "Region": region,
        "AccountId": role["account"],
        "BucketName": settings.bucket,
        "BundlePrefix": settings.prefix,
        "KmsKeyId": settings.kms_key_id or "",
        "RepositoryName": image["repository"],
        "ExecutionRoleName": role["name"],
        "WatchRollbackAlarms": "true" if config.deploy.rollout.rollback_alarms else "false",
        "FunctionTimeoutS": str(timeout),
        "FunctionUrlAuthType": "NONE" if config.function.auth == "api_key" else "AWS_IAM",
        "FunctionRuntime": f"python{options.python}",
        "FunctionArchitecture": arch,
    }
    notes = [f"deploy the stack in {region} (aws cloudformation deploy --region {region} ...)"]
    if options.function_zip is not None:
        if not options.function_zip.is_file():
            raise ConfigError(f"--function-zip {options.function_zip}: no such file")
        key = function_code_key(settings.prefix, options.function_zip)
        parameters["FunctionCodeKey"] = key
        notes.append(
            f"upload the function first: aws s3 cp {options.function_zip} "
            f"s3://{settings.bucket}/{key}"
        )
    else:
        notes.append(
            "no --function-zip: the stack creates the bucket, repository and roles; render "
            "again with the packaged zip to add the function and its URL"
        )
    if options.values.get("GitHubSubject"):
        notes.append(
            "GitHubSubject: the stack also creates CI's roles; set the workflow's "
            "AWS_INFRA_ROLE_ARN and AWS_CLOUDFORMATION_ROLE_ARN from its outputs "
            "InfraRoleArn and CloudFormationRoleArn; the infrastructure role is as strong "
            "as an account administrator (docs/deploy-from-ci.md), and a change to CI's "
            "roles is an administrator's update"
        )
    if options.api_keys is not None:
        variables = {"AIAAS_DEPLOYMENT": options.deployment, "AIAAS_API_KEYS": options.api_keys}
        check_function_environment(variables, MAX_LAMBDA_ENVIRONMENT_BYTES, "Lambda")
        parameters["ApiKeyHashes"] = options.api_keys
    origins = {**dict.fromkeys(DERIVED, "comes from aiaas.yaml: change it there"),
               "FunctionCodeKey": "comes from --function-zip",
               "ApiKeyHashes": "comes from `aiaas keys` (AIAAS_API_KEYS)"}  # fmt: skip
    refuse_unsettable(options.values, FREE, origins, "iac/aws/template.yaml")
    parameters.update(options.values)
    return Rendered(parameters, notes, cloudformation_parameters(parameters))


TARGET = IacTarget(
    cloud="aws",
    provider="sagemaker",
    template="aws/template.yaml",
    parameter_format=(
        'CloudFormation parameter file, [{"ParameterKey": ..., "ParameterValue": ...}] '
        "(aws cloudformation deploy --parameter-overrides file://...)"
    ),
    free_parameters=FREE,
    secret_parameter="ApiKeyHashes",
    render=render,
)
"""The AWS target of :mod:`adapters.iac`."""
