"""``aiaas.yaml``: the project configuration, validated once at load time.

Any value can be overridden by an ``AIAAS_*`` environment variable: ``AIAAS_PROVIDER=local``
sets ``provider``; a double underscore walks into sections, so
``AIAAS_SERVER__MAX_QUEUE_SIZE=64`` sets ``server.max_queue_size``. Errors name the file (or
the variable) and the dotted key. Secrets never live in this file.

Every installed provider declares the model of its own section (``sagemaker:``,
``azureml:``, ...; see :mod:`aiaas.plugins`), so the sections of every cloud can sit side by
side and switching cloud is the one line ``provider:``. The neutral ``deploy:`` section says
how many instances, how to scale and how to roll out; the selected provider maps each key or
refuses it at load time, naming the key and itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from aiaas.errors import ConfigError
from aiaas.packaged import ENV_PREFIX as ENV_PREFIX
from aiaas.packaged import NAME_PATTERN as NAME_PATTERN
from aiaas.packaged import PACKAGED_CONFIG_FILE as PACKAGED_CONFIG_FILE
from aiaas.plugins import installed_providers

SectionT = TypeVar("SectionT", bound=BaseModel)

CONFIG_FILE = "aiaas.yaml"
# PACKAGED_CONFIG_FILE (aiaas.json, imported above): the same mapping, as a function package
# carries it and its cold start reads it, without pydantic (aiaas.packaged).
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    """Which class to serve and how to batch it. Unset values fall back to the class."""

    entrypoint: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_delay_ms: float | None = Field(default=None, ge=0, le=10_000)
    gpu_count: int | None = Field(default=None, ge=0, le=16)
    memory_mb: int | None = Field(default=None, ge=128)


class BundleSection(_Section):
    """Which project files go into the bundle besides ``artifacts/``."""

    include: list[str] = Field(default_factory=lambda: ["*.py"])
    output: str = "dist/model.tar.gz"


class ServerSection(_Section):
    """Model server limits (shared by every cloud: the same image runs everywhere).

    Every field is also an option of ``aiaas serve`` (``--max-queue-size``, ...), generated
    from this model with its description as the help: a new field needs no CLI edit.
    """

    max_queue_size: int = Field(default=512, ge=1, description="Queued items before 503.")
    # Clients that ignore Retry-After cannot come back faster than this (0: refuse at once).
    queue_wait_ms: float = Field(
        default=1000.0,
        ge=0,
        le=60_000,
        description="How long a request that finds the queue full waits for room before 503.",
    )
    # Checked at the function edge and on the server before anything is expanded or
    # validated (an OIP shape of [1000000, 0] is 89 bytes).
    max_items_per_request: int = Field(
        default=512, ge=1, description="Items one request may carry before 413."
    )
    output_validation: Literal["strict", "warn"] = Field(
        default="strict",
        description="strict: a result breaking the output schema (finite numbers only) is a "
        "500 model_error; warn: serve it and log each problem once.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, ge=1024, description="Largest request body (413 above)."
    )
    request_timeout_s: float = Field(default=60.0, gt=0, description="Seconds before 504.")
    # A request let in holds a place (aiaas/runtime/door.py) while its body is read: a client
    # that stalls mid-body must not hold it until request_timeout_s.
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a request let in may take to send its whole body before 408.",
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads (default: all cores, split)."
    )
    inference_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Batches run side by side, each on its own model copy.",
    )
    # process: the event loop (parsing, validation, refusals) and the forward pass hold two
    # GILs, so under overload the loop no longer slows the forward (docs/benchmarks.md).
    inference_in: Literal["thread", "process"] = Field(
        default="thread",
        description="Where each inference worker's model runs: a thread of the server's "
        "process, or a process of its own (the server stops, exit 1, if one dies).",
    )


SERVER_ENV_PREFIX = f"{ENV_PREFIX}SERVER__"
DEVICE_VARIABLE = f"{ENV_PREFIX}DEVICE"
"""The torch device a provider tells the container it expects (``cuda`` on a GPU it pays
for: the model then refuses to load without one, instead of serving on the CPU)."""
"""The model server's settings reach its process as ``AIAAS_SERVER__<KEY>`` variables."""


