"""What the invoke path carries in SageMaker's custom attributes: the request id and the
deadline (stdlib only: the SageMaker provider's spec names the header, and a spec is imported
by every config load).

SageMaker's InvokeEndpoint forwards no header of the caller's to the container but
``X-Amzn-SageMaker-Custom-Attributes`` (up to 1024 characters, opaque to AWS): the invoke path
writes ``aiaas-timeout-ms=<milliseconds left>;aiaas-request-id=<id>`` into it, and the model
server reads them back, among any other ``;``-separated attributes (the first of each key
counts: the deadline comes first, so an id holding ``;`` cannot stand in for it).
"""

from __future__ import annotations

CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
_ID_KEY = "aiaas-request-id="
_TIMEOUT_KEY = "aiaas-timeout-ms="
#: How the model server names the deadline attribute in a 400 for a malformed one.
TIMEOUT_ATTRIBUTE = f"{CUSTOM_ATTRIBUTES_HEADER} {_TIMEOUT_KEY[:-1]}"


def carrying(request_id: str | None = None, *, timeout_ms: int | None = None) -> str:
    """The header value that carries ``request_id`` and the deadline's ``timeout_ms``
    (milliseconds left), each when given."""
    parts = [] if timeout_ms is None else [f"{_TIMEOUT_KEY}{timeout_ms}"]
    if request_id is not None:
        parts.append(_ID_KEY + request_id)
    return ";".join(parts)


def _attribute(value: str | None, key: str) -> str | None:
    """The first ``key`` attribute's value in a custom-attributes header's ``value``."""
    if not value:
        return None
    for part in value.split(";"):
        part = part.strip()
        if part.startswith(key):
            return part[len(key) :]
    return None


def request_id_in_attributes(value: str | None) -> str | None:
    """The ``aiaas-request-id`` of a custom-attributes header's value, if it has one."""
    return _attribute(value, _ID_KEY)


def timeout_in_attributes(value: str | None) -> str | None:
    """The ``aiaas-timeout-ms`` of a custom-attributes header's value (unparsed: see
    :func:`aiaas.retry.timeout_ms`), if it has one."""
    return _attribute(value, _TIMEOUT_KEY)
