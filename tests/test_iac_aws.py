"""The AWS template (iac/aws/template.yaml) and ``aiaas iac render --cloud aws`` (issue 19).

Each checker is shown to catch a planted mistake, so none passes silently:

- ``cfn-lint`` and ``checkov`` as ``iac/check.py`` runs them (``make iac-check`` on the
  committed template; here a misspelled property fails cfn-lint, a bucket that no longer
  restricts public buckets, a check skipped without a reason and a broken file fail
  checkov), real processes under the network guard: they must not fetch;
- the documented IAM policies (docs/providers/sagemaker.md, parsed) against the template's,
  statement for statement (a planted extra action is reported);
- the stack deployed into moto's CloudFormation (the emulated AWS of the other tests), with
  the parameters ``aiaas iac render`` wrote, checked against aiaas.yaml and the provider's
  own names (a planted too-short function timeout is reported).

moto's gaps (it creates the stack, but): no ``AWS::Lambda::Url`` (the resource and its output
are taken out before deploying; their properties are checked in the template instead); no
``AWS::IAM::OIDCProvider`` (the GitHub case names an existing provider's ARN); the bucket's
versioning, public access block, ownership controls and lifecycle rules, the repository's
scanning, encryption and lifecycle policy, and the function's logging config are accepted
but not applied (cfn-lint checks them against CloudFormation's schemas; the test reads them
from the template); ``Rules`` are not evaluated; inline role policies come back as Python's
``repr`` of the document instead of JSON, and an ``Fn::If`` to ``AWS::NoValue`` in a list
stays as ``None`` in it; the resources a stack update adds are created lazily (listed here
to create them).
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import functools
import importlib.util
import io
import json
import re
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from iac_scripts import as_documented as documented
from iac_scripts import own_home
from test_cli_documented_commands import SHELL_BLOCK, parse
from typer.testing import CliRunner

from adapters.iac import RenderOptions, cloud_of, iac_target
from adapters.sagemaker import names
from adapters.sagemaker.iac import DERIVED, FREE, TIMEOUT_MARGIN_S
from aiaas.cli import app
from aiaas.config import load_config
from aiaas.errors import ConfigError
from emulators.aws import AwsEmulator
from functions.platforms.aws import PLATFORM

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "iac" / "aws" / "template.yaml"
SAGEMAKER_DOC = ROOT / "docs" / "providers" / "sagemaker.md"
ACCOUNT = AwsEmulator.ACCOUNT
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/aiaas-sagemaker-execution"
IMAGE_URI = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/aiaas-server:0.1.0"
RECORD = "k1:" + "ab" * 16 + ":" + "cd" * 32  # an API key record: <id>:<salt>:<sha256>


# -- the template, read as CloudFormation reads it ------------------------------------------
class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (``!Ref``, ``!Sub``, ``!GetAtt``, ...)."""


def _short_form(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _short_form)


def load_template(text: str | None = None) -> dict[str, Any]:
    """The template as a plain dict (short forms as their long ``Fn::`` forms)."""
    loaded: dict[str, Any] = yaml.load(
        TEMPLATE.read_text() if text is None else text,
        Loader=_Loader,  # SafeLoader plus CloudFormation's tags
    )
    return loaded


def statements(template: dict[str, Any], role: str, policy: str) -> list[dict[str, Any]]:
    """The statements of a role's inline policy, as written (``Fn::If`` ones included)."""
    props = template["Resources"][role]["Properties"]
    (found,) = [p for p in props["Policies"] if p["PolicyName"] == policy]
    return list(found["PolicyDocument"]["Statement"])


# -- the documented policies -----------------------------------------------------------------
PLACEHOLDERS = {
    "${AWS::Partition}": "aws",  # the doc shows the commercial partition's ARNs
    "${AWS::Region}": "REGION",
    "${AWS::AccountId}": "ACCOUNT",
    "${BucketName}": "BUCKET",
    "${BundlePrefix}": "PREFIX",
    "${ExecutionRoleName}": "ROLE",
    "${EndpointName}": "NAME",
    "${RepositoryName}": "REPOSITORY",
    "${AWS::StackName}": "STACK",
}


def as_documented(value: Any) -> Any:
    """A template value in the doc's terms: ``Fn::Sub`` strings with its placeholders
    (``REGION``, ``ACCOUNT``, ``BUCKET``, ``PREFIX``, ``ROLE``, ``NAME``); a single action or
    resource as a one-item list, as the doc writes either."""
    return documented(value, PLACEHOLDERS)


def _listed(statement: dict[str, Any]) -> dict[str, Any]:
    return {
        k: [v] if k in ("Action", "Resource") and not isinstance(v, list) else v
        for k, v in statement.items()
    }


