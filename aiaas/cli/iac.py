"""``aiaas iac render``: a cloud template's parameter file from ``aiaas.yaml``; ``aiaas iac
template``: the template itself, as this install of aiaas ships it. Registered on the
``aiaas`` app with :func:`register`.

The templates live in the repository's ``iac/<cloud>/`` (a wheel carries them as
``aiaas/iac/<cloud>/``: :func:`aiaas.template_files.iac_dir`); which clouds have one, and how
each renders its parameters, is :mod:`adapters.iac`'s registry (this module names no cloud).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from adapters.iac import TARGETS, RenderOptions, cloud_of, iac_target
from aiaas.api import deployment_name, load_project
from aiaas.cli.support import ConfigOpt, NameArg, err, out, plain
from aiaas.config import ProjectConfig
from aiaas.errors import BadRequest
from aiaas.template_files import iac_dir

iac_app = typer.Typer(
    no_args_is_help=True, help="Infrastructure templates (iac/<cloud>/) and their parameters."
)


CloudOpt = Annotated[
    str | None,
    typer.Option(help=", ".join(TARGETS) + ". Default: the cloud of aiaas.yaml's provider."),
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the file here (default: stdout).")
]


def register(app: typer.Typer) -> None:
    """Add ``aiaas iac`` to the ``aiaas`` CLI."""
    app.add_typer(iac_app, name="iac")


@iac_app.command("render")
def render(
    name: NameArg = None,
    cloud: CloudOpt = None,
    config: ConfigOpt = Path("aiaas.yaml"),
    output: OutputOpt = None,
    function_zip: Annotated[
        Path | None,
        typer.Option(help="The zip of `aiaas function package` (adds the function and its URL)."),
    ] = None,
    python: Annotated[str, typer.Option(help="The Python the zip was packaged for.")] = "3.11",
    arch: Annotated[
        str | None,
        typer.Option(help="The zip's architecture (default: from its name, else x86_64)."),
    ] = None,
    values: Annotated[
        list[str] | None,
        typer.Option("--set", help="NAME=VALUE for a parameter aiaas.yaml does not hold."),
    ] = None,
) -> None:
    """Write a cloud template's parameter file from aiaas.yaml (names as the provider's)."""
    cfg = load_project(config)
    target = iac_target(cloud or cloud_of(cfg.provider))
    pairs = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadRequest(f"--set {item}: use NAME=VALUE")
        pairs[key] = value
    records = ""
    if target.secret_parameter and cfg.function.auth == "api_key":
        records = _key_records(cfg)
        if not records:
            err.print(
                f"[yellow]warning:[/yellow] no API keys (AIAAS_API_KEYS, or `aiaas keys create`):"
                f" {target.secret_parameter} is left out. Whether an update keeps the deployed"
                " value depends on how it is run: iac/github/deploy.yml keeps it on every cloud"
                " (docs/deploy-from-ci.md says what keeps it on each); a new stack has no"
                " keys: every call is refused with 401, or the function does not start where"
                " the template reads them from a secret store (Azure's Key Vault)",
                highlight=False,
            )
    options = RenderOptions(
        deployment=deployment_name(cfg, name),
        function_zip=function_zip,
        python=python,
        arch=arch,
        values=pairs,
        api_keys=records or None,
        env=dict(os.environ),
    )
    rendered = target.render(cfg, options)
    text = rendered.text
    if output is None:
        plain(out, text.rstrip())
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        # With the keys' salted hashes in it (not keys, still a secret store's): owner only.
        mode = 0o600 if records else 0o644
        with os.fdopen(os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
            f.write(text)
        if records:
            output.chmod(0o600)  # a file that was there keeps its mode through O_CREAT
        plain(out, f"{output}  ({target.parameter_format}; template iac/{target.template})")
    for note in rendered.notes:
        plain(err, note)


@iac_app.command("template")
def template(
    cloud: CloudOpt = None,
    config: ConfigOpt = Path("aiaas.yaml"),
    output: OutputOpt = None,
) -> None:
    """Write a cloud's infrastructure template, as this aiaas ships it (pip or checkout)."""
    if cloud is None:
        cloud = cloud_of(load_project(config).provider)
    target = iac_target(cloud)
    source = iac_dir() / target.template
    text = source.read_text(encoding="utf-8")
    if output is None:
        plain(out, text.rstrip())
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    plain(out, f"{output}  (iac/{target.template} of aiaas; parameters: aiaas iac render)")


def _key_records(cfg: ProjectConfig) -> str:
    """The API keys' salted hashes, comma-separated: ``AIAAS_API_KEYS`` when set (CI fills
    it from its secret store), else the project's local keys (``aiaas keys create``)."""
    from functions.auth import KEYS_ENV, KEYS_FILE, list_records, parse_records

    value = os.environ.get(KEYS_ENV)
    if value is not None:
        return ",".join(str(r) for r in parse_records(value).values())
    return ",".join(str(r) for r in list_records(cfg.state_path / KEYS_FILE))