def server_environment(settings: ServerSection) -> dict[str, str]:
    """The ``AIAAS_SERVER__<KEY>`` variables that give the container entrypoint
    (:mod:`aiaas.runtime.container`) the ``server:`` settings: what every provider puts in
    its server's environment (the local process, the cloud container).

    Only the keys written in ``aiaas.yaml`` (or set by a variable) are passed, in key order:
    the entrypoint's defaults are this model's, and a content-addressed cloud resource whose
    spec holds this environment keeps its name until a setting is written. Strings go as
    they are, every other value as JSON (what the entrypoint's validation reads back).
    """
    written = settings.model_dump(mode="json", exclude_unset=True)
    return {
        f"{SERVER_ENV_PREFIX}{key.upper()}": value if isinstance(value, str) else json.dumps(value)
        for key, value in sorted(written.items())
        if value is not None
    }


class ScalingSection(_Section):
    """Autoscaling between ``min_instances`` and ``max_instances``, aiming at
    ``target_concurrency`` requests in flight per instance."""

    min_instances: int = Field(default=1, ge=0, le=1000)
    max_instances: int = Field(default=1, ge=1, le=1000)
    target_concurrency: float = Field(default=8.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ScalingSection:
        if self.max_instances < self.min_instances:
            raise ValueError(
                f"max_instances ({self.max_instances}) is below min_instances "
                f"({self.min_instances})"
            )
        return self


class RolloutSection(_Section):
    """How a new version takes the traffic: ``all_at_once`` (after its smoke test),
    ``canary`` (``canary_percent`` first, the rest after ``wait_s``) or ``linear``
    (``step_percent`` more every ``wait_s``). ``rollback_alarms`` name the cloud's alarms
    that roll a rollout back while it runs."""

    strategy: Literal["all_at_once", "canary", "linear"] = "all_at_once"
    canary_percent: int = Field(default=10, ge=1, le=99)
    step_percent: int = Field(default=25, ge=1, le=99)
    wait_s: float = Field(default=300.0, ge=0, le=3600)
    rollback_alarms: list[str] = Field(default_factory=list)


class DeploySection(_Section):
    """Cloud-neutral deployment settings: every provider maps each key or refuses it."""

    instance_count: int = Field(default=1, ge=1, le=1000)
    scaling: ScalingSection | None = None
    rollout: RolloutSection = Field(default_factory=RolloutSection)


class PricingSection(_Section):
    """Overrides of the list prices behind each usage record's cost estimate (USD)."""

    function_request_usd: float | None = Field(default=None, ge=0)
    function_gb_second_usd: float | None = Field(default=None, ge=0)
    endpoint_hourly_usd: float | None = Field(default=None, ge=0)


class FunctionSection(_Section):
    """Settings of the function tier in front of the provider.

    ``auth: api_key`` checks our API keys (hashes from ``AIAAS_API_KEYS``); ``platform``
    leaves authentication to the platform (Lambda ``AWS_IAM``, Azure function keys, FC).
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    invoke_timeout_s: float = Field(default=30.0, gt=0)
    auth: Literal["api_key", "platform"] = "api_key"


class ProjectConfig(_Section):
    """The whole ``aiaas.yaml``: the core's sections here, each provider's section in
    :meth:`provider_settings`."""

    model: ModelSection
    provider: str = Field(default="local", pattern=r"^[a-z][a-z0-9_]*$")
    # Where this project keeps its local working state: API keys, the usage database and
    # the local provider's servers (relative to the project directory).
    state_dir: str = ".aiaas"
    bundle: BundleSection = Field(default_factory=BundleSection)
    server: ServerSection = Field(default_factory=ServerSection)
    function: FunctionSection = Field(default_factory=FunctionSection)
    deploy: DeploySection = Field(default_factory=DeploySection)
    pricing: PricingSection = Field(default_factory=PricingSection)
    _root: Path = PrivateAttr(default_factory=Path.cwd)
    _providers: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @property
    def root(self) -> Path:
        """The project directory (where ``aiaas.yaml`` is); relative paths resolve from here."""
        return self._root

    @property
    def state_path(self) -> Path:
        """``state_dir`` resolved against the project directory."""
        return (self._root / self.state_dir).resolve()

    def provider_settings(self, name: str, model: type[SectionT]) -> SectionT:
        """Provider ``name``'s validated section (its defaults when the file has none)."""
        section = self._providers.get(name)
        if section is None:
            section = model()
            self._providers[name] = section
        if not isinstance(section, model):
            raise ConfigError(f"{name}: section is {type(section).__name__}, not {model.__name__}")
        return section

    def provider_sections(self) -> dict[str, dict[str, Any]]:
        """The provider sections as written (defaults left out), for a packaged config."""
        return {
            name: section.model_dump(mode="json", exclude_unset=True)
            for name, section in self._providers.items()
        }


def load_config(
    path: Path | str | None = None, env: Mapping[str, str] | None = None
) -> ProjectConfig:
    """Read ``aiaas.yaml`` (or ``path``; a directory means its ``aiaas.yaml``), apply
    ``AIAAS_*`` overrides from ``env`` (default ``os.environ``) and validate.

    Raises:
        ConfigError: naming the file or variable and the dotted key that is wrong.
    """
    file = Path(path) if path is not None else Path(CONFIG_FILE)
    if file.is_dir():
        file = file / CONFIG_FILE
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    raw = _read_mapping(file)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: top level must be a mapping, got {type(raw).__name__}")
    specs = installed_providers()
    sources = _apply_env(raw, os.environ if env is None else env, set(specs))
    sections = {key: raw.pop(key) for key in list(raw) if key in specs}
    problems: list[str] = []
    for key in raw:
        if key not in ProjectConfig.model_fields:
            installed = ", ".join(sorted(specs)) or "none"
            problems.append(
                f"{_where((key,), file, sources)}: {key}: unknown key (not a setting, and no "
                f"installed provider is named {key!r}; installed providers: {installed})"
            )
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file, sources)) from None
    config._root = file.parent.resolve()
    if config.provider not in specs:
        installed = ", ".join(sorted(specs)) or "none"
        raise ConfigError(
            f"{_where(('provider',), file, sources)}: provider: unknown provider "
            f"{config.provider!r}; installed: {installed}"
        )
    if config.provider not in sections:
        sections[config.provider] = {}  # its defaults: required keys are reported missing
    for name, section in sections.items():
        if section is None:
            section = {}
        try:
            config._providers[name] = specs[name].settings_model().model_validate(section)
        except ValidationError as exc:
            problems.append(_describe(exc, file, sources, prefix=(name,)))
    if problems:
        raise ConfigError("; ".join(problems))
    spec = specs[config.provider]
    settings = config._providers[config.provider]
    refused = [
        f"{_where(tuple(key.split('.')), file, sources)}: {key}: not supported by provider "
        f"{config.provider!r}: {why}"
        for key, why in spec.check_deploy(config.deploy, settings)
    ]
    if refused:
        raise ConfigError("; ".join(refused))
    return config


