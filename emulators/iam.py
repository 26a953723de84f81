"""IAM for the emulated AWS: what each request asks of IAM, and whether a caller's policies
allow it.

:func:`checks_for` names, for one control-plane request, every ``(action, resource,
condition context)`` AWS authorizes: the call's own action on the resource ARN it acts on,
and the actions AWS checks on the caller's behalf (``iam:PassRole`` for the execution role
of ``CreateModel``, ``sagemaker:AddTags`` for tags on create, what Application Auto Scaling
needs to register a SageMaker variant and to keep a target-tracking policy's alarms).
:func:`evaluate` runs AWS's identity-policy logic over them: an explicit ``Deny`` wins, else
an ``Allow`` whose ``Action``, ``Resource`` and ``Condition`` all match, else denied.

Why this exists beside moto's own access control (which the emulator turns on too, for its
signature check): moto 5.2.6 (``moto.iam.access_control``) checks the action only. It
authorizes SageMaker, Logs and Application Auto Scaling calls against the resource ``*``
(the emulator gives it SageMaker's and Logs' ARNs), it ignores every ``Condition`` of an
identity policy (its condition code only reads request values it is handed, and it is
handed none), it checks no action AWS checks on the caller's behalf, and it calls
S3's HeadBucket ``s3:HeadBucket`` (AWS: ``s3:ListBucket``).

Gaps from AWS's evaluation (named where they matter below): only identity policies of IAM
users are read (no roles' sessions, groups' policies are moto's, no resource policies, no
permission boundaries, no SCPs); condition operators other than the String, Arn and Bool
families, and the ``ForAnyValue``/``ForAllValues`` set forms, never match; no global
condition keys (``aws:SourceIp``, ``aws:RequestTag/...``) are in the context; policy
variables (``${aws:username}``) are not substituted; the resource ARNs and implied actions
of calls aiaas does not make are the plain ``service:Action`` on ``*``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PASSED_TO_SERVICE = "sagemaker.amazonaws.com"
SCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
SCALING_ROLE_NAME = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
SCALING_ROLE_PATH = f"/aws-service-role/{SCALING_SERVICE}/"

# S3 REST operations (as emulators.aws classifies them) and the IAM action each needs (the
# S3 API reference's "Permissions" of each; a multipart upload's parts are s3:PutObject).
S3_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObject": "s3:DeleteObject",
    "PutObjectTagging": "s3:PutObjectTagging",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",  # HeadBucket's reference: "s3:ListBucket permission"
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetBucketLocation": "s3:GetBucketLocation",
}
# SageMaker's name members and the ARN resource type each names.
SAGEMAKER_RESOURCES = (
    ("ModelName", "model"),
    ("EndpointConfigName", "endpoint-config"),
    ("EndpointName", "endpoint"),
)


@dataclass(frozen=True)
class Check:
    """One authorization AWS makes: ``action`` on ``resource`` with this condition context."""

    action: str  # "sagemaker:CreateModel"
    resource: str  # an ARN, or "*" for actions without resource-level permissions
    context: Mapping[str, str] = field(default_factory=dict)  # {"s3:prefix": "..."}
    also: tuple[str, ...] = ()  # other spellings of the same resource a statement may use

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


def sagemaker_arn(region: str, account: str, kind: str, name: str) -> str:
    """A SageMaker ARN; its name part is lowercase, as SageMaker writes its ARNs (so a
    policy naming a resource with capitals does not match it on AWS either)."""
    return f"arn:aws:sagemaker:{region}:{account}:{kind}/{name.lower()}"


def checks_for(
    service: str,
    action: str,
    params: Mapping[str, Any],
    *,
    region: str,
    account: str,
    scaling_role_exists: bool = True,
    endpoint_config: str | None = None,
) -> list[Check]:
    """What AWS authorizes for one request (``params``: the JSON body, or for S3 ``bucket``,
    ``key`` and ``query``). ``scaling_role_exists``: whether Application Auto Scaling's
    service-linked role for SageMaker is there (registering a target creates it, which the
    caller must be allowed); ``endpoint_config``: the config a registered endpoint runs."""
    if service == "s3":
        return _s3_checks(action, params)
    if service == "sagemaker":
        return _sagemaker_checks(action, params, region, account)
    if service == "logs":
        return _logs_checks(action, params, region, account)
    if service == "application-autoscaling":
        return _scaling_checks(
            action, params, region, account, scaling_role_exists, endpoint_config
        )
    if service == "sts" and action == "GetCallerIdentity":
        return []  # always allowed, whatever the policies say
    return [Check(f"{service}:{action}", "*")]


def _s3_checks(action: str, params: Mapping[str, Any]) -> list[Check]:
    bucket, key = str(params.get("bucket", "")), str(params.get("key", ""))
    needed = S3_ACTIONS.get(action, f"s3:{action}")
    if key:
        return [Check(needed, f"arn:aws:s3:::{bucket}/{key}")]
    context: dict[str, str] = {}
    prefix = (params.get("query") or {}).get("prefix")
    if action in ("ListObjects", "ListObjectsV2") and prefix:
        context["s3:prefix"] = str(prefix[0])
    return [Check(needed, f"arn:aws:s3:::{bucket}", context)]


def _sagemaker_checks(
    action: str, params: Mapping[str, Any], region: str, account: str
) -> list[Check]:
    """SageMaker's own action on the resource it names (its Service Authorization
    Reference: a Create/Describe/Delete/Update names the model, config or endpoint; List*
    take ``*``; tag calls the ``ResourceArn``), plus ``sagemaker:AddTags`` when a Create
    carries ``Tags`` and ``iam:PassRole`` for CreateModel's ``ExecutionRoleArn``. Gap:
    CreateEndpoint and UpdateEndpoint are checked on the endpoint only (AWS may check the
    endpoint config too)."""
    resource = "*"
    if action in ("AddTags", "ListTags", "DeleteTags"):
        resource = str(params.get("ResourceArn", "*"))
    elif not action.startswith("List"):
        for member, kind in reversed(SAGEMAKER_RESOURCES):  # an endpoint call names it
            name = params.get(member)
            if isinstance(name, str) and (kind in _kebab(action) or member == "EndpointName"):
                resource = sagemaker_arn(region, account, kind, name)
                break
    checks = [Check(f"sagemaker:{action}", resource)]
    if action.startswith("Create") and params.get("Tags") and resource != "*":
        checks.append(Check("sagemaker:AddTags", resource))
    role = params.get("ExecutionRoleArn")
    if action == "CreateModel" and isinstance(role, str):
        checks.append(Check("iam:PassRole", role, {"iam:PassedToService": PASSED_TO_SERVICE}))
    return checks


def _kebab(action: str) -> str:
    """``DescribeEndpointConfig`` → ``describe-endpoint-config``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", action).lower()


