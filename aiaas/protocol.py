"""The simple JSON protocol: ``{"inputs": [items]}`` → ``{"outputs": [...], "model", "version"}``.

Parsing and per-item validation are shared by every HTTP surface, so the same input gives
the same error everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from aiaas.errors import BadRequest, InvalidInput, ModelError, UnsupportedMediaType

log = logging.getLogger("aiaas.protocol")

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
    total = 0
    for index, item in enumerate(items):
        try:
            validated.append(schema.model_validate(item))
        except ValidationError as exc:
            count = exc.error_count()
            total += count
            if len(problems) < MAX_LISTED_PROBLEMS:
                problems += _problems(schema, item, index, exc, count)
    if total:
        raise invalid_input(problems, where, total=total)
    return validated


def _problems(
    schema: type[BaseModel], item: Any, index: int, exc: ValidationError, count: int
) -> list[dict[str, Any]]:
    """The first :data:`MAX_LISTED_PROBLEMS` problems of one item.

    ``exc.errors()`` builds a dict per error: for one item holding a million bad list
    elements that is seconds of the event loop and hundreds of megabytes. Then the item is
    validated again with every list cut short, which finds the first problems cheaply
    (each still named where it is in the item), and the rest are only counted.
    """
    if count > MAX_LISTED_PROBLEMS:
        try:
            schema.model_validate(_cut_lists(item))
        except ValidationError as short:
            errors = [
                e
                for e in short.errors(include_url=False, include_input=False)
                if e["type"] != "too_short"  # made by the cutting, not by the caller
            ]
        else:
            errors = []
        if not errors:  # the problems lie past the cut: say how many there are
            message = (
                f"a value past the first {MAX_LISTED_PROBLEMS} elements of a list breaks"
                " the input schema"
            )
            return [{"index": index, "field": "", "message": message}]
    else:
        errors = exc.errors(include_url=False, include_input=False)
    return [
        {"index": index, "field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
        for e in errors[:MAX_LISTED_PROBLEMS]
    ]


def _cut_lists(value: Any, depth: int = 0) -> Any:
    """``value`` with each list (to a depth of 32) cut to :data:`MAX_LISTED_PROBLEMS`."""
    if depth > 32:
        return value
    if type(value) is list:
        return [_cut_lists(v, depth + 1) for v in value[:MAX_LISTED_PROBLEMS]]
    if type(value) is dict:
        return {k: _cut_lists(v, depth + 1) for k, v in value.items()}
    return value


def invalid_input(
    problems: list[dict[str, Any]], where: str = "inputs", *, total: int | None = None
) -> InvalidInput:
    """One :class:`InvalidInput` for ``problems`` (each ``{"index", "field", "message"}``).

    The message names the first problem's item and field and counts the rest (``total``
    problems in all, if more than are listed); ``details`` lists the first
    :data:`MAX_LISTED_PROBLEMS` of them, so the error's size is bounded whatever the request
    held.
    """
    listed = [  # fields and messages cut short: a field can be a request's key, any length
        {**p, "field": _cut(str(p["field"])), "message": _cut(str(p["message"]))}
        for p in problems[:MAX_LISTED_PROBLEMS]
    ]
    first = listed[0]
    path = f"{where}[{first['index']}]" + (f".{first['field']}" if first["field"] else "")
    count = max(total or 0, len(problems))
    more = f" (and {count - 1} more)" if count > 1 else ""
    return InvalidInput(f"{path}: {first['message']}{more}", details=listed)


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def simple_response(outputs: list[Any], model: str, version: str) -> bytes:
    """Encode a simple-protocol response; a result JSON cannot carry is a
    :class:`~aiaas.errors.ModelError` naming it (see :func:`unencodable`)."""
    try:
        return orjson.dumps(
            {"outputs": outputs, "model": model, "version": version},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
    except orjson.JSONEncodeError as exc:
        raise unencodable(outputs, exc) from None


def unencodable(outputs: list[Any], exc: Exception) -> ModelError:
    """The :class:`ModelError` for results that could not be encoded (output checking
    catches most such results first; this is the net under it): it names the first item
    that cannot be encoded on its own, and is logged once, without a traceback."""
    index = next(
        (i for i, out in enumerate(outputs) if not _encodes(out)),
        None,
    )
    where = "outputs" if index is None else f"outputs[{index}]"
    message = f"model returned a result that cannot be encoded as JSON: {where}: {exc}"
    log.warning("%s", message)
    return ModelError(message)


def _encodes(value: Any) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        return False
    return True
