"""Azurite's blob service (the Azure Storage emulator, ``azurite@3.35.0`` from npm) on 127.0.0.1.

``make install`` puts it in ``<repo>/.venv/azurite`` (``npm install azurite@3.35.0``: the last
release whose ``engines`` accept node 20); ``$AZURITE_BLOB`` names another ``azurite-blob``.
It always starts on a free port, in memory, with ``--skipApiVersionCheck`` (azure-storage-blob
sends an ``x-ms-version`` newer than Azurite knows) and ``--disableTelemetry`` (without it,
Azurite >= 3.35 sends Application Insights telemetry off this machine: a node process, out of
reach of the tests' network guard). Over TLS (a certificate and key in PEM, e.g. trustme's)
it also takes ``--oauth basic``: a bearer token whose ``aud`` is Storage's and whose ``iss``
is Entra's is accepted without its signature being checked (the managed-identity emulator's
tokens), besides the well-known ``devstoreaccount1`` shared key.

Gaps from Azure Storage: Azurite's own (see its README); ``--oauth basic`` checks no
signature and no RBAC role (any Entra-shaped token may read and write).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

VERSION = "3.35.0"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development account key (published in Azurite's README; not a secret).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
FLAGS = (
    "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
    "--skipApiVersionCheck", "--disableTelemetry",
)  # fmt: skip
START_TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parent.parent
_LISTENS = re.compile(r"listens on (https?://127\.0\.0\.1:\d+)")


def find_binary(repo: Path = REPO) -> Path | None:
    """``$AZURITE_BLOB``, else ``<repo>/.venv/azurite/node_modules/.bin/azurite-blob``, else
    ``azurite-blob`` on ``PATH`` (None: not found)."""
    named = os.environ.get("AZURITE_BLOB")
    if named:
        return Path(named) if Path(named).exists() else None
    local = repo / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return local
    found = shutil.which("azurite-blob")
    return Path(found) if found else None


def unavailable(repo: Path = REPO) -> str | None:
    """Why Azurite cannot run here (None: it can): ``node`` or ``azurite-blob`` missing."""
    if shutil.which("node") is None:
        return "node is not installed (Azurite needs node >= 10; this project uses node 20)"
    if find_binary(repo) is None:
        where = os.environ.get("AZURITE_BLOB") or f"{repo}/.venv/azurite"
        return (
            f"azurite-blob not found ({where}): run `make install`, or "
            f"`npm install --prefix .venv/azurite azurite@{VERSION}`, or set AZURITE_BLOB"
        )
    return None


class Azurite:
    """One ``azurite-blob`` process (in memory; its data goes with it)."""

    def __init__(
        self, *, cert_file: Path | None = None, key_file: Path | None = None, oauth: bool = True
    ) -> None:
        """Plain HTTP without ``cert_file``/``key_file``; with them HTTPS, and ``oauth``
        (bearer tokens) besides the shared key."""
        self.cert_file, self.key_file = cert_file, key_file
        self.oauth = oauth and cert_file is not None
        self.output: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._base: str | None = None
        self._cwd: tempfile.TemporaryDirectory[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start it and wait until it listens (RuntimeError with its output otherwise)."""
        binary = find_binary()
        if binary is None:
            raise RuntimeError(unavailable() or "azurite-blob not found")
        args = [str(binary), *FLAGS]
        if self.cert_file is not None and self.key_file is not None:
            args += ["--cert", str(self.cert_file), "--key", str(self.key_file)]
            if self.oauth:
                args += ["--oauth", "basic"]
        # Its working folder: where Azurite would write a debug log or extent files.
        self._cwd = tempfile.TemporaryDirectory(prefix="azurite-")
        self._proc = subprocess.Popen(
            args,
            cwd=self._cwd.name,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a Ctrl-C meant for the emulator is handled by stop()
        )
        atexit.register(self.stop)  # a process that exits without stop() leaves no Azurite
        found = threading.Event()
        self._reader = threading.Thread(
            target=self._pump, args=(found,), name="azurite-output", daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while not found.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                said = "\n".join(self.output)
                self.stop()
                raise RuntimeError(f"Azurite did not start ({' '.join(args)}):\n{said}")

    def _pump(self, found: threading.Event) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            match = _LISTENS.search(line)
            if match and self._base is None:
                self._base = match.group(1)
                found.set()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s) and remove its folder."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self._cwd is not None:
            self._cwd.cleanup()
            self._cwd = None
        self._base = None

    @property
    def url(self) -> str:
        """The account URL: ``http(s)://127.0.0.1:<port>/devstoreaccount1``."""
        assert self._base is not None, "start() first"
        return f"{self._base}/{ACCOUNT}"

    def connection_string(self) -> str:
        """A shared-key connection string for the emulated account."""
        return (
            f"DefaultEndpointsProtocol={self.url.split(':', 1)[0]};AccountName={ACCOUNT};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.url};"
        )
