"""Open Inference Protocol v2 (KServe / Triton REST) ↔ aiaas items.

Each top-level property of the model's input schema is one named tensor whose first axis is
the batch; item ``i`` takes row ``i`` of every tensor. Outputs go back the same way.

Both HTTP surfaces (the model server and the function app) call :func:`parse_infer` and
:func:`infer_response`, so a request gets the same answer from either. Tensor data comes as
JSON (``"data"``) or, with the *binary tensor data* extension that ``tritonclient`` and
KServe's client use by default, as raw little-endian bytes after a JSON header whose length
is the ``Inference-Header-Content-Length`` header.

Every step is bounded by what the request itself carries: a tensor's shape is checked
against the item limit, the data's nesting depth and the data's length before anything is
expanded, so a small request cannot make large work or a large answer.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import orjson
from starlette.responses import Response

from aiaas.errors import BadRequest, NotFound, PayloadTooLarge
from aiaas.http import header_int
from aiaas.packaged import ServedManifest as Manifest
from aiaas.protocol import check_json_content_type, parse_json, unencodable

#: The header that gives the JSON header's length when binary tensor data follows it.
HEADER_LENGTH = "inference-header-content-length"
#: The OIP extensions this implementation supports (``GET /v2`` advertises them).
EXTENSIONS = ["binary_tensor_data"]
#: Most dimensions a tensor may have (numpy's own limit).
MAX_DIMS = 64
_BINARY = "application/octet-stream"
_JSON_TO_OIP = {"string": "BYTES", "number": "FP32", "integer": "INT64", "boolean": "BOOL"}
_U32 = struct.Struct("<I")


# -- datatypes -------------------------------------------------------------------------


@dataclass(frozen=True)
class DataType:
    """One OIP datatype: its ``struct`` code and size in the binary extension, and the
    Python types (and integer range) its JSON data may hold."""

    name: str
    code: str  # struct format character; "" for BYTES
    size: int  # bytes per element; 0 for BYTES (length-prefixed elements)
    kinds: frozenset[type]
    low: int | None = None
    high: int | None = None

    @property
    def expects(self) -> str:
        """What JSON data of this type holds, for error messages."""
        if self.name == "BYTES":
            return "strings"
        if self.name == "BOOL":
            return "true/false"
        if self.low is None:
            return "numbers"
        return f"integers from {self.low} to {self.high}"


def _ints(name: str, code: str, bits: int, signed: bool) -> DataType:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return DataType(name, code, bits // 8, frozenset({int}), low, high)


_NUMBERS = frozenset({int, float})
DATATYPES: dict[str, DataType] = {
    t.name: t
    for t in (
        DataType("BOOL", "?", 1, frozenset({bool})),
        _ints("UINT8", "B", 8, False),
        _ints("UINT16", "H", 16, False),
        _ints("UINT32", "I", 32, False),
        _ints("UINT64", "Q", 64, False),
        _ints("INT8", "b", 8, True),
        _ints("INT16", "h", 16, True),
        _ints("INT32", "i", 32, True),
        _ints("INT64", "q", 64, True),
        DataType("FP16", "e", 2, _NUMBERS),
        DataType("FP32", "f", 4, _NUMBERS),
        DataType("FP64", "d", 8, _NUMBERS),
        DataType("BYTES", "", 0, frozenset({str})),
    )
}


# -- requests --------------------------------------------------------------------------


@dataclass
class InferRequest:
    """A parsed ``/infer`` request: the items, and how the answer is to be written."""

    items: list[dict[str, Any]]
    id: str | None = None
    #: Requested outputs in order (``None``: every output the model returns).
    outputs: list[str] | None = None
    #: Outputs to return as binary tensor data.
    binary: set[str] = field(default_factory=set)
    #: Whether outputs not named in ``outputs`` parameters are returned as binary.
    binary_default: bool = False


def parse_infer(
    body: bytes,
    *,
    header_length: str | None = None,
    content_type: str | None = None,
    max_items: int,
    output_names: Collection[str] = (),
    max_forward_bytes: int | None = None,
) -> InferRequest:
    """Turn an OIP ``/infer`` request body into per-item dicts.

    ``header_length`` is the ``Inference-Header-Content-Length`` header (binary tensor data
    follows the JSON header when it is given); ``content_type`` is checked to be JSON when
    it is not. ``max_items`` bounds the batch (checked on each tensor's shape before its
    data is read); ``output_names``, when known, are the outputs a request may ask for.
    ``max_forward_bytes``: the most the items may take as the JSON forwarded on (the
    provider's request limit); binary tensors are refused (413) before they are decoded when
    their JSON could not fit (:func:`_least_json`), so an oversized binary request never
    grows into lists of Python numbers.
    Raises :class:`BadRequest` (400), :class:`PayloadTooLarge` (413, over ``max_items`` or
    ``max_forward_bytes``) or :class:`~aiaas.errors.UnsupportedMediaType` (415), each naming
    the problem.
    """
    binary: memoryview | None = None
    if header_length is None:
        check_json_content_type(content_type)
        payload = parse_json(body)
    else:
        length = header_int(header_length, "Inference-Header-Content-Length")
        assert length is not None
        if length > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length {length} is not a length within"
                f" the {len(body)}-byte body"
            )
        payload = parse_json(body[:length])
        binary = memoryview(body)[length:]
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("inputs"), list)
        or not payload["inputs"]
    ):
        raise BadRequest(
            'expected an OIP request {"inputs": [{"name", "shape", "datatype", "data"}]}'
        )
    request = InferRequest(items=[], id=_request_id(payload.get("id")))
    parameters = _parameters(payload, "request")
    request.binary_default = _flag(parameters, "binary_data_output", "request parameters")
    _requested_outputs(payload.get("outputs"), request, output_names)

    columns: dict[str, list[Any]] = {}
    batch: int | None = None
    offset = 0  # into the binary data: inputs take their bytes in order
    least = len(body) - (len(binary) if binary is not None else 0)  # JSON forwarded, at least
    for index, tensor in enumerate(payload["inputs"]):
        if not isinstance(tensor, dict):
            raise BadRequest(f"inputs[{index}] must be an object")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"inputs[{index}].name must be a non-empty string")
        label = f"inputs[{index}] ({_brief(name)})"
        if name in columns:
            raise BadRequest(f"{label}: a tensor of this name came before")
        dtype = _datatype_of(tensor.get("datatype"), label)
        shape = _check_shape(tensor.get("shape"), label, max_items)
        if batch is not None and shape[0] != batch:
            raise BadRequest(f"{label}: batch size {shape[0]} differs from {batch}")
        batch = shape[0]
        size = _binary_size(tensor, label)
        if size is None:
            flat = _values_from_json(tensor.get("data"), shape, dtype, label)
        else:
            if binary is None or offset + size > len(binary):
                raise BadRequest(
                    f"{label}: binary_data_size {size} runs past the binary data"
                    f" ({0 if binary is None else len(binary) - offset} bytes left;"
                    " the JSON header's length is the Inference-Header-Content-Length header)"
                )
            if max_forward_bytes is not None:
                least += _least_json(dtype, size)
                if least > max_forward_bytes:
                    raise PayloadTooLarge(
                        f"{label}: the binary tensors take at least {least} bytes as JSON;"
                        f" the deployment accepts {max_forward_bytes}"
                    )
            flat = _values_from_bytes(binary[offset : offset + size], shape, dtype, label)
            offset += size
        columns[name] = _rows(flat, shape)
    if binary is not None and offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes after the JSON header belong to no input"
            " (the inputs' binary_data_size add up to less)"
        )
    assert batch is not None
    request.items = [{name: rows[i] for name, rows in columns.items()} for i in range(batch)]
    return request


def _brief(value: Any, limit: int = 60) -> str:
    """A value from the request as error messages show it: short, and flat (never ``repr``
    of request data, which recurses as deep as the data is nested)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        parts = [_scalar(v) for v in value[:8]] + (["…"] if len(value) > 8 else [])
        text = "[" + ", ".join(parts) + "]"
    else:
        text = _scalar(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _scalar(value: Any) -> str:
    if isinstance(value, list):
        return "[…]"
    if isinstance(value, dict):
        return "{…}"
    if isinstance(value, str):
        return repr(value[:20])
    return repr(value)  # a number, true/false or null: JSON has nothing else


def _request_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if type(value) is int:
        return str(value)
    raise BadRequest('"id" must be a string')


def _parameters(holder: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: parameters must be an object")
    if any(key.startswith("shared_memory") for key in parameters):
        raise BadRequest(f"{where}: shared memory is not supported; send the data in the body")
    return parameters


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: {key} must be true or false")
    return value


def _requested_outputs(value: Any, request: InferRequest, known: Collection[str]) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise BadRequest('"outputs" must be a list of {"name", "parameters"}')
    request.outputs = []
    seen: set[str] = set()
    for index, output in enumerate(value):
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise BadRequest(f"outputs[{index}] must be an object with a name")
        label = f"outputs[{index}] ({_brief(name)})"
        if known and name not in known:
            raise BadRequest(f"{label}: the model has no such output; it has {sorted(known)}")
        if name in seen:  # each would be encoded again: a small request, huge answer
            raise BadRequest(f"{label}: this output was asked for before; name each output once")
        seen.add(name)
        parameters = _parameters(output, label)
        if parameters.get("classification"):
            raise BadRequest(f"{label}: the classification extension is not supported")
        binary = request.binary_default  # a request-wide default, each output may override
        if "binary_data" in parameters:
            binary = _flag(parameters, "binary_data", label)
        if binary:
            request.binary.add(name)
        request.outputs.append(name)


def _datatype_of(value: Any, label: str) -> DataType:
    dtype = DATATYPES.get(value) if isinstance(value, str) else None
    if dtype is None:
        given = "is missing" if value is None else f"{_brief(value)!r} is not an OIP datatype"
        raise BadRequest(f"{label}: datatype {given}; use one of {', '.join(DATATYPES)}")
    return dtype


def _check_shape(shape: Any, label: str, max_items: int) -> list[int]:
    """The shape as a list of sizes: bounded in rank, batch and the sub-tensors it spans.

    A shape alone can describe far more than the request carries (``[1000000, 0]`` is a
    million empty rows from 89 bytes), so it is checked before anything is expanded.
    """
    if (
        type(shape) is not list
        or not shape
        or len(shape) > MAX_DIMS
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise BadRequest(
            f"{label}: shape must be a list of 1 to {MAX_DIMS} sizes (non-negative"
            f" integers), not {_brief(shape)}"
        )
    batch = shape[0]
    if batch == 0:
        raise BadRequest(f"{label}: the batch (shape[0]) is empty; send at least one item")
    if batch > max_items:
        raise PayloadTooLarge(
            f"{label}: shape {_brief(shape)} is a batch of {batch} items; a request may"
            f" carry at most {max_items}"
        )
    # Rows are nested lists: sum over the leading axes of how many lists each level holds.
    # Without zero-size axes that is at most (rank - 1) lists per value sent; a zero-size
    # axis after large ones would make many empty lists out of no data at all.
    budget = MAX_DIMS * (math.prod(shape) + batch)
    lists = 0
    count = 1
    for size in shape[:-1]:
        count *= size
        lists += count
        if lists > budget:
            raise BadRequest(
                f"{label}: shape {_brief(shape)} spans more nested (empty) lists than"
                " the data it can hold; an axis after a zero-size one must be small"
            )
    return shape


def _binary_size(tensor: dict[str, Any], label: str) -> int | None:
    size = _parameters(tensor, label).get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise BadRequest(f"{label}: binary_data_size must be a byte count")
    if "data" in tensor:
        raise BadRequest(f"{label}: has both data and binary_data_size; send one")
    return size


def _values_from_json(data: Any, shape: list[int], dtype: DataType, label: str) -> list[Any]:
    """``data`` (flat, or nested no deeper than the shape's rank) as a flat, checked list."""
    if type(data) is not list:
        raise BadRequest(f"{label}: data must be a list")
    level, kinds = data, set(map(type, data))
    for _ in range(len(shape) - 1):  # flattened one level at a time: no recursion
        if list not in kinds:
            break
        if len(kinds) > 1:
            raise BadRequest(f"{label}: data mixes nested lists and values at one level")
        level = list(chain.from_iterable(level))
        kinds = set(map(type, level))
    if list in kinds:
        raise BadRequest(
            f"{label}: data is nested deeper than its shape {_brief(shape)}"
            f" ({len(shape)} dimension{'s' if len(shape) > 1 else ''})"
        )
    if len(level) != math.prod(shape):
        raise BadRequest(f"{label}: {len(level)} values do not fill shape {_brief(shape)}")
    if not kinds <= dtype.kinds:
        wrong = next(v for v in level if type(v) not in dtype.kinds)
        raise BadRequest(
            f"{label}: {dtype.name} data must hold {dtype.expects}, not {_json_kind(wrong)}"
        )
    if dtype.low is not None and dtype.high is not None and level:
        low, high = min(level), max(level)
        if low < dtype.low or high > dtype.high:
            bad = low if low < dtype.low else high
            raise BadRequest(f"{label}: {bad} does not fit {dtype.name} ({dtype.expects})")
    return level


def _json_kind(value: Any) -> str:
    for kind, name in ((bool, "true/false"), (str, "a string"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    if value is None:
        return "null"
    return "a non-integer number" if isinstance(value, float) else f"{type(value).__name__}"


def _least_json(dtype: DataType, size: int) -> int:
    """The fewest bytes ``size`` bytes of binary ``dtype`` data take as the JSON forwarded
    (orjson): a float at least ``0.0,``, an integer ``0,``, a boolean ``true,``, a string
    ``"",`` (from at least its 4-byte length)."""
    if dtype.name == "BYTES":
        return 3 * (size // 4)
    per = 5 if dtype.name == "BOOL" else 4 if float in dtype.kinds else 2
    return per * (size // dtype.size)


def _values_from_bytes(raw: memoryview, shape: list[int], dtype: DataType, label: str) -> list[Any]:
    """Binary tensor data (little-endian; BYTES elements 4-byte-length-prefixed) as a list."""
    count = math.prod(shape)
    if dtype.name == "BYTES":
        return _strings_from_bytes(raw, count, label)
    if len(raw) != count * dtype.size:
        raise BadRequest(
            f"{label}: binary_data_size is {len(raw)} bytes; shape {_brief(shape)} of"
            f" {dtype.name} takes {count * dtype.size}"
        )
    values = list(struct.unpack(f"<{count}{dtype.code}", raw))
    if dtype.kinds is _NUMBERS and values:
        total = sum(values)  # inf or nan unless every value is finite (or the sum overflows)
        if total - total != 0 and not all(map(math.isfinite, values)):
            raise BadRequest(f"{label}: holds NaN or infinity, which JSON cannot carry")
    return values


def _strings_from_bytes(raw: memoryview, count: int, label: str) -> list[str]:
    out: list[str] = []
    offset, end = 0, len(raw)
    while offset < end:  # each element takes at least 4 bytes: bounded by the data sent
        if len(out) == count or offset + 4 > end:
            break
        (length,) = _U32.unpack_from(raw, offset)
        start, offset = offset + 4, offset + 4 + length
        if offset > end:
            raise BadRequest(f"{label}: BYTES element {len(out)} runs past its binary data")
        try:
            out.append(str(raw[start:offset], "utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"{label}: BYTES element {len(out)} is not UTF-8 text") from None
    if len(out) != count or offset != end:
        raise BadRequest(
            f"{label}: binary data of {end} bytes does not hold exactly {count} BYTES"
            " elements (each a 4-byte little-endian length, then that many bytes)"
        )
    return out


def _rows(flat: list[Any], shape: list[int]) -> list[Any]:
    """Row ``i`` of the tensor (nested as its shape says) for each ``i`` of the batch."""
    if len(shape) == 1:
        return flat
    row_shape = shape[1:]
    size = math.prod(row_shape)
    return [_nest(flat[i * size : (i + 1) * size], row_shape) for i in range(shape[0])]


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) == 1:  # recursion depth < MAX_DIMS
        return flat
    step = math.prod(shape[1:])
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def forward_body(items: list[dict[str, Any]]) -> bytes:
    """The simple-protocol body ``{"inputs": items}`` for items :func:`parse_infer` made."""
    try:
        return orjson.dumps({"inputs": items})
    except orjson.JSONEncodeError as exc:  # not expected: parsed data is flat and typed
        raise BadRequest(f"inputs cannot be forwarded as JSON: {exc}") from None


# -- responses -------------------------------------------------------------------------


def infer_response(request: InferRequest, outputs: list[Any], model: str, version: str) -> Response:
    """The ``/infer`` answer for per-item result dicts: JSON, or a JSON header followed by
    binary tensor data (with ``Inference-Header-Content-Length``) when any output was asked
    for as binary.

    Results are JSON-native values (output checking turns numpy values into what the
    simple protocol would send); one that still cannot be encoded is a
    :class:`~aiaas.errors.ModelError` naming it, not a 500 with a traceback.
    """
    try:
        return _infer_response(request, outputs, model, version)
    except (TypeError, OverflowError, struct.error) as exc:  # JSONEncodeError is a TypeError
        raise unencodable(outputs, exc) from None


def _infer_response(
    request: InferRequest, outputs: list[Any], model: str, version: str
) -> Response:
    names = request.outputs
    if names is None:
        first = outputs[0] if outputs else {}
        names = list(first) if isinstance(first, dict) else []
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        try:
            column = [out[name] for out in outputs]
        except (KeyError, TypeError):
            raise BadRequest(f"output {_brief(name)!r} is not in the model's answer") from None
        shape, datatype, flat = _output_tensor(column)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if name in request.binary or (request.outputs is None and request.binary_default):
            raw, tensor["datatype"] = _encode(flat, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = flat
        tensors.append(tensor)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request.id is not None:
        body["id"] = request.id
    header = orjson.dumps(body)
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *blobs]),
        media_type=_BINARY,
        headers={HEADER_LENGTH: str(len(header))},
    )


def _output_tensor(column: list[Any]) -> tuple[list[int], str, list[Any]]:
    """Shape, datatype and flat data of one output across the batch. Values that do not
    form a tensor (ragged lists, objects, nulls) become BYTES: one JSON text per item."""
    shape = [len(column)]
    node = column[0] if column else None
    while type(node) is list:
        shape.append(len(node))
        node = node[0] if node else None
    level, kinds = column, set(map(type, column))
    for _ in range(len(shape) - 1):
        if kinds != {list}:
            break
        level = list(chain.from_iterable(level))
        kinds = set(map(type, level))
    if list not in kinds and len(level) == math.prod(shape):
        datatype = _datatype(level, kinds)
        if datatype != "BYTES" or kinds <= {str}:
            return shape, datatype, level
    return (
        [len(column)],
        "BYTES",
        [v if type(v) is str else orjson.dumps(v).decode() for v in column],
    )


def _datatype(flat: list[Any], kinds: set[type]) -> str:
    if not kinds or kinds == {float} or kinds == {int, float}:
        return "FP32"
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int}:
        return "INT64" if min(flat) >= -(2**63) and max(flat) < 2**63 else "FP64"
    return "BYTES"


def _encode(flat: list[Any], datatype: str) -> tuple[bytes, str]:
    """Binary tensor data for ``flat``, and its datatype (FP32 widens to FP64 if needed)."""
    if datatype == "BYTES":
        parts = []
        for value in flat:
            data = str(value).encode()
            parts += [_U32.pack(len(data)), data]
        return b"".join(parts), datatype
    code = DATATYPES[datatype].code
    try:
        return struct.pack(f"<{len(flat)}{code}", *flat), datatype
    except OverflowError:  # a float beyond FP32's range
        return struct.pack(f"<{len(flat)}d", *flat), "FP64"


# -- metadata --------------------------------------------------------------------------


def server_metadata() -> dict[str, Any]:
    """``GET /v2``: the server's name, version and the OIP extensions it supports."""
    from aiaas import __version__

    return {"name": "aiaas", "version": __version__, "extensions": list(EXTENSIONS)}


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


def output_names(manifest: Manifest) -> list[str]:
    """The names of the model's output tensors (the output schema's properties)."""
    return list(manifest.output_schema.get("properties") or ())


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
