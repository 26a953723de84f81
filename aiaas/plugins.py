"""The provider plug-in point: what each provider declares, and how the core finds them.

A provider is a package registered under the ``aiaas.providers`` entry-point group whose
entry point is a :class:`ProviderSpec`. The spec is cheap to load (some constants and
functions): the control plane, the invoke path and, optionally, the pydantic model of its
settings are named by import path and imported only when used, so reading config, packaging a
function or estimating a cost never loads a cloud SDK, and a function's cold start never
loads pydantic (:mod:`aiaas.packaged`). The core reads specs through this module and never
names a provider.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from aiaas.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from aiaas.config import DeploySection, ProjectConfig
    from aiaas.pricing import Price

ENTRY_POINT_GROUP = "aiaas.providers"

DeployCheck = Callable[["DeploySection", Any], list[tuple[str, str]]]
"""Given the neutral ``deploy:`` section and the provider's own section, the neutral settings
the provider cannot honour: ``(dotted key, why)`` pairs, empty when it honours them all."""


def _honours_everything(_deploy: DeploySection, _settings: Any) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True)
class Limits:
    """What a provider's endpoint takes, for given settings (one place: the invoke path
    refuses past it before sending, and the conformance suite tests it)."""

    max_request_bytes: int | None = None
    """The largest request body; None: only the model server's ``server.max_body_bytes``."""


def _no_limits(_settings: Any) -> Limits:
    return Limits()


@dataclass(frozen=True)
class Capabilities:
    """What a provider's cloud can do, which the shared rollout and the conformance suite
    read instead of a provider's name."""

    pre_traffic_smoke: bool = False
    """A new version can be smoke-tested before it takes any traffic (Azure ML can pin a
    deployment with a header; SageMaker cannot: it is tested after the switch, then
    switched back on failure)."""
    server_side_rollout: bool = False
    """Canary and linear rollouts run in the cloud (SageMaker's DeploymentConfig), not
    stepped by aiaas."""
    traffic_split: bool = False
    """While a canary or linear rollout holds a step, both versions serve (each its share of
    the traffic) and ``describe`` reports each version's share in ``Deployment.versions``
    (local routes by weight itself; SageMaker splits server-side, and its describe reads the
    shares from DescribeEndpoint's pending deployment)."""
    cheap_status: bool = True
    """The invoke path can ask whether the deployment answers (else its status is
    ``UNKNOWN``: a key-only Azure function cannot call ARM)."""
    scale_to_zero: bool = False


