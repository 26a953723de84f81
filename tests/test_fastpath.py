"""Which requests the model server's plain-ASGI fast path takes (the rest go to Starlette), and
that the fast path, the Starlette app and the data plane below both form no import cycle."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from starlette.types import Message, Scope, Send

from aiaas import oip
from aiaas.bundle import open_bundle
from aiaas.http import JSON
from aiaas.runtime.app import create_app, to_response
from aiaas.runtime.dataplane import CLIENT_CLOSED_REQUEST, Answer
from aiaas.runtime.fastpath import send_answer, simple_route
from aiaas.runtime.metrics import CONTENT_TYPE
from aiaas.runtime.runner import ModelRunner

if TYPE_CHECKING:
    from aiaas.bundle import BuiltBundle


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


RUNTIME = Path(__file__).resolve().parent.parent / "aiaas" / "runtime"
TRANSPORTS = ("app", "fastpath", "dataplane")


def _runtime_imports(module: str) -> set[str]:
    """The ``aiaas.runtime`` transports and data plane that ``module`` imports, anywhere in
    the file (under ``TYPE_CHECKING`` too: a cycle hidden there is still a cycle)."""
    tree = ast.parse((RUNTIME / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.rsplit(".", 1)[-1] for n in names if n.startswith("aiaas.runtime.")}
    return found & set(TRANSPORTS)


def test_the_data_plane_is_below_both_transports_and_they_form_no_cycle() -> None:
    graph = {module: _runtime_imports(module) - {module} for module in TRANSPORTS}
    assert graph["dataplane"] == set(), "the data plane must import neither transport"
    assert "app" not in graph["fastpath"], "the fast path must not import the Starlette app"
    assert "dataplane" in graph["fastpath"] and "dataplane" in graph["app"]
    for module, imports in graph.items():  # no module reaches itself
        seen, todo = set(), list(imports)
        while todo:
            current = todo.pop()
            assert current != module, f"import cycle through aiaas.runtime.{module}"
            if current not in seen:
                seen.add(current)
                todo += graph[current]


def test_starlette_routes_the_simple_paths_to_the_fast_paths_own_endpoints(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    """One simple-protocol handler: Starlette's routes for those paths (kept so that another
    method gets 405 with the right Allow) are the very endpoints the fast path calls."""
    bundle_dir, manifest = open_bundle(probe_bundle.path, cache_dir=tmp_path)
    app = create_app(ModelRunner(bundle_dir, manifest))
    starlette_routes = {
        route.path: route
        for route in app.app.router.routes  # type: ignore[attr-defined]
    }
    for template, endpoint in app.endpoints.items():
        route = starlette_routes[template]
        assert route.app is endpoint and route.methods == {"POST"}, template


@pytest.mark.parametrize(
    "answer",
    [
        Answer(200, b'{"outputs": []}'),
        Answer(503, b'{"error": {}}', JSON, {"retry-after": "1"}),
        Answer(CLIENT_CLOSED_REQUEST, b"", None),
        Answer(200, b"# metrics\n", CONTENT_TYPE),
        Answer(200, b"\x00bin", "application/octet-stream", {oip.HEADER_LENGTH: "3"}),
    ],
    ids=["json", "retry-after", "empty", "text", "binary"],
)
def test_both_transports_send_an_answer_alike(answer: Answer) -> None:
    """The fast path sends the data plane's answer itself (no Response object per request):
    the same status, headers and body as the Starlette app's ``Response`` for it."""

    def sent(send_with: Callable[[Send], Awaitable[None]]) -> list[Any]:
        messages: list[Message] = []

        async def send(message: Message) -> None:
            messages.append(message)

        async def run() -> None:
            await send_with(send)

        asyncio.run(run())
        start, body = messages
        return [start["status"], sorted(start["headers"]), body["body"]]

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    scope: Scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": []}
    fast = sent(lambda send: send_answer(send, answer, "rid-1"))
    assert fast == sent(lambda send: to_response(answer, "rid-1")(scope, receive, send))
    assert (b"x-request-id", b"rid-1") in fast[1]