def _read_mapping(file: Path) -> Any:
    """The file's top-level value: JSON for ``*.json`` (what a packaged function carries, so
    its cold start never imports a YAML parser), YAML otherwise."""
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{file}: not valid JSON: {exc}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc


def _apply_env(
    raw: dict[str, Any], env: Mapping[str, str], provider_names: set[str]
) -> dict[tuple[str, ...], str]:
    """Merge ``AIAAS_A__B=v`` into ``raw["a"]["b"]``; return which key came from which variable.

    Variables whose first segment is not a config section or key are left alone (other
    ``AIAAS_*`` variables, such as secrets, share the prefix).
    """
    sources: dict[tuple[str, ...], str] = {}
    top_level = set(ProjectConfig.model_fields) | provider_names
    for var, value in sorted(env.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        path = tuple(part.lower() for part in var[len(ENV_PREFIX) :].split("__"))
        if not path or path[0] not in top_level:
            continue
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
        sources[path] = var
    return sources


def _where(loc: tuple[str, ...], file: Path, sources: dict[tuple[str, ...], str]) -> str:
    """The variable(s) that set the value at ``loc``, inside it or around it, else the file."""
    found = [
        var for path, var in sources.items() if path[: len(loc)] == loc or loc[: len(path)] == path
    ]
    return f"{', '.join(sorted(found))} (overrides {file})" if found else str(file)


def _describe(
    exc: ValidationError,
    file: Path,
    sources: dict[tuple[str, ...], str],
    prefix: tuple[str, ...] = (),
) -> str:
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        msg = (
            "unknown key"
            if err["type"] == "extra_forbidden"
            else str(err["msg"]).removeprefix("Value error, ")
        )
        lines.append(f"{_where(loc, file, sources)}: {key}: {msg}")
    return "; ".join(lines)
