"""The ``aiaas`` command line. Errors print one clear line and exit 1 (``--debug``: traceback)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from aiaas.config import ModelSection, ProjectConfig, ServerSection, load_config
from aiaas.errors import AiaasError, BadRequest, ConfigError, NotFound
from aiaas.template_files import templates_dir

if TYPE_CHECKING:
    from adapters.base import Deployment, Plan, Provider

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
bundle_app = typer.Typer(no_args_is_help=True, help="Build and inspect model bundles.")
function_app = typer.Typer(no_args_is_help=True, help="The function tier in front of a deployment.")
app.add_typer(bundle_app, name="bundle")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the function tier.")
app.add_typer(function_app, name="function")
app.add_typer(keys_app, name="keys")

out = Console()
err = Console(stderr=True)
_state: dict[str, bool] = {"debug": False}

TEMPLATES = templates_dir()

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Project config file or its directory.")
]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", "-p", help="Provider (overrides aiaas.yaml).")
]
NameArg = Annotated[
    str | None, typer.Argument(help="Deployment name (default: the project's model name).")
]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("aiaas")
        except PackageNotFoundError:  # run from a source tree that was never installed
            installed = "unknown"
        _plain(out, f"aiaas {installed}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:  # fmt: skip
    """aiaas: one PyTorch model, packaged once, served on any cloud."""
    _state["debug"] = debug


# -- helpers ---------------------------------------------------------------------------


def _project(config: Path, provider: str | None = None) -> tuple[ProjectConfig, Path]:
    cfg = load_config(config)
    if provider:
        cfg.provider = provider
    return cfg, cfg.root


def _provider(cfg: ProjectConfig) -> Provider:
    from adapters import get_provider

    return get_provider(cfg.provider, cfg)


def _deployment_name(cfg: ProjectConfig, project_dir: Path, name: str | None) -> str:
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


@contextmanager
def _progress_bar(title: str) -> Iterator[Any]:
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(title, total=1.0)

        def report(message: str, fraction: float | None) -> None:
            description = escape(f"{title}: {message}")
            bar.update(task, description=description, completed=fraction or 0.0)

        yield report


def _show_deployment(d: Deployment) -> None:
    table = Table(show_header=False, box=None)
    for key, value in (("name", d.name), ("provider", d.provider), ("version", d.version),
                       ("status", d.status), ("endpoint", d.endpoint or "-")):  # fmt: skip
        table.add_row(f"[bold]{key}", escape(str(value)))
    strays = d.details.get("strays")
    if strays:  # servers the provider started that are not the live one
        table.add_row("[bold]strays", escape(", ".join(f"pid {pid}" for pid in strays)))
    out.print(table)


def _read_data(data: str | None, cfg: ProjectConfig, project_dir: Path) -> bytes:
    if data is None:
        from aiaas.bundle import inspect_archive

        return json.dumps(inspect_archive(project_dir / cfg.bundle.output).example_request).encode()
    if data.startswith("@"):
        path = Path(data[1:])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise BadRequest(f"--data {data}: cannot read {path}: {exc.strerror}") from None
    else:
        raw = data.encode()
    try:
        json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"--data is not valid JSON: {exc}") from None
    return raw


# -- commands --------------------------------------------------------------------------


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
    name: Annotated[
        str,
        typer.Option(help="Model name: a lowercase letter or digit, then up to 62 more or dashes."),
    ] = "my-model",
) -> None:
    """Scaffold a project: aiaas.yaml and a model.py to fill in."""
    _check_model_name(name)
    target = directory.resolve()
    if (target / "aiaas.yaml").exists():
        raise ConfigError(f"{target / 'aiaas.yaml'} already exists; not overwriting")
    target.mkdir(parents=True, exist_ok=True)
    for src in sorted((TEMPLATES / "init").iterdir()):
        text = src.read_text().replace("{{name}}", name)
        (target / src.name.removesuffix(".tmpl")).write_text(text)
    _plain(out, f"created {target}: edit model.py, then `aiaas deploy -c {directory}`")


def _check_model_name(name: str) -> None:
    """Refuse a ``--name`` that ``aiaas.yaml`` would refuse later (the config's own rule)."""
    from pydantic import ValidationError

    try:
        ModelSection.model_validate({"entrypoint": "model:Model", "name": name})
    except ValidationError:
        rule = ModelSection.model_fields["name"].metadata
        pattern = next((m.pattern for m in rule if getattr(m, "pattern", None)), "")
        raise BadRequest(
            f"--name {name!r}: a model name must match {pattern} (lowercase letters, digits "
            "and dashes, starting with a letter or digit)"
        ) from None


@bundle_app.command("build")
def bundle_build(
    directory: Annotated[Path, typer.Argument(help="Project directory (holds aiaas.yaml).")] = Path(
        "."
    ),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Archive path.")] = None,
) -> None:
    """Build a deterministic model.tar.gz (same inputs, same digest)."""
    from aiaas.bundle import build_bundle

    with err.status(escape(f"building bundle from {directory}")):
        built = build_bundle(directory, output)
    size = built.path.stat().st_size / 1e6
    _plain(out, f"{built.path}  {built.manifest.name} {built.manifest.version}  {size:.1f} MB")


@bundle_app.command("inspect")
def bundle_inspect(
    path: Annotated[Path, typer.Argument(help="model.tar.gz or bundle directory.")],
) -> None:
    """Print a bundle's manifest."""
    from aiaas.bundle import inspect_archive

    out.print_json(inspect_archive(path).model_dump_json())


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="model.tar.gz or unpacked bundle directory.")],
    host: Annotated[
        str, typer.Option(help="Interface to bind (0.0.0.0 inside a container).")
    ] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Port (default $SAGEMAKER_BIND_TO_PORT or 8080).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cuda or cpu (default: cuda if available).")
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Override the manifest's batching.")
    ] = None,
    max_delay_ms: Annotated[
        float | None, typer.Option(help="Override the manifest's batching.")
    ] = None,
    max_queue_size: Annotated[
        int, typer.Option(help="Queued items before 503.")
    ] = ServerSection().max_queue_size,
    queue_wait_ms: Annotated[
        float, typer.Option(help="How long a request waits for room in a full queue before 503.")
    ] = ServerSection().queue_wait_ms,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body.")
    ] = ServerSection().max_body_bytes,
    request_timeout: Annotated[
        float, typer.Option(help="Seconds before 504.")
    ] = ServerSection().request_timeout_s,
    torch_threads: Annotated[int | None, typer.Option(help="torch intra-op threads.")] = None,
    inference_workers: Annotated[
        int, typer.Option(help="Batches run side by side, each on its own model copy.")
    ] = ServerSection().inference_workers,
    max_items_per_request: Annotated[
        int, typer.Option(help="Items one request may carry before 413.")
    ] = ServerSection().max_items_per_request,
    output_validation: Annotated[
        Literal["strict", "warn"],
        typer.Option(help="strict: a result breaking the output schema is a 500; warn: log it."),
    ] = ServerSection().output_validation,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the model server (SageMaker, Azure ML, PAI-EAS and OIP v2 routes at once)."""
    from aiaas.runtime.serve import serve as run_server

    settings = ServerSection(
        max_queue_size=max_queue_size, queue_wait_ms=queue_wait_ms, max_body_bytes=max_body_bytes,
        request_timeout_s=request_timeout, torch_threads=torch_threads,
        inference_workers=inference_workers, max_items_per_request=max_items_per_request,
        output_validation=output_validation,
    )  # fmt: skip
    run_server(
        bundle, host=host, port=port, settings=settings, device=device,
        max_batch_size=max_batch_size, max_delay_ms=max_delay_ms, log_level=log_level,
    )  # fmt: skip


@app.command()
def deploy(
    config: ConfigOpt = Path("aiaas.yaml"),
    provider: ProviderOpt = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Deploy this archive instead of building.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Deployment name (default: model name).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what deploy would change; change nothing.")
    ] = False,
) -> None:
    """Build the bundle (unless --bundle) and deploy it to the configured provider."""
    cfg, project_dir = _project(config, provider)
    if bundle is None:
        from aiaas.bundle import build_bundle

        with err.status("building bundle"):
            bundle = build_bundle(project_dir).path
    with _provider(cfg) as prov:
        if dry_run:
            _show_plan(prov.plan(bundle, name=name), cfg.provider)
            return
        with _progress_bar(f"deploying to {cfg.provider}") as report:
            deployment = prov.deploy(bundle, name=name, progress=report)
    _show_deployment(deployment)


def _show_plan(plan: Plan, provider: str) -> None:
    if plan.unchanged:
        out.print(f"{escape(plan.name)} {plan.version} is already live on {provider}: "
                  "deploy would change nothing")  # fmt: skip
    else:
        out.print(f"deploy of {escape(plan.name)} {plan.version} to {provider} would:")
    table = Table("action", "kind", "name", "detail")
    for c in plan.changes:
        table.add_row(c.action, escape(c.kind), escape(c.name), escape(c.detail))
    out.print(table)


@app.command()
def status(
    config: ConfigOpt = Path("aiaas.yaml"), provider: ProviderOpt = None, name: NameArg = None
) -> None:
    """Show one deployment, or all of the provider's deployments."""
    cfg, _ = _project(config, provider)
    with _provider(cfg) as prov:
        if name:
            _show_deployment(prov.describe(name))
            return
        deployments = prov.list()
    table = Table("name", "provider", "version", "status", "endpoint")
    for d in deployments:
        state = d.status + (
            f" (+{len(d.details['strays'])} stray)" if d.details.get("strays") else ""
        )
        table.add_row(*(escape(v) for v in (d.name, d.provider, d.version, state)),
                      escape(d.endpoint or "-"))  # fmt: skip
    out.print(table)


