"""API keys for the function tier.

A key looks like ``aiaas_<id>_<secret>``. Only a salted hash is ever configured, as records
``<id>:<salt>:<sha256(salt + secret)>`` separated by commas in ``AIAAS_API_KEYS`` (or the
cloud's secret store, surfaced as that variable). Secrets are 32 random bytes, so one fast
salted SHA-256 is enough (no slow KDF needed for high-entropy keys, and none on the hot
path). Comparison is constant-time, and a missing and a wrong key are refused alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from aiaas.errors import ConfigError, Unauthorized

KEY_PREFIX = "aiaas"
_DUMMY_SALT = "0" * 32


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


class KeyChecker:
    """Verifies presented keys against configured records, in constant time."""

    def __init__(self, records: dict[str, KeyRecord]) -> None:
        self._records = records

    @property
    def key_ids(self) -> list[str]:
        """The configured key ids."""
        return sorted(self._records)

    def verify(self, presented: str | None) -> str:
        """Return the key id of a valid key, else raise :class:`Unauthorized`."""
        prefix, key_id, secret = _split(presented)
        record = self._records.get(key_id)
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
KEYS_FILE = "api-keys"


def load_checker(env: dict[str, str] | None = None, keys_file: Path | None = None) -> KeyChecker:
    """Records from ``$AIAAS_API_KEYS`` if set, else from the local keys file (hashes only)."""
    import os

    environ = os.environ if env is None else env
    if environ.get(KEYS_ENV):
        return KeyChecker(parse_records(environ[KEYS_ENV]))
    if keys_file is not None and keys_file.is_file():
        return KeyChecker(parse_records(keys_file.read_text().replace("\n", ","), str(keys_file)))
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
    keys_file.write_text("".join(f"{r}\n" for r in kept))
    return True
