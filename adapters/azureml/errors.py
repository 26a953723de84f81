"""The control plane's Azure errors, each as one line that says what to fix.

:func:`azure_error` is the one mapping of an azure-core, azure-identity, azure-ai-ml or
azure-storage-blob failure to :mod:`aiaas.errors` (:mod:`adapters.azureml.provider` raises
what it returns, never the SDK's exception): a missing resource is ``NotFound``; refused
credentials or a missing role ``AccessDenied`` naming the role; Azure's throttling
``Throttled``; a deployment whose operation failed ``DeployFailed`` with Azure's reason; a
connection that could not be made ``ProviderError`` naming the URL, one that broke
mid-answer ``NotReady``. The SDK's multi-line messages (``(Code) text``, ``Code:``,
``Message:``, ``Target:``, ...) are cut to Azure's own sentence.
"""

from __future__ import annotations

import re
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from aiaas.errors import (
    AccessDenied,
    AiaasError,
    ConfigError,
    DeployFailed,
    NotFound,
    NotReady,
    ProviderError,
    Throttled,
)

MAX_MESSAGE = 400
_CODE = re.compile(r"^\((\w+)\)\s*")
THROTTLING_CODES = frozenset({"TooManyRequests", "ServerBusy", "OperationTimedOut"})
FAILED_DEPLOYMENT_CODES = frozenset(
    {
        "DeploymentFailed",
        "ResourceOperationFailure",
        "BadArgument",
        "InferencingClientCallFailed",
    }
)
ROLES = (
    "the deploying identity needs 'AzureML Data Scientist' on the workspace (or a custom "
    "role with Microsoft.MachineLearningServices/workspaces/onlineEndpoints/*, models/*, "
    "environments/*, datastores/read) and 'Storage Blob Data Contributor' on the "
    "workspace's default storage account; see docs/providers/azureml.md"
)


def brief(text: str) -> str:
    """Azure's own sentence of an SDK message: its first line, the ``(Code)`` prefix off,
    cut to :data:`MAX_MESSAGE` characters."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = _CODE.sub("", first).strip()
    return first if len(first) <= MAX_MESSAGE else first[: MAX_MESSAGE - 3] + "..."


def error_code(exc: BaseException) -> str:
    """Azure's error code of ``exc`` (``ResourceNotFound``, ``DeploymentFailed``, a blob
    service's ``ContainerNotFound``, ...), or ``""``."""
    for attribute in ("error_code",):  # azure-storage-blob sets it
        code = getattr(exc, attribute, None)
        if code:
            return str(code)
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code:
        return str(code)
    found = _CODE.match(str(getattr(exc, "message", None) or exc).strip())
    return found.group(1) if found else ""


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an azure-core failure (None when none was answered)."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _retry_after(exc: BaseException) -> float:
    response: Any = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001)):
        value = headers.get(name)
        if value:
            try:
                return max(float(value) * scale, 0.1)
            except ValueError:
                pass
    value = headers.get("retry-after")
    try:
        return max(float(value), 0.1) if value else 1.0
    except ValueError:
        return 1.0


def _text(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None)
    if message:
        return brief(str(message))
    return brief(str(getattr(exc, "message", None) or exc))


def azure_error(exc: BaseException, doing: str) -> AiaasError:
    """The typed error, on one line, for an Azure failure while ``doing`` something."""
    if isinstance(exc, AiaasError):
        return exc
    code, status, text = error_code(exc), status_of(exc), _text(exc)
    said = code or (str(status) if status else type(exc).__name__)
    line = f"{doing}: Azure said {said}: {text}" if text else f"{doing}: Azure said {said}"
    if type(exc).__name__ == "CredentialUnavailableError":
        return ConfigError(
            f"{doing}: no Azure credentials: azure-identity's default chain found none "
            "(environment variables, workload identity, managed identity, `az login`): "
            f"{text}"
        )
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return NotFound(line)
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        refused = "refused the credentials" if status == 401 else "refused the call"
        if isinstance(exc, ClientAuthenticationError) and status is None:
            refused = "could not get a token"
        return AccessDenied(f"{doing}: Azure {refused} ({said}): {text}; {ROLES}")
    if status == 429 or code in THROTTLING_CODES:
        return Throttled(line, retry_after=_retry_after(exc))
    if code in FAILED_DEPLOYMENT_CODES or text.startswith("DeploymentFailed"):
        return DeployFailed(f"{doing}: {text or said}")
    if isinstance(exc, ServiceRequestError):
        return ProviderError(
            f"{doing}: cannot reach Azure ({text}): check the network, and "
            "AIAAS_AZURE_ARM_URL / AIAAS_AZURE_BLOB_URL if set"
        )
    if isinstance(exc, ServiceResponseError):
        return NotReady(f"{doing}: the connection to Azure broke: {text}", retry_after=1.0)
    if isinstance(exc, HttpResponseError | AzureError):
        return ProviderError(line)
    name = type(exc).__name__
    if name in {"ValidationException", "ValidationError"}:  # azure-ai-ml's own checks
        return ConfigError(f"{doing}: azure-ai-ml refused it: {brief(str(exc))}")
    return ProviderError(f"{doing}: {name}: {brief(str(exc))}")


def missing_container(container: str, account: str) -> ConfigError:
    """The error for a blob container that does not exist."""
    return ConfigError(
        f"azureml.blob_container {container!r}: no such container in {account}: create it "
        "or leave the key out (the workspace's default datastore's container is used)"
    )