@app.command()
def invoke(
    name: NameArg = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="JSON body, or @file.")] = None,
    config: ConfigOpt = Path("aiaas.yaml"),
    provider: ProviderOpt = None,
) -> None:
    """Send one request (default: the bundle's example) and print the response."""
    cfg, project_dir = _project(config, provider)
    body = _read_data(data, cfg, project_dir)
    deployment = _deployment_name(cfg, project_dir, name)
    from adapters import get_invoker

    invoker = get_invoker(cfg.provider, cfg)
    try:
        answer = invoker.invoke_sync(deployment, body, request_id=uuid.uuid4().hex)
    finally:
        invoker.close()
    sys.stdout.write(answer.body.decode() + "\n")


@app.command()
def logs(
    name: NameArg = None,
    tail: Annotated[int, typer.Option(help="Lines to show.")] = 100,
    config: ConfigOpt = Path("aiaas.yaml"),
    provider: ProviderOpt = None,
) -> None:
    """Print the deployment's recent log lines."""
    cfg, project_dir = _project(config, provider)
    for line in _provider(cfg).logs(_deployment_name(cfg, project_dir, name), tail):
        sys.stdout.write(line + "\n")


@app.command()
def delete(
    name: NameArg = None, config: ConfigOpt = Path("aiaas.yaml"), provider: ProviderOpt = None
) -> None:
    """Delete a deployment (idempotent)."""
    cfg, project_dir = _project(config, provider)
    deployment = _deployment_name(cfg, project_dir, name)
    removed = _provider(cfg).delete(deployment)
    message = f"deleted {deployment}" if removed else f"{deployment}: nothing to delete"
    _plain(out, message)


