"""AWS's request validation for the JSON-protocol services the AWS emulator serves.

botocore's client checks only what its ``ParamValidator`` knows (required members, types and
``min``); AWS's front end (Coral) checks every constraint of the service model: string
lengths (``min``/``max``), ``pattern``, ``enum``, list and map lengths and the range of
numbers. moto checks almost none of these. :class:`Validator` checks a request's JSON body
against the installed botocore's service model (no network), one compiled checker per
operation (built at its first call, then reused), and renders the violations as AWS does::

    1 validation error detected: Value 'x' at 'productionVariants.1.member.variantName'
    failed to satisfy constraint: Member must have length less than or equal to 63

The format (a count, each violation as ``Value '<v>' at '<path>' failed to satisfy
constraint: <rule>``, joined with ``; ``; the path's members in lowerCamelCase, list items as
``<list>.<n>.member``, 1-based) is the one quoted in public bug reports (e.g.
aws/amazon-sagemaker-examples#2236, aws-samples/sagemaker-ml-workflow-with-apache-airflow#3,
hashicorp/terraform-provider-aws#36076); CloudWatch Logs answers it as
``InvalidParameterException`` (awslabs/aws-embedded-metrics-java#65), the others as
``ValidationException``.

Gaps from AWS (each assumed, not seen in a primary source):

- the order of the violations, and of several rules broken by one member, is the model's
  member order then length, range, enum, pattern (AWS's order varies between reports);
- values that are not strings or numbers are rendered as Java's ``toString`` would
  (``[a, b]``, ``{k=v}``); a list or map of scalars breaking a rule is reported at the
  list/map as ``Member must satisfy constraint: [...]`` (maps: ``Map keys ...``/``Map value
  ...``), as Coral does for collections;
- a value of the wrong type (a string where a number belongs) is skipped, not answered
  with AWS's ``SerializationException`` (botocore's client refuses it before sending);
- blobs and timestamps are not checked; ``\\p{...}`` classes in patterns are exact for
  ASCII and accept every non-ASCII character (:func:`java_pattern`): a pattern never
  refuses a non-ASCII character AWS would accept, and may accept one AWS would refuse.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable
from functools import cache
from typing import Any

from botocore.model import ServiceModel, Shape
from botocore.session import get_session

__all__ = ["Validator", "error_code", "java_pattern", "message", "validator"]

Errors = list[tuple[str, Any, str]]  # (path, value, rule)
Check = Callable[[Any, str, Errors], None]

# The error code each service answers a violation with (AWS's status: 400).
ERROR_CODES = {"logs": "InvalidParameterException"}
_MISSING = object()


def error_code(service: str) -> str:
    """The code ``service`` answers a constraint violation with."""
    return ERROR_CODES.get(service, "ValidationException")


# -- Java patterns in Python ----------------------------------------------------------------
# Java's POSIX classes are ASCII-only: exact.
_POSIX = {
    "Alnum": "a-zA-Z0-9",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Upper": "A-Z",
    "Lower": "a-z",
    "XDigit": "0-9a-fA-F",
    "Space": r" \t\n\x0b\f\r",
    "Punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "Print": r"\x20-\x7e",
    "Graph": r"\x21-\x7e",
    "Cntrl": r"\x00-\x1f\x7f",
    "ASCII": r"\x00-\x7f",
}
_NON_ASCII = "\\u0080-\\U0010ffff"


@cache
def _ascii_members(category: str) -> str:
    """The ASCII characters of a Unicode general category (``L``, ``Lu``, ``Cc``, ...),
    escaped for a character class."""
    chars = [chr(c) for c in range(128) if unicodedata.category(chr(c)).startswith(category)]
    return "".join(re.escape(c) if c not in "\t\n\r\x0b\x0c" else f"\\x{ord(c):02x}" for c in chars)


def _property(name: str, negated: bool) -> str:
    """Character-class items for Java's ``\\p{name}``, inside ``[...]`` (``negated``: in
    ``[^...]``). Unicode categories are exact for ASCII; every non-ASCII character is taken
    as a member of a positive class and as no member of a negated one: a pattern never
    refuses a non-ASCII character, so it cannot refuse what AWS accepts (it may accept what
    AWS refuses)."""
    name = name.removeprefix("Is")
    if name in _POSIX:
        return _POSIX[name]
    if name in ("Punct", "P"):
        name = "P"
    items = _ascii_members(name)
    return items if negated else items + _NON_ASCII


_SURROGATE_RANGE = re.compile(r"\\uD800\\uDC00-\\uDBFF\\uDFFF", re.IGNORECASE)


def java_pattern(pattern: str) -> re.Pattern[str]:
    """A Java regular expression (botocore's ``pattern``) as Python's, to be fullmatched
    (AWS matches the whole value).

    Translated: ``\\p{X}``/``\\P{X}`` (see :func:`_property`), the UTF-16 surrogate pair
    range ``\\uD800\\uDC00-\\uDBFF\\uDFFF`` (every supplementary character), ``\\w-`` in a
    class (Java: a literal ``-``), and ``$`` followed by a quantifier (Java repeats the
    anchor; Python refuses it: the quantifier is dropped)."""
    text = _SURROGATE_RANGE.sub(r"\\U00010000-\\U0010ffff", pattern)
    out: list[str] = []
    i, depth, negated = 0, 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "pP" and i + 2 < len(text) and text[i + 2] == "{":
                end = text.index("}", i)
                name = text[i + 3 : end]
                if depth:
                    if nxt == "P":  # a complement inside a class: approximated as nothing
                        out.append("")
                    else:
                        out.append(_property(name, negated))
                elif nxt == "P":
                    out.append(f"[^{_property(name, True)}]")
                else:
                    out.append(f"[{_property(name, False)}]")
                i = end + 1
                continue
            if depth and nxt in "wdsWDS" and text[i + 2 : i + 3] == "-":
                out.append(text[i : i + 2] + "\\-")
                i += 3
                continue
            out.append(text[i : i + 2])
            i += 2
            continue
        if ch == "[" and not depth:
            depth, negated = 1, text[i + 1 : i + 2] == "^"
        elif ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        elif ch == "$" and not depth and text[i + 1 : i + 2] == "{":
            out.append("$")
            i = text.index("}", i) + 1
            continue
        out.append(ch)
        i += 1
    return re.compile("".join(out), re.DOTALL)


# -- rendering --------------------------------------------------------------------------------
def _render(value: Any) -> str:
    """A value as AWS's messages show it (Java's toString for collections: assumed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_render(v)}" for k, v in value.items()) + "}"
    return str(value)


