"""What the local control plane writes and its invoke path reads: the state files of a
deployment.

State lives under ``<state_dir>/local/<name>/deployment.json`` (the live server's pid,
port, version, log), replaced atomically, so a reader sees the old or the new server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiaas.config import NAME_PATTERN
from aiaas.errors import BadRequest, NotFound, NotReady

STATE_FILE = "deployment.json"

RETRY_AFTER_S = 1.0
"""What a caller is told to wait when the model server is unreachable (a restart or a
version switch takes about that long)."""


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


def read_state(root: Path, name: str) -> dict[str, Any] | None:
    """The live server's record, or None when there is none (or it is unreadable)."""
    try:
        state: dict[str, Any] = json.loads((deployment_dir(root, name) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


def state_or_raise(root: Path, name: str) -> dict[str, Any]:
    """:func:`read_state`, or :class:`NotFound` naming the deployment."""
    state = read_state(root, name)
    if state is None:
        raise NotFound(f"no local deployment named {name!r}; run `aiaas deploy` first")
    return state


def server_url(host: str, state: dict[str, Any]) -> str:
    """The base URL of the server a state record names."""
    return f"http://{host}:{state['port']}"


def unreachable(name: str, reason: str) -> NotReady:
    """The error of a server that did not take or finish the request."""
    return NotReady(
        f"local deployment {name!r} is not reachable: {reason}", retry_after=RETRY_AFTER_S
    )
