"""The simple JSON protocol: ``{"inputs": [items]}`` → ``{"outputs": [...], "model", "version"}``.

Parsing and per-item validation are shared by every HTTP surface, so the same input gives
the same error everywhere: :class:`InputCheck` (the manifest's input JSON Schema, compiled
once) is the one validation truth that the function tier's edge and the model server both
run, with the same code, before anything else looks at an item.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import fastjsonschema
import orjson

from aiaas.errors import (
    BadRequest,
    BundleError,
    InvalidInput,
    ModelError,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

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


#: Longest text a problem's field or message keeps: fastjsonschema's ``additionalProperties``
#: message lists every unexpected key, as long as the request is.
MAX_MESSAGE_CHARS = 200

#: The first bytes of the files a ``contentMediaType`` can name and :class:`InputCheck`
#: recognises (other media types are not checked beyond their encoding).
MEDIA_SIGNATURES = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF8",
    "application/pdf": b"%PDF-",
}


class InputCheck:
    """The one validation truth for request items: the model's input JSON Schema (as the
    bundle manifest carries it), compiled once with fastjsonschema.

    The function tier's edge and the model server both run this check, so they give the
    same verdict on every item, and on a refusal name the same index, field and message.
    It only reads an item: defaults are never written into it (``use_default=False``), so
    the edge forwards exactly what the caller sent.

    JSON Schema, not pydantic's lax mode, is the verdict: a JSON API that silently turned
    ``"3"`` into ``3`` or ``true`` into ``1`` would accept, at the server, what the
    published schema (the manifest, the OIP metadata, the OpenAPI document) says is wrong,
    and what the edge refuses. Beyond the compiled check (which decodes
    ``contentEncoding: base64`` leniently), the item's top-level string properties that
    declare ``contentEncoding: base64`` must be strict base64 (no stray characters), and a
    ``contentMediaType`` of :data:`MEDIA_SIGNATURES` must start with that file type's
    signature (JSON Schema makes these keywords annotations; aiaas asserts them, as a model
    that declares them does).
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        try:
            self._check: Callable[[Any], Any] = fastjsonschema.compile(
                _draft7(schema), use_default=False
            )
        except (fastjsonschema.JsonSchemaDefinitionException, re.error) as exc:
            # e.g. a pattern in a regex dialect Python's re does not speak (pydantic's
            # patterns run in Rust: \p{L}): neither tier could check what the schema says
            raise BundleError(
                f"the model's input schema cannot be checked as JSON Schema: {exc}; use "
                "keywords and patterns of JSON Schema draft 7 that Python's re understands"
            ) from None
        self._content = _content_rules(schema)

    def problem(self, item: Any) -> dict[str, str] | None:
        """The first problem of ``item`` as ``{"field", "message"}`` (each at most
        :data:`MAX_MESSAGE_CHARS` long), or None when it fits the schema."""
        try:
            self._check(item)
        except fastjsonschema.JsonSchemaValueException as exc:
            return _describe(exc, item)
        if self._content:
            return _content_problem(self._content, item)
        return None

    def check(self, items: list[Any], where: str = "inputs") -> None:
        """Raise :class:`~aiaas.errors.InvalidInput` naming the first bad item's index and
        field (each bad item's first problem is listed, at most :data:`MAX_LISTED_PROBLEMS`);
        the count of items is the caller's to bound first."""
        problems: list[dict[str, Any]] = []
        bad = 0
        for index, item in enumerate(items):
            found = self.problem(item)
            if found is not None:
                bad += 1
                if len(problems) < MAX_LISTED_PROBLEMS:
                    problems.append({"index": index, **found})
        if bad:
            raise invalid_input(problems, where, total=bad)


def _draft7(node: Any) -> Any:
    """``node`` with the tuple keywords pydantic writes (JSON Schema 2020-12: ``prefixItems``,
    then ``items`` for the rest) spelt as draft 7 has them (``items`` as a list, then
    ``additionalItems``): fastjsonschema implements draft 7 and would skip ``prefixItems``,
    leaving a tuple's elements unchecked."""
    if isinstance(node, list):
        return [_draft7(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _draft7(v) for k, v in node.items()}
    if out.get("type") == "array" and isinstance(out.get("prefixItems"), list):
        rest = out.pop("items", None)
        out["items"] = out.pop("prefixItems")
        if rest is not None:
            out["additionalItems"] = rest
    return out


def brief(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis says it was)."""
    return text if len(text) <= limit else text[:limit] + "…"


def _describe(exc: fastjsonschema.JsonSchemaValueException, item: Any) -> dict[str, str]:
    """Turn fastjsonschema's ``data.x must be string`` into a field and a message, each at
    most :data:`MAX_MESSAGE_CHARS` long whatever the item held."""
    path = [str(p) for p in (exc.path or [])[1:]]  # drop the leading "data"
    message = exc.message
    prefix = f"{exc.name} "  # fastjsonschema's own spelling: data.ints[0] must be integer
    if message.startswith(prefix):
        message = message[len(prefix) :]
    if exc.rule == "required" and isinstance(exc.rule_definition, list):
        parent = _at(item, path)
        if isinstance(parent, dict):
            missing = [k for k in exc.rule_definition if k not in parent]
            return {"field": brief(".".join([*path, *missing[:1]])), "message": "Field required"}
    return {"field": brief(".".join(path)), "message": brief(message)}


def _at(item: Any, path: list[str]) -> Any:
    """The value at ``path`` (keys and list indexes as text) in ``item``, or None."""
    for step in path:
        try:
            item = item[int(step)] if isinstance(item, list) else item[step]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return item


_ContentRule = tuple[str, bool, bytes | None]  # property, base64?, signature


def _content_rules(schema: dict[str, Any]) -> list[_ContentRule]:
    """The content keywords of the schema's top-level string properties."""
    rules: list[_ContentRule] = []
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        encoded = prop.get("contentEncoding") == "base64"
        signature = MEDIA_SIGNATURES.get(str(prop.get("contentMediaType", "")).lower())
        if encoded or signature is not None:
            rules.append((str(name), encoded, signature))
    return rules


def _content_problem(rules: list[_ContentRule], item: Any) -> dict[str, str] | None:
    if not isinstance(item, dict):
        return None
    for name, encoded, signature in rules:
        value = item.get(name)
        if not isinstance(value, str):
            continue
        raw: bytes = value.encode("utf-8", "replace")
        if encoded:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return {"field": brief(name), "message": "must be encoded by base64"}
        if signature is not None and not raw.startswith(signature):
            media = next(k for k, v in MEDIA_SIGNATURES.items() if v == signature)
            return {"field": brief(name), "message": f"must be {media} data (contentMediaType)"}
    return None


def validate_items(
    schema: type[BaseModel], items: list[Any], where: str = "inputs"
) -> list[BaseModel]:
    """Validate each item against ``schema``; one :class:`InvalidInput` lists every problem.

    Each problem names the item index and the field, e.g. ``inputs[2].text: Field required``.
    """
    # Here, not at the top: the function tier imports this module for its edge checks and
    # never validates items with pydantic (nor imports it at cold start).
    from pydantic import ValidationError

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
    from pydantic import ValidationError

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
