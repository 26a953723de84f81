"""The control plane's Alibaba Cloud errors, each as one line that says what to fix.

:func:`pai_error` is the one mapping of a tea-openapi / darabonba failure (EAS) or an
alibabacloud-oss-v2 failure (OSS) to :mod:`aiaas.errors`; :mod:`adapters.pai.provider` raises
what it returns, never the SDK's exception: a missing service or object is ``NotFound``; a
refused signature, key or permission ``AccessDenied`` naming what the RAM user needs;
throttling ``Throttled``; anything else ``ProviderError`` with EAS's (or OSS's) own code and
message.
"""

from __future__ import annotations

from typing import Any

from adapters.cloud_text import log_tail, safe_line
from aiaas.errors import AccessDenied, AiaasError, NotFound, ProviderError, Throttled

MAX_MESSAGE = 400
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
    "the deploying RAM identity needs eas:CreateService, eas:DescribeMachineSpec, "
    "eas:DescribeService, eas:UpdateService, eas:UpdateServiceVersion, eas:DeleteService, "
    "eas:ListServices, eas:*ServiceAutoScaler, eas:DescribeServiceLog and "
    "eas:DescribeServiceEvent, and oss:PutObject / oss:GetObject / oss:AbortMultipartUpload on "
    "the bundle bucket; see docs/providers/pai.md"
)


def _brief(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= MAX_MESSAGE else first[: MAX_MESSAGE - 3] + "..."


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