def _logs_checks(action: str, params: Mapping[str, Any], region: str, account: str) -> list[Check]:
    """A log group's actions on its ARN, a stream's (GetLogEvents, PutLogEvents) on the
    stream's. A group's ARN is written with and without a trailing ``:*`` (DescribeLogGroups
    returns the first); a statement written either way matches it here. Gap: which of the
    two AWS evaluates against is not documented."""
    group = params.get("logGroupName")
    if not isinstance(group, str):
        return [Check(f"logs:{action}", "*")]
    arn = f"arn:aws:logs:{region}:{account}:log-group:{group}"
    stream = params.get("logStreamName")
    if isinstance(stream, str) and action in ("GetLogEvents", "PutLogEvents"):
        return [Check(f"logs:{action}", f"{arn}:log-stream:{stream}")]
    return [Check(f"logs:{action}", f"{arn}:*", also=(arn,))]


def _scaling_checks(
    action: str,
    params: Mapping[str, Any],
    region: str,
    account: str,
    role_exists: bool,
    endpoint_config: str | None,
) -> list[Check]:
    """Application Auto Scaling's action on ``*``, and what it checks for the caller (its
    identity-based policy examples, "Permissions required for API actions", and SageMaker's
    "Auto scaling prerequisites" policy): registering a SageMaker variant needs
    DescribeEndpoint, DescribeEndpointConfig and UpdateEndpointWeightsAndCapacities, and
    ``iam:CreateServiceLinkedRole`` while the service-linked role does not exist; a
    target-tracking policy needs the CloudWatch alarm actions. Gap: scalable-target ARNs
    (resource-level permissions) are not modelled: every such call is on ``*``."""
    checks = [Check(f"application-autoscaling:{action}", "*")]
    resource_id = str(params.get("ResourceId", ""))
    if action == "RegisterScalableTarget" and resource_id.startswith("endpoint/"):
        endpoint = resource_id.split("/")[1]
        arn = sagemaker_arn(region, account, "endpoint", endpoint)
        checks += [
            Check("sagemaker:DescribeEndpoint", arn),
            Check("sagemaker:UpdateEndpointWeightsAndCapacities", arn),
        ]
        if endpoint_config is not None:
            config = sagemaker_arn(region, account, "endpoint-config", endpoint_config)
            checks.append(Check("sagemaker:DescribeEndpointConfig", config))
        if not role_exists:
            role = f"arn:aws:iam::{account}:role{SCALING_ROLE_PATH}{SCALING_ROLE_NAME}"
            context = {"iam:AWSServiceName": SCALING_SERVICE}
            checks.append(Check("iam:CreateServiceLinkedRole", role, context))
    if action == "PutScalingPolicy" and params.get("PolicyType") == "TargetTrackingScaling":
        checks += [Check("cloudwatch:PutMetricAlarm", "*"), Check("cloudwatch:DescribeAlarms", "*")]
    if action in ("DeleteScalingPolicy", "DeregisterScalableTarget"):
        checks += [Check("cloudwatch:DeleteAlarms", "*"), Check("cloudwatch:DescribeAlarms", "*")]
    return checks