@dataclass(frozen=True)
class ProviderSpec:
    """What one provider declares to the core.

    - ``settings``: the pydantic model of its own ``aiaas.yaml`` section (the key is ``name``),
      or its ``"module:Class"`` (imported only where a section is validated:
      :meth:`settings_model`), so the spec module need not import pydantic;
    - ``invoke_settings``: given its section as written in a packaged function's config
      (validated by ``settings`` when it was packaged), the settings object its invoke path,
      ``price`` and ``limits`` read, built without pydantic (a frozen dataclass with the
      attributes they read, which the ``settings`` model has too). ``None``: the function
      validates the section with ``settings`` at cold start, which loads pydantic there;
    - ``control_plane`` / ``invoker``: ``"module:Class"`` of its
      :class:`adapters.base.Provider` and :class:`adapters.base.Invoker`;
    - ``invoke_requirements``: pip requirements its invoke path needs at run time, all that
      ``aiaas function package`` adds for it (never a control-plane SDK);
    - what a function package carries of it is derived, never listed: its spec's module and
      ``invoker``'s module (:attr:`invoke_module`), with every module they import, lazily
      or not (``functions.packaging.invoke_path_modules``); so the invoke path must reach
      its modules by import statements, not by name at run time;
    - ``price``: given its settings, the list price of one instance behind its endpoint
      per hour (the instance type's, or a serverless endpoint's memory size's);
    - ``limits``: given its settings, what its endpoint takes (:class:`Limits`);
    - ``capabilities``: what its cloud can do (:class:`Capabilities`);
    - ``invoke_environment``: the variables a function must be given for its invoke path
      (credentials, keys), each with what it holds; ``aiaas function package`` prints them;
    - ``request_id_header``: the request header that carries the caller's request id all
      the way to the model server (a cloud may forward only some headers);
    - ``check_deploy``: which neutral ``deploy:`` settings it cannot honour (see
      :data:`DeployCheck`); they are refused at config load, naming the key and provider.
    """

    name: str
    settings: type[BaseModel] | str
    control_plane: str
    invoker: str
    price: Callable[[Any], Price]
    limits: Callable[[Any], Limits] = field(default=_no_limits)
    capabilities: Capabilities = field(default_factory=Capabilities)
    invoke_requirements: tuple[str, ...] = ()
    invoke_environment: Mapping[str, str] = field(default_factory=dict)
    request_id_header: str = "x-request-id"
    check_deploy: DeployCheck = field(default=_honours_everything)
    invoke_settings: Callable[[Mapping[str, Any]], Any] | None = None

    def settings_model(self) -> type[BaseModel]:
        """The pydantic model of this provider's section (imports its module if named by
        path, and with it pydantic)."""
        if isinstance(self.settings, str):
            return _load(self.settings, self.name)
        return self.settings

    @property
    def invoke_module(self) -> str:
        """The module of the invoke path (``invoker``'s): what a function loads of the
        provider besides its spec, and where ``aiaas function package`` starts the walk of
        what the invoke path imports."""
        return self.invoker.partition(":")[0]

    def settings_of(self, config: ProjectConfig) -> BaseModel:
        """This provider's validated section of ``config`` (its defaults when absent)."""
        return config.provider_settings(self.name, self.settings_model())

    def hourly_price(self, config: ProjectConfig) -> Price:
        """The list price of one instance behind the endpoint ``config`` deploys."""
        return self.price(self.settings_of(config))

    def limits_for(self, config: ProjectConfig) -> Limits:
        """What the endpoint ``config`` deploys takes."""
        return self.limits(self.settings_of(config))

    def load_control_plane(self) -> type[Any]:
        """The control-plane class (imports its module and SDK now)."""
        return _load(self.control_plane, self.name)

    def load_invoker(self) -> type[Any]:
        """The invoke-path class (imports only the invoke path's modules)."""
        return _load(self.invoker, self.name)


def _load(target: str, provider: str) -> type[Any]:
    import importlib

    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"provider: {provider!r} needs {exc.name or module_name!r}, which is not installed "
            f"(pip install 'aiaas[{provider}]' or the extra its docs name)"
        ) from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ConfigError(f"provider: {provider!r} declares {target!r}, which is not a class")
    return cls


PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
"""What ``provider:`` accepts, so what a provider may be called."""


@functools.cache
def installed_providers() -> dict[str, ProviderSpec]:
    """Every installed provider's spec, by name (read once per process).

    Raises:
        ConfigError: naming the entry point (and its distribution) of a provider that cannot
            be loaded, is not a ProviderSpec, is registered twice, or has a name ``provider:``
            cannot select or that a core section of ``aiaas.yaml`` already uses.
    """
    from aiaas.packaged import CONFIG_KEYS

    specs: dict[str, ProviderSpec] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"provider entry point {ep.name!r} ({ep.value}" + (
            f", from {ep.dist.name})" if ep.dist is not None else ")"
        )
        if not PROVIDER_NAME.fullmatch(ep.name) or ep.name in CONFIG_KEYS:
            raise ConfigError(
                f"{where}: a provider's name matches {PROVIDER_NAME.pattern} and is not one "
                "of aiaas.yaml's own keys"
            )
        if ep.name in specs:
            raise ConfigError(f"{where}: a provider named {ep.name!r} is installed twice")
        try:
            spec = ep.load()
        except Exception as exc:  # a broken plug-in must not break every command unnamed
            raise ConfigError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        if not isinstance(spec, ProviderSpec) or spec.name != ep.name:
            raise ConfigError(f"{where} is not the ProviderSpec of a provider named {ep.name!r}")
        specs[ep.name] = spec
    return specs


def provider_spec(name: str) -> ProviderSpec:
    """The spec of provider ``name``; a :class:`ConfigError` naming the installed ones."""
    specs = installed_providers()
    if name not in specs:
        installed = ", ".join(sorted(specs)) or "none"
        raise ConfigError(f"provider: unknown provider {name!r}; installed: {installed}")
    return specs[name]
