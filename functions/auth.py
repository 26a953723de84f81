"""API keys for the function tier.

A key looks like ``aiaas_<id>_<secret>``. Only a salted hash is ever configured, as records
``<id>:<salt>:<sha256(salt + secret)>`` separated by commas or newlines: in a file
(``AIAAS_API_KEYS_FILE``, or the local ``.aiaas/api-keys``), which is re-read when it
changes (checked at most once a second, so a revoked key stops working and a new one starts
within :data:`RELOAD_INTERVAL_S`), or in the ``AIAAS_API_KEYS`` variable (fixed for the
life of the process: on a cloud, changing it starts new instances). Secrets are 32 random
bytes, so one fast salted SHA-256 is enough (no slow KDF needed for high-entropy keys, and
none on the hot path). Comparison is constant-time, and a missing and a wrong key are
refused alike.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiaas.errors import ConfigError, Unauthorized

KEY_PREFIX = "aiaas"
_DUMMY_SALT = "0" * 32
RELOAD_INTERVAL_S = 1.0
"""How stale a key file may be: a change is seen by every request made this long after it."""
FULL_RELOAD_S = 10.0
"""A key file is read again this often even when its ``stat`` looks unchanged (a same-size
rewrite in place within one timestamp tick changes nothing ``stat`` shows)."""

log = logging.getLogger("aiaas.function")


@dataclass(frozen=True)
class KeyRecord:
    """What is stored for one key: its id, salt and hash (never the secret)."""

    key_id: str
    salt: str
    digest: str

    def __str__(self) -> str:
        return f"{self.key_id}:{self.salt}:{self.digest}"


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def create_key() -> tuple[str, KeyRecord]:
    """A new key (show it once) and the record to configure."""
    key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return f"{KEY_PREFIX}_{key_id}_{secret}", KeyRecord(key_id, salt, _hash(salt, secret))


def parse_records(value: str, source: str = "AIAAS_API_KEYS") -> dict[str, KeyRecord]:
    """Parse ``id:salt:hash,...``; a malformed record is a ConfigError naming its position."""
    records: dict[str, KeyRecord] = {}
    for position, raw in enumerate(filter(None, (v.strip() for v in value.split(",")))):
        parts = raw.split(":")
        ok = len(parts) == 3 and all(parts) and _is_hex(parts[1]) and _is_hex(parts[2])
        if not ok:
            raise ConfigError(
                f"{source}: record {position + 1} is not <id>:<salt hex>:<sha256 hex>"
            )
        records[parts[0]] = KeyRecord(*parts)
    return records


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


_Signature = tuple[int, int, int, int]


class KeyFile:
    """Key records in a file, re-read when the file changed.

    A ``stat`` (modification and change times, size, inode) tells a change apart, and is
    made at most once every ``interval_s``, so the hot path costs a clock read; the file is
    also read again every ``full_reload_s`` whatever ``stat`` says (a same-size rewrite in
    place within one timestamp tick looks unchanged to it). A file that is gone holds
    no keys (every call is refused). One that cannot be parsed fails the start; later, it
    keeps the last good records, logs why, and is tried again at the next check.

    ``stat`` is how the file's times are read (``os.stat``; a test makes them stand still).
    """

    def __init__(
        self,
        path: Path,
        interval_s: float = RELOAD_INTERVAL_S,
        full_reload_s: float = FULL_RELOAD_S,
        stat: Callable[[Path], os.stat_result] = os.stat,
    ) -> None:
        self.path = path
        self._stat = stat
        self.interval_s = interval_s
        self.full_reload_s = full_reload_s
        self._records: dict[str, KeyRecord] = {}
        self._seen: _Signature | None = None
        self._next_check = 0.0
        self._next_full = time.monotonic() + full_reload_s
        self._load(self._signature(), at_start=True)

    def records(self) -> dict[str, KeyRecord]:
        """The current records (re-read first if the file changed since the last check)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.interval_s
            signature = self._signature()
            if signature != self._seen or now >= self._next_full:
                self._next_full = now + self.full_reload_s
                self._load(signature)
        return self._records

    def _signature(self) -> _Signature | None:
        try:
            st = self._stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)

    def _load(self, signature: _Signature | None, at_start: bool = False) -> None:
        """Read the records; a bad file fails the start, and is logged and skipped later."""
        try:
            text = self.path.read_text() if signature is not None else ""
            records = parse_records(text.replace("\n", ","), str(self.path))
        except (OSError, ConfigError) as exc:
            if at_start:
                raise
            message = exc.message if isinstance(exc, ConfigError) else str(exc)
            log.error("API keys not reloaded, keeping the previous ones: %s", message)
            return
        self._records = records
        self._seen = signature


