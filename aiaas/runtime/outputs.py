"""What ``predict`` returns, checked against the model's output schema before it is served.

The output schema is the contract the manifest, the OIP metadata and the function tier's
OpenAPI document publish; a result that breaks it (a missing or misspelt key, a wrong
type, a list of the wrong length, NaN or infinity, which JSON cannot carry and orjson
would send as ``null``) is caught here instead of reaching the caller.

One :class:`pydantic.TypeAdapter` call per batch validates every result, plus a walk for
non-finite numbers (pydantic's ``float`` accepts NaN unless the schema forbids it): a few
microseconds per item against milliseconds of forward pass. Validation is pydantic's lax
mode on the JSON-ready values (what :meth:`pydantic.BaseModel.model_dump` with
``mode="json"`` gives), so a value pydantic would coerce (``"1"`` for an integer) passes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any, Literal

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from aiaas.runtime.batcher import BadResult

log = logging.getLogger("aiaas.outputs")

OutputValidation = Literal["strict", "warn"]

#: At most this many distinct problems are remembered (and logged) in ``warn`` mode.
_MAX_WARNED = 256

_NATIVE_LEAVES = (str, int, bool, type(None))


class OutputChecker:
    """Checks a batch's results against ``schema``.

    ``strict``: a bad result is replaced by a :class:`~aiaas.runtime.batcher.BadResult`
    (its caller gets 500 ``model_error`` naming the item and the field). ``warn``: results
    are served as they are and each distinct problem is logged once.
    """

    def __init__(self, schema: type[BaseModel], mode: OutputValidation = "strict") -> None:
        self.schema = schema
        self.mode = mode
        self._adapter: TypeAdapter[list[Any]] = TypeAdapter(list[schema])  # type: ignore[valid-type]
        self._warned: set[tuple[str, str]] = set()

    def check(self, results: list[Any]) -> list[Any]:
        """``results`` with, in ``strict`` mode, each bad one replaced by a ``BadResult``."""
        problems = self.problems(results)
        if not problems:
            return results
        if self.mode == "warn":
            self._warn(problems)
            return results
        checked = list(results)
        for index, (path, message) in problems.items():
            checked[index] = BadResult(path, message)
        return checked

    def problems(self, results: list[Any]) -> dict[int, tuple[str, str]]:
        """The first problem of each bad result, by index: ``(path, message)`` where
        ``path`` is like ``.label`` or ``.probabilities[0]``."""
        found: dict[int, tuple[str, str]] = {}
        exotic: list[int] = []
        for index, result in enumerate(results):
            where = _first_non_finite(result, exotic, index)
            if where is not None:
                path, value = where
                found[index] = (path, f"not a finite number ({value!r}); JSON cannot carry it")
        try:
            self._adapter.validate_python(results)
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                position, *loc = err["loc"]
                index = int(position)
                if index in exotic:  # numpy values and the like: validate what is sent
                    continue
                found.setdefault(index, (_path(loc), err["msg"]))
        for index in exotic:
            if index not in found:
                problem = self._check_as_sent(results[index])
                if problem is not None:
                    found[index] = problem
        return found

    def _check_as_sent(self, result: Any) -> tuple[str, str] | None:
        """Validate ``result`` as its JSON encoding (for values pydantic does not take as
        they are, such as numpy arrays, which the server encodes as lists)."""
        try:
            sent = orjson.loads(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY))
        except TypeError as exc:
            return "", f"cannot be encoded as JSON: {exc}"
        try:
            self._adapter.validate_python([sent])
        except ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            return _path(err["loc"][1:]), err["msg"]
        return None

    def _warn(self, problems: dict[int, tuple[str, str]]) -> None:
        for path, message in problems.values():
            key = (_generic(path), message.split(" (", 1)[0])
            if key in self._warned or len(self._warned) >= _MAX_WARNED:
                continue
            self._warned.add(key)
            log.warning(
                "model output breaks the output schema %s (served anyway: "
                "server.output_validation is warn; logged once): outputs[i]%s: %s",
                self.schema.__name__,
                path,
                message,
            )


def _path(loc: Any) -> str:
    """``("probabilities", 0)`` → ``.probabilities[0]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def _generic(path: str) -> str:
    """``.probabilities[0]`` → ``.probabilities[]``: one warning per field, not per index."""
    out, depth = [], 0
    for ch in path:
        if ch == "[":
            depth += 1
            out.append("[]")
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _first_non_finite(value: Any, exotic: list[int], index: int) -> tuple[str, Any] | None:
    """The path and value of the first NaN or infinity in ``value``, or None. Records
    ``index`` in ``exotic`` if ``value`` holds something other than JSON's own types."""
    for path, leaf in _leaves(value, ""):
        if isinstance(leaf, float):
            if not math.isfinite(leaf):
                return path, leaf
        elif not isinstance(leaf, _NATIVE_LEAVES):
            if not exotic or exotic[-1] != index:
                exotic.append(index)
            tolist = getattr(leaf, "tolist", None)  # numpy arrays and scalars
            if tolist is not None:
                found = _first_non_finite(tolist(), [], index)
                if found is not None:
                    return path + found[0], found[1]
    return None


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every leaf of a JSON-like value with its path; a list of numbers whose sum is
    finite is one leaf (its sum), so a 384-float embedding costs one ``sum``."""
    kind = type(value)
    if kind is dict:
        for key, child in value.items():
            yield from _leaves(child, f"{path}.{key}")
    elif kind is list or kind is tuple:
        try:
            total = sum(value)
            if math.isfinite(total):
                return
        except (TypeError, OverflowError):  # not all numbers, or an integer beyond float
            pass
        for position, child in enumerate(value):
            yield from _leaves(child, f"{path}[{position}]")
    else:
        yield path, value