def message(errors: Errors) -> str:
    """AWS's text for these violations."""
    count = len(errors)
    parts = [
        (f"Value '{_render(value)}'" if value is not _MISSING else "Value null")
        + f" at '{path}' failed to satisfy constraint: {rule}"
        for path, value, rule in errors
    ]
    plural = "s" if count > 1 else ""
    return f"{count} validation error{plural} detected: " + "; ".join(parts)


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


# -- compiling --------------------------------------------------------------------------------
class _Compiler:
    """Builds one checker per shape of a service model (recursive shapes included)."""

    def __init__(self, model: ServiceModel) -> None:
        self.model = model
        self.checks: dict[str, Check] = {}

    def check(self, shape: Shape) -> Check:
        found = self.checks.get(shape.name)
        if found is not None:
            return found
        slot: list[Check] = []
        # A recursive shape refers to itself through this forwarder until it is built.
        self.checks[shape.name] = lambda v, p, e: slot[0](v, p, e)
        built = self._build(shape)
        slot.append(built)
        self.checks[shape.name] = built
        return built

    def _build(self, shape: Shape) -> Check:
        kind = shape.type_name
        if kind == "structure":
            return self._structure(shape)
        if kind == "list":
            return self._list(shape)
        if kind == "map":
            return self._map(shape)
        rules = self._scalar_rules(shape)
        if not rules:
            return _nothing

        def scalar(value: Any, path: str, errors: Errors) -> None:
            for rule in rules:
                broken = rule(value)
                if broken:
                    errors.append((path, value, broken))

        return scalar

    def _scalar_rules(self, shape: Shape) -> list[Callable[[Any], str | None]]:
        meta, kind = shape.metadata, shape.type_name
        rules: list[Callable[[Any], str | None]] = []
        low, high = meta.get("min"), meta.get("max")
        if kind == "string":
            if high is not None:
                rules.append(
                    lambda v: (
                        None
                        if not isinstance(v, str) or len(v) <= high
                        else f"Member must have length less than or equal to {high}"
                    )
                )
            if low is not None:
                rules.append(
                    lambda v: (
                        None
                        if not isinstance(v, str) or len(v) >= low
                        else f"Member must have length greater than or equal to {low}"
                    )
                )
            enum = meta.get("enum")
            if enum:
                allowed = frozenset(enum)
                text = "Member must satisfy enum value set: [" + ", ".join(enum) + "]"
                rules.append(lambda v: None if not isinstance(v, str) or v in allowed else text)
            pattern = meta.get("pattern")
            if pattern:
                compiled = java_pattern(pattern)
                said = f"Member must satisfy regular expression pattern: {pattern}"
                rules.append(
                    lambda v: None if not isinstance(v, str) or compiled.fullmatch(v) else said
                )
        elif kind in ("integer", "long", "float", "double"):
            number = (int, float)
            if high is not None:
                rules.append(
                    lambda v: (
                        None
                        if not isinstance(v, number) or isinstance(v, bool) or v <= high
                        else f"Member must have value less than or equal to {high}"
                    )
                )
            if low is not None:
                rules.append(
                    lambda v: (
                        None
                        if not isinstance(v, number) or isinstance(v, bool) or v >= low
                        else f"Member must have value greater than or equal to {low}"
                    )
                )
        return rules  # blobs, timestamps, booleans: not checked (gap, see the module)

    def _length_rules(self, shape: Shape) -> list[Callable[[Any], str | None]]:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        rules: list[Callable[[Any], str | None]] = []
        if high is not None:
            rules.append(
                lambda v: (
                    None
                    if len(v) <= high
                    else f"Member must have length less than or equal to {high}"
                )
            )
        if low is not None:
            rules.append(
                lambda v: (
                    None
                    if len(v) >= low
                    else f"Member must have length greater than or equal to {low}"
                )
            )
        return rules

    def _structure(self, shape: Shape) -> Check:
        members = [
            (
                member.serialization.get("name", name),
                _camel(member.serialization.get("name", name)),
                self.check(member),
            )
            for name, member in shape.members.items()  # type: ignore[attr-defined]
        ]
        fields: dict[str, Shape] = shape.members  # type: ignore[attr-defined]
        required = [
            (fields[name].serialization.get("name", name), _camel(name))
            for name in shape.required_members
        ]

        def structure(value: Any, path: str, errors: Errors) -> None:
            if not isinstance(value, dict):
                return
            prefix = f"{path}." if path else ""
            for key, camel in required:
                if value.get(key) is None:
                    errors.append((prefix + camel, _MISSING, "Member must not be null"))
            for key, camel, check in members:
                if key in value and value[key] is not None:
                    check(value[key], prefix + camel, errors)

        return structure

    def _list(self, shape: Shape) -> Check:
        member: Shape = shape.member  # type: ignore[attr-defined]
        lengths = self._length_rules(shape)
        item = self.check(member)
        nested = member.type_name in ("structure", "list", "map")

        def listed(value: Any, path: str, errors: Errors) -> None:
            if not isinstance(value, list):
                return
            for rule in lengths:
                broken = rule(value)
                if broken:
                    errors.append((path, value, broken))
            if nested:
                for n, entry in enumerate(value, 1):
                    item(entry, f"{path}.{n}.member", errors)
                return
            inner: Errors = []
            for entry in value:
                item(entry, path, inner)
            rules = list(dict.fromkeys(rule for _, _, rule in inner))
            if rules:
                errors.append(
                    (path, value, f"Member must satisfy constraint: [{', '.join(rules)}]")
                )

        return listed

    def _map(self, shape: Shape) -> Check:
        key_check = self.check(shape.key)  # type: ignore[attr-defined]
        value_shape: Shape = shape.value  # type: ignore[attr-defined]
        value_check = self.check(value_shape)
        nested = value_shape.type_name in ("structure", "list", "map")
        lengths = self._length_rules(shape)

        def mapped(value: Any, path: str, errors: Errors) -> None:
            if not isinstance(value, dict):
                return
            for rule in lengths:
                broken = rule(value)
                if broken:
                    errors.append((path, value, broken))
            keys: Errors = []
            values: Errors = []
            for k, v in value.items():
                key_check(k, path, keys)
                if nested:
                    value_check(v, f"{path}.{k}", errors)  # the path's form is assumed
                else:
                    value_check(v, path, values)
            for said, found in (("Map keys", keys), ("Map value", values)):
                rules = list(dict.fromkeys(rule for _, _, rule in found))
                if rules:
                    errors.append(
                        (path, value, f"{said} must satisfy constraint: [{', '.join(rules)}]")
                    )

        return mapped


