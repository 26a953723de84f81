"""Shared fixtures: example bundles built once per session, free ports, the repo root."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from aiaas.bundle import BuiltBundle

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def build_example(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], BuiltBundle]:
    """``build_example("iris")`` builds ``examples/iris`` once per session and returns it."""
    from aiaas.bundle import build_bundle

    out_dir = tmp_path_factory.mktemp("bundles")
    cache: dict[str, BuiltBundle] = {}

    def build(name: str) -> BuiltBundle:
        if name not in cache:
            cache[name] = build_bundle(EXAMPLES / name, out_dir / f"{name}.tar.gz")
        return cache[name]

    return build
