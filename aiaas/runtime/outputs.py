"""What ``predict`` returns, checked against the model's output schema before it is served.

The output schema is the contract the manifest, the OIP metadata and the function tier's
OpenAPI document publish; a result that breaks it (a missing or misspelt key, a wrong
type, a list of the wrong length, NaN or infinity, which JSON cannot carry and orjson
would send as ``null``) is caught here instead of reaching the caller.

One :class:`pydantic.TypeAdapter` call per batch validates every result, plus a walk for
non-finite numbers (pydantic's ``float`` accepts NaN unless the schema forbids it): a few
microseconds per item against milliseconds of forward pass. Validation is pydantic's
strict mode on the JSON-ready values (what :meth:`pydantic.BaseModel.model_dump` with
``mode="json", by_alias=True`` gives), so ``"1"`` or ``true`` for an integer is a bad
result (an integer for a float is fine, as in JSON Schema). A result holding other values
(numpy arrays and scalars, tuples) is checked as its JSON encoding and replaced by it, so
every encoder sends the value that was checked; values JSON cannot carry (NaN, integers
beyond 64 bits, keys that are not strings) are bad results in either mode.
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
#: The integers orjson can encode (a signed or unsigned 64-bit one).
_INT_LOW, _INT_HIGH = -(2**63), 2**64 - 1
_CANNOT_ENCODE = "cannot be encoded as JSON"
_UNSENDABLE = object()


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
        """``results`` with, in ``strict`` mode, each bad one replaced by a ``BadResult``.

        A result holding values JSON has no type of its own for (numpy arrays and scalars,
        tuples) is replaced, in either mode, by its JSON encoding decoded again: the value
        that was checked is the value every encoder (simple, OIP JSON or binary) sees.
        """
        problems, sent = self._inspect(results)
        if not problems and not sent:
            return results
        checked = list(results)
        for index, value in sent.items():
            checked[index] = value
        if self.mode == "warn":
            self._warn(problems)
            unencodable = {i: p for i, p in problems.items() if i not in sent and _unsendable(p)}
        else:
            unencodable = problems
        for index, (path, message) in unencodable.items():
            checked[index] = BadResult(path, message)
        return checked

    def problems(self, results: list[Any]) -> dict[int, tuple[str, str]]:
        """The first problem of each bad result, by index: ``(path, message)`` where
        ``path`` is like ``.label`` or ``.probabilities[0]``."""
        return self._inspect(results)[0]

    def _inspect(self, results: list[Any]) -> tuple[dict[int, tuple[str, str]], dict[int, Any]]:
        """The problems by index, and the JSON round-tripped value of each "exotic" result
        (one holding something other than JSON's own types) that can be encoded."""
        found: dict[int, tuple[str, str]] = {}
        exotic: list[int] = []
        for index, result in enumerate(results):
            first = _first_non_finite(result, exotic, index)
            if first is not None:
                found[index] = first
        try:
            # strict: "0.5" for a float or true for an integer would break the published
            # schema; strict still takes an integer for a float, as JSON Schema does
            self._adapter.validate_python(results, strict=True)
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                position, *loc = err["loc"]
                index = int(position)
                if index in exotic:  # numpy values and the like: validate what is sent
                    continue
                found.setdefault(index, (_path(loc), err["msg"]))
        sent: dict[int, Any] = {}
        for index in exotic:
            value, problem = self._check_as_sent(results[index])
            if value is not _UNSENDABLE:
                sent[index] = value
            if problem is not None:
                found.setdefault(index, problem)
        return found, sent

    def _check_as_sent(self, result: Any) -> tuple[Any, tuple[str, str] | None]:
        """``result`` as its JSON encoding decoded again (numpy arrays become lists, numpy
        scalars numbers, tuples lists), and its problem against the schema, if any."""
        try:
            sent = orjson.loads(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY))
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            return _UNSENDABLE, ("", f"{_CANNOT_ENCODE}: {exc}")
        try:
            self._adapter.validate_python([sent], strict=True)
        except ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            return sent, (_path(err["loc"][1:]), err["msg"])
        return sent, None

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


def _first_non_finite(value: Any, exotic: list[int], index: int) -> tuple[str, str] | None:
    """The path of the first leaf of ``value`` that JSON cannot carry (NaN, infinity, an
    integer beyond 64 bits, a key that is not a string) and what is wrong with it, or None.
    Records ``index`` in ``exotic`` if ``value`` holds something other than JSON's own
    types (a numpy value, a tuple), to be checked as it will be sent."""
    for path, leaf in _leaves(value, ""):
        kind = type(leaf)
        if kind is float:
            if not math.isfinite(leaf):
                return path, f"not a finite number ({leaf!r}); JSON cannot carry it"
        elif kind is int:
            if not _INT_LOW <= leaf <= _INT_HIGH:
                return path, f"{_CANNOT_ENCODE}: an integer beyond 64 bits"
        elif kind is _Key:
            return path, f"{_CANNOT_ENCODE}: a key that is not a string ({leaf.key!r})"
        elif not isinstance(leaf, _NATIVE_LEAVES):
            if not exotic or exotic[-1] != index:
                exotic.append(index)
            tolist = getattr(leaf, "tolist", None)  # numpy arrays and scalars
            inner = list(leaf) if kind is tuple else tolist() if tolist is not None else None
            if inner is not None:
                found = _first_non_finite(inner, [], index)
                if found is not None:
                    return path + found[0], found[1]
    return None


class _Key:
    """A dict key that is not a string, as :func:`_leaves` reports it."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key


def _unsendable(problem: tuple[str, str]) -> bool:
    """Whether ``problem`` means the result cannot be encoded at all (not even in warn)."""
    message = problem[1]
    return message.startswith(_CANNOT_ENCODE) or message.startswith("not a finite")


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every leaf of a JSON-like value with its path (a dict key that is not a string is a
    :class:`_Key` leaf); a list of plain numbers whose sum is finite (and, for integers,
    whose extremes fit 64 bits) is no leaf at all, so a 384-float embedding costs one
    ``sum``. A sum that is not a plain ``float`` or ``int`` (numpy scalars in the list)
    walks the list, so that its items are found to be exotic; a tuple is a leaf."""
    kind = type(value)
    if kind is dict:
        for key, child in value.items():
            if type(key) is not str:
                yield f"{path}.{key}", _Key(key)
            yield from _leaves(child, f"{path}.{key}")
    elif kind is list:
        try:
            total = sum(value)
            kind = type(total)
            if kind is float:
                if math.isfinite(total):
                    return
            elif kind is int and (
                not value or (min(value) >= _INT_LOW and max(value) <= _INT_HIGH)
            ):
                return
        # not all numbers, an integer beyond float, or numpy arrays that cannot broadcast
        except (TypeError, OverflowError, ValueError):
            pass
        for position, child in enumerate(value):
            yield from _leaves(child, f"{path}[{position}]")
    else:
        yield path, value
