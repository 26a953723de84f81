"""Checks at the edge, before anything is forwarded and before anything is answered.

Requests: the body size (refused on the declared length at once, and while reading), the
number of items, then each item against the bundle manifest's JSON Schema, without
importing model code, torch or transformers. Answers: the size the platform will accept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiaas.errors import AiaasError, PayloadTooLarge
from aiaas.http import read_limited_body
from aiaas.packaged import ServedManifest as Manifest
from aiaas.protocol import InputCheck

DEFAULT_MAX_ITEMS = 512  # as config.server.max_items_per_request

# The platforms' request and response limits, and whether a response's limit counts its body
# escaped in a JSON envelope, are in each platform's record (functions.platforms).
ENVELOPE_RESERVE = 16 * 1024  # status, headers and the envelope's own keys


class ResponseTooLarge(AiaasError):
    """The answer would exceed what the platform can return; nothing was cut short."""

    code = "response_too_large"
    http_status = 502


class EdgeValidator:
    """Checks request items against the model's input JSON Schema (compiled once), with
    the model server's own check (:class:`aiaas.protocol.InputCheck`): the edge and the
    server give the same verdict, index, field and message, and the items are only read,
    never changed (no schema default is written into what is forwarded)."""

    def __init__(self, manifest: Manifest, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self.manifest = manifest
        self.max_items = max_items
        self.input_check = InputCheck(manifest.input_schema)

    def check_count(self, count: int, where: str = "inputs") -> None:
        """Raise :class:`PayloadTooLarge` (413) if ``count`` items are more than one request
        may carry; call it before expanding or validating anything."""
        if count > self.max_items:
            raise PayloadTooLarge(
                f"{where}: the request has {count} items; this function accepts at most "
                f"{self.max_items} per request (server.max_items_per_request)"
            )

    def validate(self, items: list[Any], where: str = "inputs") -> None:
        """Refuse too many items (413), then raise :class:`~aiaas.errors.InvalidInput`
        naming the first bad item's index and field (at most a few problems are listed)."""
        self.check_count(len(items), where)
        self.input_check.check(items, where)


async def read_body(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The whole body, refused (413) on its declared length or once the bytes read pass
    ``limit`` (:func:`aiaas.http.read_limited_body`)."""
    return await read_limited_body(chunks, declared, limit, who="this function")


#: Mangum's ``DEFAULT_TEXT_MIME_TYPES``: a body whose content type contains one of these goes
#: back to Lambda as text (if it is UTF-8); any other body is base64-encoded (a test checks
#: this list against Mangum's own).
LAMBDA_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/vnd.api+json",
    "application/vnd.oai.openapi",
)


def response_size(body: bytes | memoryview, escaped: bool, content_type: str | None = None) -> int:
    """The bytes ``body`` counts against a platform's response limit.

    ``escaped``: the body travels as a JSON string in the runtime's answer (Lambda, through
    Mangum). A text body (``content_type`` one of :data:`LAMBDA_TEXT_TYPES`, and UTF-8) is
    that string as is, where ``"`` and ``\\`` take two bytes and a non-ASCII character up to
    twelve (``ensure_ascii``, as Lambda's Python 3.11 runtime serialises); any other body
    (binary OIP answers: ``application/octet-stream``) is base64, 4 bytes for every 3.
    """
    if not escaped:
        return len(body)
    if any(kind in (content_type or "") for kind in LAMBDA_TEXT_TYPES):
        try:
            text = str(body, "utf-8")
        except UnicodeDecodeError:  # Mangum sends it base64 then
            pass
        else:
            import json  # the rare path: only for answers big enough to matter

            return len(json.dumps(text))
    return 4 * ((len(body) + 2) // 3) + 2  # base64, in quotes


def check_response_size(
    body: bytes | memoryview, limit: int, escaped: bool, content_type: str | None = None
) -> None:
    """Raise :class:`ResponseTooLarge` if ``body`` (of ``content_type``) would not fit in
    ``limit`` bytes as the platform counts it (see :func:`response_size`)."""
    budget = limit - ENVELOPE_RESERVE
    if len(body) * (6 if escaped else 1) <= budget:  # cheap: no answer this small can exceed
        return
    size = response_size(body, escaped, content_type)
    if size > budget:
        raise ResponseTooLarge(
            f"the answer is {len(body)} bytes ({size} as the platform counts it); this "
            f"function can return at most {budget}: send fewer items per request"
        )
