"""Azure ML's scoring front end for managed online endpoints: one TLS server per endpoint.

Each endpoint has its own host in Azure (``https://<endpoint>.<region>.inference.ml.azure.com``);
here each has its own port on 127.0.0.1 (``scoringUri = https://127.0.0.1:<port>/score``),
closed when the endpoint is deleted, so a client of a deleted endpoint gets a connect error as
it gets a DNS error in Azure. ``POST /score`` is checked and routed as Azure does
(how-to-troubleshoot-online-endpoints, how-to-safely-rollout-online-endpoints):

- auth: ``Authorization: Bearer <key>`` (auth mode ``Key``: either endpoint key) or an Entra
  token for ``https://ml.azure.com`` issued by the managed-identity emulator (``AADToken``);
  401 otherwise;
- the ``azureml-model-deployment`` header pins a deployment (no mirroring then); else the
  traffic weights choose (a smooth weighted rotation, so 10 % is exactly every tenth call);
  404 when no deployment has positive weight;
- mirror traffic: that share of the unpinned calls is also sent to the mirrored deployment,
  whose answer is dropped;
- 429 past ``2 * max_concurrent_requests_per_instance * instance_count`` requests in flight on
  the deployment; 408 past ``request_timeout_ms`` (a total deadline on the container's call,
  from connecting to the last byte of its answer: a container that trickles bytes gets it
  too); 424 when the container answers >= 400,
  with ``ms-azureml-model-error-statuscode`` and ``-reason`` and the container's body passed
  through; 502 when the container cannot be reached;
- every answer names the deployment in ``azureml-model-deployment``.

Gaps from Azure: the error bodies' texts are assumed (Azure's are not documented; whether it
passes the container's body through on 424 is not either); ``AMLToken`` endpoints are not
scored (401); no per-endpoint RPS or bandwidth limits, no payload limit; the request timeout
starts when the front end connects to the container (Azure's clock may start earlier, at its
own front door); instances are one container whatever the instance count (only the 429 bound
uses the count).

:meth:`ScoringServer.stop` closes the port, aborts the calls still at a container (mirrored
copies included) and waits for the mirror threads: nothing of an endpoint outlives it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulators.faults import CallLog, Faults
from emulators.httpserver import HttpServer, KeepAliveHandler

SCORE_PATH = "/score"
LOG = logging.getLogger(__name__)
ML_AUDIENCES = frozenset({"https://ml.azure.com", "https://ml.azure.com/"})
PIN_HEADER = "azureml-model-deployment"
FORWARDED_HEADERS = (
    "Content-Type",
    "Accept",
    "x-request-id",
    "x-ms-client-request-id",
    "x-aiaas-timeout-ms",
)
"""The caller's headers the container sees. Assumed: Azure ML documents no list of the headers
it passes to a custom container; the request ids and aiaas's deadline header are passed here."""
NO_TRAFFIC = (
    "No valid deployments to route to. Please check that the endpoint has at least one "
    "deployment with positive weight values or use a deployment specific header to route."
)  # Azure's text, as its troubleshooting guide and public reports quote it
FAULT_MESSAGES = {
    404: NO_TRAFFIC,
    408: "Request timed out.",
    424: "Model returned an error.",
    429: "Too many pending requests.",
    500: "Internal server error.",
    502: "Bad gateway.",
    503: "Service unavailable.",
}


@dataclass(frozen=True)
class ScoringCall:
    """One scoring request as the front end answered it."""

    endpoint: str
    deployment: str | None  # the deployment that answered (None: none was reached)
    pinned: str | None  # the azureml-model-deployment header sent
    status: int
    mirrored: bool = False  # a mirrored copy (its answer went nowhere)
    received: float = 0.0  # time.monotonic() on arrival


@dataclass(frozen=True)
class Route:
    """Where one deployment's calls go."""

    name: str
    port: int | None  # the container's port on 127.0.0.1 (None: nothing serves)
    path: str  # the environment's scoring route
    timeout_s: float  # request_timeout_ms / 1000
    max_in_flight: int  # 2 * max_concurrent_requests_per_instance * instance_count


