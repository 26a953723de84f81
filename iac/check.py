"""Offline checks of the infrastructure templates (``make iac-check``; docs/deploy-from-ci.md).

- **cfn-lint** on every CloudFormation template (``<dir>/aws/*.yaml``) with the resource
  schemas it bundles (never ``--update-specs``, which downloads them);
- **checkov** (``--skip-download``) over the same templates. checkov exits 0 on a file it
  cannot parse and on a folder with no resources, so its JSON report is read instead: every
  template parsed and checked, and no failed check unless the template skips it in its
  ``Metadata`` with a written reason (``checkov: skip: [{id, comment}]``).

``make iac-check`` runs this with the tests' network guard on ``PYTHONPATH``: a checker that
reaches for the network fails. Exit status 1 when any check finds a problem, each printed.

    python iac/check.py [--cfn-lint PATH] [--checkov PATH] [--only cfn-lint|checkov] [DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def cloudformation_templates(folder: Path) -> list[Path]:
    """The CloudFormation templates under ``folder`` (``aws/*.yaml``)."""
    return sorted((folder / "aws").glob("*.yaml"))


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


def run_checkov(checkov: str, folder: Path, templates: list[Path]) -> list[str]:
    """checkov's verdict on the CloudFormation under ``folder``, one line per problem."""
    r = subprocess.run(
        [checkov, "-d", str(folder), "--framework", "cloudformation", "--skip-download",
         "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    try:
        report: Any = json.loads(r.stdout)
    except ValueError:
        return [f"checkov exited {r.returncode} without a report: {r.stderr.strip()[-2000:]}"]
    reports = report if isinstance(report, list) else [report]
    problems = []
    checked: set[str] = set()
    for one in reports:
        summary = one.get("summary", one)
        if summary.get("parsing_errors"):
            errors = [
                line[line.lower().index("error parsing") :]
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
                f"{check['file_path']}: {check['resource']}: {check['check_id']} "
                f"{check['check_name']}"
            )
        for check in results.get("skipped_checks", []):
            comment = (check.get("check_result") or {}).get("suppress_comment") or ""
            if not comment.strip() or comment == "No comment provided":
                problems.append(
                    f"{check['file_path']}: {check['resource']}: {check['check_id']} is "
                    "skipped without a reason (Metadata: checkov: skip: - comment)"
                )
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            checked |= {c["file_path"].lstrip("/") for c in results.get(kind, [])}
    for template in templates:
        relative = template.relative_to(folder).as_posix()
        if relative not in checked:
            problems.append(f"{relative}: checkov checked no resource of it")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run the checks; 1 when any found a problem."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=HERE)
    bin_dir = Path(sys.executable).parent
    parser.add_argument("--cfn-lint", default=str(bin_dir / "cfn-lint"))
    parser.add_argument("--checkov", default=str(bin_dir.parent / "checkov" / "bin" / "checkov"))
    parser.add_argument("--only", choices=("cfn-lint", "checkov"))
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    templates = cloudformation_templates(folder)
    if not templates:
        print(f"{folder}: no CloudFormation template (aws/*.yaml)")
        return 1
    checks: dict[str, Callable[[], list[str]]] = {
        "cfn-lint": lambda: run_cfn_lint(args.cfn_lint, templates),
        "checkov": lambda: run_checkov(args.checkov, folder, templates),
    }
    chosen = {name: check for name, check in checks.items() if args.only in (None, name)}
    start = time.monotonic()
    with ThreadPoolExecutor(len(chosen)) as pool:  # each a process of its own: side by side
        running = {name: pool.submit(_timed, check) for name, check in chosen.items()}
    failed = False
    for name, future in running.items():
        problems, took = future.result()
        verdict = f"{len(problems)} problem(s)" if problems else "clean"
        print(f"{name}: {len(templates)} template(s), {verdict} ({took:.1f} s)")
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
