"""The Alibaba Cloud template (iac/alibaba/template.json, ROS) and ``aiaas iac render --cloud
alibaba`` (issue 19).

Nothing offline deploys ROS, so the template is checked by what can be read from it, each
check shown to catch a planted mistake so that none passes silently:

- ``iac/check_ros.py``'s schema check (``make iac-check``, through ``iac/check.py``): resource
  types, property names, required properties, ``Fn::GetAtt`` attributes and every reference
  against ``iac/alibaba/schemas/ros-subset.json`` (the ROS catalogue of alibabacloud-ros-tran),
  and the project's rules for what no catalogue checks (the function's custom runtime, the
  HTTP trigger's authType, the OSS ACL);
- the documented RAM policies (docs/providers/pai.md, parsed) against the template's roles,
  statement for statement (a planted extra action is reported);
- the function's settings against what the function tier and its packaging say: the
  environment loaded through ``aiaas.config`` as a packaged function loads it, the custom
  runtime's port and bootstrap as ``aiaas function package --target alibaba`` prints them;
- the parameters ``aiaas iac render`` writes, against aiaas.yaml and the provider's own names.

Not shown offline (Alibaba Cloud only: ``aliyun ros PreviewStack`` in the workflow): that ROS
accepts each resource as written, the RAM policies' effect, Function Compute's start of the
custom runtime.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from iac_scripts import as_documented as documented
from iac_scripts import load_script
from typer.testing import CliRunner

from adapters.iac import RenderOptions, cloud_of, iac_target
from adapters.pai import SPEC, PaiSettings, names
from adapters.pai.iac import (
    DERIVED,
    FREE,
    TIMEOUT_MARGIN_S,
    function_hash,
    image_repository,
    read_ros_parameters,
    ros_parameters,
)
from adapters.pai.invoke import ENDPOINT_VARIABLE
from adapters.pai.settings import IMAGE as IMAGE_REFERENCE
from aiaas.cli import app
from aiaas.config import load_config
from aiaas.errors import ConfigError
from functions.auth import KEYS_ENV
from functions.platforms.alibaba import PLATFORM

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "iac" / "alibaba" / "template.json"
PAI_DOC = ROOT / "docs" / "providers" / "pai.md"
BOOTSTRAP = ROOT / "templates" / "functions" / "alibaba" / "bootstrap"
IMAGE = "registry.cn-hangzhou.aliyuncs.com/me/aiaas-server:0.1.0"
RECORD = "k1:" + "ab" * 16 + ":" + "cd" * 32  # an API key record: <id>:<salt>:<sha256>


def load_template() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return loaded


check_ros = load_script(ROOT / "iac" / "check_ros.py")


# -- iac/check_ros.py: the schema check --------------------------------------------------------
def schema_problems(folder: Path) -> list[str]:
    problems: list[str] = check_ros.run_schema_check(folder, check_ros.ros_templates(folder))
    return problems


def test_the_committed_template_passes_the_schema_check() -> None:
    assert schema_problems(ROOT / "iac") == []
    subset = json.loads(check_ros.SCHEMAS.read_text())
    assert subset["source"].startswith("alibabacloud-ros-tran 0.28.1")
    assert subset["licence"].startswith("Apache-2.0")
    # Every resource type of the template is in the vendored subset, with its required list.
    used = {r["Type"] for r in load_template()["Resources"].values()}
    assert used <= set(subset["resourceTypes"])
    assert all(subset["resourceTypes"][t]["required"] for t in used)


PLANTS = {
    # (what is replaced, by what): the problem reported
    ('"Type": "ALIYUN::SLS::Logstore"', '"Type": "ALIYUN::SLS::LogStore"'):
        "Resources.Logstore: type 'ALIYUN::SLS::LogStore' is not one the catalogue knows "
        "(did you mean ALIYUN::SLS::Logstore?)",
    ('"InternetAccess": true', '"InternetAcess": true'):
        "Resources.Function.Properties.InternetAcess: not a property the catalogue knows "
        "(did you mean InternetAccess?)",
    ('"EnableRequestMetrics": true', '"EnableRequestMetric": true'):  # inside a known Map
        "Resources.Function.Properties.LogConfig.EnableRequestMetric: not a property",
    ('"Fn::GetAtt": ["Trigger", "UrlInternet"]', '"Fn::GetAtt": ["Trigger", "Url"]'):
        "Trigger.Url: not an attribute of ALIYUN::FC3::Trigger",
    ('"AIAAS_PAI_ENDPOINT": {"Ref": "EasEndpoint"}', '"AIAAS_PAI_ENDPOINT": {"Ref": "EasEndpont"}'):
        "Ref 'EasEndpont' names no parameter, resource or pseudo parameter (did you mean "
        "EasEndpoint?)",
    ('resource/*/service/*_${ProjectHash}"}', 'resource/*/service/*_${ProjectHsh}"}'):
        "${ProjectHsh} names no parameter, resource or pseudo parameter",
    ('"Condition": "HasFunction",\n      "Properties": {\n        "Name"',
     '"Condition": "HasFunctio",\n      "Properties": {\n        "Name"'):
        "Resources.LogProject.Condition: condition 'HasFunctio' is not declared",
    ('"Handler": "index.handler",', ""): "Handler is required (ALIYUN::FC3::Function)",
    ('"python3.12": {"Runtime": "custom.debian12"', '"python3.12": {"Runtime": "python3.12"'):
        "Runtime: 'python3.12': the packaged function's bootstrap needs a custom runtime",
    ('"AllowedValues": ["anonymous", "function"]', '"AllowedValues": ["anonymous", "none"]'):
        "TriggerConfig.authType: 'none': not an HTTP trigger's authType",
    ('"AccessControl": "private"', '"AccessControl": "public"'):
        "Resources.Bucket.Properties.AccessControl: 'public': not an OSS ACL",
    # Shapes: the bucket's Tags are a Map (not CloudFormation's list of Key/Value), ...
    ('"Tags": {"aiaas:project": {"Fn::Sub": "oss://${BucketName}/${BundlePrefix}"}}',
     '"Tags": [{"Key": "aiaas:project", "Value": {"Fn::Sub": "oss://${BucketName}/${BundlePrefix}"}}]'):
        "Resources.Bucket.Properties.Tags: a List where the catalogue takes Map",
    ('"BlockPublicAccess": true', '"BlockPublicAccess": {"Enabled": true}'):  # ... a Boolean
        "Resources.Bucket.Properties.BlockPublicAccess: a Map where the catalogue takes Boolean",
    ('"methods": ["GET", "HEAD", "POST"]', '"methods": ["GET", "HEAD", {"Ref": "EasEndpoint"}]'):
        "TriggerConfig.methods: value not knowable offline, so not checked",
    ('"FunctionRoleArn": {"Condition": "HasFunction", ', '"FunctionRoleArn": {'):
        "Outputs.FunctionRoleArn.Value: refers to FunctionRole, which exists only under "
        "condition HasFunction",
    ('"InfraRoleArn": {"Condition": "TrustsGitHub", ', '"InfraRoleArn": {'):
        "Outputs.InfraRoleArn.Value: refers to InfraRole, which exists only under condition "
        "TrustsGitHub",
}  # fmt: skip


def planted(tmp_path: Path) -> Path:
    """A copy of the template with every planted mistake, beside a broken file."""
    text = TEMPLATE.read_text()
    for old, new in PLANTS:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "alibaba").mkdir()
    (tmp_path / "alibaba" / "template.json").write_text(text)
    (tmp_path / "alibaba" / "broken.json").write_text(TEMPLATE.read_text()[:-40])
    return tmp_path


def test_planted_mistakes_fail_the_schema_check(tmp_path: Path) -> None:
    problems = schema_problems(planted(tmp_path))
    expected = ["alibaba/broken.json: not JSON", *PLANTS.values()]
    for one in expected:
        assert sum(one in p for p in problems) == 1, (one, problems)
    assert len(problems) == len(expected), problems


def test_each_planted_mistake_fails_make_iac_check(tmp_path: Path) -> None:
    """iac/check.py as make iac-check runs it (a real process, under the network guard), on a
    folder with the planted template alone: its ros-schema check fails with each mistake,
    and nothing else runs (no CloudFormation template, no workflow). make iac-check shows the
    committed template clean."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "iac" / "check.py"), str(planted(tmp_path))],
        capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT / "tests" / "guarded_site"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    header, *found = [line for line in r.stdout.splitlines() if not line.startswith("iac-check")]
    problems = len(PLANTS) + 1
    assert header.startswith(f"ros-schema: 2 ROS template(s), {problems} problem(s)"), r.stdout
    for one in ["not JSON", *PLANTS.values()]:
        assert sum(one in line for line in found) == 1, (one, r.stdout)