@app.command()
def doctor() -> None:
    """Check the environment: import-name clashes, torch and CUDA, installed providers."""
    import importlib.util
    import platform
    from importlib.metadata import packages_distributions

    from adapters import available_providers

    problems = 0
    owners = packages_distributions()
    table = Table("check", "result", show_header=False, box=None)
    table.add_row("python", platform.python_version())
    for package in ("aiaas", "adapters", "functions"):
        others = sorted(set(owners.get(package, [])) - {"aiaas"})
        if others:
            problems += 1
            table.add_row(
                package,
                f"[red]also installed by {escape(', '.join(others))}: imports may clash[/red]",
            )
        else:
            table.add_row(package, "ok")
    if importlib.util.find_spec("torch") is None:
        table.add_row("torch", "not installed (fine for the function tier; aiaas[serve] to serve)")
    else:
        from aiaas.runtime.runner import torch_summary

        table.add_row("torch", escape(torch_summary()))
    providers = escape(", ".join(available_providers()))
    table.add_row("providers", providers or "[red]none[/red]")
    out.print(table)
    if problems:
        raise typer.Exit(1)


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

    cfg, project_dir = _project(config, provider)
    deployment = _deployment_name(cfg, project_dir, name)
    bundle_manifest = inspect_archive(manifest or project_dir / cfg.bundle.output)
    keys = None
    if cfg.function.auth == "api_key":
        keys = load_checker(keys_file=_keys_file(cfg))
        if not keys.key_ids:
            err.print("[yellow]warning:[/yellow] no API keys configured yet: calls get 401 "
                      "until one is (aiaas keys create, or AIAAS_API_KEYS)")  # fmt: skip
    live_source: Callable[[], Manifest | None] | None = None
    if manifest is None:
        # The provider names the live version's manifest; the app asks at most once a
        # second and follows a redeploy (docs/functions.md).
        control = _provider(cfg)

        def live_source() -> Manifest | None:
            return control.live_manifest(deployment)

    app_ = build_function_app(
        "local", cfg, bundle_manifest, deployment=deployment, keys=keys,
        usage=FanOut(JsonLineSink(), SqliteSink(_usage_file(cfg))), manifest_source=live_source,
    )  # fmt: skip
    uvicorn.run(
        app_, host=host or cfg.function.host, port=port or cfg.function.port, access_log=False
    )


def _usage_file(cfg: ProjectConfig) -> Path:
    return cfg.state_path / "usage.sqlite"


