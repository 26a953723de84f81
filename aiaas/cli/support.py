"""What the commands share: the consoles, the common options, printing as-is, and the
``aiaas serve`` flags of the ``server:`` settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from aiaas.config import ServerSection

out = Console()
"""Where a command's result goes (stdout)."""
err = Console(stderr=True)
"""Where progress, warnings and errors go (stderr)."""

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Project config file or its directory.")
]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", "-p", help="Provider (overrides aiaas.yaml).")
]
NameArg = Annotated[
    str | None, typer.Argument(help="Deployment name (default: the project's model name).")
]


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
