"""Every ``aiaas ...`` command line the README and docs/providers/*.md show in their
shell blocks parses with the real CLI (issue 16, item 31): click's own parser, run without
calling the command, refuses an unknown option, a missing value or a stray argument; and a
deployment name is one (a JSON body given without ``-d`` would be read as the name). The
docs use the reader's names, not a test's (``probe``)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from aiaas.cli import app
from aiaas.cli.commands import _is_click_error
from aiaas.config import ModelSection

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/providers/sagemaker.md", "docs/providers/azureml.md", "docs/rehearse.md")
SHELL_BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NAME = re.compile(next(m.pattern for m in ModelSection.model_fields["name"].metadata))


def documented_commands(doc: str) -> list[list[str]]:
    """The arguments of each ``aiaas`` call in the doc's shell blocks (a call inside
    ``$(...)``, before a pipe or ``&`` included), comments and continuations removed."""
    text = (ROOT / doc).read_text()
    found = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\$\(|\||&&|&|\)", line):
                words = shlex.split(part, comments=True)
                if words and Path(words[0]).name == "aiaas":
                    found.append(words[1:])
    return found


def parse(args: list[str]) -> Any:
    """``aiaas <args>`` parsed down to its (sub)command, as click would before running it:
    the command's context (typer's click, or the copy of click it vendors: duck-typed)."""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("aiaas", list(args))
    while hasattr(command, "resolve_command"):  # a group: on to the subcommand
        rest = [*ctx._protected_args, *ctx.args]
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None, args
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return ctx


COMMANDS = [(doc, args) for doc in DOCS for args in documented_commands(doc)]


def test_the_docs_show_commands_of_every_kind() -> None:
    shown = {(doc, args[0]) for doc, args in COMMANDS}
    for command in ("deploy", "invoke", "status", "logs", "delete"):
        assert ("docs/providers/sagemaker.md", command) in shown
        assert ("docs/providers/azureml.md", command) in shown
    assert ("README.md", "init") in shown and ("README.md", "function") in shown


@pytest.mark.parametrize(
    ("doc", "args"), COMMANDS, ids=[f"{d}: {' '.join(a)}" for d, a in COMMANDS]
)
def test_a_documented_command_line_parses(doc: str, args: list[str]) -> None:
    ctx = parse(args)
    name = ctx.params.get("name")
    if ctx.command.name != "init" and name is not None:
        assert NAME.fullmatch(name), f"{doc}: `aiaas {shlex.join(args)}`: {name!r} is no name"
    assert "probe" not in args, f"{doc}: `aiaas {shlex.join(args)}` uses a test's name"


def test_the_check_refuses_what_the_docs_once_showed() -> None:
    body = '{"inputs": [...]}'
    assert not NAME.fullmatch(parse(["invoke", body]).params["name"])  # -d was missing
    assert parse(["invoke", "-d", body]).params["data"] == body
    with pytest.raises(Exception) as refused:  # click's error, from either copy of click
        parse(["deploy", "--dry-runn"])
    assert _is_click_error(refused.value)
    assert parse(["status", "my-model"]).command.name == "status"
