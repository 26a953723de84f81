"""Validation at the edge: requests are checked against the bundle manifest's JSON Schemas
before anything is forwarded, without importing model code, torch or transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema

from aiaas.errors import InvalidInput, PayloadTooLarge
from aiaas.manifest import Manifest

# Request-body ceilings of each serverless platform (shared/notes/contracts.md).
PLATFORM_BODY_LIMITS = {
    "aws": 6 * 1024 * 1024,  # Lambda function URL / API Gateway, buffered: 6 MB
    "azure": 100 * 1024 * 1024,  # Azure Functions HTTP trigger: 100 MB
    "alibaba": 32 * 1024 * 1024,  # Function Compute 3.0 synchronous HTTP: 32 MB
    "local": 6 * 1024 * 1024,  # as strict as the strictest cloud, so local finds it first
}


class EdgeValidator:
    """Checks request items against the model's input JSON Schema (compiled once)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._check: Callable[[Any], Any] = fastjsonschema.compile(manifest.input_schema)

    def validate(self, items: list[Any], where: str = "inputs") -> None:
        """Raise :class:`InvalidInput` naming the first bad item index and field."""
        problems: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                self._check(item)
            except fastjsonschema.JsonSchemaValueException as exc:
                problems.append({"index": index, **_describe(exc, item)})
        if problems:
            first = problems[0]
            path = f"{where}[{first['index']}]" + (f".{first['field']}" if first["field"] else "")
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InvalidInput(f"{path}: {first['message']}{more}", details=problems)


def _describe(exc: fastjsonschema.JsonSchemaValueException, item: Any) -> dict[str, str]:
    """Turn fastjsonschema's ``data.x must be string`` into a field and a message."""
    path = [str(p) for p in (exc.path or [])[1:]]  # drop the leading "data"
    message = exc.message
    prefix = ".".join(["data", *path])
    if message.startswith(prefix + " "):
        message = message[len(prefix) + 1 :]
    if exc.rule == "required" and isinstance(item, dict) and isinstance(exc.rule_definition, list):
        missing = [k for k in exc.rule_definition if k not in item]
        return {"field": ".".join([*path, *missing[:1]]), "message": "Field required"}
    return {"field": ".".join(path), "message": message}


def check_body_size(body: bytes, limit: int) -> None:
    """Raise :class:`PayloadTooLarge` if ``body`` exceeds ``limit`` bytes."""
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; this function accepts {limit}")
