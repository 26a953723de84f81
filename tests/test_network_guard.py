"""The test run's network guard refuses, and records, anything past loopback, in this
process and in the processes a test starts; loopback stays open."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import netguard
import pytest

# TEST-NET-1 (RFC 5737) and the cloud metadata address: never reached, the guard refuses
# before any packet is sent.
OUTSIDE = ("192.0.2.1", 80)
METADATA = ("169.254.169.254", 80)


@pytest.mark.parametrize("address", [OUTSIDE, METADATA], ids=["test-net", "metadata"])
def test_a_connect_outside_loopback_is_refused_and_recorded(address: tuple[str, int]) -> None:
    with netguard.expected_refusals():
        before = len(netguard.violations)
        with pytest.raises(ConnectionRefusedError, match="network guard"):
            socket.create_connection(address, timeout=1)
        assert address[0] in netguard.violations[before]


def test_a_lookup_of_a_public_name_is_refused_even_when_swallowed() -> None:
    with netguard.expected_refusals():
        before = len(netguard.violations)
        # An SDK's metadata probe catches every error: the record still has it.
        with contextlib.suppress(OSError):
            socket.getaddrinfo("sagemaker.us-east-1.amazonaws.com", 443)
        assert "amazonaws.com" in netguard.violations[before]


def test_a_child_process_is_guarded_and_reports_back() -> None:
    code = "import socket; socket.create_connection(('192.0.2.1', 80), timeout=1)"
    with netguard.expected_refusals():
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode != 0
        assert "NetworkGuardViolation" in done.stderr
        log = Path(os.environ[netguard.LOG_VARIABLE]).read_text()
        assert "192.0.2.1" in log


def test_loopback_stays_open() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            socket.create_connection((host, port), timeout=1).close()
    assert socket.getaddrinfo("localhost", 80)


def test_the_index_is_open_only_to_marked_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    with netguard.expected_refusals(), pytest.raises(ConnectionRefusedError):
        socket.getaddrinfo("pypi.org", 443)
    # What the package_index marker sets for the test's duration (the guard's decision
    # alone: nothing is sent).
    monkeypatch.setenv(netguard.ALLOW_VARIABLE, "index")
    assert netguard._allowed("pypi.org")
    assert not netguard._allowed("example.com")


@pytest.mark.package_index
def test_a_marked_test_connects_to_the_address_the_index_resolves_to() -> None:
    # pip connects to the address its lookup returned, not to the name: that address is
    # allowed too (this lookup is the only thing sent), and no other.
    address = socket.getaddrinfo("pypi.org", 443, type=socket.SOCK_STREAM)[0][4][0]
    assert netguard._allowed(address)
    assert not netguard._allowed("192.0.2.1")
