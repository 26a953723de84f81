"""How the model server answers what it will not serve: the error shape per route family,
``Allow`` on 405, 415 for non-JSON bodies, the per-request item limit; the function app's
405 too (the 404/405 handler is shared)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerProcess, serve_asgi

from adapters.local.provider import LocalProvider
from aiaas.bundle import BuiltBundle
from functions.app import FunctionApp

StartServer = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def probe(
    probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("server-errors") / "server.log"
    server = ServerProcess(probe_bundle.path, log, ["--max-body-bytes", "4096"], {})
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def _oip_error(r: httpx.Response, status: int, code: str) -> str:
    """The message of an OIP-shaped error ``{"error": "<message>", "code", "request_id"}``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert isinstance(body["error"], str), body
    assert body["code"] == code and body["request_id"] == r.headers["x-request-id"]
    message: str = body["error"]
    return message


class TestErrorShape:
    """OIP routes answer ``{"error": "<string>"}`` (what tritonclient and KServe's client
    parse); every other route aiaas's ``{"error": {"code", "message", ...}}``."""

    def test_oip_routes_answer_the_oip_shape(self, probe: ServerProcess) -> None:
        url = probe.url
        assert "nope" in _oip_error(httpx.get(url + "/v2/models/nope"), 404, "not_found")
        _oip_error(httpx.post(url + "/v2/models/nope/infer", json={}), 404, "not_found")
        _oip_error(httpx.get(url + "/v2/models/probe/versions/0/ready"), 404, "not_found")
        msg = _oip_error(
            httpx.post(url + "/v2/models/probe/infer", content=b"{"), 400, "bad_request"
        )
        assert "malformed JSON" in msg
        bad = {"inputs": [{"name": "valu", "shape": [1], "datatype": "FP32", "data": [1]}]}
        r = httpx.post(url + "/v2/models/probe/infer", json=bad)
        assert "value" in _oip_error(r, 422, "invalid_input")
        assert r.json()["details"][0]["field"] == "value"
        # routes no handler matched: the shared 404/405 handler uses the shape too
        _oip_error(httpx.get(url + "/v2/no/such/route"), 404, "not_found")
        _oip_error(httpx.get(url + "/v2/models/probe/infer"), 405, "method_not_allowed")

    def test_other_routes_keep_the_aiaas_shape(self, probe: ServerProcess) -> None:
        r = httpx.post(probe.url + "/invocations", content=b"{")
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
        r = httpx.get(probe.url + "/no/such/route")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = httpx.get(probe.url + "/v2x")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    def test_oip_503_keeps_its_status(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        # Far longer than the test: a SIGTERM during the load stops the server at once.
        server = start_server(probe_bundle.path, env={"PROBE_LOAD_DELAY_S": "120"}, ready=False)
        deadline = time.monotonic() + 60
        while True:  # the port opens before the model is loaded
            try:
                r = httpx.get(server.url + "/v2/health/ready", timeout=1.0)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
        assert "loading" in _oip_error(r, 503, "not_ready")
        r = httpx.get(server.url + "/ready")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"


class TestAllow:
    """A 405 names the methods the path takes (RFC 9110 §15.5.6), on both servers."""

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            ("GET", "/invocations", "POST"),
            ("PUT", "/ping", "GET, HEAD"),
            ("DELETE", "/", "GET, HEAD, POST"),  # two routes share "/"
            ("GET", "/api/predict/svc", "POST"),
            ("PUT", "/v2/models/probe/infer", "POST"),
            ("POST", "/metrics", "GET, HEAD"),
        ],
    )
    def test_model_server(self, probe: ServerProcess, method: str, path: str, allow: str) -> None:
        r = httpx.request(method, probe.url + path)
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == allow
        assert allow in r.text

    def test_function_app(self, probe_bundle: BuiltBundle, tmp_path: Path) -> None:
        # No deployment: a 405 is answered before anything would reach the provider.
        provider = LocalProvider(state_dir=str(tmp_path))
        app = FunctionApp(provider.invoker, probe_bundle.manifest).asgi()
        with serve_asgi(app) as url:
            r = httpx.get(url + "/predict")
            assert r.status_code == 405 and r.headers["allow"] == "POST"
            assert r.json()["error"]["code"] == "method_not_allowed"
            r = httpx.delete(url + "/v2/models/probe/infer")
            assert r.status_code == 405 and r.headers["allow"] == "POST"
            assert r.json()["code"] == "method_not_allowed"  # the OIP shape under /v2
            r = httpx.post(url + "/health")
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