@dataclass(frozen=True)
class EndpointView:
    """What the front end needs to know of an endpoint, now."""

    name: str
    auth_mode: str  # "Key" | "AADToken" | "AMLToken"
    keys: tuple[str, ...]
    traffic: dict[str, int]  # deployment name (lower-case): percent
    mirror: dict[str, int]
    routes: dict[str, Route] = field(default_factory=dict)  # by lower-case name


Resolver = Callable[[str], EndpointView | None]
TokenCheck = Callable[[str, frozenset[str]], str | None]


class TlsServer(HttpServer):
    """An :class:`HttpServer` over TLS with a certificate made elsewhere (one CA for all of
    an emulated cloud's hosts, so clients trust one bundle)."""

    def __init__(
        self,
        handler: type[KeepAliveHandler],
        *,
        name: str,
        context: ssl.SSLContext,
        ca_file: Path,
        idle_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(handler, name=name, idle_timeout_s=idle_timeout_s, tls=True)
        self._context = context
        self.ca_file = ca_file

    def _tls_context(self) -> ssl.SSLContext:
        return self._context


class _Answer(Exception):
    """An error answered by the front end itself."""

    def __init__(self, status: int, message: str, deployment: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.deployment = status, message, deployment


class ScoringHold:
    """Holds the calls that reach it until released: each :meth:`enter` blocks (counted in
    :attr:`held`) until :meth:`release`. A test's way to keep calls in flight without
    guessing how long they take."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.held = 0
        self.released = False

    def enter(self) -> None:
        """Count this call and wait for the release."""
        with self._cond:
            self.held += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.released)

    def wait_held(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until ``count`` calls are held (TimeoutError after ``timeout_s``)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.held >= count, timeout_s):
                raise TimeoutError(f"{self.held} of {count} calls held after {timeout_s} s")

    def release(self) -> None:
        """Let every held call (and any later one) go on."""
        with self._cond:
            self.released = True
            self._cond.notify_all()

    def __enter__(self) -> ScoringHold:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class ScoringServer:
    """One endpoint's scoring host (see the module's text)."""

    def __init__(
        self,
        endpoint: str,
        *,
        resolve: Resolver,
        verify_token: TokenCheck,
        calls: CallLog[ScoringCall],
        faults: Faults,
        context: ssl.SSLContext,
        ca_file: Path,
    ) -> None:
        self.endpoint = endpoint
        self.resolve, self.verify_token = resolve, verify_token
        self._calls, self._faults = calls, faults
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._weights: tuple[tuple[str, int], ...] = ()
        self._current: dict[str, int] = {}
        self._unpinned = 0
        self._hold: ScoringHold | None = None
        self._mirrors: list[threading.Thread] = []  # mirrored copies on their way
        self._open: set[http.client.HTTPConnection] = set()  # calls at a container now
        self._stopped = False
        server = self

        class Handler(_Handler):
            owner = server

        self._http = TlsServer(
            Handler, name=f"scoring-{endpoint}", context=context, ca_file=ca_file
        )

    def start(self) -> None:
        """Serve on a free port of 127.0.0.1."""
        self._http.start()

    def stop(self, join_timeout_s: float = 10.0) -> None:
        """Close the port (a client then gets a connect error), abort the calls still at a
        container and wait for the mirror threads."""
        self._http.stop()
        with self._lock:
            self._stopped = True
            mirrors, self._mirrors = self._mirrors, []
            conns = list(self._open)
            hold = self._hold
        if hold is not None:
            hold.release()
        for conn in conns:
            _abort(conn)
        for thread in mirrors:
            thread.join(join_timeout_s)

    def hold(self) -> ScoringHold:
        """A new :class:`ScoringHold` for every call that takes an in-flight slot from now."""
        hold = ScoringHold()
        with self._lock:
            if self._hold is not None:
                self._hold.release()
            self._hold = hold
        return hold

    def mirror_threads(self) -> list[threading.Thread]:
        """The mirror threads still running."""
        with self._lock:
            return [t for t in self._mirrors if t.is_alive()]

    @property
    def scoring_uri(self) -> str:
        """``https://127.0.0.1:<port>/score``."""
        return self._http.url + SCORE_PATH

    # -- one call ------------------------------------------------------------------------------
    def _authorize(self, view: EndpointView, authorization: str | None) -> None:
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise _Answer(401, "Authorization header is missing or is not a Bearer credential.")
        if view.auth_mode == "Key":
            if credential not in view.keys:
                raise _Answer(401, "Key based authentication failed: the key is not valid.")
        elif view.auth_mode == "AADToken":
            why = self.verify_token(credential, ML_AUDIENCES)
            if why is not None:
                raise _Answer(401, f"Token based authentication failed ({why}).")
        else:  # gap: AMLToken (the workspace's own tokens) is not emulated
            raise _Answer(401, f"auth mode {view.auth_mode} is not emulated")

    def _pick(self, view: EndpointView) -> str | None:
        """The next deployment by traffic weight (smooth weighted round robin)."""
        weights = tuple(sorted((k, v) for k, v in view.traffic.items() if v > 0))
        if not weights:
            return None
        with self._lock:
            if weights != self._weights:
                self._weights, self._current = weights, {k: 0 for k, _ in weights}
            total = sum(v for _, v in weights)
            for name, weight in weights:
                self._current[name] += weight
            best = max(weights, key=lambda kv: self._current[kv[0]])[0]
            self._current[best] -= total
            return best

    def _mirror_to(self, view: EndpointView) -> str | None:
        """The mirrored deployment when this unpinned call is one of its share."""
        mirrored = [(k, v) for k, v in view.mirror.items() if v > 0]
        if not mirrored:
            return None
        name, pct = mirrored[0]
        with self._lock:
            self._unpinned += 1
            n = self._unpinned
        return name if n * pct // 100 > (n - 1) * pct // 100 else None

    def score(
        self, headers: dict[str, str], body: bytes, received: float
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one ``POST /score`` (``headers``: lower-cased names)."""
        pinned = headers.get(PIN_HEADER)
        view = self.resolve(self.endpoint)
        deployment: str | None = None
        try:
            if view is None:  # deleted while this call was on its way
                raise _Answer(404, f"Endpoint {self.endpoint} not found.")
            self._authorize(view, headers.get("authorization"))
            fault = self._faults.take(self.endpoint.lower())
            if fault is not None:
                if fault.delay_s > 0:
                    time.sleep(fault.delay_s)
                if fault.status != 200:
                    raise _Answer(fault.status, FAULT_MESSAGES.get(fault.status, "Error."))
            if pinned:
                deployment = pinned.lower()
                if deployment not in view.routes:
                    raise _Answer(404, f"Deployment {pinned} not found in endpoint.")
            else:
                deployment = self._pick(view)
                if deployment is None:
                    raise _Answer(404, NO_TRAFFIC)
                mirror = self._mirror_to(view)
                if mirror is not None and mirror in view.routes:
                    self._start_mirror(view.routes[mirror], headers, body)
            route = view.routes.get(deployment)
            if route is None:
                raise _Answer(404, NO_TRAFFIC)
            status, out, data = self._forward(route, headers, body)
        except _Answer as answer:
            name = answer.deployment or deployment
            self._calls.add(
                ScoringCall(self.endpoint, name, pinned, answer.status, False, received)
            )
            out = {"Content-Type": "application/json", "x-request-id": str(uuid.uuid4())}
            if name is not None and answer.status != 401:
                out[PIN_HEADER] = name
            return answer.status, out, json.dumps({"message": answer.message}).encode()
        self._calls.add(ScoringCall(self.endpoint, route.name, pinned, status, False, received))
        return status, out, data

    def _start_mirror(self, route: Route, headers: dict[str, str], body: bytes) -> None:
        """Send a mirrored copy on its own thread (tracked: :meth:`stop` waits for it)."""
        thread = threading.Thread(
            target=self._mirror, args=(route, headers, body), daemon=True, name="scoring-mirror"
        )
        with self._lock:
            if self._stopped:
                return
            self._mirrors = [t for t in self._mirrors if t.is_alive()]
            self._mirrors.append(thread)
            thread.start()

    def _mirror(self, route: Route, headers: dict[str, str], body: bytes) -> None:
        received = time.monotonic()
        try:
            status, _, _ = self._forward(route, headers, body)
        except _Answer as answer:
            status = answer.status
        self._calls.add(ScoringCall(self.endpoint, route.name, None, status, True, received))

    def _forward(
        self, route: Route, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Send the call to the deployment's container, within its in-flight bound."""
        if route.port is None:
            raise _Answer(503, FAULT_MESSAGES[503], route.name)
        key = route.name.lower()
        with self._lock:
            if self._in_flight.get(key, 0) >= route.max_in_flight:
                raise _Answer(429, FAULT_MESSAGES[429], route.name)
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            hold = self._hold
        try:
            if hold is not None:
                hold.enter()
            return self._send(route, headers, body)
        finally:
            with self._lock:
                self._in_flight[key] -= 1

    def _send(
        self, route: Route, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One call to the container within ``route.timeout_s`` in all (408 past it: a
        watchdog shuts the connection at the deadline, however the bytes trickle in)."""
        assert route.port is not None
        forward = {
            name: headers[name.lower()] for name in FORWARDED_HEADERS if name.lower() in headers
        }
        conn = http.client.HTTPConnection("127.0.0.1", route.port, timeout=route.timeout_s)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _abort(conn)

        watchdog = threading.Timer(route.timeout_s, expire)
        watchdog.daemon = True
        with self._lock:
            if self._stopped:
                raise _Answer(502, f"{FAULT_MESSAGES[502]} (the endpoint is going)", route.name)
            self._open.add(conn)
        watchdog.start()
        try:
            conn.connect()
            if expired.is_set():  # the deadline passed while connecting
                raise TimeoutError
            conn.request("POST", route.path, body=body, headers=forward)
            answer = conn.getresponse()
            data = answer.read()
            if expired.is_set():  # a read cut short at the deadline
                raise TimeoutError
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError) or expired.is_set():
                raise _Answer(408, FAULT_MESSAGES[408], route.name) from None
            raise _Answer(502, f"{FAULT_MESSAGES[502]} ({exc})", route.name) from None
        finally:
            watchdog.cancel()
            with self._lock:
                self._open.discard(conn)
            conn.close()
        out = {
            "Content-Type": answer.getheader("Content-Type") or "application/octet-stream",
            PIN_HEADER: route.name,
            "x-request-id": headers.get("x-request-id") or str(uuid.uuid4()),
        }
        if answer.status >= 400:
            out["ms-azureml-model-error-statuscode"] = str(answer.status)
            out["ms-azureml-model-error-reason"] = answer.reason or "model_error"
            return 424, out, data
        return answer.status, out, data


def _abort(conn: http.client.HTTPConnection) -> None:
    """Shut a container connection down under whoever reads or writes it (they see EOF or
    an error at once)."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Handler(KeepAliveHandler):
    owner: ScoringServer

    def do_POST(self) -> None:
        received = time.monotonic()
        data = self.body()
        if self.path.split("?", 1)[0] != SCORE_PATH:
            self._json(404, {"message": f"no route {self.path.split('?', 1)[0]}"})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, out, body = self.owner.score(headers, data, received)
        except Exception:  # an emulator bug: a 500 for the client, the traceback in the log
            LOG.exception("emulated scoring host %s failed", self.owner.endpoint)
            self._json(500, {"message": FAULT_MESSAGES[500]})
            return
        self.send(status, out, body)

    def do_GET(self) -> None:
        self._json(404, {"message": f"no route {self.path.split('?', 1)[0]}"})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.send(status, {"Content-Type": "application/json"}, json.dumps(body).encode())
