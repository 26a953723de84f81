"""The one error hierarchy of aiaas.

Every layer raises these; each cloud adapter maps its own error codes onto them once, and
the HTTP edges (model server, function app) map them onto status codes once. Nothing above
``adapters/`` ever parses a cloud-specific error.
"""

from __future__ import annotations

from typing import Any


class AiaasError(Exception):
    """Base class: a machine-readable ``code``, an HTTP status and a human message."""

    code: str = "internal"
    http_status: int = 500
    #: Seconds after which the same call may succeed (answered as ``Retry-After``); ``None``
    #: when trying again will not help.
    retry_after: float | None = None
    #: The cloud's own words about the failure (its error text, which may name the account,
    #: a log group or signed material): for the operator's log only, never for a caller.
    cloud_text: str | None = None

    def __init__(self, message: str, *, details: Any = None, cloud_text: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.cloud_text = cloud_text

    def to_dict(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON error body used by every HTTP surface: ``{"error": {...}}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        if request_id is not None:
            body["request_id"] = request_id
        return {"error": body}


class ConfigError(AiaasError):
    """``aiaas.yaml`` or an ``AIAAS_*`` variable is invalid; the message names the key."""

    code = "config_invalid"
    http_status = 500


class BundleError(AiaasError):
    """A bundle directory or archive is malformed or cannot be built."""

    code = "bundle_invalid"
    http_status = 500


class BadRequest(AiaasError):
    """The request body is not what the protocol expects (e.g. malformed JSON)."""

    code = "bad_request"
    http_status = 400


class RequestTimeout(BadRequest):
    """The client did not send its whole request body in time (``server.body_timeout_s``)."""

    code = "request_timeout"
    http_status = 408


class MethodNotAllowed(AiaasError):
    """The route exists but not for this HTTP method."""

    code = "method_not_allowed"
    http_status = 405


class UnsupportedMediaType(AiaasError):
    """The request's ``content-type`` is not one the route reads; the message names those."""

    code = "unsupported_media_type"
    http_status = 415


class InvalidInput(AiaasError):
    """An input item violates the model's input schema; details name index and field."""

    code = "invalid_input"
    http_status = 422


class Unauthorized(AiaasError):
    """No valid credentials; never says whether they were missing, unknown or wrong."""

    code = "unauthorized"
    http_status = 401


class PayloadTooLarge(AiaasError):
    """The request body exceeds the configured or platform limit."""

    code = "payload_too_large"
    http_status = 413


class NotFound(AiaasError):
    """The named model, deployment or endpoint does not exist."""

    code = "not_found"
    http_status = 404


class RetryLater(AiaasError):
    """An error whose call may succeed after ``retry_after`` seconds (always set: 1 s unless
    said), answered with ``Retry-After``: the base of :class:`Throttled` and
    :class:`Unavailable`."""

    retry_after: float

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        details: Any = None,
        cloud_text: str | None = None,
    ) -> None:
        super().__init__(message, details=details, cloud_text=cloud_text)
        self.retry_after = retry_after


class Throttled(RetryLater):
    """The callee is saturated; retry after ``retry_after`` seconds."""

    code = "throttled"
    http_status = 429


class Overloaded(Throttled):
    """The model server's queue is full (answered as 503 with ``Retry-After``)."""

    code = "overloaded"
    http_status = 503


class NotReady(AiaasError):
    """The endpoint exists but is not (yet) ready to serve.

    ``retry_after`` (seconds), when set, is answered as ``Retry-After``: the caller may try
    again then (e.g. the model server went away and is expected back)."""

    code = "not_ready"
    http_status = 503

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        details: Any = None,
        cloud_text: str | None = None,
    ) -> None:
        super().__init__(message, details=details, cloud_text=cloud_text)
        self.retry_after = retry_after


class Unavailable(RetryLater):
    """The cloud failed transiently (its own 500/503): the same call may succeed after
    ``retry_after`` seconds. Answered as 503 with ``Retry-After``, never as the 502 of a
    deployment that answered wrongly."""

    code = "unavailable"
    http_status = 503


class ModelError(AiaasError):
    """The user's model raised while predicting."""

    code = "model_error"
    http_status = 500


class DeadlineExceeded(AiaasError):
    """The call did not finish within its deadline."""

    code = "deadline_exceeded"
    http_status = 504


class DeployFailed(AiaasError):
    """A deployment did not become ready, or its smoke test failed; nothing was switched."""

    code = "deploy_failed"
    http_status = 500


class ProviderError(AiaasError):
    """A provider failed in a way none of the other classes describe."""

    code = "provider_error"
    http_status = 502


class AccessDenied(ProviderError):
    """The cloud refused the credentials, or their permissions, for a call; the message names
    the call (and so the permission it needs). Raised by every provider for its own "denied"
    codes (AWS's AccessDenied, HTTP 401/403 from Azure ML or PAI-EAS), so a caller can tell a
    fixable IAM problem from a cloud that failed."""

    code = "access_denied"


_BY_CODE: dict[str, type[AiaasError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        RequestTimeout,
        Unauthorized,
        MethodNotAllowed,
        UnsupportedMediaType,
        InvalidInput,
        PayloadTooLarge,
        NotFound,
        Throttled,
        Overloaded,
        NotReady,
        Unavailable,
        ModelError,
        DeadlineExceeded,
        DeployFailed,
        ProviderError,
        AccessDenied,
        ConfigError,
        BundleError,
    )
}


def error_from_body(
    status: int, body: dict[str, Any] | None, retry_after: float = 1.0
) -> AiaasError:
    """Rebuild the typed error from an aiaas JSON error body (used by clients and providers).

    Takes both shapes aiaas answers with: ``{"error": {"code", "message", ...}}`` and, on
    OIP routes, ``{"error": "<message>", "code", ...}``.
    """
    err = (body or {}).get("error") if isinstance(body, dict) else None
    if isinstance(err, str) and isinstance(body, dict):  # the OIP shape: {"error": "<message>"}
        err = {**body, "message": err}
    code = err.get("code") if isinstance(err, dict) else None
    message = str(err.get("message")) if isinstance(err, dict) else f"HTTP {status}"
    details = err.get("details") if isinstance(err, dict) else None
    cls = _BY_CODE.get(str(code)) if code else None
    if cls is None:
        cls = _class_for_status(status)
    if issubclass(cls, RetryLater):
        return cls(message, retry_after=retry_after, details=details)
    return cls(message, details=details)


def _class_for_status(status: int) -> type[AiaasError]:
    return {
        400: BadRequest,
        401: Unauthorized,
        404: NotFound,
        405: MethodNotAllowed,
        408: RequestTimeout,
        413: PayloadTooLarge,
        415: UnsupportedMediaType,
        422: InvalidInput,
        429: Throttled,
        503: NotReady,
        504: DeadlineExceeded,
    }.get(status, ModelError if status == 500 else ProviderError)
