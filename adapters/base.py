"""The Provider contract every cloud implements, with the guarantees callers rely on.

Nothing above ``adapters/`` knows a cloud's name: the router, the function tier and the
CLI talk to :class:`Provider` only, and the conformance suite holds every implementation to
the guarantees written here. Errors are always :mod:`aiaas.errors` types.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aiaas.config import ProjectConfig

ProgressFn = Callable[[str, float | None], None]
"""Progress callback: a status message and a completed fraction (``None`` if unknown)."""


def no_progress(_message: str, _fraction: float | None) -> None:
    """The default progress callback: report nothing."""


@dataclass(frozen=True)
class Deployment:
    """What a provider reports about one named deployment.

    ``status`` is one of ``ready``, ``creating``, ``updating``, ``failed``, ``stopped``.
    """

    name: str
    provider: str
    version: str
    status: str
    endpoint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Provider(ABC):
    """A place that runs the model server: ``local``, ``sagemaker``, ``azureml``, ``pai``."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_config(cls, config: ProjectConfig) -> Provider:
        """Build the provider from the validated project config (secrets from the env)."""

    @abstractmethod
    def upload(self, bundle: Path) -> str:
        """Put the bundle archive where the provider reads it and return its URI.

        Skipped (same URI returned) when an archive with the same digest is already there.
        """

    @abstractmethod
    def deploy(
        self, bundle: Path, *, name: str | None = None, progress: ProgressFn = no_progress
    ) -> Deployment:
        """Create or update deployment ``name`` (default: the manifest's name) to ``bundle``.

        Guarantees: returns only once the new version answers a smoke-test prediction;
        deploying the digest that is already live changes nothing; a new digest becomes
        live without failing requests in between, and the old version is then removed. On
        failure raises :class:`~aiaas.errors.DeployFailed` and the old version keeps serving.
        """

    @abstractmethod
    def describe(self, name: str) -> Deployment:
        """The deployment's current state; raises :class:`~aiaas.errors.NotFound`."""

    @abstractmethod
    def list(self) -> builtins.list[Deployment]:
        """Every deployment this provider manages for the project."""

    @abstractmethod
    def invoke(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> bytes:
        """Send a simple-protocol JSON body to deployment ``name`` and return the response body.

        Raises the typed errors: InvalidInput/BadRequest (the request is wrong), Throttled or
        Overloaded (retry after ``retry_after``), NotFound, NotReady, ModelError,
        DeadlineExceeded, PayloadTooLarge.
        """

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Remove the deployment; idempotent: returns False when there was nothing to remove."""

    def logs(self, name: str, tail: int = 100) -> builtins.list[str]:
        """The last ``tail`` log lines of the deployment, where the provider keeps them."""
        return []
