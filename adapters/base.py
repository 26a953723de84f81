"""The provider contract every cloud implements, with the guarantees callers rely on.

A provider has two halves, split where the hot path needs it:

- the **control plane** (:class:`Provider`): upload, deploy, plan, describe, list, delete,
  logs. The CLI and the conformance suite use it; it may load the cloud's control-plane SDK.
- the **invoke path** (:class:`Invoker`): one light object that sends predictions to a
  deployment, ``async`` for the function tier (awaited on its event loop, no thread hop) and
  sync for the CLI. A function's cold start builds only this, so it must never import a
  control-plane SDK or torch.

Nothing above ``adapters/`` knows a cloud's name: the function tier and the CLI talk to these
two classes only, and ``tests/conformance`` holds every implementation to the guarantees
written here. Errors are always :mod:`aiaas.errors` types, mapped once per provider.
"""

from __future__ import annotations

import builtins
import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from aiaas.errors import AiaasError, NotReady, error_from_body

if TYPE_CHECKING:  # annotations only: the invoke path never loads pydantic's config models
    from aiaas.config import ProjectConfig
    from aiaas.manifest import Manifest

ProgressFn = Callable[[str, float | None], None]
"""Progress callback: a status message and a completed fraction (``None`` if unknown)."""


def no_progress(_message: str, _fraction: float | None) -> None:
    """The default progress callback: report nothing."""


class DeploymentStatus(enum.StrEnum):
    """Where a deployment is, in every provider's terms."""

    CREATING = "creating"  # first version starting; not answering yet
    READY = "ready"  # answering predictions
    UPDATING = "updating"  # answering with one version while another rolls out
    FAILED = "failed"  # not answering, and will not without a new deploy
    STOPPED = "stopped"  # exists, but nothing runs (e.g. its server died)
    DELETING = "deleting"  # on its way out
    UNKNOWN = "unknown"  # the invoke path cannot ask cheaply (e.g. a key-only Azure function)


@dataclass(frozen=True)
class VersionState:
    """One version a deployment runs: its digest, the share of traffic it takes (0-100) and
    where it is. A SageMaker endpoint runs one; an Azure ML endpoint one per deployment, with
    a traffic map; local's stray servers (still running, taking no traffic) are versions too."""

    version: str
    traffic_pct: int
    status: DeploymentStatus


@dataclass(frozen=True)
class Deployment:
    """What a provider reports about one named deployment."""

    name: str
    provider: str
    version: str
    status: DeploymentStatus
    endpoint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    versions: tuple[VersionState, ...] = ()
    """Every version running, with its traffic share; empty when the provider reports only
    :attr:`version` (which always names the one taking most traffic)."""


Action = Literal["create", "update", "delete", "keep"]


@dataclass(frozen=True)
class Change:
    """One resource a deploy would touch: ``kind`` in the provider's terms (a server
    process, an S3 object, an endpoint config, ...), its ``name``, and what happens to it."""

    action: Action
    kind: str
    name: str
    detail: str = ""


@dataclass(frozen=True)
class Plan:
    """What :meth:`Provider.deploy` of ``version`` to deployment ``name`` would do."""

    name: str
    version: str
    changes: tuple[Change, ...]

    @property
    def unchanged(self) -> bool:
        """True when the deploy would change nothing (the digest is already live)."""
        return all(c.action == "keep" for c in self.changes)


@dataclass(frozen=True)
class InvokeResult:
    """A prediction's answer: the body as the model server wrote it, and the version that
    answered (``None`` when the answer does not say)."""

    body: bytes
    version: str | None


