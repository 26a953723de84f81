"""What every tier's commands share: the consoles, the common options, loading the project.

The CLI (``aiaas.cli``) is the composition root and nothing imports it, so the commands a
tier contributes (``functions.cli``) take their common parts from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from aiaas.config import ProjectConfig, ServerSection, load_config
from aiaas.errors import ConfigError

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Project config file or its directory.")
]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", "-p", help="Provider (overrides aiaas.yaml).")
]
NameArg = Annotated[
    str | None, typer.Argument(help="Deployment name (default: the project's model name).")
]


def load_project(config: Path, provider: str | None = None) -> tuple[ProjectConfig, Path]:
    """The validated config (``--provider`` applied as ``AIAAS_PROVIDER`` would be) and the
    project directory."""
    if provider:
        import os

        from aiaas.plugins import installed_providers

        if provider not in installed_providers():
            installed = ", ".join(sorted(installed_providers())) or "none"
            raise ConfigError(f"--provider {provider}: unknown provider; installed: {installed}")
        cfg = load_config(config, env={**os.environ, "AIAAS_PROVIDER": provider})
    else:
        cfg = load_config(config)
    return cfg, cfg.root


def deployment_name(cfg: ProjectConfig, project_dir: Path, name: str | None) -> str:
    """``name``, else the config's model name, else the built bundle's."""
    if name:
        return name
    if cfg.model.name:
        return cfg.model.name
    built = project_dir / cfg.bundle.output
    if built.is_file():
        from aiaas.bundle import inspect_archive

        return inspect_archive(built).name
    raise ConfigError(
        f"{project_dir / 'aiaas.yaml'}: model.name is not set; pass the deployment name"
    )


def plain(console: Console, text: str) -> None:
    """Print ``text`` as it is: no markup, no highlighting, never wrapped (safe to copy)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


#: Older spellings of a server option, still accepted.
_SERVER_OPTION_ALIASES = {"request_timeout_s": ("--request-timeout",)}


def server_option_flags(name: str, section: type[ServerSection] = ServerSection) -> list[str]:
    """The ``aiaas serve`` flags of ServerSection field ``name`` (the first is canonical); a
    ``bool`` field is a switch, ``--name/--no-name``."""
    flag = f"--{name.replace('_', '-')}"
    if section.model_fields[name].annotation is bool:
        flag = f"{flag}/--no-{name.replace('_', '-')}"
    return [flag, *_SERVER_OPTION_ALIASES.get(name, ())]


def server_options(settings: ServerSection) -> list[str]:
    """``aiaas serve`` arguments that reproduce ``settings`` (what the local provider runs)."""
    args: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        flag = server_option_flags(name, type(settings))[0]
        if isinstance(value, bool):
            on, off = flag.split("/")
            args.append(on if value else off)
        elif value is not None:
            args += [flag, str(value)]
    return args