class KeyChecker:
    """Verifies presented keys against configured records, in constant time.

    ``KeyChecker(records)`` holds fixed records; ``KeyChecker(source=KeyFile(path))``
    follows a file.
    """

    def __init__(
        self, records: dict[str, KeyRecord] | None = None, *, source: KeyFile | None = None
    ) -> None:
        self._records = records or {}
        self._source = source

    @property
    def key_ids(self) -> list[str]:
        """The configured key ids."""
        return sorted(self._current())

    def _current(self) -> dict[str, KeyRecord]:
        return self._source.records() if self._source is not None else self._records

    def verify(self, presented: str | None) -> str:
        """Return the key id of a valid key, else raise :class:`Unauthorized`."""
        prefix, key_id, secret = _split(presented)
        record = self._current().get(key_id)
        salt = record.salt if record else _DUMMY_SALT
        expected = record.digest if record else "0" * 64
        # Hash and compare even for unknown ids, so timing does not tell ids apart.
        match = hmac.compare_digest(_hash(salt, secret), expected)
        if not (match and record and prefix == KEY_PREFIX):
            raise Unauthorized("missing or invalid API key")
        return key_id


def _split(presented: str | None) -> tuple[str, str, str]:
    parts = (presented or "").split("_", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else ("", "", "")


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer …`` or ``x-api-key``."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return x_api_key


KEYS_ENV = "AIAAS_API_KEYS"
KEYS_FILE_ENV = "AIAAS_API_KEYS_FILE"
KEYS_FILE = "api-keys"


def load_checker(
    env: dict[str, str] | None = None,
    keys_file: Path | None = None,
    interval_s: float = RELOAD_INTERVAL_S,
) -> KeyChecker:
    """Where the key records come from, first match wins:

    1. ``$AIAAS_API_KEYS_FILE``: a file (e.g. a mounted secret), followed as it changes;
    2. ``$AIAAS_API_KEYS``: fixed for the life of the process;
    3. ``keys_file`` (the local ``.aiaas/api-keys``), followed as it changes, also when it
       does not exist yet;

    else no keys (every call is refused).
    """
    environ = os.environ if env is None else env
    if environ.get(KEYS_FILE_ENV):
        return KeyChecker(source=KeyFile(Path(environ[KEYS_FILE_ENV]), interval_s))
    if environ.get(KEYS_ENV):
        return KeyChecker(parse_records(environ[KEYS_ENV]))
    if keys_file is not None:
        return KeyChecker(source=KeyFile(keys_file, interval_s))
    return KeyChecker({})


def add_record(keys_file: Path, record: KeyRecord) -> None:
    """Append a record to the local keys file (created with mode 0600)."""
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    keys_file.touch(mode=0o600, exist_ok=True)
    with keys_file.open("a") as f:
        f.write(f"{record}\n")


def list_records(keys_file: Path) -> list[KeyRecord]:
    """The records in the local keys file."""
    if not keys_file.is_file():
        return []
    return list(parse_records(keys_file.read_text().replace("\n", ","), str(keys_file)).values())


def revoke_record(keys_file: Path, key_id: str) -> bool:
    """Remove a key id from the local keys file; False if it was not there."""
    records = list_records(keys_file)
    kept = [r for r in records if r.key_id != key_id]
    if len(kept) == len(records):
        return False
    # Replaced whole (new file, then rename), so a running function never reads half a file.
    tmp = keys_file.with_name(f".{keys_file.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{r}\n" for r in kept))
    os.replace(tmp, keys_file)
    return True
