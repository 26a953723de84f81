"""A cloud's own text (a container's log line, an event, a control plane's message) made fit
to quote in an error that may reach a user or a log: :func:`safe_line` for one line,
:func:`log_tail` for a log's last lines. Shared by every provider's steps; no cloud named."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MAX_CLOUD_LINE = 200
"""The most of one line of the cloud's text (a log line, an event) an error message quotes."""
MAX_LOG_TAIL = 1200
"""The most of a log's last lines an error message quotes (the newest kept)."""
REDACTED = "[redacted]"
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
_SECRET_VALUES = re.compile(
    r"(?i)((?:authorization|x-acs-security-token|security[_-]?token|access[_-]?token|"
    r"access[_-]?key[_-]?secret|secret[_-]?key|api[_-]?key|password|passwd|signature|"
    r"secret|token)[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic)\s+)?[^\s\"',;&|]+"
)


def safe_line(text: str, secrets: Iterable[str] = (), limit: int = MAX_CLOUD_LINE) -> str:
    """One line of the cloud's text (a container's log line, an event, a control plane's
    message) fit to quote in an error that may reach a user or a log: terminal escapes
    dropped, every other control or format character (bidi overrides, zero-width marks,
    line breaks) a space, each of ``secrets`` (a service token...) and the value after
    anything named like a secret (``Authorization:``, ``token=``, ``password:``...)
    :data:`REDACTED`, at most ``limit`` characters (an ellipsis says it was cut)."""
    known = sorted({x for x in secrets if x and len(x) >= 6}, key=len, reverse=True)
    for secret in known:  # before anything is changed around it, and after (below)
        text = text.replace(secret, REDACTED)
    text = _ESCAPES.sub("", text)
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)
    text = " ".join(text.split())
    for secret in known:
        text = text.replace(secret, REDACTED)
    text = _SECRET_VALUES.sub(lambda m: m.group(1) + REDACTED, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def log_tail(lines: Iterable[str], secrets: Iterable[str] = (), limit: int = MAX_LOG_TAIL) -> str:
    """The last of ``lines`` (a log, oldest first), each :func:`safe_line`, joined with
    ``" | "`` in at most ``limit`` characters: the newest lines are the ones kept."""
    known = tuple(secrets)
    kept: list[str] = []
    used = 0
    for line in reversed(list(lines)):
        safe = safe_line(line, known)
        if not safe:
            continue
        cost = len(safe) + (3 if kept else 0)
        if used + cost > limit:
            if not kept:  # a limit below one line's: the newest, cut
                kept.append(safe[: max(limit - 1, 0)] + "…")
            break
        kept.append(safe)
        used += cost
    return " | ".join(reversed(kept))
