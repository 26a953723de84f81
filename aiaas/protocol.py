"""The simple JSON protocol: ``{"inputs": [items]}`` → ``{"outputs": [...], "model", "version"}``.

Parsing and per-item validation are shared by every HTTP surface, so the same input gives
the same error everywhere.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from aiaas.errors import BadRequest, InvalidInput, UnsupportedMediaType

#: At most this many problems are listed in an :class:`InvalidInput`'s details; the rest are
#: counted. A request with a million bad items must not get a hundred-megabyte answer.
MAX_LISTED_PROBLEMS = 10


#: What the JSON routes take; a request without a ``content-type`` is read as JSON too.
JSON_MEDIA_TYPES = ("application/json", "application/*+json", "text/json")


def check_json_content_type(content_type: str | None) -> None:
    """Raise :class:`UnsupportedMediaType` (415) unless ``content_type`` is JSON or absent.

    Without this, a CSV or form body would be answered "malformed JSON", which blames the
    caller's data instead of naming the type it should send.
    """
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/json", "text/json") or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise UnsupportedMediaType(
        f"content-type {media!r} is not supported here; send {', '.join(JSON_MEDIA_TYPES)}"
    )


def parse_json(body: bytes) -> Any:
    """Decode a JSON body or raise :class:`BadRequest` saying where it broke."""
    if not body:
        raise BadRequest("request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def simple_inputs(payload: Any) -> list[Any]:
    """The ``inputs`` list of a simple-protocol request."""
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest('expected a JSON object {"inputs": [item, ...]}')
    inputs = payload["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('"inputs" must be a non-empty list of items')
    return inputs


def validate_items(
    schema: type[BaseModel], items: list[Any], where: str = "inputs"
) -> list[BaseModel]:
    """Validate each item against ``schema``; one :class:`InvalidInput` lists every problem.

    Each problem names the item index and the field, e.g. ``inputs[2].text: Field required``.
    """
    validated: list[BaseModel] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            validated.append(schema.model_validate(item))
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                field = ".".join(str(p) for p in err["loc"])
                problems.append({"index": index, "field": field, "message": err["msg"]})
    if problems:
        raise invalid_input(problems, where)
    return validated


def invalid_input(problems: list[dict[str, Any]], where: str = "inputs") -> InvalidInput:
    """One :class:`InvalidInput` for ``problems`` (each ``{"index", "field", "message"}``).

    The message names the first problem's item and field and counts the rest; ``details``
    lists the first :data:`MAX_LISTED_PROBLEMS` of them, so the error's size is bounded
    whatever the request held.
    """
    listed = [  # fields and messages cut short: a field can be a request's key, any length
        {**p, "field": _cut(str(p["field"])), "message": _cut(str(p["message"]))}
        for p in problems[:MAX_LISTED_PROBLEMS]
    ]
    first = listed[0]
    path = f"{where}[{first['index']}]" + (f".{first['field']}" if first["field"] else "")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return InvalidInput(f"{path}: {first['message']}{more}", details=listed)


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def simple_response(outputs: list[Any], model: str, version: str) -> bytes:
    """Encode a simple-protocol response."""
    return orjson.dumps(
        {"outputs": outputs, "model": model, "version": version}, option=orjson.OPT_SERIALIZE_NUMPY
    )
