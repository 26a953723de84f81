"""A guard that refuses any network access outside loopback, in every Python process of a test run
(and the start of ``az`` or ``pwsh``, which azure-identity runs to reach Azure).

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
import itertools
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

CLOUD_CLIS = frozenset({"az", "az.cmd", "pwsh", "pwsh.exe", "powershell", "powershell.exe"})
"""Programs no test may start: azure-identity's CLI credentials run ``az`` and ``pwsh`` (through
``sh -c``) when no managed identity is configured, and each would reach Azure."""
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "cmd", "cmd.exe"})
_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn"})


class NetworkGuardViolation(ConnectionRefusedError):
    """A name lookup or connect outside loopback, refused by the test run's network guard."""


class CloudCliRefused(FileNotFoundError):
    """``az`` or ``pwsh`` was about to start: refused as if it were not installed (azure-identity
    then reports that credential unavailable), and recorded like a network refusal."""


def cloud_cli_in(argv: Any) -> str | None:
    """The cloud CLI ``argv`` would run, directly or through ``sh -c``, if any."""
    words = argv.split() if isinstance(argv, str | bytes) else list(argv or [])
    words = [w.decode() if isinstance(w, bytes) else str(w) for w in words]
    if not words:
        return None
    first = os.path.basename(words[0]).lower()
    if first in CLOUD_CLIS:
        return first
    if first in _SHELLS:
        for flag, command in itertools.pairwise(words):
            head = command.split()[:1]
            if flag.lower() in ("-c", "/c") and head:
                name = os.path.basename(head[0]).lower()
                if name in CLOUD_CLIS:
                    return name
    return None


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


def _refuse_cli(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen":
        argv = args[1] if args[1] is not None else args[0]
    else:
        argv = args[1] if len(args) > 1 else args[0]
    cli = cloud_cli_in(argv)
    if cli is not None:
        message = f"network guard: {cli} started (pid {os.getpid()}): {argv!r}"
        _record(message)
        raise CloudCliRefused(message)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in _PROCESS_EVENTS:
        _refuse_cli(event, args)
        return
    if event not in _EVENTS:
        return
    names_host, host = _host_of(event, args)
    if not names_host or _allowed(host):
        return
    message = f"network guard: {event} to {host!r} refused (pid {os.getpid()})"
    _record(message)
    raise NetworkGuardViolation(message)


def _record(message: str) -> None:
    violations.append(message)
    log = os.environ.get(LOG_VARIABLE)
    if log:
        try:
            with open(log, "a", encoding="utf-8") as out:
                out.write(message + "\n")
        except OSError:
            pass


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
