"""The Python API: what the ``aiaas`` commands do, as functions that return the contract's
typed objects (:mod:`adapters.base`) instead of printing them.

Every function takes the project (``aiaas.yaml``, the directory that holds it, or a config
already loaded with :func:`load_project`) and, like the CLI's ``--provider``, an optional
``provider`` that overrides the config's (as ``AIAAS_PROVIDER`` would). ``name`` is the
deployment (default: the config's model name, else the built bundle's). ``deploy`` reports
progress through the same callback the CLI draws its progress bar with
(:data:`adapters.base.ProgressFn`)::

    import aiaas

    deployment = aiaas.deploy("my-model", progress=lambda message, done: print(message))
    print(deployment.status, deployment.endpoint)
    print(aiaas.invoke("my-model", b'{"inputs": [{"text": "hi"}]}').body)
    aiaas.delete("my-model")

Like the SageMaker SDK's ``Model.deploy()`` and MLflow's deployment client, it is the layer
the command line sits on (``aiaas.cli``): a composition root that builds the provider's
control plane, so it imports adapters; ``import aiaas`` does not load it until it is used.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from adapters import get_invoker, get_provider
from adapters.base import Deployment, InvokeResult, Plan, ProgressFn, no_progress
from aiaas.config import ProjectConfig, load_config
from aiaas.errors import ConfigError

__all__ = [
    "Project",
    "delete",
    "deploy",
    "deployment_name",
    "deployments",
    "invoke",
    "load_project",
    "logs",
    "plan",
    "status",
]

Project = Path | str | ProjectConfig
"""``aiaas.yaml``, the directory that holds it, or the config :func:`load_project` read."""

DEFAULT_PROJECT = "aiaas.yaml"


def load_project(project: Project = DEFAULT_PROJECT, provider: str | None = None) -> ProjectConfig:
    """The validated config of ``project``, with ``provider`` (if given) overriding the
    config's as ``AIAAS_PROVIDER`` would; its directory is ``config.root``.

    Raises:
        ConfigError: the config is invalid, or ``provider`` is not installed.
        ValueError: ``project`` is a loaded config and ``provider`` is given too (the
            override is applied when the config is read).
    """
    if isinstance(project, ProjectConfig):
        if provider:
            raise ValueError("provider overrides a config as it is read: pass the path instead")
        return project
    if not provider:
        return load_config(project)
    from aiaas.plugins import installed_providers

    if provider not in installed_providers():
        installed = ", ".join(sorted(installed_providers())) or "none"
        raise ConfigError(f"--provider {provider}: unknown provider; installed: {installed}")
    return load_config(project, env={**os.environ, "AIAAS_PROVIDER": provider})


def deployment_name(config: ProjectConfig, name: str | None = None) -> str:
    """``name``, else the config's model name, else the built bundle's."""
    if name:
        return name
    if config.model.name:
        return config.model.name
    built = config.root / config.bundle.output
    if built.is_file():
        from aiaas.bundle import inspect_archive

        return inspect_archive(built).name
    raise ConfigError(
        f"{config.root / 'aiaas.yaml'}: model.name is not set; pass the deployment name"
    )


def plan(
    project: Project = DEFAULT_PROJECT,
    *,
    provider: str | None = None,
    bundle: Path | str | None = None,
    name: str | None = None,
) -> Plan:
    """What :func:`deploy` would change, changing nothing: without ``bundle``, the project's
    bundle is built into a temporary folder (the project's own output is not written)."""
    config = load_project(project, provider)
    with (
        tempfile.TemporaryDirectory(prefix="aiaas-plan-") as tmp,
        get_provider(config.provider, config) as cp,
    ):
        if bundle is None:
            from aiaas.bundle import build_bundle

            bundle = build_bundle(config.root, Path(tmp) / "model.tar.gz").path
        return cp.plan(Path(bundle), name=name)


def deploy(
    project: Project = DEFAULT_PROJECT,
    *,
    provider: str | None = None,
    bundle: Path | str | None = None,
    name: str | None = None,
    progress: ProgressFn = no_progress,
) -> Deployment:
    """Build the project's bundle (unless ``bundle`` is given) and deploy it; returns once the
    new version answers (:meth:`adapters.base.Provider.deploy`'s guarantees).

    Raises:
        DeployFailed: the provider's reason; the old version keeps serving.
    """
    config = load_project(project, provider)
    if bundle is None:
        from aiaas.bundle import build_bundle

        progress("building bundle", None)
        bundle = build_bundle(config.root).path
    with get_provider(config.provider, config) as cp:
        return cp.deploy(Path(bundle), name=name, progress=progress)


def status(
    project: Project = DEFAULT_PROJECT, *, provider: str | None = None, name: str | None = None
) -> Deployment:
    """One deployment's state, every version it runs included (:attr:`Deployment.versions`).

    Raises:
        NotFound: there is no such deployment.
    """
    config = load_project(project, provider)
    with get_provider(config.provider, config) as cp:
        return cp.describe(deployment_name(config, name))


def deployments(
    project: Project = DEFAULT_PROJECT, *, provider: str | None = None
) -> list[Deployment]:
    """Every deployment the provider manages for the project."""
    config = load_project(project, provider)
    with get_provider(config.provider, config) as cp:
        return cp.list()


def invoke(
    project: Project = DEFAULT_PROJECT,
    body: bytes | str | None = None,
    *,
    provider: str | None = None,
    name: str | None = None,
    request_id: str | None = None,
    timeout: float = 60.0,
) -> InvokeResult:
    """Send one simple-protocol JSON request (default: the built bundle's example) through
    the provider's invoke path, as a function would; the answer and the version that gave it."""
    config = load_project(project, provider)
    if body is None:
        import json

        from aiaas.bundle import inspect_archive

        body = json.dumps(inspect_archive(config.root / config.bundle.output).example_request)
    payload = body.encode() if isinstance(body, str) else body
    invoker = get_invoker(config.provider, config)
    try:
        return invoker.invoke_sync(
            deployment_name(config, name), payload,
            request_id=request_id or uuid.uuid4().hex, timeout=timeout,
        )  # fmt: skip
    finally:
        invoker.close()


def logs(
    project: Project = DEFAULT_PROJECT,
    *,
    provider: str | None = None,
    name: str | None = None,
    tail: int = 100,
) -> list[str]:
    """The deployment's last ``tail`` log lines, where the provider keeps them."""
    config = load_project(project, provider)
    with get_provider(config.provider, config) as cp:
        return cp.logs(deployment_name(config, name), tail)


def delete(
    project: Project = DEFAULT_PROJECT, *, provider: str | None = None, name: str | None = None
) -> bool:
    """Remove the deployment; False (and no error) when there was nothing to remove."""
    config = load_project(project, provider)
    with get_provider(config.provider, config) as cp:
        return cp.delete(deployment_name(config, name))
