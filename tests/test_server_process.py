"""The test run's model-server starter survives a port taken between `free_port` and the
server's bind (what parallel test workers can do to each other)."""

from __future__ import annotations

import socket
from pathlib import Path

import conftest
import httpx
import pytest

from aiaas.bundle import BuiltBundle


def test_a_taken_port_is_replaced_by_a_free_one(
    probe_bundle: BuiltBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        real = conftest.free_port
        ports = iter([busy])
        # The one patch: free_port hands out a port another process holds, as a parallel
        # worker could between the look and the bind.
        monkeypatch.setattr(conftest, "free_port", lambda: next(ports, None) or real())
        server = conftest.ServerProcess(probe_bundle.path, tmp_path / "s.log", [], {})
        try:
            server.wait_ready()
            assert server.port != busy
            assert httpx.get(server.url + "/ping").status_code == 200
        finally:
            server.stop()
