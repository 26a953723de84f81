"""``aiaas.yaml``: the project configuration, validated once at load time.

Any value can be overridden by an ``AIAAS_*`` environment variable: ``AIAAS_PROVIDER=local``
sets ``provider``; a double underscore walks into sections, so
``AIAAS_SERVER__MAX_QUEUE_SIZE=64`` sets ``server.max_queue_size``. Errors name the file (or
the variable) and the dotted key. Secrets never live in this file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from aiaas.errors import ConfigError

CONFIG_FILE = "aiaas.yaml"
PACKAGED_CONFIG_FILE = "aiaas.json"  # the same mapping, as a function package carries it
ENV_PREFIX = "AIAAS_"
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
"""A model's and a deployment's name: also a folder, a URL segment and a cloud resource name."""


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
    """Model server limits (shared by every cloud: the same image runs everywhere)."""

    max_queue_size: int = Field(default=512, ge=1)
    # A request that finds the queue full waits this long for room before its 503: clients
    # that ignore Retry-After cannot come back faster than this (0: refuse at once).
    queue_wait_ms: float = Field(default=1000.0, ge=0, le=60_000)
    # Most items one request may carry, checked at the function edge and on the server
    # before anything is expanded or validated (an OIP shape of [1000000, 0] is 89 bytes).
    max_items_per_request: int = Field(default=512, ge=1)
    # What predict returns is checked against the output schema (finite numbers only):
    # strict answers a bad result 500 model_error, warn serves it and logs each problem once.
    output_validation: Literal["strict", "warn"] = "strict"
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    request_timeout_s: float = Field(default=60.0, gt=0)
    torch_threads: int | None = Field(default=None, ge=1)
    inference_workers: int = Field(default=1, ge=1, le=64)


class LocalSection(_Section):
    """Settings of the ``local`` provider."""

    host: str = Field(default="127.0.0.1", pattern=r"^(127\.\d+\.\d+\.\d+|localhost|::1)$")
    state_dir: str = ".aiaas"
    ready_timeout_s: float = Field(default=300.0, gt=0)


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
    """The whole ``aiaas.yaml``."""

    model: ModelSection
    provider: str = Field(default="local", pattern=r"^[a-z][a-z0-9_]*$")
    bundle: BundleSection = Field(default_factory=BundleSection)
    server: ServerSection = Field(default_factory=ServerSection)
    function: FunctionSection = Field(default_factory=FunctionSection)
    local: LocalSection = Field(default_factory=LocalSection)
    _root: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def root(self) -> Path:
        """The project directory (where ``aiaas.yaml`` is); relative paths resolve from here."""
        return self._root


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
    sources = _apply_env(raw, os.environ if env is None else env)
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file, sources)) from None
    config._root = file.parent.resolve()
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


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Merge ``AIAAS_A__B=v`` into ``raw["a"]["b"]``; return which key came from which variable.

    Variables whose first segment is not a config section or key are left alone (other
    ``AIAAS_*`` variables, such as secrets, share the prefix).
    """
    sources: dict[tuple[str, ...], str] = {}
    top_level = set(ProjectConfig.model_fields)
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


def _describe(exc: ValidationError, file: Path, sources: dict[tuple[str, ...], str]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        where = f"{sources[loc]} (overrides {file})" if loc in sources else str(file)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{where}: {key}: {msg}")
    return "; ".join(lines)