def split_conditional(stmts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The statements always there, and those under a condition (``Fn::If`` with
    ``AWS::NoValue`` as its else), by condition."""
    always, conditional = [], {}
    for stmt in stmts:
        if "Fn::If" in stmt:
            condition, then, otherwise = stmt["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}, stmt
            conditional[condition] = then
        else:
            always.append(stmt)
    return always, conditional


def doc_json_blocks() -> list[Any]:
    text = SAGEMAKER_DOC.read_text()
    return [json.loads(b) for b in re.findall(r"^```json\n(.*?)^```", text, re.M | re.S)]


def documented_deployer() -> list[dict[str, Any]]:
    (policy,) = [b for b in doc_json_blocks() if isinstance(b, dict) and "Statement" in b]
    return list(policy["Statement"])


def documented_function() -> dict[str, Any]:
    (stmt,) = [b for b in doc_json_blocks() if isinstance(b, dict) and "Action" in b]
    return dict(stmt)


def documented_execution_role() -> list[tuple[list[str], list[str]]]:
    """Each bullet of the doc's execution role: its actions and the resources it names."""
    text = SAGEMAKER_DOC.read_text()
    section = text.split("**The execution role**", 1)[1].split("**The function**", 1)[0]
    bullets = re.split(r"\n- ", section)[1:]
    found = []
    for bullet in bullets:
        tokens = re.findall(r"`([^`]+)`", bullet)
        actions = [t for t in tokens if re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", t)]
        resources = [t for t in tokens if t.startswith(("arn:", "/")) or t == "*"]
        found.append((actions, resources))
    return found


def deployer_differences(template: dict[str, Any]) -> list[str]:
    """How the template's deploying policy differs from the documented one (empty: none).
    The doc's KMS statement is prose ("add kms:GenerateDataKey and kms:Decrypt on that
    key"): the template's, under ``HasKmsKey``, is compared with that."""
    always, conditional = split_conditional(statements(template, "DeployerRole", "aiaas-deploy"))
    ours = {s.get("Sid"): _listed(as_documented(s)) for s in always}
    doc = {s.get("Sid"): _listed(s) for s in documented_deployer()}
    problems = [
        f"{sid}: template {ours.get(sid)} != doc {doc.get(sid)}"
        for sid in sorted(set(ours) | set(doc), key=str)
        if ours.get(sid) != doc.get(sid)
    ]
    kms = conditional.pop("HasKmsKey", None)
    if kms is None or sorted(_listed(kms)["Action"]) != ["kms:Decrypt", "kms:GenerateDataKey"]:
        problems.append(f"HasKmsKey: {kms}")
    if conditional:
        problems.append(f"statements the doc does not name: {conditional}")
    return problems


def test_the_deploying_role_is_the_documented_policy_statement_for_statement() -> None:
    assert deployer_differences(load_template()) == []


def test_a_planted_extra_action_in_the_deploying_role_is_reported() -> None:
    template = load_template()
    stmts = statements(template, "DeployerRole", "aiaas-deploy")
    stmts[0]["Action"] = [*stmts[0]["Action"], "s3:DeleteObject"]
    template["Resources"]["DeployerRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ] = stmts
    (problem,) = deployer_differences(template)
    assert problem.startswith("Bundles:") and "s3:DeleteObject" in problem


def test_the_function_role_may_only_invoke_and_describe_this_endpoint() -> None:
    template = load_template()
    role = template["Resources"]["FunctionRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    invoke, logs = statements(template, "FunctionRole", "aiaas-invoke")
    assert {k: v for k, v in _listed(as_documented(invoke)).items() if k != "Sid"} == _listed(
        documented_function()
    )
    # Its own logs only (narrower than AWSLambdaBasicExecutionRole, which the doc names).
    assert sorted(logs["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    group = template["Resources"]["FunctionLogGroup"]["Properties"]["LogGroupName"]
    assert group == {"Fn::Sub": "/aws/lambda/${EndpointName}"}
    assert as_documented(logs["Resource"]) == (
        "arn:aws:logs:REGION:ACCOUNT:log-group:/aws/lambda/NAME:*"
    )
    assert len(role["Policies"]) == 1 and "ManagedPolicyArns" not in role


def test_the_execution_role_grants_what_the_doc_lists_and_nothing_else() -> None:
    template = load_template()
    trust = template["Resources"]["ExecutionRole"]["Properties"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    always, conditional = split_conditional(
        statements(template, "ExecutionRole", "aiaas-execution")
    )
    # The doc: kms:Decrypt "with a KMS key"; DescribeAlarms "with rollback_alarms".
    assert {c: _listed(s)["Action"] for c, s in conditional.items()} == {
        "HasKmsKey": ["kms:Decrypt"],
        "WatchesAlarms": ["cloudwatch:DescribeAlarms"],
    }
    granted = {a: _listed(as_documented(s)) for s in always for a in _listed(s)["Action"]}
    granted |= {
        a: _listed(as_documented(s)) for s in conditional.values() for a in _listed(s)["Action"]
    }
    documented = documented_execution_role()
    assert set(granted) == {a for actions, _ in documented for a in actions}
    for actions, resources in documented:
        stmt = granted[actions[0]]
        for resource in resources:
            arns = [r for r in stmt["Resource"] if isinstance(r, str)]
            assert resource in arns or any(a.endswith(f":log-group:{resource}") for a in arns), (
                actions,
                resource,
                stmt,
            )
    # "on the image's repository"
    assert granted["ecr:BatchGetImage"]["Resource"] == [{"Fn::GetAtt": ["Repository", "Arn"]}]


# -- CI's two roles: the infrastructure role and CloudFormation's ----------------------------
CI_DOC = ROOT / "docs" / "deploy-from-ci.md"
_CFNLINT = importlib.util.find_spec("cfnlint")
assert _CFNLINT is not None and _CFNLINT.origin, "cfn-lint is needed (make install)"
CFN_SCHEMAS = Path(_CFNLINT.origin).parent / "data" / "schemas" / "resources"
IAM_CATALOGUE = Path(_CFNLINT.origin).parent / "data" / "AdditionalSpecs" / "Policies.json"
HANDLERS = ("create", "read", "update", "delete")
"""The handlers a stack operation calls (``list`` is for resource discovery, never a stack's)."""

UNUSED = {
    ("AWS::S3::Bucket", "MetadataTableConfiguration"): {"s3tables:*"},
    ("AWS::S3::Bucket", "MetadataConfiguration"): {"s3tables:*"},
    ("AWS::S3::Bucket", "ReplicationConfiguration"): {"iam:PassRole"},
    ("AWS::ECR::Repository", "EncryptionConfiguration.KmsKey"): {"kms:*"},
    ("AWS::Lambda::Function", "KmsKeyArn"): {
        "kms:CreateGrant", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"
    },
    ("AWS::Lambda::Function", "VpcConfig"): {"ec2:Describe*"},
    ("AWS::Lambda::Function", "FileSystemConfigs"): {
        "elasticfilesystem:DescribeMountTargets", "s3files:ListMountTargets"
    },
    ("AWS::Lambda::Function", "CodeSigningConfigArn"): {"lambda:GetCodeSigningConfig"},
    ("AWS::Lambda::Function", "Layers"): {"lambda:GetLayerVersion"},
    ("AWS::Lambda::Function", "CapacityProviderConfig"): {"lambda:PassCapacityProvider"},
    ("AWS::Logs::LogGroup", "ResourcePolicyDocument"): {
        "logs:PutResourcePolicy", "logs:DeleteResourcePolicy"
    },
    ("AWS::Logs::LogGroup", "FieldIndexPolicies"): {
        "logs:PutIndexPolicy", "logs:DeleteIndexPolicy"
    },
    ("AWS::Logs::LogGroup", "DataProtectionPolicy"): {
        "logs:CreateLogDelivery", "firehose:TagDeliveryStream"
    },
    ("AWS::IAM::Role", "ManagedPolicyArns"): {"iam:AttachRolePolicy", "iam:DetachRolePolicy"},
}  # fmt: skip
"""Handler permissions the CloudFormation role does not hold, by the property whose value
makes the handler call them: this template sets none of these properties (a test checks),
and the permissions cannot be scoped to this stack's resources (IAM takes only ``*`` for
them, or a resource of a kind the stack has none of: a key, a VPC, a layer), so holding
them would hold them everywhere. The roles' ``ManagedPolicyArns`` is left out for another
reason: ``iam:AttachRolePolicy`` on a role the CloudFormation role may write could attach
any managed policy (``AdministratorAccess``) to it; the template attaches none, so the
handlers never call it or ``iam:DetachRolePolicy``. ``kms:Decrypt`` (Lambda's handlers) is held with
``KmsKeyId`` only, on that key: Lambda reads the zip from the SSE-KMS bucket with it. The
delete handlers of a resource the template retains (``DeletionPolicy`` and
``UpdateReplacePolicy`` Retain) are never called."""

AUTHORIZED_BY = {
    "s3:DeleteBucketAnalyticsConfiguration": "s3:PutAnalyticsConfiguration",
    "s3:DeleteBucketCors": "s3:PutBucketCORS",
    "s3:DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    "s3:DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "s3:DeleteBucketMetricsConfiguration": "s3:PutMetricsConfiguration",
    "s3:DeleteBucketReplication": "s3:PutReplicationConfiguration",
    "s3:PutBucketReplication": "s3:PutReplicationConfiguration",
    "s3:PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
}
"""Handler "permissions" that are S3 API operations, not IAM actions: IAM authorizes each
by another action (the S3 API reference's "Permissions" of each operation)."""
NOT_IAM_ACTIONS = {
    "s3:REST.PUT.OBJECT": "an S3 access log's operation name, no IAM action",
    "lambda:AssociateRuntimeAlias": "not in IAM's catalogue (cfn-lint's W3037 refuses it)",
}


@functools.cache
def _catalogue() -> dict[str, Any]:
    """IAM's actions and resource types by service, as cfn-lint bundles them (its W3037)."""
    loaded: dict[str, Any] = json.loads(IAM_CATALOGUE.read_text())
    return loaded


@functools.cache
def _schemas() -> dict[str, Any]:
    """CloudFormation's resource provider schemas cfn-lint bundles, by type name."""
    schemas = {}
    for path in CFN_SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        schemas[schema.get("typeName", "")] = schema
    return schemas


def _in_catalogue(action: str, catalogue: dict[str, Any]) -> bool:
    service, name = action.split(":", 1)
    return name.lower() in catalogue.get(service, {}).get("Actions", {})


def handler_permissions(template: dict[str, Any]) -> dict[str, set[str]]:
    """What CloudFormation's handlers may call for this template's resources (their
    schemas' ``handlers.*.permissions``), permission -> the ``Type.handler``s that list it;
    no delete handler for a retained resource."""
    schemas = _schemas()
    needed: dict[str, set[str]] = {}
    for resource in template["Resources"].values():
        kind = resource["Type"]
        retained = resource.get("DeletionPolicy") == resource.get("UpdateReplacePolicy") == "Retain"
        for handler in HANDLERS:
            if handler == "delete" and retained:
                continue
            for permission in schemas[kind]["handlers"].get(handler, {}).get("permissions", []):
                needed.setdefault(permission, set()).add(f"{kind}.{handler}")
    return needed


def policy_actions(template: dict[str, Any], role: str) -> list[str]:
    """Every action a role's inline policies name, conditional statements included."""
    found = []
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for stmt in policy["PolicyDocument"]["Statement"]:
            stmt = stmt["Fn::If"][1] if "Fn::If" in stmt else stmt
            assert stmt["Effect"] == "Allow", stmt
            found += _listed(stmt)["Action"]
    return found


def _matches(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())  # IAM: case-insensitive


def cloudformation_role_problems(template: dict[str, Any]) -> list[str]:
    """How the CloudFormation role's policy differs from what the handlers of the template's
    resource types need (empty: none): a permission not held, an action held that no
    handler lists, a wildcard (it would hold actions no handler lists)."""
    catalogue = _catalogue()
    needed = handler_permissions(template)
    held = policy_actions(template, "CloudFormationRole")
    unused_by_type: dict[str, set[str]] = {}
    for (kind, _prop), patterns in UNUSED.items():
        unused_by_type.setdefault(kind, set()).update(patterns)
    problems = []
    required = set()
    for permission, where in sorted(needed.items()):
        if permission in NOT_IAM_ACTIONS:
            continue
        if not _in_catalogue(permission, catalogue):
            authorizer = AUTHORIZED_BY.get(permission)
            if authorizer is None:
                problems.append(f"{permission} ({', '.join(sorted(where))}): not an IAM action")
                continue
            permission = authorizer
        kinds = {w.split(".")[0] for w in where}
        if all(
            any(_matches(p, permission) for p in unused_by_type.get(kind, ())) for kind in kinds
        ):
            continue
        required.add(permission)
        if not any(_matches(h, permission) for h in held):
            problems.append(f"{permission} ({', '.join(sorted(where))}): not held")
    for action in held:
        if "*" in action or "?" in action:
            problems.append(f"{action}: a wildcard holds actions no handler lists")
        elif not any(_matches(action, r) for r in required):
            problems.append(f"{action}: no handler of this template's resources lists it")
    return problems


def test_the_cloudformation_role_holds_what_the_handlers_need_and_nothing_else() -> None:
    assert cloudformation_role_problems(load_template()) == []
    # What is left out is left out for a reason the template keeps true.
    resources = load_template()["Resources"].values()
    for kind, path in UNUSED:
        for resource in [r for r in resources if r["Type"] == kind]:
            value = resource.get("Properties", {})
            for key in path.split("."):
                value = value.get(key, {})
            assert value == {}, (kind, path)


def test_the_cloudformation_role_check_catches_a_dropped_and_an_extra_permission() -> None:
    template = load_template()
    stmts = statements(template, "CloudFormationRole", "aiaas-cloudformation")
    (function,) = [s for s in stmts if s.get("Sid") == "Function"]
    function["Action"].remove("lambda:UpdateFunctionCode")
    function["Action"].append("lambda:InvokeFunction")
    problems = cloudformation_role_problems(template)
    assert problems == [
        "lambda:UpdateFunctionCode (AWS::Lambda::Function.update): not held",
        "lambda:InvokeFunction: no handler of this template's resources lists it",
    ]
    # A resource type added to the template brings its handlers' permissions in.
    template = load_template()
    template["Resources"]["Queue"] = {"Type": "AWS::SQS::Queue", "Properties": {}}
    assert any(p.startswith("sqs:CreateQueue (AWS::SQS::Queue.create)") for p in
               cloudformation_role_problems(template))  # fmt: skip


# Sample values to render the roles' resources with, checked against IAM's ARN formats.
SAMPLE = {
    "AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": ACCOUNT,
    "AWS::StackName": "aiaas-minilm", "BucketName": "my-models", "BundlePrefix": "aiaas",
    "ExecutionRoleName": "aiaas-sagemaker-execution", "EndpointName": "minilm",
    "RepositoryName": "aiaas-server",
    "KmsKeyId": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "CloudFormationRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/aiaas/aiaas-minilm/aiaas-Cfn-ABC",
    "Repository.Arn": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/aiaas-server",
}  # fmt: skip


def _sample(value: Any) -> str:
    """A resource of a statement, rendered with :data:`SAMPLE`'s values."""
    if value == "*":
        return "*"
    if "Fn::Sub" in value:
        return str(re.sub(r"\$\{([^}]+)\}", lambda m: SAMPLE[m[1]], value["Fn::Sub"]))
    if "Ref" in value:
        return SAMPLE[str(value["Ref"])]
    return SAMPLE[".".join(value["Fn::GetAtt"])]


def resource_problems(template: dict[str, Any], role: str, *, scoped: bool = True) -> list[str]:
    """An action whose statement names no resource of a type IAM's catalogue gives it (the
    grant would be void: IAM matches it to nothing); with ``scoped``, also ``*`` for an
    action that takes a resource's ARN."""
    catalogue = _catalogue()
    problems = []
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for stmt in policy["PolicyDocument"]["Statement"]:
            stmt = _listed(stmt["Fn::If"][1] if "Fn::If" in stmt else stmt)
            arns = [_sample(r) for r in stmt["Resource"]]
            for action in stmt["Action"]:
                service, name = action.split(":", 1)
                types = catalogue[service]["Actions"][name.lower()].get("Resources", [])
                if arns == ["*"]:
                    if types and scoped:
                        problems.append(f"{stmt['Sid']}: {action} on * (it takes {types})")
                    continue
                kinds = catalogue[service]["Resources"]
                formats = [f for t in types for f in kinds.get(t, {}).get("ARNFormats", [])]
                if not any(re.fullmatch(_arn_regex(f), a) for f in formats for a in arns):
                    problems.append(f"{stmt['Sid']}: {action} takes none of {arns}")
    return problems


def _arn_regex(arn_format: str) -> str:
    parts = re.split(r"(\$\{[A-Za-z]+\}|\.\*)", arn_format)
    return "".join(
        "[^:]*" if p.startswith("${") else ".*" if p == ".*" else re.escape(p) for p in parts
    )


def test_the_ci_roles_scope_every_action_to_resources_it_takes() -> None:
    """Each action on an ARN of a resource type IAM's catalogue gives it, so no grant is
    silently void; ``*`` only where the action takes no resource."""
    template = load_template()
    assert resource_problems(template, "InfraRole") == []
    assert resource_problems(template, "CloudFormationRole") == []
    # The other roles' grants are not void either (their ``*`` follow the provider's doc).
    for role in ("ExecutionRole", "DeployerRole", "FunctionRole"):
        assert resource_problems(template, role, scoped=False) == [], role
    # Planted mistakes: a log group's action scoped to the function; a scopable one on *.
    stmts = statements(template, "CloudFormationRole", "aiaas-cloudformation")
    (function,) = [s for s in stmts if s.get("Sid") == "Function"]
    function["Action"].append("logs:CreateLogGroup")
    (reads,) = [s for s in stmts if s.get("Sid") == "ReadLogGroups"]
    reads["Action"].append("logs:GetDataProtectionPolicy")
    arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:minilm"
    assert resource_problems(template, "CloudFormationRole") == [
        "ReadLogGroups: logs:GetDataProtectionPolicy on * (it takes ['log-group'])",
        f"Function: logs:CreateLogGroup takes none of ['{arn}', '{arn}:*']",
    ]


def test_the_ci_roles_trust_githubs_subject_and_cloudformation_only() -> None:
    template = load_template()
    resources = template["Resources"]
    deployer = resources["DeployerRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    github = deployer[0]["Fn::If"][1]  # the deploying role's trust with GitHubSubject
    infra = resources["InfraRole"]
    assert infra["Condition"] == resources["CloudFormationRole"]["Condition"] == "TrustsGitHub"
    assert infra["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [github]
    assert github["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": {"Ref": "GitHubSubject"},
        }
    }
    cfn = resources["CloudFormationRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert cfn == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "cloudformation.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    outputs = template["Outputs"]
    assert outputs["InfraRoleArn"]["Value"] == {"Fn::GetAtt": ["InfraRole", "Arn"]}
    assert outputs["CloudFormationRoleArn"]["Value"] == {
        "Fn::GetAtt": ["CloudFormationRole", "Arn"]
    }
    # The account's shared OIDC provider is the stack's to manage only if it creates it.
    (oidc,) = [s for s in statements(template, "CloudFormationRole", "aiaas-cloudformation")
               if "Fn::If" in s and s["Fn::If"][1].get("Sid") == "GitHubOidcProvider"]  # fmt: skip
    assert oidc["Fn::If"][0] == "CreatesOidcProvider"
    assert oidc["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    # The stack's service role outlives the operations that delete it (docs: tearing down).
    cfn_role = resources["CloudFormationRole"]
    assert cfn_role["DeletionPolicy"] == cfn_role["UpdateReplacePolicy"] == "Retain"
    # The paths: CI's roles apart from the ones its change sets may write; "/" without CI.
    app = "/aiaas/${AWS::StackName}/app/"
    assert resources["DeployerRole"]["Properties"]["Path"] == {
        "Fn::If": ["TrustsGitHub", {"Fn::Sub": app}, "/"]
    }
    assert resources["FunctionRole"]["Properties"]["Path"] == {
        "Fn::If": ["TrustsGitHub", {"Fn::Sub": app + "function/"}, "/"]
    }
    for role in ("InfraRole", "CloudFormationRole"):
        assert resources[role]["Properties"]["Path"] == {"Fn::Sub": "/aiaas/${AWS::StackName}/ci/"}
    # Only the CloudFormation role may be passed, and only to CloudFormation.
    (passing,) = [s for s in statements(template, "InfraRole", "aiaas-infra") if
                  "iam:PassRole" in _listed(s).get("Action", [])]  # fmt: skip
    assert passing["Resource"] == {"Fn::GetAtt": ["CloudFormationRole", "Arn"]}
    assert passing["Condition"] == {
        "StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}
    }


def documented_infra() -> list[dict[str, Any]]:
    """The infrastructure role's policy in docs/deploy-from-ci.md (its json block, indented
    in its bullet)."""
    text = CI_DOC.read_text()
    found = re.findall(r"^ *```json\n(.*?)^ *```", text, re.M | re.S)
    blocks = [json.loads(b) for b in found]
    (policy,) = [b for b in blocks if isinstance(b, dict) and "Statement" in b]
    return list(policy["Statement"])


def infra_differences(template: dict[str, Any]) -> list[str]:
    """How the template's infrastructure role differs from the documented policy (empty:
    none). The doc writes the CloudFormation role's ARN as ``CLOUDFORMATION_ROLE_ARN`` (the
    stack's output), and its KMS statement as prose (kms:GenerateDataKey and kms:Decrypt on
    that key), compared with the template's under ``HasKmsKey``."""
    always, conditional = split_conditional(statements(template, "InfraRole", "aiaas-infra"))
    role_arn = {"Fn::GetAtt": ["CloudFormationRole", "Arn"]}
    ours = {
        s.get("Sid"): _listed(
            as_documented(
                {k: "CLOUDFORMATION_ROLE_ARN" if v == role_arn else v for k, v in s.items()}
            )
        )
        for s in always
    }
    doc = {s.get("Sid"): _listed(s) for s in documented_infra()}
    problems = [
        f"{sid}: template {ours.get(sid)} != doc {doc.get(sid)}"
        for sid in sorted(set(ours) | set(doc), key=str)
        if ours.get(sid) != doc.get(sid)
    ]
    kms = conditional.pop("HasKmsKey", None)
    if kms is None or sorted(_listed(kms)["Action"]) != ["kms:Decrypt", "kms:GenerateDataKey"]:
        problems.append(f"HasKmsKey: {kms}")
    elif kms["Resource"] != {"Ref": "KmsKeyId"}:
        problems.append(f"HasKmsKey: on {kms['Resource']}")
    if conditional:
        problems.append(f"statements the doc does not name: {conditional}")
    return problems


def test_the_infra_role_is_the_documented_policy_statement_for_statement() -> None:
    assert infra_differences(load_template()) == []
    doc = " ".join(CI_DOC.read_text().split())
    assert "add `kms:GenerateDataKey` and `kms:Decrypt` on that key" in doc


def test_a_planted_extra_action_in_the_infra_role_is_reported() -> None:
    template = load_template()
    stmts = statements(template, "InfraRole", "aiaas-infra")
    (zips,) = [s for s in stmts if s.get("Sid") == "FunctionZips"]
    zips["Action"] = ["s3:PutObject", "s3:DeleteObject"]
    (problem,) = infra_differences(template)
    assert problem.startswith("FunctionZips:") and "s3:DeleteObject" in problem


WORKFLOW = ROOT / "iac" / "github" / "deploy.yml"
AWS_CLI_ACTIONS = {
    "cloudformation describe-stacks": ["cloudformation:DescribeStacks"],
    "cloudformation create-change-set": ["cloudformation:CreateChangeSet"],
    "cloudformation describe-change-set": ["cloudformation:DescribeChangeSet"],
    "cloudformation delete-change-set": ["cloudformation:DeleteChangeSet"],
    "cloudformation execute-change-set": ["cloudformation:ExecuteChangeSet"],
    "cloudformation wait change-set-create-complete": ["cloudformation:DescribeChangeSet"],
    "cloudformation wait stack-update-complete": ["cloudformation:DescribeStacks"],
    "ecr describe-images": ["ecr:DescribeImages"],
    "ecr get-login-password": ["ecr:GetAuthorizationToken"],
    "s3 cp": ["s3:PutObject"],  # a local file to s3:// (multipart parts: the same action)
}
"""The IAM actions of each AWS CLI call the workflow makes (the service's API reference for
each operation; a ``wait`` polls the describe call). A call not listed fails the test."""
DOCKER_PUSH = ["ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
               "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
               "ecr:BatchGetImage"]  # fmt: skip
"""``docker push`` to ECR: the actions ECR's user guide lists for pushing an image."""
INFRA_JOBS = ("aws-image", "aws-validate", "aws-deploy")


def infra_calls(jobs: dict[str, Any]) -> tuple[set[str], list[str]]:
    """The IAM actions the aws-* jobs' run steps call while signed in as
    ``AWS_INFRA_ROLE_ARN`` (from its ``configure-aws-credentials`` step to the next one), and
    the ``aws`` calls the table does not know."""
    called: set[str] = set()
    unknown = []
    for name in INFRA_JOBS:
        infra = False
        for step in jobs[name]["steps"]:
            if "configure-aws-credentials" in step.get("uses", ""):
                infra = "AWS_INFRA_ROLE_ARN" in step["with"]["role-to-assume"]
            if not infra or "run" not in step:
                continue
            script = step["run"].replace("\\\n", " ")
            for match in re.finditer(r"\baws ([a-z0-9]+) ((?:wait )?[a-z0-9-]+)", script):
                call = f"{match[1]} {match[2]}"
                if call not in AWS_CLI_ACTIONS:
                    unknown.append(f"{name}: aws {call}")
                    continue
                called.update(AWS_CLI_ACTIONS[call])
                if call == "cloudformation create-change-set" and "--role-arn" in script:
                    called.add("iam:PassRole")
            if "docker push" in script:
                called.update(DOCKER_PUSH)
    return called, unknown


def workflow_problems(jobs: dict[str, Any], template: dict[str, Any]) -> list[str]:
    """How the infrastructure role's grants differ from the aws-* jobs' calls (empty: none):
    a call not granted, an unknown call, or a CloudFormation, ECR, S3 or IAM action granted
    that no job calls (KMS, under ``HasKmsKey``, follows the bucket's key)."""
    called, unknown = infra_calls(jobs)
    granted = set(policy_actions(template, "InfraRole"))
    services = ("cloudformation:", "ecr:", "s3:", "iam:")
    return (
        [f"unknown call {u}" for u in unknown]
        + [f"{a}: called, not granted" for a in sorted(called - granted)]
        + [f"{a}: granted, not called" for a in sorted(granted - called) if a.startswith(services)]
    )


def test_the_infra_role_holds_what_the_workflows_aws_jobs_call_and_nothing_else() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    called, _ = infra_calls(jobs)
    assert {"cloudformation:CreateChangeSet", "cloudformation:ExecuteChangeSet", "s3:PutObject",
            "ecr:PutImage", "iam:PassRole"} <= called  # fmt: skip
    assert workflow_problems(jobs, load_template()) == []
    # Planted: a call the role lacks, one the table does not know, a grant no job uses.
    planted = copy.deepcopy(jobs)
    (push,) = [s for s in planted["aws-image"]["steps"] if "docker push" in s.get("run", "")]
    push["run"] += 'aws ecr batch-delete-image --repository-name "$REPOSITORY"\n'
    push["run"] += 'aws cloudformation delete-stack --stack-name "$STACK"\n'
    template = load_template()
    (zips,) = [s for s in statements(template, "InfraRole", "aiaas-infra")
               if s.get("Sid") == "FunctionZips"]  # fmt: skip
    zips["Action"] = ["s3:PutObject", "s3:GetObject"]
    assert workflow_problems(planted, template) == [
        "unknown call aws-image: aws ecr batch-delete-image",
        "unknown call aws-image: aws cloudformation delete-stack",
        "s3:GetObject: granted, not called",
    ]
    # Planted: a call the jobs make (docker push) that the role no longer grants.
    template = load_template()
    for statement in statements(template, "InfraRole", "aiaas-infra"):
        actions = statement.get("Action")  # None for an Fn::If statement
        if isinstance(actions, list) and "ecr:PutImage" in actions:
            actions.remove("ecr:PutImage")
    assert workflow_problems(jobs, template) == ["ecr:PutImage: called, not granted"]
    # A call made as the deploying role (aws-deploy's second sign-in) is not the infra role's.
    planted = copy.deepcopy(jobs)
    steps = planted["aws-image"]["steps"]
    (push,) = [s for s in steps if "docker push" in s.get("run", "")]
    push["run"] = push["run"].replace("aws ecr describe-images", "true")
    deploy_steps = planted["aws-deploy"]["steps"]
    (signin,) = [i for i, s in enumerate(deploy_steps)
                 if "deployer-role" in s.get("with", {}).get("role-to-assume", "")]  # fmt: skip
    deploy_steps.insert(signin + 1, {"run": "aws ecr describe-images"})
    assert workflow_problems(planted, load_template()) == [
        "ecr:DescribeImages: granted, not called"
    ]


def test_the_template_fits_in_a_template_body() -> None:
    """CloudFormation takes at most 51,200 bytes as ``--template-body`` (the workflow's
    change set, ``aws cloudformation deploy`` without ``--s3-bucket``); cfn-lint checks only
    its own 1,000,000-byte limit, so a bigger template would pass make iac-check and fail in
    the cloud."""
    assert len(TEMPLATE.read_bytes()) < 51_200


def test_what_moto_cannot_show_is_in_the_template() -> None:
    """The properties moto accepts without applying them (its gaps, named above)."""
    resources = load_template()["Resources"]
    bucket = resources["Bucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["old-bundles"]["Prefix"] == {"Fn::Sub": "${BundlePrefix}/bundles/"}
    assert rules["old-bundles"]["NoncurrentVersionExpiration"]
    repo = resources["Repository"]["Properties"]
    assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True}
    url = resources["FunctionUrl"]
    assert url["Properties"] == {
        "TargetFunctionArn": {"Fn::GetAtt": ["Function", "Arn"]},
        "AuthType": {"Ref": "FunctionUrlAuthType"},
    }
    assert url["Condition"] == "HasFunction"
    rules = load_template()["Rules"]
    assert [r["Assertions"][0]["Assert"] for r in rules.values()] == [
        {"Fn::Equals": [{"Ref": "Region"}, {"Ref": "AWS::Region"}]},
        {"Fn::Equals": [{"Ref": "AccountId"}, {"Ref": "AWS::AccountId"}]},
    ]


# -- cfn-lint and checkov (iac/check.py, which make iac-check runs on iac/) -----------------
def check_sections(output: str) -> dict[str, list[str]]:
    """iac/check.py's problems by checker."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in output.splitlines():
        if line.startswith("  "):
            sections[current].append(line.strip())
        elif ": " in line and not line.startswith("iac-check"):
            current = line.split(":", 1)[0]
            sections[current] = []
    return sections


def test_each_checker_fails_its_planted_mistakes(tmp_path: Path) -> None:
    """iac/check.py as make iac-check runs it (its checkers side by side, under the network
    guard: they must not fetch), on a copy of the template with a misspelled property (for
    cfn-lint), a bucket that no longer restricts public buckets and a check skipped without a
    reason (for checkov), beside a template that no longer parses: checkov exits 0 on that, so
    the script reads its report. make iac-check shows the committed template clean."""
    text = TEMPLATE.read_text().replace("ImageTagMutability:", "ImageTagMutabilty:")
    text = text.replace("        RestrictPublicBuckets: true\n", "")
    text, removed = re.subn(r"(- id: CKV_AWS_18\n)\s+comment: >-\n\s+[^\n]+\n", r"\1", text)
    assert removed == 1
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "template.yaml").write_text(text)
    (tmp_path / "aws" / "broken.yaml").write_text(TEMPLATE.read_text() + "  Oops: [open\n")
    r = subprocess.run(
        [sys.executable, str(ROOT / "iac" / "check.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=own_home(tmp_path),
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    found = check_sections(r.stdout)
    assert set(found) == {"cfn-lint", "checkov"}, r.stdout
    lint = found["cfn-lint"]
    assert len(lint) == 2, lint
    assert any("template.yaml" in p and "E3002" in p and "ImageTagMutabilty" in p for p in lint)
    assert any("broken.yaml" in p and ":E0000:" in p for p in lint), lint
    checkov = found["checkov"]
    assert len(checkov) == 5, checkov
    # The misspelled ImageTagMutability counts for checkov too: tags are mutable again.
    assert any("Repository: CKV_AWS_51" in p for p in checkov), checkov
    assert any(p.startswith("checkov could not parse 1 file(s)") for p in checkov)
    assert "aws/broken.yaml: checkov checked no resource of it" in checkov
    assert any("Bucket: CKV_AWS_56" in p for p in checkov), checkov
    assert any("CKV_AWS_18 is skipped without a reason" in p for p in checkov), checkov


# -- aiaas iac render ------------------------------------------------------------------------
def project(tmp_path: Path, **sagemaker: Any) -> Path:
    """A project whose aiaas.yaml drives the sagemaker provider."""
    section = {
        "region": "us-east-1",
        "role_arn": ROLE_ARN,
        "bucket": "my-models",
        "image_uri": IMAGE_URI,
        "instance_type": "ml.m5.xlarge",
    } | sagemaker
    config = {
        "model": {"name": "minilm", "entrypoint": "model:Model"},
        "provider": "sagemaker",
        "sagemaker": section,
    }
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / "aiaas.yaml").write_text(yaml.safe_dump(config))
    return folder


def render_rows(*args: str, env: dict[str, str] | None = None) -> tuple[list[Any], str]:
    """``aiaas iac render ...``: the parameter file it wrote (CloudFormation's rows, as
    create-stack takes them) and what it told the user (stderr)."""
    result = CliRunner().invoke(app, ["iac", "render", *args], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    out = Path(args[args.index("-o") + 1]).read_text() if "-o" in args else result.stdout
    rows: list[Any] = json.loads(out)
    return rows, result.stderr


def as_params(rows: list[Any]) -> dict[str, str]:
    return {row["ParameterKey"]: row["ParameterValue"] for row in rows}


def render_cli(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    return as_params(render_rows(*args, env=env)[0])


def test_rendered_parameters_are_the_templates_and_the_providers_names(tmp_path: Path) -> None:
    folder = project(tmp_path)
    out = tmp_path / "params.json"
    params = render_cli("-c", str(folder), "-o", str(out), env={"AIAAS_API_KEYS": RECORD})
    assert out.stat().st_mode & 0o777 == 0o600  # it holds the keys' hashes
    template_params = load_template()["Parameters"]
    assert set(params) <= set(template_params)
    # Every parameter is either derived from aiaas.yaml, set by hand, or the zip's/keys'.
    assert set(template_params) == DERIVED | FREE | {"FunctionCodeKey", "ApiKeyHashes"}
    assert set(params) >= DERIVED
    assert all("Default" in p for k, p in template_params.items() if k not in DERIVED)
    # The provider's own names, from the same aiaas.yaml.
    settings = load_config(folder).provider_settings("sagemaker", _section())
    assert params["EndpointName"] == "minilm" and names.check_endpoint_name("minilm") is None
    assert params["BucketName"] == settings.bucket
    assert params["BundlePrefix"] == settings.prefix
    assert f"{ROLE_ARN.rsplit('/', 1)[0]}/{params['ExecutionRoleName']}" == settings.role_arn
    assert IMAGE_URI.split("/", 1)[1].startswith(params["RepositoryName"] + ":")
    assert params["Region"] == settings.region
    assert params["AccountId"] == ACCOUNT
    assert float(params["FunctionTimeoutS"]) > load_config(folder).function.invoke_timeout_s
    assert params["FunctionUrlAuthType"] == "NONE"  # function.auth: api_key
    assert params["ApiKeyHashes"] == RECORD
    # With GitHub's subject, render names the outputs the workflow's variables come from.
    subject = "repo:octo/models:environment:production"
    _, told = render_rows("-c", str(folder), "--set", f"GitHubSubject={subject}")
    assert "AWS_INFRA_ROLE_ARN and AWS_CLOUDFORMATION_ROLE_ARN" in " ".join(told.split())
    assert "InfraRoleArn" not in render_rows("-c", str(folder))[1]


def _section() -> Any:
    from adapters.sagemaker.settings import SageMakerSection

    return SageMakerSection


def test_render_refuses_what_the_template_cannot_follow(tmp_path: Path) -> None:
    aws = iac_target("aws")
    cases = {
        "in eu-west-1, the endpoint in us-east-1": {
            "image_uri": IMAGE_URI.replace("us-east-1", "eu-west-1")
        },
        "has a path": {"role_arn": ROLE_ARN.replace("role/", "role/team/")},
        "in account 999999999999": {"image_uri": "999999999999" + IMAGE_URI[12:]},
        "empty": {"prefix": ""},
        "by its ARN": {"kms_key_id": "alias/mine"},
    }
    for expected, override in cases.items():
        cfg = load_config(project(tmp_path, **override))
        with pytest.raises(ConfigError, match=expected):
            aws.render(cfg, RenderOptions(deployment="minilm"))
    cfg = load_config(project(tmp_path))
    with pytest.raises(ConfigError, match=r"--set BucketName: comes from aiaas\.yaml"):
        aws.render(cfg, RenderOptions(deployment="minilm", values={"BucketName": "x"}))
    many = ",".join(RECORD.replace("k1:", f"k{i}:") for i in range(40))
    with pytest.raises(ConfigError, match="over Lambda's 4096"):
        aws.render(cfg, RenderOptions(deployment="minilm", api_keys=many))
    zipped = tmp_path / "function-aws-arm64.zip"
    zipped.write_bytes(b"PK")
    arm = aws.render(cfg, RenderOptions(deployment="minilm", function_zip=zipped))
    assert arm.parameters["FunctionArchitecture"] == "arm64"
    with pytest.raises(ConfigError, match="was packaged for arm64"):
        aws.render(cfg, RenderOptions(deployment="minilm", function_zip=zipped, arch="x86_64"))
    with pytest.raises(ConfigError, match="invalid deployment name"):
        aws.render(cfg, RenderOptions(deployment="Not_A_Name"))
    with pytest.raises(ConfigError, match="--cloud gcp: unknown cloud; one of aws, azure, alibaba"):
        iac_target("gcp")
    assert cloud_of("sagemaker") == "aws"
    with pytest.raises(ConfigError, match="provider: local has no infrastructure template"):
        cloud_of("local")


def deploy_doc_commands() -> list[list[str]]:
    """The ``aiaas`` calls in docs/deploy-from-ci.md's shell blocks, which sit indented in
    its numbered steps (as test_cli_documented_commands reads the other docs)."""
    text = "\n".join(
        line.strip() for line in (ROOT / "docs/deploy-from-ci.md").read_text().splitlines()
    )
    found = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\$\(|\||&&|&|\)", line):
                words = shlex.split(part, comments=True)
                if words and Path(words[0]).name == "aiaas":
                    found.append(words[1:])
    return found


def test_the_deploy_docs_aiaas_commands_parse() -> None:
    commands = deploy_doc_commands()
    assert ["iac", "render", "--cloud", "aws", "-c", ".", "-o", "params.json"] in commands
    for args in commands:
        parse(args)


# -- deployed into moto's CloudFormation -----------------------------------------------------
@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEmulator]:
    with AwsEmulator(tmp_path_factory.mktemp("aws")) as emulator:
        yield emulator


def moto_body(text: str | None = None) -> str:
    """The template less what moto lacks (``AWS::Lambda::Url`` and its output)."""
    template = copy.deepcopy(load_template(text))
    del template["Resources"]["FunctionUrl"]
    del template["Outputs"]["FunctionUrl"]
    return json.dumps(template)


def _policy(document: Any) -> Any:
    """An inline policy as moto returns it: JSON, or (its gap) Python's repr of it."""
    if isinstance(document, str):
        try:
            return json.loads(document)
        except ValueError:
            return ast.literal_eval(document)
    return document


def deploy(aws: AwsEmulator, rows: list[Any], body: str) -> dict[str, str]:
    """Create the stack, or update it, with the rendered file's rows as they are; its
    outputs."""
    cf = aws.client("cloudformation")
    kwargs = {
        "StackName": "aiaas",
        "TemplateBody": body,
        "Parameters": rows,
        "Capabilities": ["CAPABILITY_NAMED_IAM"],
    }
    stacks = [
        s["StackName"]
        for s in cf.list_stacks()["StackSummaries"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    ]
    (cf.update_stack if "aiaas" in stacks else cf.create_stack)(**kwargs)
    # moto's gap: a resource an update adds is created when first looked at (its resource
    # map is lazy); listing them creates the ones nothing references (the permissions).
    cf.list_stack_resources(StackName="aiaas")
    (stack,) = cf.describe_stacks(StackName="aiaas")["Stacks"]
    assert stack["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE"), stack
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def role_policy(aws: AwsEmulator, role_arn: str) -> list[dict[str, Any]]:
    iam = aws.client("iam")
    role = role_arn.rsplit("/", 1)[1]
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = _policy(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
    # moto's gap: an ``Fn::If`` whose branch is AWS::NoValue leaves None in the list
    # (CloudFormation drops the item).
    return [s for s in document["Statement"] if s is not None]


def stack_problems(
    aws: AwsEmulator, folder: Path, params: dict[str, str], outputs: dict[str, str]
) -> list[str]:
    """How what moto created differs from aiaas.yaml and the provider's names (empty: none)."""
    cfg = load_config(folder)
    settings = cfg.provider_settings("sagemaker", _section())
    endpoint, region, bucket = params["EndpointName"], settings.region, settings.bucket
    problems: list[str] = []

    def expect(what: str, got: Any, want: Any) -> None:
        if got != want:
            problems.append(f"{what}: {got!r}, expected {want!r}")

    expect("bucket output", outputs["BucketName"], bucket)
    expect("role output", outputs["ExecutionRoleArn"], settings.role_arn)
    expect("repository output", outputs["RepositoryUri"], settings.image_uri.rsplit(":", 1)[0])
    rules = aws.client("s3").get_bucket_encryption(Bucket=bucket)[
        "ServerSideEncryptionConfiguration"
    ]["Rules"]
    sse = rules[0]["ApplyServerSideEncryptionByDefault"]
    expect(
        "bucket encryption", sse.get("SSEAlgorithm"), "aws:kms" if settings.kms_key_id else "AES256"
    )
    (repo,) = aws.client("ecr").describe_repositories()["repositories"]
    expect("tag mutability", repo["imageTagMutability"], "IMMUTABLE")
    # The execution role reads what the provider uploads (names.bundle_key).
    execution = {s["Sid"]: s for s in role_policy(aws, outputs["ExecutionRoleArn"])}
    bundle = names.bundle_key(settings.prefix, "sha256:" + "0" * 64)
    if not fnmatch.fnmatchcase(
        f"arn:aws:s3:::{bucket}/{bundle}", execution["ReadBundles"]["Resource"]
    ):
        problems.append(f"execution role cannot read {bundle}")
    expect("kms statement", "DecryptBundles" in execution, bool(settings.kms_key_id))
    # The deploying role: the provider's resources by their names.
    deployer = {s["Sid"]: s for s in role_policy(aws, outputs["DeployerRoleArn"])}
    arn = f"arn:aws:sagemaker:{region}:{ACCOUNT}"
    model = names.resource_name(endpoint, "0" * 16, {"image": settings.image_uri})
    for resource in (
        f"{arn}:model/{model}",
        f"{arn}:endpoint-config/{model}",
        f"{arn}:endpoint/{endpoint}",
    ):
        if not any(fnmatch.fnmatchcase(resource, r) for r in deployer["Endpoints"]["Resource"]):
            problems.append(f"deploying role cannot manage {resource}")
    log_arn = f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{names.log_group(endpoint)}:*"
    expect("deploy logs", deployer["Logs"]["Resource"], log_arn)
    expect("pass role", deployer["PassTheExecutionRole"]["Resource"], settings.role_arn)
    if "FunctionCodeKey" not in params:
        return problems
    # The function: the packaged zip's handler, its endpoint, a timeout above its own.
    fn = aws.client("lambda").get_function(FunctionName=outputs["FunctionName"])["Configuration"]
    assert PLATFORM.package is not None
    expect("handler", fn["Handler"], PLATFORM.package.handler.split()[0])
    expect("runtime", fn["Runtime"], params["FunctionRuntime"])
    expect("architectures", fn["Architectures"], [params["FunctionArchitecture"]])
    if not fn["Timeout"] > cfg.function.invoke_timeout_s:
        limit = cfg.function.invoke_timeout_s
        problems.append(
            f"function timeout {fn['Timeout']} s is not above function.invoke_timeout_s {limit}"
        )
    expect("role", fn["Role"], outputs["FunctionRoleArn"])
    env = fn["Environment"]["Variables"]
    expect("AIAAS_DEPLOYMENT", env.get("AIAAS_DEPLOYMENT"), endpoint)
    expect("AIAAS_API_KEYS", env.get("AIAAS_API_KEYS"), params.get("ApiKeyHashes", ""))
    (invoke, logs) = role_policy(aws, outputs["FunctionRoleArn"])
    expect(
        "function may call",
        (invoke["Action"], invoke["Resource"]),
        (["sagemaker:InvokeEndpoint", "sagemaker:DescribeEndpoint"], f"{arn}:endpoint/{endpoint}"),
    )
    (group,) = aws.client("logs").describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{endpoint}")[
        "logGroups"
    ]
    expect("log retention", group.get("retentionInDays"), 30)
    expect("function logs", logs["Resource"], f"{group['logGroupArn']}:*")
    lam = aws.client("lambda")
    try:
        policy = json.loads(lam.get_policy(FunctionName=endpoint)["Policy"])["Statement"]
    except lam.exceptions.ResourceNotFoundException:
        policy = []
    public = sorted((s["Action"], s["Principal"]) for s in policy)
    want = [("lambda:InvokeFunction", "*"), ("lambda:InvokeFunctionUrl", "*")]
    expect(
        "public URL permissions", public, want if params["FunctionUrlAuthType"] == "NONE" else []
    )
    return problems


def _resources(stmt: dict[str, Any]) -> list[str]:
    resource = stmt.get("Resource", [])
    return [resource] if isinstance(resource, str) else list(resource)


def _names(resources: list[str], arn: str) -> bool:
    return any(fnmatch.fnmatchcase(arn, r) for r in resources)  # IAM's * spans "/" too


def reach_problems(
    cfn: list[dict[str, Any]], infra: list[dict[str, Any]], arns: dict[str, str]
) -> list[str]:
    """Which roles the CloudFormation role's policy (``cfn``, as deployed) may write and
    pass, matched to the real role ARNs (``arns``: the stack's ``<Name>RoleArn`` outputs by
    ``<Name>``): it writes the deploying, function and execution roles and
    not CI's two; it passes the function role only, only to Lambda; the infrastructure
    role passes the CloudFormation role only to CloudFormation. Empty: as it should be."""
    problems = []
    (roles,) = [s for s in cfn if s["Sid"] == "Roles"]
    writes = _resources(roles)
    assert "iam:PutRolePolicy" in roles["Action"], roles
    for name, writable in (("Deployer", True), ("Function", True), ("Execution", True),
                           ("Infra", False), ("CloudFormation", False)):  # fmt: skip
        if _names(writes, arns[name]) != writable:
            problems.append(f"CloudFormationRole: may {'not ' if writable else ''}write {name}Role")
    (passing,) = [s for s in cfn if s["Sid"] == "PassTheFunctionRole"]
    for name in ("Deployer", "Function", "Execution", "Infra", "CloudFormation"):
        if _names(_resources(passing), arns[name]) != (name == "Function"):
            may = "may not" if name == "Function" else "may"
            problems.append(f"CloudFormationRole: {may} pass {name}Role")
    lambda_only = {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
    if passing.get("Condition") != lambda_only:
        problems.append("CloudFormationRole: passes FunctionRole not only to lambda")
    (infra_pass,) = [s for s in infra if s["Sid"] == "PassTheCloudFormationRole"]
    if _resources(infra_pass) != [arns["CloudFormation"]]:
        problems.append(f"InfraRole: passes {_resources(infra_pass)}")
    cfn_only = {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}}
    if infra_pass.get("Condition") != cfn_only:
        problems.append("InfraRole: passes CloudFormationRole not only to cloudformation")
    return problems


def function_zip(folder: Path) -> Path:
    """A stand-in for the packaged zip (moto's Lambda stores it, never runs it)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("functions/aws_lambda.py", "def handler(event, context): ...\n")
    path = folder / "dist" / "function-aws-x86_64.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def two_passes(aws: AwsEmulator, folder: Path, body: str, *extra: str) -> list[str]:
    """The documented flow: the stack without the function, the zip uploaded where render
    says, the stack again with it; what differs from aiaas.yaml at each pass."""
    aws.reset()
    env = {"AIAAS_API_KEYS": RECORD}
    rows, _ = render_rows("-c", str(folder), *extra, env=env)
    problems = stack_problems(aws, folder, as_params(rows), deploy(aws, rows, body))
    zipped = function_zip(folder)
    rows, told = render_rows("-c", str(folder), "--function-zip", str(zipped), *extra, env=env)
    params = as_params(rows)
    # Where render says to upload it is where the stack takes it from.
    (upload,) = [line for line in told.splitlines() if "aws s3 cp" in line]
    assert upload.endswith(f" s3://{params['BucketName']}/{params['FunctionCodeKey']}"), upload
    aws.client("s3").put_object(
        Bucket=params["BucketName"], Key=params["FunctionCodeKey"], Body=zipped.read_bytes()
    )
    return problems + stack_problems(aws, folder, params, deploy(aws, rows, body))


def test_the_stack_in_moto_has_what_aiaas_yaml_and_the_provider_name(
    aws: AwsEmulator, tmp_path: Path
) -> None:
    assert two_passes(aws, project(tmp_path), moto_body()) == []
    # No GitHubSubject: no CI roles (the deploying role trusts the account).
    (stack,) = aws.client("cloudformation").describe_stacks(StackName="aiaas")["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert {"InfraRoleArn", "CloudFormationRoleArn"}.isdisjoint(outputs)
    # ... and its roles keep the ARNs they had before CI's paths (no path without CI).
    for output in ("DeployerRoleArn", "FunctionRoleArn"):
        assert re.fullmatch(rf"arn:aws:iam::{ACCOUNT}:role/[^/]+", outputs[output]), output


def test_a_kms_key_alarms_github_and_iam_auth(aws: AwsEmulator, tmp_path: Path) -> None:
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    folder = project(tmp_path, kms_key_id=key)
    config = yaml.safe_load((folder / "aiaas.yaml").read_text())
    config["deploy"] = {
        "instance_count": 2,
        "rollout": {"strategy": "canary", "rollback_alarms": ["my-5xx"]},
    }
    config["function"] = {"auth": "platform", "invoke_timeout_s": 60}
    (folder / "aiaas.yaml").write_text(yaml.safe_dump(config))
    provider = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    subject = "repo:octo/models:environment:production"
    extra = ("--set", f"GitHubSubject={subject}", "--set", f"GitHubOidcProviderArn={provider}")
    assert two_passes(aws, folder, moto_body(), *extra) == []
    cf = aws.client("cloudformation")
    resources = cf.list_stack_resources(StackName="aiaas")["StackResourceSummaries"]
    deployer = next(r for r in resources if r["LogicalResourceId"] == "DeployerRole")
    role = aws.client("iam").get_role(RoleName=deployer["PhysicalResourceId"])["Role"]
    (trust,) = _policy(role["AssumeRolePolicyDocument"])["Statement"]
    assert trust["Principal"] == {"Federated": provider}
    assert trust["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == subject
    execution = {s["Sid"] for s in role_policy(aws, ROLE_ARN)}
    assert {"DecryptBundles", "WatchRollbackAlarms"} <= execution
    # CI's two roles, under the stack's path: GitHub's subject may assume the infrastructure
    # role, which may pass only the CloudFormation role, which only CloudFormation assumes.
    (stack,) = cf.describe_stacks(StackName="aiaas")["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    iam = aws.client("iam")
    infra = iam.get_role(RoleName=outputs["InfraRoleArn"].rsplit("/", 1)[1])["Role"]
    cfn = iam.get_role(RoleName=outputs["CloudFormationRoleArn"].rsplit("/", 1)[1])["Role"]
    assert infra["Path"] == cfn["Path"] == "/aiaas/aiaas/ci/"
    assert role["Path"] == "/aiaas/aiaas/app/"
    assert _policy(infra["AssumeRolePolicyDocument"])["Statement"] == [trust]
    (cfn_trust,) = _policy(cfn["AssumeRolePolicyDocument"])["Statement"]
    assert cfn_trust["Principal"] == {"Service": "cloudformation.amazonaws.com"}
    granted = {s["Sid"]: s for s in role_policy(aws, outputs["InfraRoleArn"])}
    assert granted["PassTheCloudFormationRole"]["Resource"] == outputs["CloudFormationRoleArn"]
    assert granted["FunctionZipEncryption"]["Resource"] == key
    stack_arn = f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/aiaas/"
    assert granted["ChangeSets"]["Resource"] == stack_arn + "*"
    assert stack["StackId"].startswith(stack_arn)
    cfn_stmts = role_policy(aws, outputs["CloudFormationRoleArn"])
    assert {"Roles", "Function", "FunctionCodeEncryption"} <= {s["Sid"] for s in cfn_stmts}
    # GitHubOidcProviderArn names the account's provider: the stack's roles may not touch it.
    assert "GitHubOidcProvider" not in {s["Sid"] for s in cfn_stmts}
    # What the CloudFormation role may write and pass, matched to the roles' real ARNs.
    arns = {k.removesuffix("RoleArn"): v for k, v in outputs.items() if k.endswith("RoleArn")}
    infra_stmts = list(granted.values())
    assert reach_problems(cfn_stmts, infra_stmts, arns) == []
    # Planted mistakes, each reported: the IAM writes on the whole stack path (CI's roles
    # included); the function role's pass on the app path (the deploying role included);
    # a pass without its service condition; the roles created without their paths.
    for sid, key, old, new, want in (
        ("Roles", "Resource", "/app/*", "/*", ["may write InfraRole",
                                                "may write CloudFormationRole"]),
        ("PassTheFunctionRole", "Resource", "/app/function/*", "/app/*",
         ["may pass DeployerRole"]),
        ("PassTheFunctionRole", "Condition", "", None,
         ["passes FunctionRole not only to lambda"]),
    ):  # fmt: skip
        planted = copy.deepcopy(cfn_stmts)
        (stmt,) = [s for s in planted if s["Sid"] == sid]
        if new is None:
            del stmt[key]
        else:
            stmt[key] = json.loads(json.dumps(stmt[key]).replace(old, new))
        assert [p.split(": ", 1)[1] for p in reach_problems(planted, infra_stmts, arns)] == want
    planted_stmts = copy.deepcopy(infra_stmts)
    (passing,) = [s for s in planted_stmts if s["Sid"] == "PassTheCloudFormationRole"]
    del passing["Condition"]
    assert reach_problems(cfn_stmts, planted_stmts, arns) == [
        "InfraRole: passes CloudFormationRole not only to cloudformation"
    ]
    at_root = {k: re.sub(r"role/.*/", "role/", v) if k in ("Deployer", "Function") else v
               for k, v in arns.items()}  # fmt: skip
    assert reach_problems(cfn_stmts, infra_stmts, at_root) == [
        "CloudFormationRole: may not write DeployerRole",
        "CloudFormationRole: may not write FunctionRole",
        "CloudFormationRole: may not pass FunctionRole",
    ]
    fn = aws.client("lambda").get_function(FunctionName="minilm")["Configuration"]
    assert fn["Timeout"] == 60 + TIMEOUT_MARGIN_S


def test_a_planted_short_function_timeout_is_reported(aws: AwsEmulator, tmp_path: Path) -> None:
    body = moto_body(TEMPLATE.read_text().replace("Timeout: !Ref FunctionTimeoutS", "Timeout: 3"))
    (problem,) = two_passes(aws, project(tmp_path), body)
    assert problem == "function timeout 3 s is not above function.invoke_timeout_s 30.0"