@app.command()
def usage(
    since: Annotated[str, typer.Option(help="Window: 30m, 24h, 7d, or an ISO date.")] = "24h",
    by: Annotated[str, typer.Option(help="Group by key, model or provider.")] = "model",
    config: ConfigOpt = Path("aiaas.yaml"),
) -> None:
    """Calls, errors, mean latency and estimated cost from the local usage records."""
    from functions.metering import summarize

    cfg, _ = _project(config)
    column = {"key": "key_id", "model": "model", "provider": "provider"}.get(by)
    if column is None:
        raise BadRequest(f"--by {by}: use key, model or provider")
    table = Table(by, "calls", "errors", "mean latency ms", "est. cost USD")
    for group, calls, errors, latency, cost in summarize(_usage_file(cfg), _since(since), column):
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


def _keys_file(cfg: ProjectConfig) -> Path:
    from functions.auth import KEYS_FILE

    return cfg.state_path / KEYS_FILE


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
) -> None:
    """Build the function's deployable zip for a platform (never torch), within its limit."""
    from rich.markup import escape

    from aiaas.bundle import verify_archive
    from aiaas.packaging import package_function

    cfg, project_dir = _project(config, provider)
    bundle = project_dir / cfg.bundle.output
    if not bundle.is_file():
        raise ConfigError(f"{bundle}: no bundle yet; run `aiaas bundle build` (or deploy) first")
    out_path = output or project_dir / "dist" / f"function-{target}-{arch}.zip"
    # The edge enforces this manifest's schemas: it must be the bundle's own (digest checked).
    with err.status(escape(f"packaging the {target} function ({arch}, Python {python})")):
        built = package_function(
            cfg, verify_archive(bundle), target, out_path, arch=arch, python=python,
            allow_local=allow_local, compile_bytecode=compile_bytecode,
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

    cfg, _ = _project(config)
    key, record = create_key()
    add_record(_keys_file(cfg), record)
    # Never wrapped: a key or record broken over two lines is a broken secret.
    _plain(out, f"key id  {record.key_id}")
    _plain(out, f"API key {key}")
    _plain(err, "Shown once. The local function reads its hash from "
                f"{_keys_file(cfg)}; for a cloud, add this record to AIAAS_API_KEYS "
                "(comma-separated) in its secret store:")  # fmt: skip
    _plain(err, str(record))


@keys_app.command("list")
def keys_list(config: ConfigOpt = Path("aiaas.yaml")) -> None:
    """List the ids of the local API keys (never the keys)."""
    from functions.auth import list_records

    cfg, _ = _project(config)
    for record in list_records(_keys_file(cfg)):
        _plain(out, record.key_id)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id to revoke.")],
    config: ConfigOpt = Path("aiaas.yaml"),
) -> None:
    """Revoke a local API key by id."""
    from functions.auth import revoke_record

    cfg, _ = _project(config)
    if not revoke_record(_keys_file(cfg), key_id):
        raise NotFound(f"no API key with id {key_id!r} in {_keys_file(cfg)}")
    _plain(out, f"revoked {key_id}")


def main() -> None:
    """Entry point of the ``aiaas`` console script."""
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code in this mode
    except AiaasError as exc:
        if _state["debug"]:
            raise
        err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        sys.exit(code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the unexpected
        if _is_click_error(exc):
            _show_usage_error(exc)
            sys.exit(getattr(exc, "exit_code", 2))
        if _state["debug"]:
            raise
        err.print(
            f"[red]error:[/red] {escape(f'{type(exc).__name__}: {exc}')} "
            "(run with --debug for the traceback)",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _is_click_error(exc: BaseException) -> bool:
    """A usage error of click, or of the copy of click that newer typer versions vendor."""
    if isinstance(exc, typer.TyperException):
        return True
    try:
        import click
    except ImportError:
        return False
    return isinstance(exc, click.ClickException)


def _show_usage_error(exc: Exception) -> None:
    """Print click's usage line, a help hint and the error, with a "did you mean" when a
    mistyped option resembles real ones (click computes the ``possibilities``)."""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        _plain(err, ctx.get_usage())
        _plain(err, f"Try '{ctx.command_path} --help' for help.")
    possibilities = sorted(getattr(exc, "possibilities", None) or [])
    if possibilities:  # click's own wording would be "(Possible options: ...)"
        message = f"{getattr(exc, 'message', exc)}; did you mean {' or '.join(possibilities)}?"
    else:
        format_message = getattr(exc, "format_message", None)
        message = str(format_message() if callable(format_message) else exc)
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _plain(console: Console, text: str) -> None:
    """Print ``text`` as it is: no markup, no highlighting, never wrapped (safe to copy)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)
