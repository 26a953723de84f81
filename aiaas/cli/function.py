"""The function tier's commands: ``aiaas function serve|package``, ``aiaas keys``,
``aiaas usage``, registered on the ``aiaas`` app with :func:`register`.

Only typer, rich and the core are imported at the top; each command imports what it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from aiaas.api import deployment_name, load_project
from aiaas.cli.support import ConfigOpt, NameArg, ProviderOpt, err, out, plain
from aiaas.config import ProjectConfig
from aiaas.errors import BadRequest, ConfigError, NotFound

if TYPE_CHECKING:
    from adapters.base import Provider

function_app = typer.Typer(no_args_is_help=True, help="The function tier in front of a deployment.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the function tier.")


def register(app: typer.Typer) -> None:
    """Add the function tier's commands to the ``aiaas`` CLI."""
    app.add_typer(function_app, name="function")
    app.add_typer(keys_app, name="keys")
    app.command()(usage)


def usage_file(cfg: ProjectConfig) -> Path:
    """Where the local function writes its usage records."""
    return cfg.state_path / "usage.sqlite"


def keys_file(cfg: ProjectConfig) -> Path:
    """Where the local function reads its API keys' hashes."""
    from functions.auth import KEYS_FILE

    return cfg.state_path / KEYS_FILE


@function_app.command("serve")
def function_serve(
    name: NameArg = None,
    config: ConfigOpt = Path("aiaas.yaml"),
    provider: ProviderOpt = None,
    host: Annotated[str | None, typer.Option(help="Interface (default: function.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: function.port).")] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(help="Bundle whose schemas to enforce (default: the live deployment's)."),
    ] = None,
) -> None:
    """Run the function app (POST /predict, OIP v2) in front of the deployment.

    Keys in ``.aiaas/api-keys`` are re-read within a second of ``aiaas keys create/revoke``;
    with the local provider, the app follows the live deployment's manifest after a redeploy.
    """
    import uvicorn

    from aiaas.bundle import inspect_archive
    from aiaas.manifest import Manifest
    from functions.auth import load_checker
    from functions.bootstrap import build_function_app
    from functions.metering import FanOut, JsonLineSink, SqliteSink
    from functions.platforms.local import PLATFORM as LOCAL

    cfg = load_project(config, provider)
    deployment = deployment_name(cfg, name)
    bundle_manifest = inspect_archive(manifest or cfg.root / cfg.bundle.output)
    keys = None
    if cfg.function.auth == "api_key":
        keys = load_checker(keys_file=keys_file(cfg))
        if not keys.key_ids:
            err.print("[yellow]warning:[/yellow] no API keys configured yet: calls get 401 "
                      "until one is (aiaas keys create, or AIAAS_API_KEYS)")  # fmt: skip
    live_source: Callable[[], Manifest | None] | None = None
    control: Provider | None = None
    if manifest is None:
        # The provider names the live version's manifest; the app asks at most once a
        # second and follows a redeploy (docs/functions.md).
        from adapters import get_provider

        control = get_provider(cfg.provider, cfg)
        follow = control

        def live_source() -> Manifest | None:
            return follow.live_manifest(deployment)

    app_ = build_function_app(
        LOCAL, cfg, bundle_manifest, deployment=deployment, keys=keys,
        usage=FanOut(JsonLineSink(), SqliteSink(usage_file(cfg))), manifest_source=live_source,
    )  # fmt: skip
    try:
        uvicorn.run(
            app_, host=host or cfg.function.host, port=port or cfg.function.port, access_log=False
        )
    finally:
        if control is not None:
            control.close()


def usage(
    since: Annotated[str, typer.Option(help="Window: 30m, 24h, 7d, or an ISO date.")] = "24h",
    by: Annotated[str, typer.Option(help="Group by key, model or provider.")] = "model",
    config: ConfigOpt = Path("aiaas.yaml"),
) -> None:
    """Calls, errors, mean latency and estimated cost from the local usage records."""
    from functions.metering import summarize

    cfg = load_project(config)
    column = {"key": "key_id", "model": "model", "provider": "provider"}.get(by)
    if column is None:
        raise BadRequest(f"--by {by}: use key, model or provider")
    table = Table(by, "calls", "errors", "mean latency ms", "est. cost USD")
    for group, calls, errors, latency, cost in summarize(usage_file(cfg), _since(since), column):
        table.add_row(escape(group), str(calls), str(errors), f"{latency:.1f}", f"{cost:.6f}")
    out.print(table)


