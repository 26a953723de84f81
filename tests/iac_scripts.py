"""What the iac tests share: loading one of ``iac/``'s scripts as a module, a template value
written in a doc's terms (its ``Fn::Sub`` variables as the doc's placeholders), and the
environment for running its checkers with a home of their own."""

from __future__ import annotations

import importlib.util
import os
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


def own_home(tmp_path: Path) -> dict[str, str]:
    """This process's environment (the network guard's included) with a home and a cache
    folder of its own under ``tmp_path/home``, for one of iac/'s checkers: checkov keeps its
    update check's answer in the user's cache folder for an hour, so with the machine's home
    it asked pypi.org (which must fail the test) only in the first run an hour after the last."""
    home = tmp_path / "home"
    return {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}


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
