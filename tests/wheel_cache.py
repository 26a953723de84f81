"""One folder of target-platform wheels per pytest run (per xdist worker), shared by every
test that packages a function: ``pip download`` asks the index once per Python, architecture
and set of requirements, and later packagings read the folder with ``--no-index``."""

from __future__ import annotations

from pathlib import Path

import pytest


def shared_wheel_cache(factory: pytest.TempPathFactory) -> Path:
    """The run's wheel cache (``aiaas function package --wheel-cache``), under its base temp."""
    folder = factory.getbasetemp() / "wheel-cache"
    folder.mkdir(exist_ok=True)
    return folder
