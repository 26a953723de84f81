"""The control plane's Alibaba Cloud errors, each as one line that says what to fix.

:func:`pai_error` is the one mapping of a tea-openapi / darabonba failure (EAS) or an
alibabacloud-oss-v2 failure (OSS) to :mod:`aiaas.errors`; :mod:`adapters.pai.provider` raises
what it returns, never the SDK's exception: a missing service or object is ``NotFound``; a
refused signature, key or permission ``AccessDenied`` naming what the RAM user needs;
throttling ``Throttled``; anything else ``ProviderError`` with EAS's (or OSS's) own code and
message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from aiaas.errors import AccessDenied, AiaasError, NotFound, ProviderError, Throttled

MAX_MESSAGE = 400
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
NOT_FOUND_CODES = frozenset({"InvalidService.NotFound", "NoSuchKey", "NoSuchBucket"})
AUTH_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "InvalidSecurityToken.Expired",
        "InvalidSecurityToken.Malformed",
        "AccessDenied",
        "Forbidden",
        "Forbidden.RAM",
        "NoPermission",
    }
)
THROTTLING_CODES = frozenset({"Throttling", "Throttling.User", "Throttling.Api", "ServiceBusy"})
PERMISSIONS = (
    "the deploying RAM identity needs eas:CreateService, eas:DescribeService, "
    "eas:UpdateService, eas:UpdateServiceVersion, eas:DeleteService, eas:ListServices, "
    "eas:*ServiceAutoScaler and eas:DescribeServiceLog, and oss:PutObject / oss:GetObject on "
    "the bundle bucket; see docs/providers/pai.md"
)


def _brief(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= MAX_MESSAGE else first[: MAX_MESSAGE - 3] + "..."


def safe_line(text: str, secrets: Iterable[str] = (), limit: int = MAX_CLOUD_LINE) -> str:
    """One line of the cloud's text (a container's log line, an event, EAS's message) fit to
    quote in an error that may reach a user or a log: terminal escapes dropped, every other
    control or format character (bidi overrides, zero-width marks, line breaks) a space,
    each of ``secrets`` (the service token...) and the value after anything named like a
    secret (``Authorization:``, ``token=``, ``password:``...) :data:`REDACTED`, at most
    ``limit`` characters (an ellipsis says it was cut)."""
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


def code_of(exc: BaseException) -> str:
    """EAS's or OSS's error code of ``exc`` (``InvalidService.NotFound``, ``NoSuchKey``...),
    or ``""``; an OSS ``OperationError`` is unwrapped to the service error inside."""
    inner = _inner(exc)
    return str(getattr(inner, "code", None) or "")


def _inner(exc: BaseException) -> BaseException:
    unwrap = getattr(exc, "unwrap", None)
    if callable(unwrap):
        with_detail = unwrap()
        if isinstance(with_detail, BaseException):
            return with_detail
    return exc


def _status(exc: BaseException) -> int | None:
    for attribute in ("status_code", "statusCode"):
        value: Any = getattr(exc, attribute, None)
        if isinstance(value, int):
            return value
    return None


def refused(exc: BaseException) -> bool:
    """True when EAS (or OSS) answered the call that raised ``exc`` with a client error (a 4xx
    status: the call was refused, not carried out). False for a 5xx or no answer at all (a
    read timeout, a connection reset): whether the cloud took the call is then unknown."""
    status = _status(_inner(exc))
    return status is not None and 400 <= status < 500


def pai_error(exc: BaseException, doing: str) -> AiaasError:
    """``exc`` (raised while ``doing``) as the :mod:`aiaas.errors` type that says what to do."""
    if isinstance(exc, AiaasError):
        return exc
    inner = _inner(exc)
    code = code_of(exc)
    status = _status(inner)
    said = _brief(str(getattr(inner, "message", None) or inner) or type(inner).__name__)
    what = f"{doing}: {code + ': ' if code else ''}{said}"
    if code in NOT_FOUND_CODES or (status == 404 and code != "InvalidAction.NotFound"):
        return NotFound(what)
    if code in AUTH_CODES or status == 403:
        return AccessDenied(f"{what} ({PERMISSIONS})")
    if code in THROTTLING_CODES or code.startswith("Throttling") or status == 429:
        return Throttled(what)
    if not code and status is None:
        return ProviderError(f"{doing}: {type(inner).__name__}: {said}")
    return ProviderError(what)


__all__ = ["code_of", "log_tail", "pai_error", "refused", "safe_line"]
