"""The local invoke path: a POST to the live server's ``/invocations`` on 127.0.0.1.

It reads the deployment's state file for the port on every call (a redeploy switches it),
and while a canary or linear step holds, the split file too: the call goes to the new
version with its share's probability. It never imports the control plane. A version switch
closes the old server's port: a request that could not have reached it is re-sent once to
the new one (a prediction has no side effects); one the server may have been working on is
not. Each attempt carries the milliseconds its call has left in ``x-aiaas-timeout-ms`` (the
shared loop's :meth:`~adapters.http_invoker.Call.carry_deadline`): the server drops a
request still queued when they run out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from adapters.base import DeploymentStatus, InvokeResult
from adapters.http_invoker import (
    Call,
    HttpClients,
    HttpInvoker,
    Retry,
    RetryPolicy,
    Sent,
    result_of,
)
from adapters.local import LocalSettings
from adapters.local.state import (
    pick,
    read_split,
    read_state,
    server_url,
    state_or_raise,
    unreachable,
)
from aiaas.errors import DeadlineExceeded, NotFound
from aiaas.packaged import FunctionConfig

if TYPE_CHECKING:
    from adapters.local.settings import LocalSection
    from aiaas.config import ProjectConfig

_JSON = {"content-type": "application/json"}
# One re-send at most, at once: a version switch is over by the time the state file names
# the new port.
_RETRY = RetryPolicy(max_attempts=2, base=0.0, cap=0.0)


class _Invocation(Call):
    """One POST to the live server's ``/invocations`` (or, while a rollout step holds, to
    the new version's with its share's probability): a request the server it went to could
    not have finished is re-sent once, to the server the state file names then."""

    def __init__(
        self, root: Path, host: str, name: str, body: bytes, headers: dict[str, str]
    ) -> None:
        self.root, self.host, self.name = root, host, name
        self.what = f"local deployment {name!r}"
        self.body, self.headers = body, headers
        self.target = pick(state_or_raise(root, name), read_split(root, name))
        self.sent = 0

    def request(self) -> httpx.Request:
        url = server_url(self.host, self.target) + "/invocations"
        self.sent += 1
        return httpx.Request("POST", url, content=self.body, headers=self.headers)

    def judge(self, sent: Sent) -> InvokeResult | Retry:
        if isinstance(sent, httpx.Response):
            return result_of(sent)
        exc = sent
        if isinstance(exc, httpx.TimeoutException):  # a TransportError too: matched first
            raise DeadlineExceeded(f"{self.what} did not answer in time") from None
        reason = str(exc) or type(exc).__name__
        if not isinstance(exc, httpx.ConnectError | httpx.RemoteProtocolError):
            # ReadError, WriteError, ...: the server went away while it had the request
            # (e.g. it was killed mid-prediction). Not re-sent: the caller retries.
            raise unreachable(self.name, reason) from None
        # A version switch closed the port (ConnectError: the request never left) or the
        # kept-alive connection (RemoteProtocolError: the server closed it, possibly after
        # reading the request), or a rollback stopped the new version of a split. Re-read
        # the state and try the live version once.
        fresh = state_or_raise(self.root, self.name)
        if self.sent > 1 or (
            fresh.port == self.target.port and not isinstance(exc, httpx.RemoteProtocolError)
        ):
            raise unreachable(self.name, reason) from None
        self.target = fresh
        return Retry(unreachable(self.name, reason))


class LocalInvoker(HttpInvoker):
    """Sends predictions to the local model server of a deployment."""

    name = "local"

    def __init__(self, state_root: Path, host: str = "127.0.0.1") -> None:
        self.root = state_root
        self.host = host
        self.retry = _RETRY
        # Plain HTTP to a loopback port: no TLS (no CA bundle to load either: that load was
        # ~25 ms of a function's cold start), and no proxy (a proxy cannot reach our loopback).
        self.clients = HttpClients(https=False, use_proxies=False)

    @classmethod
    def from_config(cls, config: ProjectConfig | FunctionConfig) -> LocalInvoker:
        view = FunctionConfig.of(config)
        settings: LocalSettings | LocalSection = view.settings
        return cls(view.state_path, settings.host)

    def call(self, name: str, body: bytes, request_id: str | None) -> Call:
        headers = {**_JSON, "x-request-id": request_id} if request_id else _JSON
        return _Invocation(self.root, self.host, name, body, headers)

    async def status(self, name: str) -> DeploymentStatus:
        state = read_state(self.root, name)
        if state is None:
            raise NotFound(f"no local deployment named {name!r}")
        client = self.clients.async_client()
        try:
            response = await client.get(server_url(self.host, state) + "/ping", timeout=2.0)
        except httpx.HTTPError:
            return DeploymentStatus.STOPPED
        return DeploymentStatus.READY if response.status_code == 200 else DeploymentStatus.CREATING
