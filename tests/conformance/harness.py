"""What a provider gives the conformance suite, and how the suite finds every provider.

A :class:`Harness` puts one provider behind the suite: it starts what the provider talks to
(nothing for ``local``; a cloud's emulators for a cloud), writes the provider's part of the
test project's ``aiaas.yaml``, and answers the questions the suite cannot ask through the
contract itself: what the provider has written (:meth:`Harness.writes`), which versions still
run (:meth:`Harness.running_versions`), how to make an endpoint throttle
(:meth:`Harness.throttled`) and how to create a deployment the project does not own
(:meth:`Harness.foreign`). The control plane and the invoke path under test are built from
the project's config by the provider's own :class:`~aiaas.plugins.ProviderSpec`, exactly as
the CLI and a function build them.

Every module in ``tests/conformance/harnesses/`` is imported by :func:`discover`, and each
registers its harness class with :func:`register`. A harness module whose third-party
dependencies are not installed (an extra such as ``aws``) is reported as a skipped run naming
the missing module; ``AIAAS_CONFORMANCE_REQUIRE=sagemaker,local`` (or ``all``) turns such a
skip into a failure, for CI.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import os
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

from adapters.base import Invoker, Provider
from aiaas.config import ProjectConfig, load_config
from aiaas.plugins import provider_spec

REQUIRE_VARIABLE = "AIAAS_CONFORMANCE_REQUIRE"
OUR_PACKAGES = frozenset({"aiaas", "adapters", "functions", "conformance", "conftest"})


class Harness(ABC):
    """One provider under the conformance suite.

    The suite calls, in order: :meth:`start`, :meth:`config_yaml` (written after the suite's
    ``model:`` section into ``<workdir>/project/aiaas.yaml``), :meth:`open`, the tests, and
    :meth:`stop` (always, even after a failure). Between :meth:`open` and :meth:`stop`,
    :attr:`provider` and :attr:`invoker` are the objects under test.
    """

    name: ClassVar[str]
    """The provider's name (``provider:`` in ``aiaas.yaml``); also the tests' id."""

    config: ProjectConfig
    provider: Provider
    invoker: Invoker

    def __init__(self, workdir: Path) -> None:
        """``workdir``: a temporary folder of this harness's own (the test project, state,
        emulator files)."""
        self.workdir = workdir
        self._saved_env: dict[str, str | None] = {}
        self._opened: builtins.list[Provider | Invoker] = []

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this harness cannot run here (e.g. an emulator binary is missing), or None."""
        return None

    def start(self) -> None:  # noqa: B027 - optional hook: local has nothing to start
        """Start what the provider talks to (a cloud's emulators) and point its clients at
        it with :meth:`setenv`. Runs before the project's config is loaded."""

    @abstractmethod
    def config_yaml(self) -> str:
        """The provider's part of the test project's ``aiaas.yaml``: ``provider:``, its own
        section, and any ``server:`` settings the harness relies on."""

    def open(self, project: Path) -> None:
        """Load ``project``'s config and build :attr:`provider` and :attr:`invoker` from it."""
        self.config = load_config(project)
        assert self.config.provider == self.name, (self.config.provider, self.name)
        self.provider = self.make_provider()
        self.invoker = self.make_invoker()

    def make_provider(self, config: ProjectConfig | None = None) -> Provider:
        """A new control plane over the project's config (the CLI's way), or over ``config``
        (the project's with a setting changed); closed by :meth:`stop` unless the caller
        closes it first."""
        cls = provider_spec(self.config.provider).load_control_plane()
        provider = cls.from_config(config or self.config)
        assert isinstance(provider, Provider), provider
        self._opened.append(provider)
        return provider

    def make_invoker(self) -> Invoker:
        """A new invoke path over the project's config (a function's way)."""
        cls = provider_spec(self.config.provider).load_invoker()
        invoker = cls.from_config(self.config)
        assert isinstance(invoker, Invoker), invoker
        self._opened.append(invoker)
        return invoker

    @abstractmethod
    def writes(self) -> Hashable:
        """A value that changes whenever anything is written for this project: a count of
        write calls seen at the emulators (for a cloud), or a snapshot of processes and files
        (local). The suite compares it before and after operations that must write nothing."""

    @abstractmethod
    def running_versions(self, name: str) -> set[str]:
        """The versions of deployment ``name`` that still have something running or billed
        (server processes, endpoint configs, models), seen independently of the provider's
        own records where possible."""

    @abstractmethod
    def throttled(self, name: str) -> AbstractContextManager[None]:
        """While inside, the live endpoint of deployment ``name`` refuses predictions as
        throttled (busy, or told to answer 429); on exit it serves again."""

    @abstractmethod
    def foreign(self, name: str, bundle: Path) -> AbstractContextManager[None]:
        """While inside, a deployment named ``name`` of ``bundle`` exists that this project's
        provider must not manage (another project's, or one made outside aiaas)."""

    @contextlib.contextmanager
    def another_projects_deployment(self, name: str, bundle: Path) -> Iterator[None]:
        """A deployment ``name`` of ``bundle`` made by another project, for :meth:`foreign`:
        the test project's config with ``prefix: other`` instead of ``prefix: conformance``
        (what a cloud provider takes as the project: its tags, labels and hashed names),
        deployed through the provider's own control plane and deleted on the way out."""
        project = self.workdir / "another-project"
        project.mkdir(exist_ok=True)
        yaml = (self.config.root / "aiaas.yaml").read_text()
        assert "prefix: conformance" in yaml, "the harness's section names no prefix"
        (project / "aiaas.yaml").write_text(yaml.replace("prefix: conformance", "prefix: other"))
        with self.make_provider(load_config(project)) as other:
            try:
                other.deploy(bundle, name=name)
                yield
            finally:
                other.delete(name)

    def request_limit(self) -> int:
        """The largest request body (bytes) the deployment takes: the provider's own limit
        where its spec declares one (SageMaker's 6 MB), else the model server's
        ``max_body_bytes``."""
        declared = provider_spec(self.name).limits_for(self.config).max_request_bytes
        return declared if declared is not None else self.config.server.max_body_bytes

    @abstractmethod
    def clients_closed(self, provider: Provider) -> bool:
        """True once ``provider`` (from :meth:`make_provider`) has released its clients."""

    def setenv(self, key: str, value: str) -> None:
        """Set an environment variable until :meth:`stop` (for the provider's clients)."""
        self._saved_env.setdefault(key, os.environ.get(key))
        os.environ[key] = value

    def stop(self) -> None:
        """Delete every deployment the tests left, close every client, restore the
        environment. Subclasses stopping emulators call this first."""
        try:
            if hasattr(self, "provider"):
                for deployment in self.provider.list():
                    self.provider.delete(deployment.name)
        finally:
            for opened in reversed(self._opened):
                opened.close()
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