# -- the documented RAM policies ---------------------------------------------------------------
PLACEHOLDERS = {
    "${Region}": "<region>",
    "${ALIYUN::TenantId}": "<uid>",
    "${ProjectHash}": "<hash6>",
    "${BucketName}": "<bucket>",
    "${BundlePrefix}": "<oss_prefix>",
    "${ServiceName}": "<service>",
    "${FunctionHash}": "<hash8>",
    "${ALIYUN::StackId}": "<stack-id>",
    "${ImageRepository}": "<namespace>/<repository>",
}


def as_documented(value: Any) -> Any:
    """A template value in the doc's terms: ``Fn::Sub`` strings with its placeholders."""
    return documented(value, PLACEHOLDERS)


def documented_policies() -> list[dict[str, Any]]:
    """The doc's three policies: the deploying identity's, the function role's, then CI's
    infrastructure role's."""
    text = PAI_DOC.read_text()
    blocks = [json.loads(b) for b in re.findall(r"^```json\n(.*?)^```", text, re.M | re.S)]
    return [b for b in blocks if isinstance(b, dict) and "Statement" in b]


def role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    (policy,) = template["Resources"][role]["Properties"]["Policies"]
    return list(policy["PolicyDocument"]["Statement"])


def differences(ours: list[dict[str, Any]], doc: list[dict[str, Any]]) -> list[str]:
    """How the template's statements differ from the doc's, statement by statement."""
    ours = [as_documented(s) for s in ours]
    problems = [f"statement {i}: template {a} != doc {b}"
                for i, (a, b) in enumerate(zip(ours, doc, strict=False)) if a != b]  # fmt: skip
    if len(ours) != len(doc):
        problems.append(f"{len(ours)} statements in the template, {len(doc)} in the doc")
    return problems