def _since(text: str) -> float:
    import time
    from datetime import datetime

    units = {"m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return time.time() - int(text[:-1]) * units[text[-1]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BadRequest(f"--since {text}: use 30m, 24h, 7d or an ISO date") from None


@function_app.command("package")
def function_package(
    target: Annotated[str, typer.Option(help="aws, azure or alibaba.")],
    arch: Annotated[str, typer.Option(help="x86_64 or arm64.")] = "x86_64",
    python: Annotated[str, typer.Option(help="The platform's Python version.")] = "3.11",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Zip path.")] = None,
    config: ConfigOpt = Path("aiaas.yaml"),
    provider: ProviderOpt = None,
    allow_local: Annotated[
        bool, typer.Option(help="Package provider: local anyway, to try the zip on this machine.")
    ] = False,
    compile_bytecode: Annotated[
        bool, typer.Option("--compile/--no-compile", help="Ship .pyc for the target Python.")
    ] = True,
    wheel_cache: Annotated[
        Path | None,
        typer.Option(help="Take wheels from this folder, and keep the ones downloaded there."),
    ] = None,
) -> None:
    """Build the function's deployable zip for a platform (never torch), within its limit."""
    from aiaas.bundle import verify_archive
    from functions.packaging import package_function

    cfg = load_project(config, provider)
    project_dir = cfg.root
    bundle = project_dir / cfg.bundle.output
    if not bundle.is_file():
        raise ConfigError(f"{bundle}: no bundle yet; run `aiaas bundle build` (or deploy) first")
    out_path = output or project_dir / "dist" / f"function-{target}-{arch}.zip"
    # The edge enforces this manifest's schemas: it must be the bundle's own (digest checked).
    with err.status(escape(f"packaging the {target} function ({arch}, Python {python})")):
        built = package_function(
            cfg, verify_archive(bundle), target, out_path, arch=arch, python=python,
            allow_local=allow_local, compile_bytecode=compile_bytecode, wheel_cache=wheel_cache,
        )  # fmt: skip
    size, limit = built.size / 1e6, built.limit / 1e6
    out.print(
        f"{built.path}  {size:.2f} MB (limit {limit:.0f} MB), {len(built.wheels)} wheels",
        markup=False, highlight=False,
    )  # fmt: skip
    if compile_bytecode and not built.compiled:
        err.print(
            f"[yellow]warning:[/yellow] no Python {escape(python)} interpreter here "
            f"(python{escape(python)} on PATH): shipped without bytecode, so every cold start "
            "compiles each module again; install it and package again",
            highlight=False,
        )
    lines = [f"handler: {built.handler}", "environment:"]
    lines += [f"  {name}  {why}" for name, why in built.environment.items()]
    out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


@keys_app.command("create")
def keys_create(config: ConfigOpt = Path("aiaas.yaml")) -> None:
    """Create an API key: printed once; only its salted hash is stored."""
    from functions.auth import add_record, create_key

    cfg = load_project(config)
    key, record = create_key()
    add_record(keys_file(cfg), record)
    # Never wrapped: a key or record broken over two lines is a broken secret.
    plain(out, f"key id  {record.key_id}")
    plain(out, f"API key {key}")
    plain(err, "Shown once. The local function reads its hash from "
                f"{keys_file(cfg)}; for a cloud, add this record to AIAAS_API_KEYS "
                "(comma-separated) in its secret store:")  # fmt: skip
    plain(err, str(record))


@keys_app.command("list")
def keys_list(config: ConfigOpt = Path("aiaas.yaml")) -> None:
    """List the ids of the local API keys (never the keys)."""
    from functions.auth import list_records

    cfg = load_project(config)
    for record in list_records(keys_file(cfg)):
        plain(out, record.key_id)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id to revoke.")],
    config: ConfigOpt = Path("aiaas.yaml"),
) -> None:
    """Revoke a local API key by id."""
    from functions.auth import revoke_record

    cfg = load_project(config)
    if not revoke_record(keys_file(cfg), key_id):
        raise NotFound(f"no API key with id {key_id!r} in {keys_file(cfg)}")
    plain(out, f"revoked {key_id}")
