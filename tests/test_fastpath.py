"""Which requests the model server's plain-ASGI fast path takes (the rest go to Starlette)."""

from __future__ import annotations

from typing import Any

import pytest

from aiaas.runtime.fastpath import simple_route


def _scope(method: str, path: str, root_path: str = "", kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "method": method, "path": path, "root_path": root_path}


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/invocations", "/invocations"),
        ("/score", "/score"),
        ("/", "/"),
        ("/api/predict/my-svc", "/api/predict/{service}"),
    ],
)
def test_simple_protocol_posts_take_the_fast_path(path: str, route: str) -> None:
    assert simple_route(_scope("POST", path)) == route


@pytest.mark.parametrize(
    "scope",
    [
        _scope("GET", "/invocations"),  # Starlette answers 405
        _scope("GET", "/"),  # Azure liveness
        _scope("POST", "/v2/models/m/infer"),
        _scope("POST", "/api/predict/"),
        _scope("POST", "/api/predict/a/b"),
        _scope("POST", "/invocations/"),
        _scope("POST", "/ping"),
        {"type": "lifespan"},
    ],
)
def test_everything_else_goes_to_starlette(scope: dict[str, Any]) -> None:
    assert simple_route(scope) is None


def test_root_path_is_stripped_like_starlette_does() -> None:
    assert simple_route(_scope("POST", "/prefix/invocations", "/prefix")) == "/invocations"
    assert simple_route(_scope("POST", "/prefix", "/prefix")) == "/"