# -- evaluation -------------------------------------------------------------------------------
def evaluate(policies: Iterable[Mapping[str, Any]], check: Check) -> str:
    """``"allow"``, ``"deny"`` (an explicit Deny) or ``"implicit"`` (no Allow matched) for
    one check under these policy documents."""
    allowed = False
    for policy in policies:
        statements = policy.get("Statement", [])
        for statement in [statements] if isinstance(statements, dict) else statements:
            if not _applies(statement, check):
                continue
            if statement.get("Effect") == "Deny":
                return "deny"
            allowed = True
    return "allow" if allowed else "implicit"


def denial(principal: str, check: Check, verdict: str) -> str:
    """AWS's AccessDenied text (the IAM user guide's "Access denied error messages")."""
    why = (
        "with an explicit deny in an identity-based policy"
        if verdict == "deny"
        else f"because no identity-based policy allows the {check.action} action"
    )
    return (
        f"User: {principal} is not authorized to perform: {check.action} on resource: "
        f"{check.resource} {why}"
    )


def _listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _applies(statement: Mapping[str, Any], check: Check) -> bool:
    if "NotAction" in statement:
        if _any_glob(statement["NotAction"], check.action, fold=True):
            return False
    elif not _any_glob(statement.get("Action", []), check.action, fold=True):
        return False
    resources = (check.resource, *check.also)
    if "NotResource" in statement:
        if any(_any_glob(statement["NotResource"], r) for r in resources):
            return False
    elif "Resource" in statement and not any(
        _any_glob(statement["Resource"], r) for r in resources
    ):
        return False
    return _conditions_hold(statement.get("Condition") or {}, check.context)


def _any_glob(patterns: Any, value: str, *, fold: bool = False) -> bool:
    """IAM's wildcards (``*`` any run, ``?`` one character); actions ignore case."""
    for pattern in _listed(patterns):
        if fold:
            pattern, value = pattern.lower(), value.lower()
        if fnmatch.fnmatchcase(value, pattern.replace("[", "[[]")):
            return True
    return False


def _conditions_hold(conditions: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    """Every operator's every key must hold (AWS: AND across operators and keys, OR across
    a key's values). A key absent from the context: the condition fails, except under an
    ``...IfExists`` operator or a negated one (AWS's "condition keys that are not present")."""
    for operator, keys in conditions.items():
        base = operator.removesuffix("IfExists")
        negated = "Not" in base
        for key, wanted in dict(keys).items():
            if key not in context:
                if operator.endswith("IfExists") or negated:
                    continue
                return False
            if not _operator_holds(base, _listed(wanted), context[key]):
                return False
    return True


def _operator_holds(operator: str, wanted: list[str], actual: str) -> bool:
    if operator in ("StringEquals", "ArnEquals"):
        return actual in wanted
    if operator == "StringNotEquals" or operator == "ArnNotEquals":
        return actual not in wanted
    if operator == "StringEqualsIgnoreCase":
        return actual.lower() in (w.lower() for w in wanted)
    if operator == "StringNotEqualsIgnoreCase":
        return actual.lower() not in (w.lower() for w in wanted)
    if operator in ("StringLike", "ArnLike"):
        return _any_glob(wanted, actual)
    if operator in ("StringNotLike", "ArnNotLike"):
        return not _any_glob(wanted, actual)
    if operator == "Bool":
        return actual.lower() in (w.lower() for w in wanted)
    return False  # gap: other operators (numeric, date, IP, set forms) never match
