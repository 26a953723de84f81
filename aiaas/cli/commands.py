"""The ``aiaas`` commands, each a thin layer over the Python API (:mod:`aiaas.api`): parse the
options, call the API, print its typed answer. Errors print one clear line and exit 1
(``--debug``: the traceback)."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from aiaas import api
from aiaas.api import deployment_name, load_project
from aiaas.cli.function import register as register_function_commands
from aiaas.cli.iac import register as register_iac_commands
from aiaas.cli.support import ConfigOpt, NameArg, ProviderOpt, err, out, plain, server_option_flags
from aiaas.config import ModelSection, ServerSection
from aiaas.errors import AiaasError, BadRequest, ConfigError
from aiaas.template_files import templates_dir

if TYPE_CHECKING:
    from adapters.base import Deployment, Plan, ProgressFn
    from aiaas.config import ProjectConfig

HELP = (
    "The ``aiaas`` command line. Errors print one clear line and exit 1 (``--debug``: traceback)."
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP)
bundle_app = typer.Typer(no_args_is_help=True, help="Build and inspect model bundles.")
app.add_typer(bundle_app, name="bundle")

_state: dict[str, bool] = {"debug": False}

TEMPLATES = templates_dir()


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("aiaas")
        except PackageNotFoundError:  # run from a source tree that was never installed
            installed = "unknown"
        plain(out, f"aiaas {installed}")
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


def _show_table(header: list[str] | None, rows: list[list[str]], no_wrap: set[int]) -> None:
    """Print ``rows`` as a table (columns ``no_wrap`` never wrapped). On a terminal, rich
    fits it to the width; anywhere else (a pipe, a file, CI's log) it is plain text, columns
    padded with spaces and nothing cut or wrapped, so an endpoint URL is copied whole."""
    if out.is_terminal:
        listing = header is None  # a key-value listing: no header, no box, the keys in bold
        table = Table(show_header=False, box=None) if listing else Table()
        for i, column in enumerate(header or [""] * (len(rows[0]) if rows else 0)):
            table.add_column(column, no_wrap=i in no_wrap)
        for row in rows:
            cells = [escape(c) for c in row]
            if listing and row[0]:
                cells[0] = f"[bold]{cells[0]}"
            table.add_row(*cells)
        out.print(table)
        return
    lines = ([header] if header is not None else []) + rows
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] if lines else []
    for line in lines:
        plain(out, "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _show_deployment(d: Deployment) -> None:
    rows = [[key, str(value)] for key, value in (
        ("name", d.name), ("provider", d.provider), ("version", d.version),
        ("status", d.status), ("endpoint", d.endpoint or "-"),
    )]  # fmt: skip
    for i, v in enumerate(d.versions):  # every version it runs, with its share of traffic
        rows.append(["versions" if i == 0 else "", f"{v.version}  {v.traffic_pct}%  {v.status}"])
    strays = d.details.get("strays")
    if strays:  # servers the provider started that are not the live one: their processes
        rows.append(["strays", ", ".join(f"pid {pid}" for pid in strays)])
    for i, line in enumerate(_detail_lines(d.details)):
        rows.append(["details" if i == 0 else "", line])
    _show_table(None, rows, no_wrap=set())


def _detail_lines(details: dict[str, Any]) -> list[str]:
    """The provider's own details of a deployment (its instance type, region, resources,
    warnings...), one ``key: value`` line each; empty values and the strays (shown apart)
    are left out."""
    lines = []
    for key, value in details.items():
        if key == "strays" or value is None or value == "" or isinstance(value, dict):
            continue
        if isinstance(value, list | tuple):
            value = "; ".join(str(v) for v in value)
            if not value:
                continue
        lines.append(f"{key}: {value}")
    return lines


def _traffic(d: Deployment) -> str:
    """The share of every version, most traffic first ("-" when not reported): the list's
    column, narrow enough not to wrap (``aiaas status NAME`` names each version)."""
    ranked = sorted(d.versions, key=lambda v: -v.traffic_pct)
    return " / ".join(f"{v.traffic_pct}%" for v in ranked) or "-"


def _stray_note(d: Deployment) -> str:
    """`` (+N stray)``: versions running that take no traffic, counted from
    :attr:`Deployment.versions` where the provider reports them, else from
    ``details["strays"]`` (the local provider's servers that no deploy switched to)."""
    strays = d.details.get("strays") or ()
    idle = sum(1 for v in d.versions if v.traffic_pct == 0) if d.versions else len(strays)
    if not idle:
        return ""
    return f" (+{idle} stray)" if strays else f" (+{idle} without traffic)"


def _read_data(data: str | None) -> bytes | None:
    """The ``--data`` body, checked to be JSON (None: the bundle's example request)."""
    if data is None:
        return None
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
    plain(out, f"created {target}: edit model.py, then `aiaas deploy -c {directory}`")


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
    plain(out, f"{built.path}  {built.manifest.name} {built.manifest.version}  {size:.1f} MB")


@bundle_app.command("inspect")
def bundle_inspect(
    path: Annotated[Path, typer.Argument(help="model.tar.gz or bundle directory.")],
) -> None:
    """Print a bundle's manifest."""
    from aiaas.bundle import inspect_archive

    out.print_json(inspect_archive(path).model_dump_json())


def _with_server_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` (which takes ``**server``) one option per ServerSection field, typed,
    defaulted and described by the field itself."""
    own = [
        p
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    generated = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=Annotated[
                field.annotation, typer.Option(*server_option_flags(name), help=field.description)
            ],
        )
        for name, field in ServerSection.model_fields.items()
    ]
    parameters = [*own, *generated]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def _server_section(values: dict[str, Any]) -> ServerSection:
    """The options validated by ServerSection itself; an error names the option."""
    from pydantic import ValidationError

    try:
        return ServerSection(**values)
    except ValidationError as exc:
        problems = [
            f"{server_option_flags(str(e['loc'][0]))[0]} {values.get(str(e['loc'][0]))}: {e['msg']}"
            for e in exc.errors()
        ]
        raise BadRequest("; ".join(problems)) from None


@app.command()
@_with_server_options
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
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    **server: Any,
) -> None:
    """Run the model server (SageMaker, Azure ML, PAI-EAS and OIP v2 routes at once).

    Every ``server:`` setting of aiaas.yaml is an option here (see ``ServerSection``)."""
    from aiaas.runtime.serve import serve as run_server

    run_server(
        bundle, host=host, port=port, settings=_server_section(server), device=device,
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
    cfg = load_project(config, provider)
    if dry_run:  # a bundle is built, if need be, into a temporary folder: nothing is written
        with err.status("planning"):
            plan = api.plan(cfg, bundle=bundle, name=name)
        _show_plan(plan, cfg.provider)
        return
    seen = _Seen()
    try:
        with _progress_bar(f"deploying to {cfg.provider}") as report:
            deployment = api.deploy(cfg, bundle=bundle, name=name, progress=seen.watch(report))
    except KeyboardInterrupt:  # here, not in main: what the deploy left is the message
        plain(err, _interrupted(cfg, name, seen, _again(config, provider)))
        raise typer.Exit(130) from None
    if seen.unchanged:
        plain(out, f"{deployment.name} {deployment.version} is already live on "
                   f"{deployment.provider}: nothing changed")  # fmt: skip
    _show_deployment(deployment)


FIRST_WRITE = 0.05
"""The progress fraction from which the shared deploy transaction (``adapters/rollout.py``)
has changed the deployment: below it, it built, read and uploaded only."""


@dataclass
class _Seen:
    """What a deploy's progress said: how far it got, and whether it changed nothing."""

    furthest: float = 0.0
    unchanged: bool = False

    def watch(self, report: ProgressFn) -> ProgressFn:
        """``report``, noting each message on the way."""
        from adapters.rollout import ALREADY_LIVE

        def watching(message: str, fraction: float | None) -> None:
            self.furthest = max(self.furthest, fraction or 0.0)
            self.unchanged = message == ALREADY_LIVE
            report(message, fraction)

        return watching


def _again(config: Path, provider: str | None) -> str:
    """The options a follow-up command needs to reach the same project and provider."""
    options = f" -c {config}" if config != Path("aiaas.yaml") else ""
    return options + (f" --provider {provider}" if provider else "")


def _interrupted(cfg: ProjectConfig, name: str | None, seen: _Seen, options: str) -> str:
    """What a deploy stopped by Ctrl-C left, in the terms of the provider's capabilities:
    nothing changed yet; a change the cloud goes on with by itself (a server-side rollout);
    or a change aiaas was driving, stopped part-way."""
    from aiaas.plugins import installed_providers

    try:
        target = deployment_name(cfg, name)
    except AiaasError:
        target = ""
    status = f"`aiaas status{' ' + target if target else ''}{options}`"
    deploy = f"`aiaas deploy{options}`"
    where = cfg.provider
    if seen.furthest < FIRST_WRITE:
        return (f"interrupted before the deploy changed anything on {where}: {status} shows "
                f"the deployment as it is; {deploy} starts again")  # fmt: skip
    spec = installed_providers().get(where)
    subject = target or "the deployment"
    if spec is not None and spec.capabilities.server_side_rollout:
        return (f"interrupted: {subject} keeps updating on {where} (the change runs there, "
                f"not in this command); {status} shows it; the next {deploy} waits for it to "
                "settle and goes on")  # fmt: skip
    return (f"interrupted: the deploy of {subject} stopped part-way (the version it was "
            f"starting is stopped; what was live still serves); {status} shows it; the next "
            f"{deploy} cleans up what it left and goes on")  # fmt: skip


def _show_plan(plan: Plan, provider: str) -> None:
    if plan.unchanged:
        out.print(f"{escape(plan.name)} {plan.version} is already live on {provider}: "
                  "deploy would change nothing")  # fmt: skip
    else:
        out.print(f"deploy of {escape(plan.name)} {plan.version} to {provider} would:")
    for c in plan.changes:  # plain lines: a name or path is never cut short
        plain(out, f"  {c.action:<6}  {c.kind}: {c.name}" + (f" ({c.detail})" if c.detail else ""))


@app.command()
def status(
    config: ConfigOpt = Path("aiaas.yaml"), provider: ProviderOpt = None, name: NameArg = None
) -> None:
    """Show one deployment, with every version it runs and its traffic, or all of them."""
    cfg = load_project(config, provider)
    if name:
        _show_deployment(api.status(cfg, name=name))
        return
    deployments = api.deployments(cfg)
    if not deployments:
        plain(err, f"no deployments on {cfg.provider} for this project yet (`aiaas deploy`)")
        return
    split = any(d.versions for d in deployments)  # a traffic column only where reported
    header = ["name", "provider", "version", "status", "endpoint", *(["traffic"] * split)]
    rows = [
        [d.name, d.provider, d.version, d.status + _stray_note(d), d.endpoint or "-",
         *([_traffic(d)] * split)]
        for d in deployments
    ]  # fmt: skip
    _show_table(header, rows, no_wrap={3, 5})


@app.command()
def invoke(
    name: NameArg = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="JSON body, or @file.")] = None,
    config: ConfigOpt = Path("aiaas.yaml"),
    provider: ProviderOpt = None,
) -> None:
    """Send one request (default: the bundle's example) and print the response."""
    body = _read_data(data)
    answer = api.invoke(load_project(config, provider), body, name=name)
    sys.stdout.write(answer.body.decode() + "\n")


@app.command()
def logs(
    name: NameArg = None,
    tail: Annotated[int, typer.Option(help="Lines to show.")] = 100,
    config: ConfigOpt = Path("aiaas.yaml"),
    provider: ProviderOpt = None,
) -> None:
    """Print the deployment's recent log lines."""
    cfg = load_project(config, provider)
    target = deployment_name(cfg, name)
    lines = api.logs(cfg, name=target, tail=tail)
    for line in lines:
        sys.stdout.write(line + "\n")
    if not lines and tail > 0:
        plain(err, _no_logs(cfg, target))


def _no_logs(cfg: ProjectConfig, name: str) -> str:
    """Why ``aiaas logs`` printed nothing, and where it looked: no such deployment, or none
    of its lines arrived yet (where the provider names its log: ``details["log_group"]`` or
    ``details["log"]``)."""
    from aiaas.errors import NotFound

    try:
        deployment = api.status(cfg, name=name)
    except NotFound as exc:
        return f"no log lines: {exc.message}"
    where = deployment.details.get("log_group") or deployment.details.get("log")
    looked = f"{where}" if where else f"{cfg.provider}'s logs of {name}"
    return (f"no log lines for {name} ({deployment.status}) on {cfg.provider} yet: looked in "
            f"{looked}; a new deployment's lines can take a minute to arrive")  # fmt: skip


@app.command()
def delete(
    name: NameArg = None, config: ConfigOpt = Path("aiaas.yaml"), provider: ProviderOpt = None
) -> None:
    """Delete a deployment (idempotent)."""
    cfg = load_project(config, provider)
    deployment = deployment_name(cfg, name)
    removed = api.delete(cfg, name=deployment)
    message = f"deleted {deployment}" if removed else f"{deployment}: nothing to delete"
    plain(out, message)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Run an emulated cloud on 127.0.0.1 to rehearse a deploy with no account: "
    "aiaas emulate CLOUD [-c PROJECT] [--env-file FILE] plus the cloud's own options "
    "(docs/rehearse.md names the clouds and their options; extra: emulate).",
)
def emulate(
    ctx: typer.Context,
    cloud: Annotated[
        str,
        typer.Argument(
            help="The cloud to emulate (docs/rehearse.md; a name it does not know is answered "
            "with the list)."
        ),
    ],
) -> None:
    # The clouds are named by the emulators (emulators.cli.CLOUDS), not here: nothing above
    # adapters/ names a cloud, and the emulate extra may not be installed.
    from emulators.cli import main as run_emulator  # the emulate extra's code: loaded here only

    raise typer.Exit(run_emulator([cloud, *ctx.args]))


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


# The function tier's commands (function serve|package, keys, usage) and `aiaas iac`, listed
# after these.
register_function_commands(app)
register_iac_commands(app)


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
        plain(err, ctx.get_usage())
        plain(err, f"Try '{ctx.command_path} --help' for help.")
    possibilities = sorted(getattr(exc, "possibilities", None) or [])
    if possibilities:  # click's own wording would be "(Possible options: ...)"
        message = f"{getattr(exc, 'message', exc)}; did you mean {' or '.join(possibilities)}?"
    else:
        format_message = getattr(exc, "format_message", None)
        message = str(format_message() if callable(format_message) else exc)
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
