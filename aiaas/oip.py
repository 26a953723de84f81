"""Open Inference Protocol v2 (KServe / Triton REST) ↔ aiaas items.

Each top-level property of the model's input schema is one named tensor whose first axis is
the batch; item ``i`` takes row ``i`` of every tensor. Outputs go back the same way.
"""

from __future__ import annotations

import math
from typing import Any

from aiaas.errors import BadRequest, NotFound
from aiaas.manifest import Manifest

_JSON_TO_OIP = {"string": "BYTES", "number": "FP32", "integer": "INT64", "boolean": "BOOL"}


def items_from_request(payload: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Turn an OIP ``/infer`` request into per-item dicts; returns ``(items, request id)``."""
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("inputs"), list)
        or not payload["inputs"]
    ):
        raise BadRequest(
            'expected an OIP request {"inputs": [{"name", "shape", "datatype", "data"}]}'
        )
    columns: dict[str, list[Any]] = {}
    batch: int | None = None
    for index, tensor in enumerate(payload["inputs"]):
        name, rows = _rows(tensor, index)
        if batch is not None and len(rows) != batch:
            raise BadRequest(
                f"inputs[{index}] ({name}): batch size {len(rows)} differs from {batch}"
            )
        batch = len(rows)
        columns[name] = rows
    assert batch is not None
    items = [{name: rows[i] for name, rows in columns.items()} for i in range(batch)]
    request_id = payload.get("id")
    return items, str(request_id) if request_id is not None else None


def _rows(tensor: Any, index: int) -> tuple[str, list[Any]]:
    if not isinstance(tensor, dict):
        raise BadRequest(f"inputs[{index}] must be an object")
    name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{index}].name must be a non-empty string")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and d >= 0 for d in shape)
    ):
        raise BadRequest(f"inputs[{index}] ({name}): shape must be a non-empty list of sizes")
    if not isinstance(data, list):
        raise BadRequest(f"inputs[{index}] ({name}): data must be a list")
    flat = _flatten(data)
    if len(flat) != math.prod(shape):
        raise BadRequest(f"inputs[{index}] ({name}): {len(flat)} values do not fill shape {shape}")
    row_shape = shape[1:]
    size = math.prod(row_shape)
    return name, [_nest(flat[i * size : (i + 1) * size], row_shape) for i in range(shape[0])]


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    for x in data:
        out.extend(_flatten(x) if isinstance(x, list) else [x])
    return out


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def response(
    outputs: list[dict[str, Any]], model: str, version: str, request_id: str | None
) -> dict[str, Any]:
    """Build an OIP ``/infer`` response from per-item result dicts."""
    tensors = []
    for name in outputs[0] if outputs else ():
        column = [out[name] for out in outputs]
        shape = [len(column), *_shape(column[0])]
        flat = _flatten(column)
        tensors.append({"name": name, "shape": shape, "datatype": _datatype(flat), "data": flat})
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request_id is not None:
        body["id"] = request_id
    return body


def _shape(value: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _datatype(flat: list[Any]) -> str:
    sample = flat[0] if flat else 0.0
    if isinstance(sample, bool):
        return "BOOL"
    if isinstance(sample, int):
        return "INT64"
    if isinstance(sample, float):
        return "FP32"
    return "BYTES"


def tensor_metadata(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """OIP tensor metadata (name, datatype, shape with -1 for the batch) from a JSON Schema."""
    tensors = []
    for name, prop in (schema.get("properties") or {}).items():
        shape = [-1]
        node = prop
        while node.get("type") == "array":
            length = node.get("maxItems") if node.get("maxItems") == node.get("minItems") else None
            shape.append(length if isinstance(length, int) else -1)
            node = node.get("items") or {}
        datatype = _JSON_TO_OIP.get(str(node.get("type")), "BYTES")
        tensors.append({"name": name, "datatype": datatype, "shape": shape})
    return tensors


def model_metadata(manifest: Manifest) -> dict[str, Any]:
    """``GET /v2/models/{name}``: name, versions and tensors, all from the manifest."""
    return {
        "name": manifest.name,
        "versions": [manifest.version],
        "platform": "pytorch",
        "inputs": tensor_metadata(manifest.input_schema),
        "outputs": tensor_metadata(manifest.output_schema),
    }


def check_model(manifest: Manifest, path_params: dict[str, Any]) -> None:
    """Raise :class:`NotFound` unless ``{name}`` (and ``{version}``, if given) are served."""
    name, version = path_params["name"], path_params.get("version")
    if name != manifest.name or (version is not None and version != manifest.version):
        wanted = name + (f" version {version}" if version else "")
        raise NotFound(f"model {wanted!r} is not served here; this serves {manifest.name!r}")
