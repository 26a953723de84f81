"""Infrastructure templates per cloud (``iac/<cloud>/``) and the renderers of their parameters.

Each cloud's template creates what its provider runs on (storage, registry, roles, the
function and its URL); the endpoint stays the provider's to create (``aiaas deploy``). The
template's parameters are written by ``aiaas iac render --cloud <cloud>`` from the same
``aiaas.yaml`` that drives the provider, by the provider's own rules (its naming, its
settings' validation), so the template and the provider never disagree on a name.

A cloud adds itself with one :class:`IacTarget` in its provider's package (``iac.py``) and
one line in :data:`TARGETS`; nothing above ``adapters`` names a cloud: the CLI asks this
registry.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiaas.errors import ConfigError

if TYPE_CHECKING:
    from aiaas.config import ProjectConfig

TARGETS: dict[str, str] = {
    "aws": "adapters.sagemaker.iac:TARGET",
    "azure": "adapters.azureml.iac:TARGET",
    "alibaba": "adapters.pai.iac:TARGET",
}
"""Each cloud with a template, and where its :class:`IacTarget` lives (imported when used)."""


@dataclass(frozen=True)
class RenderOptions:
    """What a render takes besides ``aiaas.yaml``: the deployment's name, the packaged
    function (its zip, the Python and architecture it was packaged for), values the user
    sets for parameters that ``aiaas.yaml`` does not hold, the API keys' hashes, and the
    environment (the provider's region rules read it)."""

    deployment: str
    function_zip: Path | None = None
    python: str = "3.11"
    arch: str | None = None
    """None: the one in the zip's name (``function-<target>-<arch>.zip``), else x86_64."""
    values: Mapping[str, str] = field(default_factory=dict)
    api_keys: str | None = None
    """The API keys' salted hashes for the target's ``secret_parameter`` (None: left out,
    so a stack update keeps the value it has)."""
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rendered:
    """A template's parameters as rendered, with what to do next."""

    parameters: dict[str, str]
    """Parameter name to value (a template parameter left out keeps its default)."""
    notes: list[str]
    """What the user runs next (the region to deploy in, the zip to upload, ...)."""
    text: str
    """The parameter file as the cloud's tools read it."""


@dataclass(frozen=True)
class IacTarget:
    """One cloud's template and the renderer of its parameters.

    - ``cloud``: the name ``--cloud`` takes; ``provider``: the provider whose section of
      ``aiaas.yaml`` the parameters come from;
    - ``template``: the template's path under the repository's ``iac/`` folder;
    - ``parameter_format``: what :attr:`Rendered.text` is, in words (docs and ``--help``);
    - ``free_parameters``: the template parameters that ``aiaas.yaml`` does not hold, which
      the user may set (``--set NAME=VALUE``); every other one is derived, never set by hand;
    - ``secret_parameter``: the parameter that takes the API keys' salted hashes
      (``AIAAS_API_KEYS``; :attr:`RenderOptions.api_keys`, which the caller reads from
      where ``aiaas keys`` keeps them);
    - ``render``: given the project's config and the options, the parameters.
    """

    cloud: str
    provider: str
    template: str
    parameter_format: str
    free_parameters: frozenset[str]
    secret_parameter: str | None
    render: Callable[[ProjectConfig, RenderOptions], Rendered]


def iac_target(cloud: str) -> IacTarget:
    """The target of ``cloud``; a :class:`ConfigError` for an unknown one."""
    if cloud not in TARGETS:
        raise ConfigError(f"--cloud {cloud}: unknown cloud; one of {', '.join(TARGETS)}")
    module, _, attr = TARGETS[cloud].partition(":")
    target = getattr(importlib.import_module(module), attr)
    assert isinstance(target, IacTarget) and target.cloud == cloud, TARGETS[cloud]
    return target


def cloud_of(provider: str) -> str:
    """The cloud whose template serves ``provider`` (for ``aiaas iac render`` without
    ``--cloud``); a :class:`ConfigError` when there is none."""
    for cloud in TARGETS:
        if iac_target(cloud).provider == provider:
            return cloud
    raise ConfigError(
        f"provider: {provider} has no infrastructure template; pass --cloud ({', '.join(TARGETS)})"
    )


def refuse_unsettable(
    values: Mapping[str, str], free: frozenset[str], origins: Mapping[str, str], template: str
) -> None:
    """A :class:`ConfigError` for the first ``--set NAME`` that is not one of ``free``, saying
    where that parameter comes from instead (``origins``: name to where, e.g. "comes from
    aiaas.yaml: change it there"), or that ``template`` has no such parameter."""
    for name in values:
        if name not in free:
            why = origins.get(name, f"not a parameter of {template}")
            raise ConfigError(f"--set {name}: {why} (settable: {', '.join(sorted(free))})")


def check_function_environment(variables: Mapping[str, str], limit: int, platform: str) -> None:
    """A :class:`ConfigError` when the function's environment ``variables`` (names and values,
    as the platform counts them: UTF-8 bytes) are over the ``platform``'s ``limit``: the API
    keys' records are what grows."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
    if size > limit:
        raise ConfigError(
            f"AIAAS_API_KEYS: the key records take the function's variables to {size} bytes, "
            f"over {platform}'s {limit}: revoke unused keys (aiaas keys revoke)"
        )


def cloudformation_parameters(parameters: Mapping[str, str]) -> str:
    """CloudFormation's parameter file: ``[{"ParameterKey": ..., "ParameterValue": ...}]``,
    which ``aws cloudformation create-stack --parameters file://...`` and (AWS CLI v2)
    ``aws cloudformation deploy --parameter-overrides file://...`` both read."""
    rows = [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]
    return json.dumps(rows, indent=2) + "\n"