def _nothing(value: Any, path: str, errors: Errors) -> None:
    """A shape with no constraint."""


class Validator:
    """Checks requests to one JSON-protocol service against its botocore model."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.model = get_session().get_service_model(service)
        self._compiler = _Compiler(self.model)
        self._operations: dict[str, Check] = {}
        self._lock = threading.Lock()

    def _operation(self, action: str) -> Check | None:
        with self._lock:
            found = self._operations.get(action)
            if found is None:
                if action not in self.model.operation_names:
                    return None  # not in the model: moto answers it as it does
                shape = self.model.operation_model(action).input_shape
                found = self._compiler.check(shape) if shape is not None else _nothing
                self._operations[action] = found
            return found

    def problem(self, action: str, params: dict[str, Any]) -> str | None:
        """AWS's message for the request's violations, or None when it has none."""
        check = self._operation(action)
        if check is None:
            return None
        errors: Errors = []
        check(params, "", errors)
        return message(errors) if errors else None


_VALIDATORS: dict[str, Validator] = {}
_VALIDATORS_LOCK = threading.Lock()


def validator(service: str) -> Validator:
    """The process's :class:`Validator` for ``service`` (its model is loaded once)."""
    with _VALIDATORS_LOCK:
        found = _VALIDATORS.get(service)
        if found is None:
            found = _VALIDATORS[service] = Validator(service)
        return found
