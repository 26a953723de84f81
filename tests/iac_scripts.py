"""What the iac tests share: loading one of ``iac/``'s scripts as a module, and a template
value written in a doc's terms (its ``Fn::Sub`` variables as the doc's placeholders)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def load_script(path: Path, name: str | None = None) -> Any:
    """``path`` (one of iac/'s scripts: iac/ is scripts, not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_documented(value: Any, placeholders: Mapping[str, str]) -> Any:
    """``value`` with every ``Fn::Sub`` string as text, its variables replaced by
    ``placeholders`` (variable to the doc's placeholder), through dicts and lists."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        text = value["Fn::Sub"]
        for sub, placeholder in placeholders.items():
            text = text.replace(sub, placeholder)
        return text
    if isinstance(value, dict):
        return {k: as_documented(v, placeholders) for k, v in value.items()}
    if isinstance(value, list):
        return [as_documented(v, placeholders) for v in value]
    return value