class Provider(ABC):
    """The control plane of a place that runs the model server.

    A provider holds clients (HTTP sessions, SDK clients): :meth:`close` releases them, and
    ``with provider: ...`` closes it on the way out.
    """

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_config(cls, config: ProjectConfig) -> Provider:
        """Build the provider from the validated project config (secrets from the env)."""

    @abstractmethod
    def upload(self, bundle: Path) -> str:
        """Put the bundle archive where the provider reads it and return its URI.

        Content-addressed: the URI names the digest, and nothing is written when an archive
        with the same digest is already there (the same URI is returned). :meth:`deploy`
        uploads through this method.
        """

    @abstractmethod
    def plan(self, bundle: Path, *, name: str | None = None) -> Plan:
        """What :meth:`deploy` of ``bundle`` would create, update or delete.

        Guarantees: makes no change anywhere; the plan of the digest already live is
        :attr:`Plan.unchanged`.
        """

    @abstractmethod
    def deploy(
        self, bundle: Path, *, name: str | None = None, progress: ProgressFn = no_progress
    ) -> Deployment:
        """Create or update deployment ``name`` (default: the manifest's name) to ``bundle``.

        Guarantees: returns only once the new version answers a smoke-test prediction;
        deploying the digest that is already live changes nothing (for a cloud: no write
        call); a new digest becomes live without failing requests in between, and the old
        version is then removed. On failure raises :class:`~aiaas.errors.DeployFailed` (with
        the provider's reason) and the old version keeps serving.
        """

    @abstractmethod
    def describe(self, name: str) -> Deployment:
        """The deployment's current state; raises :class:`~aiaas.errors.NotFound`."""

    @abstractmethod
    def list(self) -> builtins.list[Deployment]:
        """Every deployment this provider manages for the project (and no one else's)."""

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Remove the deployment and everything deploy made for it alone (content-addressed
        uploads, which other deployments of the same digest share, may stay).

        Idempotent: returns False, and raises nothing, when there was nothing to remove.
        """

    def logs(self, name: str, tail: int = 100) -> builtins.list[str]:
        """The last ``tail`` log lines of the deployment, where the provider keeps them."""
        return []

    def live_manifest(self, name: str) -> Manifest | None:
        """The manifest of the version deployment ``name`` serves now (``None`` if unknown).

        Cheap enough to ask once a second: a development function follows redeploys with it.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook: a provider without clients has nothing to close
        """Release the provider's clients; the provider is not used afterwards."""

    def __enter__(self) -> Provider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Invoker(ABC):
    """The invoke path of a provider: what a function loads, and all it loads.

    Raises the typed errors: InvalidInput/BadRequest (the request is wrong), Throttled or
    Overloaded (retry after ``retry_after``), NotFound (no such deployment), NotReady,
    ModelError, DeadlineExceeded (``timeout`` passed), PayloadTooLarge (over the
    provider's request limit, refused before sending).
    """

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any) -> Invoker:
        """Build the invoke path from the validated config (credentials from the env).

        ``config`` is a :class:`~aiaas.config.ProjectConfig`, or, for a provider whose spec
        declares ``invoke_settings``, a function's light :class:`~aiaas.packaged.FunctionConfig`
        too (:meth:`FunctionConfig.of <aiaas.packaged.FunctionConfig.of>` gives the one from
        the other). Typed ``Any`` so an invoker may take either (or the first alone)."""

    @abstractmethod
    async def invoke(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        """Send a simple-protocol JSON body to deployment ``name``; the answer and the
        version that produced it."""

    @abstractmethod
    def invoke_sync(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        """:meth:`invoke` for callers without an event loop (the CLI)."""

    @abstractmethod
    async def status(self, name: str) -> DeploymentStatus:
        """Whether deployment ``name`` answers, asked cheaply (a function's readiness
        route); raises :class:`~aiaas.errors.NotFound`."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, as Provider.close
        """Release the async clients."""

    def close(self) -> None:  # noqa: B027 - optional hook, as Provider.close
        """Release the sync clients."""


_VERSION_KEY = b'"version":"'


def answer_version(answer: bytes) -> str | None:
    """The ``version`` of a simple-protocol answer, read without decoding it: the model
    server writes it last (``…,"model":"m","version":"v"}``), so the search from the end is
    short whatever the size of the outputs."""
    start = answer.rfind(_VERSION_KEY, max(0, len(answer) - 512))
    if start < 0:
        return None
    start += len(_VERSION_KEY)
    end = answer.find(b'"', start)
    return answer[start:end].decode("utf-8", "replace") if end > start else None


def model_server_error(
    status: int, body: bytes, retry_after_header: str | None, default_retry_after: float = 1.0
) -> AiaasError:
    """The typed error of a model server's non-200 answer (its JSON error body), however it
    reached the invoke path (straight, or wrapped by a cloud as SageMaker's ModelError)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    try:
        retry_after = float(retry_after_header or default_retry_after)
    except ValueError:
        retry_after = default_retry_after
    error = error_from_body(status, parsed if isinstance(parsed, dict) else None, retry_after)
    if isinstance(error, NotReady):  # e.g. a server draining after SIGTERM: back soon
        error.retry_after = retry_after
    return error
