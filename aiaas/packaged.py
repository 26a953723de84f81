"""What a packaged function reads at cold start, read without pydantic.

``aiaas function package`` validates the project's config and the bundle manifest in full
(pydantic, :mod:`aiaas.config` and :mod:`aiaas.manifest`) on the developer's machine and
writes them into the zip (``aiaas.json``, ``aiaas-manifest.json``). At cold start the function
reads them again into the light, frozen views here: pydantic costs about 40 ms of a cold start
on top of what the function's own packages (Mangum, Starlette, httpx) pay, for checks that
already passed.

What was not checked at package time is checked here as it was: ``AIAAS_*`` variables that
override a key the function reads (``AIAAS_FUNCTION__INVOKE_TIMEOUT_S``, ``AIAAS_STATE_DIR``,
...) are validated by hand with the messages :func:`aiaas.config.load_config` gives, naming the
variable; a variable overriding any other key, a config in YAML, or a provider without
``invoke_settings`` sends :func:`function_config` to :func:`aiaas.config.load_config`, which
validates everything (and loads pydantic).

Nothing here imports pydantic, :mod:`aiaas.config` or :mod:`aiaas.manifest` at run time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiaas.errors import BundleError, ConfigError

if TYPE_CHECKING:
    from aiaas.config import ProjectConfig

PACKAGED_CONFIG_FILE = "aiaas.json"
"""The project's config as a function package carries it (JSON: no YAML parser at cold start)."""
MANIFEST_FILE = "aiaas-manifest.json"
ENV_PREFIX = "AIAAS_"
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
"""A model's and a deployment's name: also a folder, a URL segment and a cloud resource name."""
CONFIG_KEYS = (
    "model", "provider", "state_dir", "bundle", "server", "function", "deploy", "pricing"
)  # fmt: skip
"""The top-level keys of ``aiaas.yaml`` (:class:`aiaas.config.ProjectConfig`'s fields)."""

AuthMode = Literal["api_key", "platform"]
_AUTH_MODES: tuple[AuthMode, ...] = ("api_key", "platform")
_DEFAULT_STATE_DIR = ".aiaas"


class ServedManifest(Protocol):
    """What the function tier reads of a bundle manifest: :class:`ManifestView` and
    :class:`aiaas.manifest.Manifest` both have it."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def input_schema(self) -> dict[str, Any]: ...

    @property
    def output_schema(self) -> dict[str, Any]: ...

    @property
    def example_request(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ManifestView:
    """A packaged manifest as the function reads it (validated in full when packaged)."""

    name: str
    version: str
    digest: str
    entrypoint: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    example_request: dict[str, Any]


def read_manifest_view(path: Path) -> ManifestView:
    """Read a packaged manifest; errors name the file and the key, as
    :func:`aiaas.manifest.read_manifest_file`'s do."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the manifest: {exc.strerror}") from None
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: the manifest must be a JSON object")

    def text(key: str, default: str | None = None) -> str:
        value = raw.get(key, default)
        if value is None:
            raise BundleError(f"{path}: {key}: Field required")
        if not isinstance(value, str):
            raise BundleError(f"{path}: {key}: Input should be a valid string")
        return value

    def mapping(key: str) -> dict[str, Any]:
        value = raw.get(key)
        if value is None:
            raise BundleError(f"{path}: {key}: Field required")
        if not isinstance(value, dict):
            raise BundleError(f"{path}: {key}: Input should be a valid dictionary")
        return value

    return ManifestView(
        name=text("name"),
        version=text("version", ""),
        digest=text("digest", ""),
        entrypoint=text("entrypoint"),
        input_schema=mapping("input_schema"),
        output_schema=mapping("output_schema"),
        example_request=mapping("example_request"),
    )


@dataclass(frozen=True)
class FunctionSettings:
    """``function:`` as the function reads it."""

    invoke_timeout_s: float = 30.0
    auth: AuthMode = "api_key"


@dataclass(frozen=True)
class PricingOverrides:
    """``pricing:``: overrides of the list prices (USD), None where not set."""

    function_request_usd: float | None = None
    function_gb_second_usd: float | None = None
    endpoint_hourly_usd: float | None = None


@dataclass(frozen=True)
class FunctionConfig:
    """The part of a project's config a function runs with.

    ``settings`` is the provider's section as its invoke path, price and limits read it:
    its spec's ``invoke_settings`` view in a packaged function, the validated pydantic
    section when built from a :class:`~aiaas.config.ProjectConfig` (:meth:`of`), which it
    then keeps in ``project``."""

    provider: str
    root: Path
    settings: Any
    state_dir: str = _DEFAULT_STATE_DIR
    function: FunctionSettings = field(default_factory=FunctionSettings)
    max_items_per_request: int = 512
    pricing: PricingOverrides = field(default_factory=PricingOverrides)
    project: ProjectConfig | None = None
    """The whole config where it was validated by :func:`~aiaas.config.load_config` (what a
    provider without ``invoke_settings`` builds its invoke path from)."""

    @property
    def state_path(self) -> Path:
        """``state_dir`` resolved against the project directory."""
        return (self.root / self.state_dir).resolve()

    @classmethod
    def of(cls, config: ProjectConfig | FunctionConfig) -> FunctionConfig:
        """The function's view of a validated project config (``config`` itself if it is
        one already)."""
        if isinstance(config, FunctionConfig):
            return config
        from aiaas.plugins import provider_spec

        spec = provider_spec(config.provider)
        prices = config.pricing
        return cls(
            provider=config.provider,
            root=config.root,
            settings=config.provider_settings(config.provider, spec.settings_model()),
            state_dir=config.state_dir,
            function=FunctionSettings(config.function.invoke_timeout_s, config.function.auth),
            max_items_per_request=config.server.max_items_per_request,
            pricing=PricingOverrides(
                prices.function_request_usd,
                prices.function_gb_second_usd,
                prices.endpoint_hourly_usd,
            ),
            project=config,
        )


