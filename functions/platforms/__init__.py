"""One record per function platform: every fact about a platform in one place, next to its
entrypoint (``functions/aws_lambda.py``, ``azure_functions.py``, ``alibaba_fc.py``; ``aiaas
function serve`` for ``local``).

A record says what the platform accepts and returns (limits, how the answer's body is
counted), how its server behaves (whether it drains an unread upload after a 413), what it
costs, and what goes in its zip. The function app, the bootstrap, the cost estimate and
``aiaas function package`` read the record; none of them keeps a table keyed by platform name.

Each record lives in its own small module (``functions.platforms.aws`` ...), loaded by
:func:`platform` when a function starts: a cold start reads one record, and nothing heavier
than :mod:`aiaas.pricing` comes with it.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from aiaas.errors import ConfigError
from aiaas.pricing import FunctionPrices

PLATFORMS = ("aws", "azure", "alibaba", "local")
"""Every platform that has a record, in the order the docs list them."""


# Records are NamedTuples, not dataclasses: a cold start defines them, and a NamedTuple class
# costs a fifth of a frozen dataclass's (0.13 against 0.63 ms each, measured here).


class Packaging(NamedTuple):
    """What ``aiaas function package`` puts in the platform's zip, and what it prints."""

    entrypoint: str
    """The module the platform runs (``functions.aws_lambda``); its imports decide the code
    the zip carries."""
    requirements: tuple[str, ...]
    """Pip requirements of the entrypoint itself (Mangum, azure-functions, uvicorn)."""
    site_packages: str
    """Where dependencies go inside the zip ("" is its root)."""
    max_zip_bytes: int
    limit_source: str
    """Where :attr:`max_zip_bytes` comes from (quoted when a zip is refused)."""
    handler: str
    """What the platform is told to run; ``{python}`` and ``{arch}`` are filled in."""
    templates: tuple[str, ...] = ()
    """Files of ``templates/functions/`` copied to the zip's root (by their file name)."""


class Platform(NamedTuple):
    """The facts of one function platform."""

    name: str
    max_request_bytes: int
    """The largest request body the platform hands the function."""
    max_response_bytes: int
    """The largest answer it returns, counted as :attr:`escaped_response` says."""
    escaped_response: bool
    """The answer travels as a JSON string in the runtime's envelope (text escaped, anything
    else base64), and the limit counts that (:func:`functions.edge.response_size`)."""
    close_after_413: bool
    """Served by uvicorn itself: after a 413 the connection is closed, so the rest of an
    oversized upload is neither drained nor sent."""
    prices: FunctionPrices
    metrics_in_logs: bool = False
    """Usage lines also carry CloudWatch's embedded metric format (Lambda's logs become
    metrics with no agent)."""
    package: Packaging | None = None
    """None: nothing to package (the function runs on this machine)."""


def platform(name: str) -> Platform:
    """The record of platform ``name``; a :class:`ConfigError` naming the known ones."""
    if name not in PLATFORMS:
        raise ConfigError(f"platform {name!r}: use one of {', '.join(PLATFORMS)}")
    record = importlib.import_module(f"{__name__}.{name}").PLATFORM
    if not isinstance(record, Platform):  # a record module that lost its PLATFORM
        raise ConfigError(f"{__name__}.{name}.PLATFORM is not a Platform record")
    return record


def packaged_platforms() -> list[Platform]:
    """The platforms ``aiaas function package`` builds a zip for."""
    return [p for p in map(platform, PLATFORMS) if p.package is not None]
