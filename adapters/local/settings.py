"""The ``local:`` section's pydantic model: what ``aiaas.yaml`` is validated against.

Imported where a section is validated (config load, packaging), never at a function's cold
start: the invoke path reads :class:`adapters.local.LocalSettings`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from adapters.local import DEFAULT_HOST, DEFAULT_READY_TIMEOUT_S


class LocalSection(BaseModel):
    """Settings of the ``local`` provider (``local:`` in ``aiaas.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default=DEFAULT_HOST, pattern=r"^(127\.\d+\.\d+\.\d+|localhost|::1)$")
    ready_timeout_s: float = Field(default=DEFAULT_READY_TIMEOUT_S, gt=0)
