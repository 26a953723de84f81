"""What the local control plane writes and its invoke path reads: the state files of a
deployment.

State lives under ``<state_dir>/local/<name>/deployment.json`` (the live server's
:class:`ServerRecord`), replaced atomically, so a reader sees the old or the new server.
While a canary or linear rollout holds a step, ``split.json`` (a :class:`Split`) names the
new version's server and its share of the traffic; the invoke path picks one of the two per
call (:func:`pick`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiaas.errors import BadRequest, NotFound, NotReady
from aiaas.packaged import NAME_PATTERN

STATE_FILE = "deployment.json"
SPLIT_FILE = "split.json"

RETRY_AFTER_S = 1.0
"""What a caller is told to wait when the model server is unreachable (a restart or a
version switch takes about that long)."""


@dataclass(frozen=True)
class ServerRecord:
    """One model server process the local provider started: what ``deployment.json`` (the
    live one) and each ``server-<pid>.json`` (every one not stopped yet) hold.

    The pid alone does not name a process once it has exited (pids are reused): ``pid_start``
    (``/proc/<pid>/stat`` field 22) does, with it. Records written by older versions may lack
    every field but ``pid`` and ``port`` (and ``pid_start``): those read as empty.
    """

    pid: int
    port: int | None
    pid_start: int | None = None
    name: str = ""
    version: str = ""
    digest: str = ""
    model: str = ""
    bundle_dir: str = ""
    log: str = ""
    started_at: float = 0.0

    def to_json(self) -> str:
        """The file's text (the keys sorted, as every version wrote them)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServerRecord:
        """The record in ``text``; ValueError when it is not one (no integer pid, a field of
        the wrong type). Keys this version does not know are ignored."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("a server record is a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: v for k, v in raw.items() if k in fields}
        if not _is_int(values.get("pid")):
            raise ValueError("a server record names its pid")
        for key in ("port", "pid_start"):
            if values.get(key) is not None and not _is_int(values[key]):
                raise ValueError(f"{key} is not an integer")
        values.setdefault("port", None)
        for key in ("name", "version", "digest", "model", "bundle_dir", "log"):
            if not isinstance(values.get(key, ""), str):
                raise ValueError(f"{key} is not a string")
        started = values.get("started_at", 0.0)
        if not isinstance(started, (int, float)) or isinstance(started, bool):
            raise ValueError("started_at is not a number")
        values["started_at"] = float(started)
        return cls(**values)

    def details(self) -> dict[str, Any]:
        """What :class:`~adapters.base.Deployment` ``details`` show of it."""
        return {
            "pid": self.pid,
            "port": self.port,
            "digest": self.digest,
            "log": self.log,
            "started_at": self.started_at,
        }


@dataclass(frozen=True)
class Split:
    """A rollout step that holds: ``server`` (the new version) takes ``pct`` percent of the
    calls, the server ``deployment.json`` names the rest. Written only by a deploy that holds
    the deployment's lock; one left by a deploy that was killed is removed by the next."""

    pct: int
    server: ServerRecord

    def to_json(self) -> str:
        """The file's text."""
        return json.dumps({"pct": self.pct, "server": dataclasses.asdict(self.server)})

    @classmethod
    def from_json(cls, text: str) -> Split:
        """The split in ``text``; ValueError when it is not one."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or not _is_int(raw.get("pct")):
            raise ValueError("a split names its percentage")
        if not 0 < raw["pct"] < 100:
            raise ValueError("a split's percentage is between 1 and 99")
        return cls(raw["pct"], ServerRecord.from_json(json.dumps(raw.get("server"))))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checked_name(name: str) -> str:
    """``name`` if it is a valid deployment name (it becomes a folder under the state dir:
    ``..`` or a ``/`` would reach outside it)."""
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise BadRequest(
            f"invalid deployment name {name!r}: a name matches {NAME_PATTERN} "
            "(lowercase letters, digits and '-', starting with a letter or digit, at most 63)"
        )
    return name


def deployment_dir(root: Path, name: str) -> Path:
    """The folder of deployment ``name`` under the state root."""
    return root / "local" / checked_name(name)


def read_state(root: Path, name: str) -> ServerRecord | None:
    """The live server's record, or None when there is none (or it is unreadable)."""
    try:
        return ServerRecord.from_json((deployment_dir(root, name) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def read_split(root: Path, name: str) -> Split | None:
    """The traffic split of a rollout step that holds now, or None (also when unreadable:
    the calls then all go to ``deployment.json``'s server)."""
    try:
        return Split.from_json((deployment_dir(root, name) / SPLIT_FILE).read_text())
    except (OSError, ValueError):
        return None


def pick(state: ServerRecord, split: Split | None, draw: float | None = None) -> ServerRecord:
    """The server one call goes to: the split's new version with its share's probability
    (``draw`` in [0, 1), random when None), else the live one."""
    if split is None:
        return state
    return split.server if (random.random() if draw is None else draw) * 100 < split.pct else state


def state_or_raise(root: Path, name: str) -> ServerRecord:
    """:func:`read_state`, or :class:`NotFound` naming the deployment."""
    state = read_state(root, name)
    if state is None:
        raise NotFound(f"no local deployment named {name!r}; run `aiaas deploy` first")
    return state


def server_url(host: str, state: ServerRecord) -> str:
    """The base URL of the server a state record names."""
    return f"http://{host}:{state.port}"


def unreachable(name: str, reason: str) -> NotReady:
    """The error of a server that did not take or finish the request."""
    return NotReady(
        f"local deployment {name!r} is not reachable: {reason}", retry_after=RETRY_AFTER_S
    )
