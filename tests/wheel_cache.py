"""One folder of target-platform wheels shared by every test that packages a function, kept
between runs: ``pip download`` asks the index once per Python, architecture and set of
requirements, and later packagings (in this run, other workers, later runs) copy them from the
folder (``functions.packaging``'s cache, locked while it is read or filled).

It lives in the virtual environment (``make clean`` removes both), so a clean clone's first
run downloads, and every run after that on the same checkout reads the folder: the packaging
tests then spend no time on the index. ``AIAAS_TEST_WHEEL_CACHE`` names another folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def shared_wheel_cache() -> Path:
    """The wheel cache (``aiaas function package --wheel-cache``) the tests share."""
    named = os.environ.get("AIAAS_TEST_WHEEL_CACHE")
    folder = Path(named) if named else Path(sys.prefix) / "aiaas-test-wheels"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