def test_the_deploying_role_is_the_documented_policy_statement_for_statement() -> None:
    deployer, _, _ = documented_policies()
    assert (
        differences(role_statements(load_template(), "DeployerRole"), deployer["Statement"]) == []
    )


def test_a_planted_extra_action_in_the_deploying_role_is_reported() -> None:
    deployer, _, _ = documented_policies()
    stmts = role_statements(load_template(), "DeployerRole")
    stmts[3] = {**stmts[3], "Action": [*stmts[3]["Action"], "oss:DeleteObject"]}
    (problem,) = differences(stmts, deployer["Statement"])
    assert problem.startswith("statement 3:") and "oss:DeleteObject" in problem


def test_the_function_role_may_only_describe_its_service_and_write_its_logs() -> None:
    template = load_template()
    role = template["Resources"]["FunctionRole"]
    assert role["Condition"] == "HasFunction"
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Principal": {"Service": ["fc.aliyuncs.com"]},
        }
    ]
    describe, logs = role_statements(template, "FunctionRole")
    _, function, _ = documented_policies()
    assert differences([describe], function["Statement"]) == []
    # Its own logstore only.
    assert logs == {
        "Effect": "Allow",
        "Action": "log:PostLogStoreLogs",
        "Resource": {"Fn::Sub": "acs:log:${Region}:${ALIYUN::TenantId}:project/${LogProject}/"
                                "logstore/${Logstore.LogstoreName}"},
    }  # fmt: skip
    function_props = template["Resources"]["Function"]["Properties"]
    assert function_props["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    assert function_props["LogConfig"]["Logstore"] == {"Fn::GetAtt": ["Logstore", "LogstoreName"]}


def test_the_deploying_role_trusts_github_or_the_account() -> None:
    trust = load_template()["Resources"]["DeployerRole"]["Properties"]["AssumeRolePolicyDocument"]
    ((condition, github, account),) = [s["Fn::If"] for s in trust["Statement"]]
    assert condition == "TrustsGitHub"
    assert github["Principal"] == {"Federated": [{"Ref": "GitHubOidcProviderArn"}]}
    assert github["Condition"]["StringEquals"] == {
        "oidc:aud": "sts.aliyuncs.com",
        "oidc:iss": "https://token.actions.githubusercontent.com",
        "oidc:sub": {"Ref": "GitHubSubject"},
    }
    assert account["Principal"] == {"RAM": [{"Fn::Sub": "acs:ram::${ALIYUN::TenantId}:root"}]}


# -- CI's infrastructure role (InfraRole) ------------------------------------------------------
ROS_RAM = "ROS: help/en/ros/ram-authorization (API table)"
CR_RAM = "Container Registry: help/en/acr/user-guide/ram-authorization-information"
OSS_RAM = "OSS: help/en/oss/user-guide/ram-policy-actions (bucket and object actions)"
RAM_API = "RAM: help/en/ram/developer-reference (each API's Authorization information)"
FC_RAM = (
    "Function Compute 3.0: help/en/functioncompute/fc-3-0/developer-reference/api-fc-2023-03-30-ram"
)
SLS_RAM = "Simple Log Service: help/en/sls/developer-reference/api-sls-2020-12-30-ram"
EAS_RAM = "PAI-EAS: each API page's Authorization information (docs/providers/pai.md)"
DOCUMENTED_ACTIONS = {
    **dict.fromkeys(["ros:ListStacks", "ros:PreviewStack", "ros:GetStack", "ros:UpdateStack"],
                    ROS_RAM),
    **dict.fromkeys(["cr:GetAuthorizationToken", "cr:PullRepository", "cr:PushRepository"],
                    CR_RAM),
    **dict.fromkeys(["oss:PutObject", "oss:GetObject", "oss:AbortMultipartUpload",
                     "oss:GetBucketInfo", "oss:GetBucketAcl", "oss:PutBucketAcl",
                     "oss:GetBucketPublicAccessBlock", "oss:PutBucketPublicAccessBlock",
                     "oss:GetBucketEncryption", "oss:PutBucketEncryption",
                     "oss:GetBucketVersioning", "oss:PutBucketVersioning",
                     "oss:GetBucketLifecycle", "oss:PutBucketLifecycle",
                     "oss:GetBucketTagging", "oss:PutBucketTagging"], OSS_RAM),
    **dict.fromkeys(["ram:GetRole", "ram:CreateRole", "ram:UpdateRole", "ram:DeleteRole",
                     "ram:ListPoliciesForRole", "ram:AttachPolicyToRole",
                     "ram:DetachPolicyFromRole", "ram:GetPolicy", "ram:CreatePolicy",
                     "ram:DeletePolicy", "ram:ListPolicyVersions", "ram:CreatePolicyVersion",
                     "ram:DeletePolicyVersion", "ram:PassRole", "ram:CreateServiceLinkedRole",
                     "sts:AssumeRole"], RAM_API),
    **dict.fromkeys(["fc:CreateFunction", "fc:GetFunction", "fc:UpdateFunction",
                     "fc:DeleteFunction", "fc:CreateTrigger", "fc:GetTrigger",
                     "fc:UpdateTrigger", "fc:DeleteTrigger"], FC_RAM),
    **dict.fromkeys(["log:CreateProject", "log:GetProject", "log:UpdateProject",
                     "log:DeleteProject", "log:CreateLogStore", "log:GetLogStore",
                     "log:UpdateLogStore", "log:DeleteLogStore", "log:PostLogStoreLogs"],
                    SLS_RAM),
    **dict.fromkeys(["eas:CreateService", "eas:DescribeMachineSpec", "eas:ListServices",
                     "eas:DescribeService", "eas:UpdateService", "eas:UpdateServiceVersion",
                     "eas:DeleteService", "eas:CreateServiceAutoScaler",
                     "eas:UpdateServiceAutoScaler", "eas:DeleteServiceAutoScaler",
                     "eas:DescribeServiceAutoScaler", "eas:DescribeServiceLog",
                     "eas:DescribeServiceEvent"], EAS_RAM),
}  # fmt: skip
"""Every RAM action the template names, with the page its name (and resource form) was read
from. What each name is is checked offline; what RAM grants with it is not (no RAM evaluation
offline: Alibaba Cloud only)."""


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def template_actions(template: dict[str, Any]) -> set[str]:
    """Every action of every role's trust and policies."""
    found: set[str] = set()
    for resource in template["Resources"].values():
        if resource["Type"] != "ALIYUN::RAM::Role":
            continue
        props = resource["Properties"]
        statements = list(props["AssumeRolePolicyDocument"]["Statement"])
        statements = [b for s in statements for b in (s["Fn::If"][1:] if "Fn::If" in s else [s])]
        for policy in props["Policies"]:
            statements += policy["PolicyDocument"]["Statement"]
        for statement in statements:
            found.update(_as_list(statement["Action"]))
    return found


def test_every_action_is_one_its_service_documents() -> None:
    template = load_template()
    assert template_actions(template) - set(DOCUMENTED_ACTIONS) == set()
    # A misspelt action would be refused by RAM at the first pass (or, worse, never match):
    stmts = role_statements(template, "InfraRole")
    stmts[6] = {**stmts[6], "Action": [*stmts[6]["Action"], "ram:AttachPolicyToRoles"]}
    template["Resources"]["InfraRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ] = stmts
    assert template_actions(template) - set(DOCUMENTED_ACTIONS) == {"ram:AttachPolicyToRoles"}


def test_the_infra_role_trusts_only_githubs_subject() -> None:
    template = load_template()
    infra = template["Resources"]["InfraRole"]
    assert infra["Condition"] == "TrustsGitHub"  # no GitHub, no CI: no role
    (trust,) = infra["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    deployer = template["Resources"]["DeployerRole"]["Properties"]["AssumeRolePolicyDocument"]
    ((_, github, _),) = [s["Fn::If"] for s in deployer["Statement"]]
    assert trust == github  # the deploying role's GitHub trust, and no account fallback
    assert trust["Principal"] == {"Federated": [{"Ref": "GitHubOidcProviderArn"}]}
    assert trust["Condition"] == {
        "StringEquals": {
            "oidc:aud": "sts.aliyuncs.com",
            "oidc:iss": "https://token.actions.githubusercontent.com",
            "oidc:sub": {"Ref": "GitHubSubject"},
        }
    }
    output = template["Outputs"]["InfraRoleArn"]
    assert output["Condition"] == "TrustsGitHub"
    assert output["Value"] == {"Fn::GetAtt": ["InfraRole", "Arn"]}


def test_the_infra_role_is_the_documented_policy_statement_for_statement() -> None:
    _, _, infra = documented_policies()
    assert differences(role_statements(load_template(), "InfraRole"), infra["Statement"]) == []


def test_a_planted_extra_action_in_the_infra_role_is_reported() -> None:
    _, _, infra = documented_policies()
    stmts = role_statements(load_template(), "InfraRole")
    stmts[4] = {**stmts[4], "Action": [*stmts[4]["Action"], "oss:DeleteObject"]}
    (problem,) = differences(stmts, infra["Statement"])
    assert problem.startswith("statement 4:") and "oss:DeleteObject" in problem


def _arn_matches(pattern: str, arn: str) -> bool:
    """RAM's match of a Resource: ``*`` is any run of characters."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), arn) is not None


def _filled(value: Any, parameters: dict[str, str]) -> str:
    text: str = value["Fn::Sub"] if isinstance(value, dict) else value
    return re.sub(r"\$\{([^}]+)\}", lambda m: parameters[m[1]], text)


def test_the_infra_role_names_exactly_this_stacks_resources_and_not_itself(
    tmp_path: Path,
) -> None:
    """Each resource ARN of the infra role, filled with a real render's parameters, is the one
    resource the template creates (or the object the workflow writes), so a renamed resource
    cannot leave the policy behind; nothing in it names the infra role itself (it cannot
    widen its own policy)."""
    template = load_template()
    res = template["Resources"]
    folder = project(tmp_path)
    zipped = tmp_path / "function-alibaba-x86_64.zip"
    zipped.write_bytes(b"PK")
    params = render_cli("-c", str(folder), "--cloud", "alibaba", "--function-zip", str(zipped))
    params |= {"ALIYUN::TenantId": "1234567890", "ALIYUN::StackId": "4a6c9851-stack"}
    statements = role_statements(template, "InfraRole")

    def allowed(action: str, arn: str) -> bool:
        return any(
            action in _as_list(s["Action"])
            and any(_arn_matches(_filled(r, params), arn) for r in _as_list(s["Resource"]))
            for s in statements
        )

    uid, region = params["ALIYUN::TenantId"], params["Region"]
    for role in ("DeployerRole", "FunctionRole"):
        props = res[role]["Properties"]
        name = _filled(props["RoleName"], params)
        (policy,) = props["Policies"]
        assert allowed("ram:UpdateRole", f"acs:ram:*:{uid}:role/{name}")
        policy_name = _filled(policy["PolicyName"], params)
        assert allowed("ram:CreatePolicyVersion", f"acs:ram:*:{uid}:policy/{policy_name}")
    function_role = _filled(res["FunctionRole"]["Properties"]["RoleName"], params)
    deployer = _filled(res["DeployerRole"]["Properties"]["RoleName"], params)
    assert allowed("ram:PassRole", f"acs:ram:*:{uid}:role/{function_role}")
    assert not allowed("ram:PassRole", f"acs:ram:*:{uid}:role/{deployer}")
    project_name = _filled(res["LogProject"]["Properties"]["Name"], params)
    logstore = res["Logstore"]["Properties"]["LogstoreName"]
    assert allowed("log:UpdateProject", f"acs:log:{region}:{uid}:project/{project_name}")
    logstore_arn = f"acs:log:{region}:{uid}:project/{project_name}/logstore/{logstore}"
    assert allowed("log:UpdateLogStore", logstore_arn)
    assert res["Function"]["Properties"]["FunctionName"] == {"Ref": "ServiceName"}
    service, trigger = params["ServiceName"], res["Trigger"]["Properties"]["TriggerName"]
    assert allowed("fc:UpdateFunction", f"acs:fc:{region}:{uid}:functions/{service}")
    assert allowed(
        "fc:UpdateTrigger", f"acs:fc:{region}:{uid}:functions/{service}/triggers/{trigger}"
    )
    assert not allowed("fc:UpdateFunction", f"acs:fc:{region}:{uid}:functions/other_123456")
    bucket = params["BucketName"]
    assert res["Bucket"]["Properties"]["BucketName"] == {"Ref": "BucketName"}
    assert allowed("oss:PutObject", f"acs:oss:*:*:{bucket}/{params['FunctionCodeKey']}")
    assert not allowed("oss:PutObject", f"acs:oss:*:*:{bucket}/{params['BundlePrefix']}/v1/x")
    assert allowed("ros:UpdateStack", f"acs:ros:{region}:{uid}:stack/4a6c9851-stack")
    assert not allowed("ros:UpdateStack", f"acs:ros:{region}:{uid}:stack/another")
    # pai.image's repository, in any instance, and no other repository.
    assert params["ImageRepository"] == "me/aiaas-server"
    assert allowed("cr:PushRepository", f"acs:cr:{region}:{uid}:repository/cri-x/me/aiaas-server")
    assert not allowed("cr:PushRepository", f"acs:cr:{region}:{uid}:repository/cri-x/me/other")
    # Each bucket setting the template makes, the role may read and write: no more.
    settings = {"AccessControl": "Acl", "BlockPublicAccess": "PublicAccessBlock",
                "ServerSideEncryptionConfiguration": "Encryption",
                "VersioningConfiguration": "Versioning", "LifecycleConfiguration": "Lifecycle",
                "Tags": "Tagging"}  # fmt: skip
    assert set(res["Bucket"]["Properties"]) == {"BucketName", *settings}
    bucket_actions = {f"oss:{verb}Bucket{s}" for s in settings.values() for verb in ("Get", "Put")}
    (on_bucket,) = [
        s for s in statements if s["Resource"] == {"Fn::Sub": "acs:oss:*:*:${BucketName}"}
    ]
    assert set(on_bucket["Action"]) == bucket_actions | {"oss:GetBucketInfo"}
    infra_name = _filled(res["InfraRole"]["Properties"]["RoleName"], params)
    assert not any(allowed(a, f"acs:ram:*:{uid}:{kind}/{infra_name}")
                   for a in DOCUMENTED_ACTIONS if a.startswith("ram:")
                   for kind in ("role", "policy"))  # fmt: skip


WORKFLOW = ROOT / "iac" / "github" / "deploy.yml"


def test_the_infra_role_holds_what_the_workflows_alibaba_jobs_call_and_no_other_ros_or_cr() -> None:
    """The aliyun ros/cr calls and docker's registry calls of the alibaba-image, -validate and
    -deploy jobs (which assume ALIBABA_INFRA_ROLE_ARN), against the policy: each is granted,
    and the policy grants no ROS or Container Registry action they do not make."""
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    scripts = "\n".join(step.get("run", "") for name in ("alibaba-image", "alibaba-validate",
                        "alibaba-deploy") for step in jobs[name]["steps"])  # fmt: skip
    called = {f"{service}:{api}" for service, api in
              re.findall(r"aliyun (ros|cr) ([A-Z][A-Za-z]+)", scripts)}  # fmt: skip
    called |= {"cr:PullRepository"} if "docker manifest inspect" in scripts else set()
    called |= {"cr:PushRepository"} if "docker push" in scripts else set()
    called |= {"oss:PutObject"} if "aliyun oss cp" in scripts else set()
    assert called >= {"ros:ListStacks", "ros:GetStack", "ros:PreviewStack", "ros:UpdateStack",
                      "cr:GetAuthorizationToken", "cr:PushRepository"}  # fmt: skip
    granted = {a for s in role_statements(load_template(), "InfraRole")
               for a in _as_list(s["Action"])}  # fmt: skip
    assert called <= granted
    assert {a for a in granted if a.startswith(("ros:", "cr:"))} == {
        a for a in called if a.startswith(("ros:", "cr:"))
    }


RULE_KEYS = {"ID", "Prefix", "Status", "Expiration", "AbortMultipartUpload", "Filter",
             "Transition"}  # fmt: skip
"""The keys of a lifecycle rule ROS CDK's RosBucket.RuleProperty renders. The catalogue does
not list them (``Rule: {}``), so iac/check_ros.py does not check them, and no source read
shows ROS taking NoncurrentVersionExpiration (rostran ignores Terraform's): unverified
against ROS itself (PreviewStack)."""


def test_the_bucket_is_private_encrypted_versioned_and_expires_nothing_live() -> None:
    bucket = load_template()["Resources"]["Bucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert props["AccessControl"] == "private" and props["BlockPublicAccess"] is True
    assert props["ServerSideEncryptionConfiguration"] == {"SSEAlgorithm": "AES256"}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["LifecycleConfiguration"]["Rule"]
    assert set(rule) <= RULE_KEYS
    # The provider's layout (adapters/pai/provider.py): bundles at <oss_prefix>/<version>/,
    # manifests at <oss_prefix>/manifests/, zips at <oss_prefix>/functions/: no prefix holds
    # the bundles alone, and OSS matches rules by prefix, so nothing is expired by age (a
    # live manifest or function zip would go too): the rule only aborts incomplete uploads.
    assert rule == {
        "ID": "aiaas-incomplete-uploads",
        "Prefix": {"Fn::Sub": "${BundlePrefix}/"},
        "Status": "Enabled",
        "AbortMultipartUpload": {"Days": 7},
    }
    assert props["Tags"] == {"aiaas:project": {"Fn::Sub": "oss://${BucketName}/${BundlePrefix}"}}


def test_the_rules_refuse_a_stack_in_another_region_or_github_without_its_provider() -> None:
    """ROS evaluates Rules before it creates anything (not run offline: the pseudo parameter
    in an assertion is unverified); render refuses the GitHub case itself."""
    rules = load_template()["Rules"]
    (region,) = rules["RegionIsTheStacks"]["Assertions"]
    assert region["Assert"] == {"Fn::Equals": [{"Ref": "Region"}, {"Ref": "ALIYUN::Region"}]}
    github = rules["GitHubNeedsItsProvider"]
    conditions = load_template()["Conditions"]
    assert github["RuleCondition"] == conditions["TrustsGitHub"]
    (provider,) = github["Assertions"]
    assert provider["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "GitHubOidcProviderArn"}, ""]}]
    }


def test_the_deploying_role_lasts_as_long_as_the_longest_deploy() -> None:
    from adapters.pai.settings import PaiSection

    role = load_template()["Resources"]["DeployerRole"]["Properties"]
    limit = PaiSection.model_fields["deploy_timeout_s"].metadata
    longest = max(m.le for m in limit if getattr(m, "le", None) is not None)
    assert longest < role["MaxSessionDuration"] <= 43200  # RAM's maximum


# -- the function, as the function tier and its packaging see it -------------------------------
def test_the_function_runs_the_packaged_bootstrap_as_packaging_says() -> None:
    """The custom runtime: FC starts /code/bootstrap, which serves on port 9000 (the handler
    line ``aiaas function package`` prints) with the runtime's python3 of --python."""
    from functions.alibaba_fc import FC_PORT

    template = load_template()
    props = template["Resources"]["Function"]["Properties"]
    assert props["CustomRuntimeConfig"] == {"Command": ["/code/bootstrap"], "Port": FC_PORT}
    assert PLATFORM.package is not None
    handler = PLATFORM.package.handler.format(python="3.11", arch="x86_64")
    assert f"port {FC_PORT}" in handler and "./bootstrap" in handler
    assert "python3.11 as python3" in handler
    assert "exec python3 -m functions.alibaba_fc" in BOOTSTRAP.read_text()
    runtimes = template["Mappings"]["PythonRuntimes"]
    assert set(runtimes) == set(template["Parameters"]["FunctionPython"]["AllowedValues"])
    # custom.debian12's /usr/bin/python3 is 3.11; 3.12 lives under /opt/python3.12.
    assert runtimes["python3.11"] == {
        "Runtime": "custom.debian12",
        "Path": "/usr/local/bin:/usr/bin:/bin",
    }
    assert runtimes["python3.12"]["Path"].startswith("/opt/python3.12/bin:")
    assert props["Code"] == {
        "OssBucketName": {"Fn::GetAtt": ["Bucket", "Name"]},
        "OssObjectName": {"Ref": "FunctionCodeKey"},
    }
    trigger = template["Resources"]["Trigger"]["Properties"]
    assert trigger["TriggerType"] == "http"
    assert trigger["TriggerConfig"]["authType"] == {"Ref": "FunctionAuthType"}
    assert template["Outputs"]["FunctionUrl"]["Value"] == {"Fn::GetAtt": ["Trigger", "UrlInternet"]}


def test_the_environment_is_what_the_function_tier_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template's variables, its references filled for one deployment, read by the
    function's own startup (functions.bootstrap: FunctionEnvironment.read and function_config
    on the packaged aiaas.json, with the variables in the process's environment): the
    function runs provider pai, read without pydantic (AIAAS_PROVIDER names the packaged
    provider), for the deployment, and its service is the template's ServiceName."""
    from functions.bootstrap import FunctionEnvironment, function_config
    from functions.packaging import function_config_json

    template = load_template()
    variables = template["Resources"]["Function"]["Properties"]["EnvironmentVariables"]
    assert set(variables) == {"AIAAS_PROVIDER", "AIAAS_DEPLOYMENT", KEYS_ENV, ENDPOINT_VARIABLE,
                              "PATH"}  # fmt: skip
    assert ENDPOINT_VARIABLE in SPEC.invoke_environment
    assert variables[KEYS_ENV] == {"Ref": "ApiKeyHashes"}
    assert template["Parameters"]["ApiKeyHashes"]["NoEcho"] is True
    assert variables[ENDPOINT_VARIABLE] == {"Ref": "EasEndpoint"}
    folder = project(tmp_path)
    rendered = render_cli("-c", str(folder), "--cloud", "alibaba")
    filled = {"DeploymentName": rendered["DeploymentName"]}
    pinned = ("AIAAS_PROVIDER", "AIAAS_DEPLOYMENT")
    env = {k: filled[v["Ref"]] if isinstance(v, dict) else v
           for k, v in variables.items() if k in pinned}  # fmt: skip
    packaged = tmp_path / "aiaas.json"
    packaged.write_bytes(function_config_json(load_config(folder, env={})))
    for name, value in {**env, "AIAAS_CONFIG": str(packaged)}.items():
        monkeypatch.setenv(name, value)
    started = FunctionEnvironment.read()
    cfg = function_config(started)
    assert cfg.provider == "pai" and cfg.project is None  # the light path held
    assert started.deployment == rendered["DeploymentName"]
    assert isinstance(cfg.settings, PaiSettings)
    assert names.service_name(started.deployment, cfg.settings) == rendered["ServiceName"]


# -- aiaas iac render --cloud alibaba ----------------------------------------------------------
def project(tmp_path: Path, **pai: Any) -> Path:
    """A project whose aiaas.yaml drives the pai provider."""
    section = {"region": "cn-hangzhou", "oss_bucket": "my-models", "image": IMAGE} | pai
    config = {
        "model": {"name": "minilm", "entrypoint": "model:Model"},
        "provider": "pai",
        "pai": section,
    }
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / "aiaas.yaml").write_text(yaml.safe_dump(config))
    return folder


def render_cli(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """``aiaas iac render ...``: the parameters of the file it wrote."""
    result = CliRunner().invoke(app, ["iac", "render", *args], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    out = Path(args[args.index("-o") + 1]).read_text() if "-o" in args else result.stdout
    return read_ros_parameters(out)


def _section() -> Any:
    from adapters.pai.settings import PaiSection

    return PaiSection


def test_rendered_parameters_are_the_templates_and_the_providers_names(tmp_path: Path) -> None:
    folder = project(tmp_path, workspace_id="123456", oss_prefix="team-a", prefix="proj")
    zipped = tmp_path / "function-alibaba-x86_64.zip"
    zipped.write_bytes(b"PK")
    out = tmp_path / "params.txt"
    result = CliRunner().invoke(
        app,
        ["iac", "render", "-c", str(folder), "-o", str(out), "--function-zip", str(zipped),
         "--set", "FunctionMemoryMB=1024", "--set", "EasEndpoint=http://x.vpc"],
        env={KEYS_ENV: RECORD},
    )  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    assert out.stat().st_mode & 0o777 == 0o600  # it holds the keys' hashes
    params = read_ros_parameters(out.read_text())
    template_params = load_template()["Parameters"]
    assert set(params) <= set(template_params)
    # Every parameter is derived from aiaas.yaml, set by hand, or the zip's/keys'.
    assert set(template_params) == DERIVED | FREE | {"FunctionCodeKey", "ApiKeyHashes"}
    assert set(params) >= DERIVED
    assert all("Default" in p for k, p in template_params.items() if k not in DERIVED)
    # The provider's own names, from the same aiaas.yaml.
    settings = load_config(folder).provider_settings("pai", _section())
    assert cloud_of("pai") == "alibaba"
    assert params["Region"] == settings.region == "cn-hangzhou"
    assert params["DeploymentName"] == "minilm"
    assert params["ServiceName"] == names.service_name("minilm", settings)
    assert params["ServiceName"] == f"minilm_{names.project_hash(settings)}"
    assert params["ProjectHash"] == names.project_hash(settings)
    assert params["FunctionHash"] == function_hash(params["ServiceName"])
    assert params["BucketName"] == settings.oss_bucket
    assert params["BundlePrefix"] == settings.oss_prefix == "team-a"
    assert params["ImageRepository"] == "me/aiaas-server"  # IMAGE without host and tag
    assert float(params["FunctionTimeoutS"]) == load_config(folder).function.invoke_timeout_s + (
        TIMEOUT_MARGIN_S
    )
    assert params["FunctionAuthType"] == "anonymous"  # function.auth: api_key
    assert params["FunctionPython"] == "python3.11"
    assert re.fullmatch(r"team-a/functions/[0-9a-f]{64}/function-alibaba-x86_64\.zip",
                        params["FunctionCodeKey"])  # fmt: skip
    assert params["ApiKeyHashes"] == RECORD
    assert (params["FunctionMemoryMB"], params["EasEndpoint"]) == ("1024", "http://x.vpc")
    # Each derived value passes the template's own pattern for it.
    for name in DERIVED:
        pattern = template_params[name].get("AllowedPattern")
        assert pattern is None or re.fullmatch(pattern, params[name]), (name, params[name])
        allowed = template_params[name].get("AllowedValues")
        assert allowed is None or params[name] in allowed, name
    assert f"aliyun oss cp {zipped} oss://my-models/{params['FunctionCodeKey']}" in result.stderr
    assert "aliyun ros CreateStack --RegionId cn-hangzhou" in result.stderr


def test_the_image_repository_is_the_image_without_registry_tag_and_digest() -> None:
    cases = {
        "registry-vpc.cn-hangzhou.aliyuncs.com/ns/aiaas-server:0.1.0": "ns/aiaas-server",
        "myinst-registry.cn-hangzhou.cr.aliyuncs.com/ns/server@sha256:" + "a" * 64: "ns/server",
        "localhost:5000/ns/server:1": "ns/server",
        "localhost/ns/server": "ns/server",
        "ns/server:1.0": "ns/server",  # no host: Docker reads "ns" as a namespace
        "server": "server",
    }
    pattern = load_template()["Parameters"]["ImageRepository"]["AllowedPattern"]
    for image, repository in cases.items():
        assert IMAGE_REFERENCE.fullmatch(image), image  # pai.image takes it
        assert image_repository(image) == repository
        assert re.fullmatch(pattern, repository), repository


def test_the_parameter_file_is_what_the_aliyun_cli_takes() -> None:
    text = ros_parameters({"A": "1", "B": "x y"})
    assert text.splitlines() == [
        "--Parameters.1.ParameterKey", "A", "--Parameters.1.ParameterValue", "1",
        "--Parameters.2.ParameterKey", "B", "--Parameters.2.ParameterValue", "x y",
    ]  # fmt: skip
    assert read_ros_parameters(text) == {"A": "1", "B": "x y"}
    with pytest.raises(ConfigError, match="parameter B: a value on one line"):
        ros_parameters({"B": "x\ny"})


def test_render_refuses_what_the_template_cannot_follow(tmp_path: Path) -> None:
    alibaba = iac_target("alibaba")
    cfg = load_config(project(tmp_path, oss_prefix=""))
    with pytest.raises(ConfigError, match=r"pai\.oss_prefix: empty"):
        alibaba.render(cfg, RenderOptions(deployment="minilm"))
    cfg = load_config(project(tmp_path))
    cases = {
        "--set ServiceName: comes from aiaas.yaml": {"values": {"ServiceName": "x"}},
        "--set ApiKeyHashes: comes from `aiaas keys`": {"values": {"ApiKeyHashes": "x"}},
        "--set FunctionCodeKey: comes from --function-zip": {"values": {"FunctionCodeKey": "x"}},
        "--set nope: not a parameter of iac/alibaba/template.json": {"values": {"nope": "x"}},
        "--set FunctionMemoryMB=big: a whole number": {"values": {"FunctionMemoryMB": "big"}},
        "--python 3.13": {"python": "3.13"},
        "--set GitHubSubject needs --set GitHubOidcProviderArn": {
            "values": {"GitHubSubject": "repo:o/r:environment:production"}
        },
        "--arch: arm64; Function Compute's custom runtime runs x86_64 only": {"arch": "arm64"},
    }
    for expected, options in cases.items():
        with pytest.raises(ConfigError, match=re.escape(expected)):
            alibaba.render(cfg, RenderOptions(deployment="minilm", **options))  # type: ignore[arg-type]
    arm_zip = tmp_path / "function-alibaba-arm64.zip"
    arm_zip.write_bytes(b"PK")
    with pytest.raises(ConfigError, match="runs x86_64 only"):
        alibaba.render(cfg, RenderOptions(deployment="minilm", function_zip=arm_zip))
    with pytest.raises(ConfigError, match="gives PAI-EAS service"):
        alibaba.render(cfg, RenderOptions(deployment="Not-A-Name"))
    with pytest.raises(ConfigError, match="over Function Compute's 4096"):
        alibaba.render(cfg, RenderOptions(deployment="minilm", api_keys=",".join([RECORD] * 40)))
    # function.auth platform: the trigger asks Function Compute's own signature.
    folder = project(tmp_path)
    raw = yaml.safe_load((folder / "aiaas.yaml").read_text())
    (folder / "aiaas.yaml").write_text(yaml.safe_dump(raw | {"function": {"auth": "platform"}}))
    rendered = alibaba.render(load_config(folder), RenderOptions(deployment="minilm"))
    assert rendered.parameters["FunctionAuthType"] == "function"
