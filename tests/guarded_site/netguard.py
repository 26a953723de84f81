"""A guard that refuses any network access outside loopback, in every Python process of a test run.

Cloud SDKs reach out by default (boto3 and alibabacloud-credentials probe instance metadata
at 169.254.169.254, azure-identity probes IMDS, telemetry goes home): none of that may leave
this machine. An audit hook (PEP 578) sees every name lookup and every connect made through
Python's ``socket`` module, refuses the ones that name an address outside 127.0.0.0/8 and ::1
with :class:`NetworkGuardViolation` (a ``ConnectionRefusedError``, so code that handles "no
network" keeps working), and records each one: an SDK that swallows the refusal still fails
the test (``tests/conftest.py`` checks the record after every test).

The test run installs it in its own process (``tests/conftest.py``) and, through
``sitecustomize.py`` next to this file on ``PYTHONPATH``, in every Python process it starts;
those append their refusals to the file named by ``AIAAS_NETGUARD_LOG``.

Known gaps: a process started with ``-S`` or ``-I`` or with an environment that drops
``PYTHONPATH`` loads no ``sitecustomize`` (the packaged-zip runs use ``-S``; they call
loopback only); uvloop's own connects bypass the ``socket`` module (uvloop serves, it does not
call out, in this project); a lookup done outside Python (a C library's own DNS) is not seen.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from typing import Any

LOG_VARIABLE = "AIAAS_NETGUARD_LOG"
ALLOW_VARIABLE = "AIAAS_NETGUARD_ALLOW"
"""``index``: the package index's hosts are allowed too (tests marked ``package_index``)."""

INDEX_HOSTS = frozenset({"pypi.org", "files.pythonhosted.org"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_EVENTS = frozenset(
    {"socket.getaddrinfo", "socket.connect", "socket.gethostbyname", "socket.gethostbyname_ex",
     "socket.gethostbyaddr", "socket.sendto"}
)  # fmt: skip

violations: list[str] = []
"""This process's refusals, in order (the test run reads and clears them)."""


class NetworkGuardViolation(ConnectionRefusedError):
    """A name lookup or connect outside loopback, refused by the test run's network guard."""


def _is_local(host: Any) -> bool:
    if host is None or host in ("", b""):
        return True  # a passive (bind) lookup
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").lower().rstrip(".")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]).is_loopback
    except ValueError:
        return False


_index_addresses: set[str] = set()


def _index_address(host: str) -> bool:
    """True when ``host`` is an address the index's names resolve to (a connect names the
    address its lookup returned, not the name; looked up once, with the guard's leave)."""
    if not _index_addresses:
        for name in sorted(INDEX_HOSTS):
            try:
                found = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
            except OSError:
                continue
            _index_addresses.update(str(info[4][0]) for info in found)
    return host in _index_addresses


def _allowed(host: Any) -> bool:
    if _is_local(host):
        return True
    if os.environ.get(ALLOW_VARIABLE) != "index" or not isinstance(host, str):
        return False
    name = host.lower().rstrip(".")
    return name in INDEX_HOSTS or _index_address(name)


def _host_of(event: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
    """Whether the event names a network host, and which."""
    if event in ("socket.connect", "socket.sendto"):
        address = args[-1]
        if isinstance(address, tuple) and address:
            return True, address[0]
        return False, None  # AF_UNIX paths and the like
    return True, args[0] if args else None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _EVENTS:
        return
    names_host, host = _host_of(event, args)
    if not names_host or _allowed(host):
        return
    message = f"network guard: {event} to {host!r} refused (pid {os.getpid()})"
    violations.append(message)
    log = os.environ.get(LOG_VARIABLE)
    if log:
        try:
            with open(log, "a", encoding="utf-8") as out:
                out.write(message + "\n")
        except OSError:
            pass
    raise NetworkGuardViolation(message)


_installed = False


def install() -> None:
    """Install the guard in this process (once; an audit hook cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True


class expected_refusals:
    """Inside ``with expected_refusals():`` refusals are expected (the guard's own tests):
    they are dropped from the record on the way out, in this process and in the log file."""

    def __enter__(self) -> expected_refusals:
        self._count = len(violations)
        log = os.environ.get(LOG_VARIABLE)
        self._size = os.path.getsize(log) if log and os.path.exists(log) else 0
        return self

    def __exit__(self, *_exc: object) -> None:
        del violations[self._count :]
        log = os.environ.get(LOG_VARIABLE)
        if log and os.path.exists(log):
            with open(log, "r+b") as out:
                out.truncate(self._size)
