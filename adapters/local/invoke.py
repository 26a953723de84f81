"""The local invoke path: a POST to the live server's ``/invocations`` on 127.0.0.1.

It reads the deployment's state file for the port on every call (a redeploy switches it)
and never imports the control plane. A version switch closes the old server's port: a
request that could not have reached it is re-sent once to the new one (a prediction has no
side effects); one the server may have been working on is not.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from adapters.base import (
    DeploymentStatus,
    Invoker,
    InvokeResult,
    answer_version,
    model_server_error,
)
from adapters.local import LocalSection
from adapters.local.state import (
    ServerRecord,
    read_state,
    server_url,
    state_or_raise,
    unreachable,
)
from adapters.transport import AsyncH11Transport
from aiaas.config import ProjectConfig
from aiaas.errors import DeadlineExceeded, NotFound

_JSON = {"content-type": "application/json"}
# Plain HTTP to a loopback port only (the host is loopback): no TLS, so no CA bundle to load
# either (that load was ~25 ms of a function's cold start).
_CLIENT_ARGS: dict[str, Any] = {
    "timeout": httpx.Timeout(60.0, connect=2.0),
    "trust_env": False,
    "verify": False,
}


class LocalInvoker(Invoker):
    """Sends predictions to the local model server of a deployment."""

    name = "local"

    def __init__(self, state_root: Path, host: str = "127.0.0.1") -> None:
        self.root = state_root
        self.host = host
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._transport: AsyncH11Transport | None = None

    @classmethod
    def from_config(cls, config: ProjectConfig) -> LocalInvoker:
        return cls(config.state_path, config.provider_settings("local", LocalSection).host)

    def _client(self) -> httpx.AsyncClient:
        """The async client of the running event loop: a client's connections belong to the
        loop that opened them, so another loop (a test client's, a restarted app's) gets its
        own client."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            if self._transport is not None:  # the previous loop's connections: closed now
                self._transport.close_idle()
            self._transport = AsyncH11Transport()
            self._async = httpx.AsyncClient(**_CLIENT_ARGS, transport=self._transport)
            self._async_loop = loop
        return self._async

    def _headers(self, request_id: str | None) -> dict[str, str]:
        return {**_JSON, "x-request-id": request_id} if request_id else _JSON

    async def invoke(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        client = self._client()
        headers = self._headers(request_id)
        state = state_or_raise(self.root, name)
        for attempt in range(2):
            url = server_url(self.host, state) + "/invocations"
            try:
                response = await client.post(url, content=body, headers=headers, timeout=timeout)
                return _result(response)
            except httpx.TransportError as exc:
                state = self._retry_state(name, state, exc, attempt, timeout)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def invoke_sync(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        if self._sync is None:
            self._sync = httpx.Client(**_CLIENT_ARGS)
        headers = self._headers(request_id)
        state = state_or_raise(self.root, name)
        for attempt in range(2):
            url = server_url(self.host, state) + "/invocations"
            try:
                response = self._sync.post(url, content=body, headers=headers, timeout=timeout)
                return _result(response)
            except httpx.TransportError as exc:
                state = self._retry_state(name, state, exc, attempt, timeout)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _retry_state(
        self,
        name: str,
        state: ServerRecord,
        exc: httpx.TransportError,
        attempt: int,
        timeout: float,
    ) -> ServerRecord:
        """The state to try again with, or the error to raise for ``exc``."""
        if isinstance(exc, httpx.TimeoutException):  # a TransportError too: matched first
            raise DeadlineExceeded(
                f"local deployment {name!r} did not answer within {timeout:g}s"
            ) from None
        reason = str(exc) or type(exc).__name__
        if not isinstance(exc, httpx.ConnectError | httpx.RemoteProtocolError):
            # ReadError, WriteError, ...: the server went away while it had the request
            # (e.g. it was killed mid-prediction). Not re-sent: the caller retries.
            raise unreachable(name, reason) from None
        # A version switch closed the port (ConnectError: the request never left) or the
        # kept-alive connection (RemoteProtocolError: the server closed it, possibly after
        # reading the request). Re-read the state and try the new version once.
        fresh = state_or_raise(self.root, name)
        if attempt == 1 or (
            fresh.port == state.port and not isinstance(exc, httpx.RemoteProtocolError)
        ):
            raise unreachable(name, reason) from None
        return fresh

    async def status(self, name: str) -> DeploymentStatus:
        state = read_state(self.root, name)
        if state is None:
            raise NotFound(f"no local deployment named {name!r}")
        try:
            response = await self._client().get(server_url(self.host, state) + "/ping", timeout=2.0)
        except httpx.HTTPError:
            return DeploymentStatus.STOPPED
        return DeploymentStatus.READY if response.status_code == 200 else DeploymentStatus.CREATING

    async def aclose(self) -> None:
        if self._async is not None and self._async_loop is asyncio.get_running_loop():
            await self._async.aclose()
        self._async = self._async_loop = None

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None


def _result(response: httpx.Response) -> InvokeResult:
    if response.status_code == 200:
        return InvokeResult(response.content, answer_version(response.content))
    raise model_server_error(
        response.status_code, response.content, response.headers.get("retry-after")
    )
