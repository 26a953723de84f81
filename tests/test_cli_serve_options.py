"""``aiaas serve`` takes its server options from ServerSection itself (no re-declared fields)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from aiaas import cli
from aiaas.cli.support import server_option_flags
from aiaas.config import ServerSection


def server_options(settings: ServerSection) -> list[str]:
    """``aiaas serve`` arguments that reproduce ``settings`` (each field through its flag)."""
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


def _serve_options() -> dict[str, list[str]]:
    command = typer.main.get_command(cli.app).commands["serve"]  # type: ignore[attr-defined]
    return {p.name: list(p.opts) for p in command.params}


def test_every_server_setting_is_an_option_with_its_own_help() -> None:
    options = _serve_options()
    for name, field in ServerSection.model_fields.items():
        assert options[name][0] == server_option_flags(name)[0], name
        assert field.description, f"ServerSection.{name} needs a description: it is the help"
    assert "--request-timeout" in options["request_timeout_s"]  # the older spelling still works


def test_every_setting_given_as_flags_reads_back_as_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Boundary: the command's last step starts uvicorn; the settings it would start it with
    # are captured instead (real `aiaas serve` processes run in test_server*.py).
    import aiaas.runtime.serve

    seen: dict[str, Any] = {}
    monkeypatch.setattr(aiaas.runtime.serve, "serve", lambda bundle, **kw: seen.update(kw))
    settings = ServerSection(
        max_queue_size=7, queue_wait_ms=0, max_items_per_request=3, output_validation="warn",
        max_body_bytes=2048, request_timeout_s=1.5, torch_threads=2, inference_workers=2,
    )  # fmt: skip
    cli.app(["serve", str(tmp_path), *server_options(settings)], standalone_mode=False)
    assert seen["settings"] == settings
    assert server_options(ServerSection()).count("--torch-threads") == 0  # None: not passed


def test_a_bad_value_names_the_option(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "aiaas", "serve", str(tmp_path), "--max-queue-size", "0",
         "--queue-wait-ms", "99999"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "--max-queue-size 0: Input should be greater than or equal to 1" in r.stderr
    assert "--queue-wait-ms 99999.0: Input should be less than or equal to 60000" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_new_bool_setting_is_a_switch_both_ways() -> None:
    """A future ``bool`` field: ``--x/--no-x``, and the flags for a value parse back (a
    ``--x False`` would be an extra argument, and the server would not start)."""
    from pydantic import Field

    class WithSwitch(ServerSection):
        warm_up: bool = Field(default=True, description="Run the example once before ready.")

    flags = server_option_flags("warm_up", WithSwitch)
    assert flags == ["--warm-up/--no-warm-up"]
    seen: dict[str, bool] = {}
    probe = typer.Typer()

    @probe.command()
    def run(warm_up: bool = typer.Option(True, *flags)) -> None:  # flags are local: no Annotated
        seen["warm_up"] = warm_up

    for value in (False, True):
        args = server_options(WithSwitch(warm_up=value))
        assert "False" not in args and "True" not in args, args
        probe([a for a in args if "warm-up" in a], standalone_mode=False)
        assert seen["warm_up"] is value
