"""Adding a provider to the conformance suite is adding a harness module: discovery finds
it, a harness whose extra is not installed is skipped by name, and a broken one fails."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.local.provider import LocalProvider
from conformance import harness
from conformance.harness import Candidate, discover

HARNESS_MODULE = """
from conformance.harness import Harness, register
from conformance.harnesses.local import LocalHarness


@register
class FakeHarness(LocalHarness):
    name = "fake"
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty harness package ``fake_harnesses`` on sys.path, and an empty registry."""
    discover()  # the real harnesses registered first, in the real registry
    root = tmp_path / "fake_harnesses"
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(harness, "HARNESSES", {})
    yield root
    for name in [m for m in sys.modules if m.startswith("fake_harnesses")]:
        del sys.modules[name]


def test_a_new_module_registers_its_harness(package: Path) -> None:
    (package / "fake.py").write_text(HARNESS_MODULE)
    [candidate] = discover("fake_harnesses")
    assert candidate.id == "fake" and candidate.skip is None
    assert candidate.harness is not None and candidate.harness.name == "fake"


def test_a_harness_whose_extra_is_missing_is_skipped_naming_it(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIAAS_CONFORMANCE_REQUIRE", raising=False)  # make test sets it
    (package / "cloud.py").write_text("import aiaas_conformance_missing_sdk\n")
    [candidate] = discover("fake_harnesses")
    assert (candidate.id, candidate.harness) == ("cloud", None)
    assert candidate.skip and "aiaas_conformance_missing_sdk" in candidate.skip
    assert not candidate.required
    monkeypatch.setenv("AIAAS_CONFORMANCE_REQUIRE", "local, cloud")
    assert candidate.required  # CI turns the skip into a failure


def test_a_broken_harness_is_an_error_not_a_skip(package: Path) -> None:
    (package / "broken.py").write_text("import adapters.no_such_provider\n")
    with pytest.raises(ImportError):
        discover("fake_harnesses")


def test_two_harnesses_for_one_provider_are_refused(package: Path) -> None:
    (package / "one.py").write_text(HARNESS_MODULE)
    (package / "two.py").write_text(HARNESS_MODULE)
    with pytest.raises(ValueError, match="two conformance harnesses for 'fake'"):
        discover("fake_harnesses")


def test_local_and_sagemaker_are_registered() -> None:
    found = {c.id: c for c in discover()}
    local = found["local"]
    assert local == Candidate("local", local.harness, None)
    assert local.harness is not None
    assert local.harness.name == LocalProvider.name
    sagemaker = found["sagemaker"]  # the dev install has the aws extra: it runs, not skipped
    assert sagemaker.harness is not None and sagemaker.skip is None


def test_every_installed_provider_has_a_harness() -> None:
    """A provider installed without a harness would pass the suite silently."""
    from aiaas.plugins import installed_providers

    found = {c.id for c in discover() if c.harness is not None}
    missing = sorted(set(installed_providers()) - found)
    assert not missing, f"installed providers with no conformance harness: {missing}"
