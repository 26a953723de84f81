"""Metering: every call through the function leaves exactly one usage record.

A record names the key by its id (never the key), the model, version, provider, status,
latency, bytes in and out and an estimated cost (:mod:`aiaas.pricing`). Records go to one
JSON line on stdout (on AWS in CloudWatch Embedded Metric Format, so they become metrics
without extra calls) and, for local deployments, to a SQLite file read by ``aiaas usage``.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import orjson

NAMESPACE = "aiaas"


@dataclass(frozen=True)
class UsageRecord:
    """One call through the function tier."""

    time: float
    request_id: str
    key_id: str
    model: str
    version: str
    provider: str
    status: int
    latency_ms: float
    bytes_in: int
    bytes_out: int
    cost_usd: float


class UsageSink(Protocol):
    """Where usage records go."""

    def record(self, usage: UsageRecord) -> None:
        """Store one record; must not raise into the request path."""


class JsonLineSink:
    """One JSON object per line on stdout (CloudWatch, App Insights and SLS collect it)."""

    def __init__(self, emf: bool = False) -> None:
        self.emf = emf

    def record(self, usage: UsageRecord) -> None:
        body: dict[str, object] = {"aiaas_usage": 1, **asdict(usage)}
        if self.emf:  # CloudWatch Embedded Metric Format: metrics from the log line itself
            body["_aws"] = {
                "Timestamp": int(usage.time * 1000),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["model", "provider"], ["model", "key_id"]],
                    "Metrics": [
                        {"Name": "latency_ms", "Unit": "Milliseconds"},
                        {"Name": "bytes_in", "Unit": "Bytes"},
                        {"Name": "bytes_out", "Unit": "Bytes"},
                        {"Name": "cost_usd", "Unit": "None"},
                    ],
                }],
            }  # fmt: skip
        sys.stdout.write(orjson.dumps(body).decode() + "\n")
        sys.stdout.flush()


class SqliteSink:
    """Local deployments: records in a SQLite file (``aiaas usage`` reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(path)
        self._lock = threading.Lock()
        import sqlite3  # local deployments only: a cloud function's cold start skips it

        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS)
        self._db.execute(f"CREATE TABLE IF NOT EXISTS usage ({columns})")

    def record(self, usage: UsageRecord) -> None:
        values = asdict(usage)
        marks = ", ".join("?" for _ in _COLUMNS)
        with self._lock:
            self._db.execute(
                f"INSERT INTO usage VALUES ({marks})", [values[n] for n, _ in _COLUMNS]
            )


def _create_private(path: Path) -> None:
    """Create ``path`` readable by its owner only (0600, whatever the umask) before SQLite
    opens it; SQLite gives its ``-wal`` and ``-shm`` files the database file's mode. An
    existing file (from an older aiaas) is tightened too: usage names keys and models."""
    import os

    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.chmod(side, 0o600)


class FanOut:
    """Send each record to several sinks."""

    def __init__(self, *sinks: UsageSink) -> None:
        self.sinks = sinks

    def record(self, usage: UsageRecord) -> None:
        for sink in self.sinks:
            sink.record(usage)


_COLUMNS = [
    ("time", "REAL"), ("request_id", "TEXT"), ("key_id", "TEXT"), ("model", "TEXT"),
    ("version", "TEXT"), ("provider", "TEXT"), ("status", "INTEGER"), ("latency_ms", "REAL"),
    ("bytes_in", "INTEGER"), ("bytes_out", "INTEGER"), ("cost_usd", "REAL"),
]  # fmt: skip


def summarize(path: Path, since: float, by: str) -> list[tuple[str, int, int, float, float]]:
    """Rows of (group, calls, errors, p50-ish mean latency ms, cost) since ``since``."""
    if by not in ("key_id", "model", "provider"):
        raise ValueError(f"cannot group by {by!r}")
    if not path.is_file():
        return []
    import sqlite3

    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            f"SELECT {by}, COUNT(*), SUM(status >= 400), AVG(latency_ms), SUM(cost_usd) "
            f"FROM usage WHERE time >= ? GROUP BY {by} ORDER BY {by}",
            (since,),
        ).fetchall()
    finally:
        db.close()
    return [
        (str(g), int(n), int(e or 0), float(lat or 0), float(c or 0)) for g, n, e, lat, c in rows
    ]


def now() -> float:
    """Wall-clock time of a record."""
    return time.time()