HarnessT = TypeVar("HarnessT", bound=type[Harness])

HARNESSES: dict[str, type[Harness]] = {}
"""Every registered harness class, by provider name."""


def register(cls: HarnessT) -> HarnessT:
    """Class decorator: add a harness to the suite (one per provider name)."""
    known = HARNESSES.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"two conformance harnesses for {cls.name!r}: {known} and {cls}")
    HARNESSES[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Candidate:
    """One run of the suite: a harness, or why it cannot run here."""

    id: str
    harness: type[Harness] | None
    skip: str | None = None

    @property
    def required(self) -> bool:
        """True when ``AIAAS_CONFORMANCE_REQUIRE`` names this run (or says ``all``)."""
        wanted = {w.strip() for w in os.environ.get(REQUIRE_VARIABLE, "").split(",")}
        return "all" in wanted or self.id in wanted


def discover(package: str = "conformance.harnesses") -> builtins.list[Candidate]:
    """Import every harness module of ``package`` and list the registered harnesses.

    A module that cannot be imported because a third-party package is missing becomes a
    candidate that is skipped with that reason; any other import error is raised (a broken
    harness must not pass as skipped).
    """
    root = importlib.import_module(package)
    missing: builtins.list[Candidate] = []
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda m: m.name):
        try:
            importlib.import_module(f"{package}.{info.name}")
        except ImportError as exc:
            top = (exc.name or "").partition(".")[0]
            if not top or top in OUR_PACKAGES:
                raise
            missing.append(
                Candidate(
                    info.name, None, f"harness {info.name!r} needs {exc.name!r}, not installed"
                )
            )
    found = [Candidate(name, cls, cls.unavailable()) for name, cls in sorted(HARNESSES.items())]
    return found + [m for m in missing if m.id not in HARNESSES]
