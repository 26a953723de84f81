"""The request id carried in SageMaker's custom attributes (stdlib only: the SageMaker
provider's spec names the header, and a spec is imported by every config load).

SageMaker's InvokeEndpoint forwards no header of the caller's to the container but
``X-Amzn-SageMaker-Custom-Attributes`` (up to 1024 characters, opaque to AWS): the invoke path
writes the request id into it as ``aiaas-request-id=<id>``, and the model server reads it back,
among any other ``;``-separated attributes.
"""

from __future__ import annotations

CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
_KEY = "aiaas-request-id="


def carrying(request_id: str) -> str:
    """The header value that carries ``request_id``."""
    return _KEY + request_id


def request_id_in_attributes(value: str | None) -> str | None:
    """The ``aiaas-request-id`` of a custom-attributes header's value, if it has one."""
    if not value:
        return None
    for part in value.split(";"):
        part = part.strip()
        if part.startswith(_KEY):
            return part[len(_KEY) :]
    return None