def function_config(path: Path | str, env: Mapping[str, str] | None = None) -> FunctionConfig:
    """The config a function starts with: ``path`` with the ``AIAAS_*`` overrides in ``env``
    (default ``os.environ``).

    A packaged config (JSON) is read here without pydantic, the overrides of the keys read
    here checked by hand; anything else is validated in full by
    :func:`aiaas.config.load_config`.

    Raises:
        ConfigError: naming the file or variable and the dotted key that is wrong.
    """
    file = Path(path)
    env = os.environ if env is None else env
    light = _read_packaged(file, env) if file.suffix == ".json" else None
    if light is not None:
        return light
    from aiaas.config import load_config

    return FunctionConfig.of(load_config(file, env))


# The keys read here, and how an override of each is checked: what pydantic says of the
# same value (aiaas.config's fields), so the messages are load_config's.
_FLOAT = "Input should be a valid number, unable to parse string as a number"
_INT = "Input should be a valid integer, unable to parse string as an integer"


def _positive(value: str) -> float:
    number = _float(value)
    if not number > 0:
        raise ValueError("Input should be greater than 0")
    return number


def _price(value: str) -> float:
    number = _float(value)
    if not number >= 0:
        raise ValueError("Input should be greater than or equal to 0")
    return number


def _float(value: str) -> float:
    try:
        if not value.isascii():  # float() takes other scripts' digits; pydantic does not
            raise ValueError(value)
        return float(value.strip())
    except ValueError:
        raise ValueError(_FLOAT) from None


def _items(value: str) -> int:
    stripped = value.strip().replace("_", "")
    whole, _, fraction = stripped.partition(".")  # pydantic takes "5.0" for 5
    if not whole.lstrip("+-").isdigit() or not stripped.isascii() or fraction.strip("0"):
        raise ValueError(_INT)
    stripped = whole
    number = int(stripped)
    if number < 1:
        raise ValueError("Input should be greater than or equal to 1")
    return number


def _auth(value: str) -> AuthMode:
    for mode in _AUTH_MODES:
        if value == mode:
            return mode
    raise ValueError("Input should be 'api_key' or 'platform'")


_OVERRIDES: dict[tuple[str, ...], Any] = {
    ("state_dir",): str,
    ("function", "invoke_timeout_s"): _positive,
    ("function", "auth"): _auth,
    ("server", "max_items_per_request"): _items,
    ("pricing", "function_request_usd"): _price,
    ("pricing", "function_gb_second_usd"): _price,
    ("pricing", "endpoint_hourly_usd"): _price,
}


def _read_packaged(file: Path, env: Mapping[str, str]) -> FunctionConfig | None:
    """``file`` read without pydantic, or None where :func:`~aiaas.config.load_config` must
    decide (an override of a key not read here, ``AIAAS_PROVIDER`` naming another provider
    than the file's, an unknown provider, a provider whose spec has no ``invoke_settings``)."""
    from aiaas.plugins import installed_providers

    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        return None
    specs = installed_providers()
    provider = raw.get("provider", "local")
    overrides: dict[tuple[str, ...], tuple[str, str]] = {}
    for var, value in sorted(env.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        key = tuple(part.lower() for part in var[len(ENV_PREFIX) :].split("__"))
        if key[0] not in CONFIG_KEYS and key[0] not in specs:
            continue  # not a config key (AIAAS_API_KEYS, AIAAS_DEPLOYMENT, ...)
        if key == ("provider",) and value == provider:
            continue  # the packaged provider, named again (a template documents it so)
        if key not in _OVERRIDES:
            return None
        overrides[key] = (var, value)
    spec = specs.get(provider) if isinstance(provider, str) else None
    if spec is None or spec.invoke_settings is None:
        return None
    problems: list[str] = []
    values: dict[tuple[str, ...], Any] = {}
    for key, (var, value) in overrides.items():
        try:
            values[key] = _OVERRIDES[key](value)
        except ValueError as exc:
            problems.append(f"{var} (overrides {file}): {'.'.join(key)}: {exc}")
    if problems:
        raise ConfigError("; ".join(problems))

    def get(*key: str) -> Any:
        if key in values:
            return values[key]
        node: Any = raw
        for part in key:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    function = FunctionSettings(
        invoke_timeout_s=_or(get("function", "invoke_timeout_s"), 30.0),
        auth=_or(get("function", "auth"), "api_key"),
    )
    section = raw.get(provider)
    return FunctionConfig(
        provider=provider,
        root=file.parent.resolve(),
        settings=spec.invoke_settings(section if isinstance(section, dict) else {}),
        state_dir=_or(get("state_dir"), _DEFAULT_STATE_DIR),
        function=function,
        max_items_per_request=_or(get("server", "max_items_per_request"), 512),
        pricing=PricingOverrides(
            get("pricing", "function_request_usd"),
            get("pricing", "function_gb_second_usd"),
            get("pricing", "endpoint_hourly_usd"),
        ),
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