class TestContentType:
    """The simple protocol reads JSON only: anything else is 415 naming what it takes, not
    "malformed JSON"."""

    @pytest.mark.parametrize("path", ["/invocations", "/score", "/", "/api/predict/svc"])
    def test_csv_is_415_naming_the_accepted_types(self, probe: ServerProcess, path: str) -> None:
        r = httpx.post(
            probe.url + path, content=b"1.0\n2.0\n", headers={"content-type": "text/csv"}
        )
        assert r.status_code == 415, r.text
        err = r.json()["error"]
        assert err["code"] == "unsupported_media_type"
        assert "'text/csv'" in err["message"] and "application/json" in err["message"]
        assert r.headers["x-request-id"] == err["request_id"]

    @pytest.mark.parametrize(
        "content_type",
        [None, "application/json", "application/json; charset=utf-8", "application/vnd.x+json"],
    )
    def test_json_or_no_type_is_served(
        self, probe: ServerProcess, content_type: str | None
    ) -> None:
        headers = {"content-type": content_type} if content_type else {}
        r = httpx.post(
            probe.url + "/invocations", content=b'{"inputs": [{"value": 2}]}', headers=headers
        )
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["value"] == 4.0

    def test_415_is_counted_in_metrics(self, probe: ServerProcess) -> None:
        httpx.post(probe.url + "/score", content=b"a=1", headers={"content-type": "text/plain"})
        text = httpx.get(probe.url + "/metrics").text
        assert 'aiaas_requests_total{route="/score",status="415"}' in text


class TestItemLimit:
    """``server.max_items_per_request`` is enforced before any item is validated."""

    def test_one_item_over_the_limit_is_413_naming_count_and_limit(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        server = start_server(probe_bundle.path, "--max-items-per-request", "3")
        ok = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 1}] * 3})
        assert ok.status_code == 200, ok.text
        r = httpx.post(server.url + "/score", json={"inputs": [{"value": 1}] * 4})
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == "payload_too_large"
        assert "4 items" in err["message"] and "limit is 3" in err["message"]

    def test_a_million_invalid_items_get_a_small_answer_fast(
        self, start_server: StartServer, probe_bundle: BuiltBundle
    ) -> None:
        server = start_server(probe_bundle.path)  # default limits: 6 MB bodies, 512 items
        body = b'{"inputs": [' + b"0," * 999_999 + b"0]}"  # 2 MB, a million invalid items
        answer: list[httpx.Response] = []

        def post() -> None:
            answer.append(httpx.post(server.url + "/invocations", content=body, timeout=60))

        worker = threading.Thread(target=post)
        cpu_before = server.cpu_seconds()
        worker.start()
        slowest_ping = 0.0
        with httpx.Client(timeout=30) as client:
            while worker.is_alive():  # the server keeps answering health checks meanwhile
                ping_started = time.monotonic()
                assert client.get(server.url + "/ping").status_code == 200
                slowest_ping = max(slowest_ping, time.monotonic() - ping_started)
                time.sleep(0.01)  # the pings' own cost stays small beside the bound below
        worker.join()
        cpu = server.cpu_seconds() - cpu_before
        r = answer[0]
        assert r.status_code == 413, r.text[:500]
        assert len(r.content) < 1000
        assert "1000000 items" in r.json()["error"]["message"]
        # Validating a million items took seconds of the event loop and blocked /ping for
        # as long; counted before validation, the request costs the server ~0.05 s of CPU.
        # CPU time, not the wall clock: CI's loaded run once took 0.89 s for a ping.
        assert cpu < 0.5, cpu
        # and a loop blocked without using CPU: a bound no busy machine reaches (0.02 s quiet)
        assert slowest_ping < 5.0, slowest_ping


def _send_half_a_body_and_leave(url: str, path: str) -> None:
    """A raw HTTP/1.1 request that promises 100 bytes of body, sends 12, and closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        sock.sendall(head.encode() + b'content-length: 100\r\n\r\n{"inputs": [')
        time.sleep(0.2)  # the server has read the head and the first chunk


class TestClientDisconnect:
    """A client that leaves mid-body is a disconnect (one log line, status 499 in
    /metrics), not an unhandled 500."""

    @pytest.mark.parametrize(
        ("path", "route"),
        [("/invocations", "/invocations"), ("/v2/models/probe/infer", "/v2/models/{name}/infer")],
    )
    def test_is_logged_and_counted_apart(
        self, start_server: StartServer, probe_bundle: BuiltBundle, path: str, route: str
    ) -> None:
        server = start_server(probe_bundle.path)
        _send_half_a_body_and_leave(server.url, path)
        deadline = time.monotonic() + 10
        while f'aiaas_requests_total{{route="{route}",status="499"}} 1.0' not in (
            metrics := httpx.get(server.url + "/metrics").text
        ):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        assert 'status="500"' not in metrics
        log = server.log()
        assert log.count("client disconnected before sending its whole body") == 1
        assert "unhandled error" not in log and "Traceback" not in log
        ok = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 1}]})
        assert ok.status_code == 200
