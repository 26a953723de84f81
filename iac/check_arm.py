"""Offline checks of the ARM templates (``<dir>/azure/*.json``), which ``iac/check.py`` runs
beside its own (``make iac-check``). Nothing offline validates ARM as Azure does (no Bicep
compiler, no ARM schema package: ``../shared/notes/iac.md``), so two checks:

- **arm-schema**: every template parses as JSON and is a deployment template; each resource's
  type and apiVersion are ones ``iac/azure/schemas/arm-subset.json`` knows, and its body is
  walked against that file's schema, derived from the REST models of the Azure SDK packages
  (``iac/azure/schemas/generate.py`` says which): a misspelled or read-only property, a value
  of the wrong JSON type, an unknown apiVersion or resource type fails, with the closest
  names. Values that are ARM expressions (``"[...]"``) are not evaluated; every
  ``parameters('x')`` and ``variables('x')`` they name must be declared. Not checked:
  enum values (Azure's are extensible strings in the REST models), required properties,
  what an expression evaluates to, and child resources nested in a resource (a nested
  ``resources`` is reported as unknown: declare children at the top level);
- **checkov-arm**: ``checkov --framework arm --skip-download`` over ``<dir>/azure``, read
  from its JSON report as ``iac/check.py`` reads the CloudFormation one: every template
  parsed and checked (checkov exits 0 on a file it cannot parse), no failed check unless
  the resource skips it in its ``metadata`` with a written reason
  (``"checkov": ["checkov:skip=CKV_AZURE_1: why"]``).

    python iac/check_arm.py [--checkov PATH] [DIR]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "azure" / "schemas" / "arm-subset.json"
TEMPLATE_SCHEMA = "deploymentTemplate.json#"
TEMPLATE_KEYS = {
    "$schema", "contentVersion", "apiProfile", "definitions", "metadata", "parameters",
    "functions", "variables", "resources", "outputs", "languageVersion",
}  # fmt: skip
_NAMED = re.compile(r"\b(parameters|variables)\(\s*'([^']*)'\s*\)")


def arm_templates(folder: Path) -> list[Path]:
    """The ARM templates under ``folder`` (``azure/*.json``)."""
    return sorted((folder / "azure").glob("*.json"))


def _expression(value: Any) -> bool:
    """An ARM template expression (``"[...]"``; ``"[["`` escapes a literal bracket)."""
    return (
        isinstance(value, str)
        and value.startswith("[")
        and value.endswith("]")
        and not value.startswith("[[")
    )


class SchemaWalk:
    """A template's body against the vendored schemas: one problem per line."""

    def __init__(self, schemas: dict[str, Any], where: str) -> None:
        self.definitions: dict[str, Any] = schemas["definitions"]
        self.where = where
        self.problems: list[str] = []

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.definitions[schema["$ref"]]
        return schema

    def walk(self, value: Any, schema: dict[str, Any], path: str) -> None:
        schema = self.resolve(schema)
        if _expression(value) or not schema:
            return  # evaluated by ARM only; or any value (free-form in the REST model)
        kind = schema.get("type")
        expected = {"string": str, "boolean": bool, "array": list, "object": dict}
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.problems.append(f"{self.where}: {path}: {value!r} is not a number")
            return
        if kind in expected and not isinstance(value, expected[kind]):
            self.problems.append(f"{self.where}: {path}: {value!r} is not a {kind}")
            return
        if kind == "array":
            for i, item in enumerate(value):
                self.walk(item, schema.get("items", {}), f"{path}[{i}]")
        elif kind == "object":
            known = schema.get("properties")
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if known is not None and key in known:
                    self.walk(item, known[key], f"{path}.{key}")
                elif extra is not None:
                    self.walk(item, extra, f"{path}.{key}")
                elif known:  # a model with fields, and this is none of them
                    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    self.problems.append(
                        f"{self.where}: {path}.{key}: not a settable property{hint}"
                    )


def check_template(path: Path, schemas: dict[str, Any], root: Path) -> list[str]:
    """``path``'s problems against the vendored schemas (empty: none)."""
    where = path.relative_to(root).as_posix()
    try:
        template = json.loads(path.read_text())
    except ValueError as e:
        return [f"{where}: not JSON: {e}"]
    if not isinstance(template, dict) or TEMPLATE_SCHEMA not in str(template.get("$schema")):
        return [f"{where}: not an ARM deployment template ($schema ...{TEMPLATE_SCHEMA})"]
    problems = [f"{where}: {key}: not a template section" for key in template
                if key not in TEMPLATE_KEYS]  # fmt: skip
    types: dict[str, Any] = schemas["resourceTypes"]
    resources = template.get("resources")
    if not isinstance(resources, list) or not resources:
        problems.append(f"{where}: no resources")
        resources = []
    for i, resource in enumerate(resources):
        arm_type = resource.get("type", "")
        label = f"resources[{i}] {arm_type}"
        known = types.get(arm_type)
        if known is None:
            close = difflib.get_close_matches(arm_type, list(types), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{where}: {label}: not a resource type the schemas know{hint}")
            continue
        if resource.get("apiVersion") != known["apiVersion"]:
            problems.append(
                f"{where}: {label}: apiVersion {resource.get('apiVersion')!r} is not "
                f"{known['apiVersion']}, the one its schema has ({known['source']})"
            )
            continue
        walk = SchemaWalk(schemas, where)
        walk.walk(resource, {"type": "object", "properties": known["properties"]}, label)
        problems += walk.problems
    declared = {
        "parameters": set(template.get("parameters") or {}),
        "variables": set(template.get("variables") or {}),
    }
    for kind, name in sorted(set(_NAMED.findall(json.dumps(template)))):
        if name not in declared[kind]:
            problems.append(f"{where}: {kind}('{name}') is named but not declared")
    return problems


def run_schema_check(folder: Path, templates: list[Path]) -> list[str]:
    """The arm-schema check of ``templates`` (see the module's docstring)."""
    schemas = json.loads(SCHEMAS.read_text())
    problems: list[str] = []
    for template in templates:
        problems += check_template(template, schemas, folder)
    return problems


def run_checkov_arm(checkov: str, folder: Path, templates: list[Path]) -> list[str]:
    """checkov's verdict on the ARM templates under ``folder/azure``, one line per problem."""
    r = subprocess.run(
        [checkov, "-d", str(folder / "azure"), "--framework", "arm", "--skip-download",
         "-o", "json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},  # as iac/check.py's
    )  # fmt: skip
    try:
        report: Any = json.loads(r.stdout)
    except ValueError:
        return [f"checkov exited {r.returncode} without a report: {r.stderr.strip()[-2000:]}"]
    problems: list[str] = []
    checked: set[str] = set()
    for one in report if isinstance(report, list) else [report]:
        summary = one.get("summary", one)
        if summary.get("parsing_errors"):
            problems.append(f"checkov could not parse {summary['parsing_errors']} file(s)")
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
                    'skipped without a reason (metadata: checkov: ["checkov:skip=ID: why"])'
                )
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            checked |= {c["file_path"].lstrip("/") for c in results.get(kind, [])}
    for template in templates:
        if template.name not in {Path(p).name for p in checked}:
            problems.append(f"azure/{template.name}: checkov checked no resource of it")
    return problems


def checks(folder: Path, checkov: str) -> dict[str, tuple[str, Callable[[], list[str]]]]:
    """The ARM checks of ``folder`` as ``iac/check.py`` runs its own (name: what it checks,
    the check); none when ``folder`` has no ``azure/``."""
    if not (folder / "azure").is_dir():
        return {}
    templates = arm_templates(folder)
    if not templates:
        return {"arm-schema": ("no template", lambda: [f"{folder}/azure: no ARM template"])}
    counted = f"{len(templates)} ARM template(s)"
    return {
        "arm-schema": (counted, lambda: run_schema_check(folder, templates)),
        "checkov-arm": (counted, lambda: run_checkov_arm(checkov, folder, templates)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the ARM checks alone; 1 when any found a problem."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=HERE)
    bin_dir = Path(sys.executable).parent
    parser.add_argument("--checkov", default=str(bin_dir.parent / "checkov" / "bin" / "checkov"))
    args = parser.parse_args(argv)
    failed = False
    for name, (what, check) in checks(args.folder.resolve(), args.checkov).items():
        problems = check()
        verdict = f"{len(problems)} problem(s)" if problems else "clean"
        print(f"{name}: {what}, {verdict}")
        for problem in problems:
            print(f"  {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
