"""The invoke loop every HTTP provider shares: clients, retries under one deadline, answers.

A provider's invoke path is an :class:`HttpInvoker`. It adds only what is its own:

- :meth:`HttpInvoker.call`: a :class:`Call` for one prediction, which builds the request of
  each attempt and judges what came back (its cloud's error codes), returning the
  :class:`~adapters.base.InvokeResult`, a :class:`Retry`, or raising the typed error;
- :meth:`HttpInvoker.auth`: the ``httpx.Auth`` that signs each attempt (SigV4, a key, a
  bearer token: :mod:`adapters.auth`), or none.

Everything else is written once, here:

- :func:`attempts`: the retry/deadline loop, sans-IO. A generator that yields the
  ``httpx.Request`` to send (and receives the response or the transport error) or the seconds
  to sleep, so one loop serves :func:`run_sync` and :func:`run_async` alike. Each attempt
  carries the milliseconds its call has left (:meth:`Call.carry_deadline`), so the model
  server drops work nobody waits for any more.
- :class:`RetryPolicy`: attempts, exponential backoff with full jitter, its random source,
  and the :class:`~aiaas.retry.RetryBudget` every call of the invoker shares (retries stop
  when the callee fails most calls). A caller that retries by itself
  (:data:`aiaas.retry.caller_retries`) gets one attempt, and the back-off in ``retry_after``.
- :data:`NOT_SENT`: the transport errors raised before a request left (safe to send again).
- :func:`result_of`: a model server's answer as an :class:`InvokeResult` or its typed error.
- :class:`HttpClients`: one async client per event loop (a client's connections belong to the
  loop that opened them) and one sync client, over :mod:`adapters.transport` or httpx's own
  transport (``AIAAS_HTTP_TRANSPORT=httpx``), honouring the proxy variables.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

from adapters.base import Invoker, InvokeResult, answer_version, model_server_error
from adapters.transport import AsyncH11Transport
from aiaas.errors import AiaasError, ConfigError, DeadlineExceeded, NotReady
from aiaas.retry import TIMEOUT_HEADER, RetryBudget, caller_retries

Sent = httpx.Response | httpx.TransportError
"""What one attempt got back: the response, or the transport error raised instead."""
Step = httpx.Request | float
"""What :func:`attempts` asks its driver for: send this request, or sleep this long."""
TransportKind = Literal["h11", "httpx"]
TRANSPORT_VARIABLE = "AIAAS_HTTP_TRANSPORT"

# Transport errors raised before the request left: a connection refused, or one not made (or
# not free in the pool) in time. The server never saw such a request: safe to send again.
NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


def with_timeout(
    request: httpx.Request, timeout: float, *, cap_s: float, connect_s: float
) -> httpx.Request:
    """``request`` bounded by ``timeout`` seconds, at most ``cap_s`` (and ``connect_s`` to
    connect): a cloud's status read (ARM's endpoint GET, EAS's DescribeService) on the
    caller's deadline."""
    left = max(0.05, min(cap_s, timeout))
    request.extensions["timeout"] = httpx.Timeout(left, connect=min(connect_s, left)).as_dict()
    return request


def never_sent(error: httpx.TransportError) -> bool:
    """True when ``error`` was raised before the request left (see :data:`NOT_SENT`)."""
    return isinstance(error, NOT_SENT)


@dataclass
class Retry:
    """An outcome worth another attempt; ``error`` is raised if none is left. ``after``: the
    callee's own back-off (its ``Retry-After``), when it gave one."""

    error: AiaasError
    after: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts one call makes and how long it waits between them: exponential
    backoff from ``base`` seconds up to ``cap``, with full jitter drawn from ``rng`` (the one
    injection point for tests that need known gaps), never sooner than the callee's own
    ``Retry-After``; and the :class:`~aiaas.retry.RetryBudget` its retries draw on."""

    max_attempts: int = 4
    base: float = 0.05
    cap: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    budget: RetryBudget = field(default_factory=RetryBudget)

    def ceiling(self, made: int) -> float:
        """The longest wait after the ``made``-th failed attempt (1-based)."""
        return float(min(self.cap, self.base * 2 ** (made - 1)))


def result_of(response: httpx.Response) -> InvokeResult:
    """A model server's answer: the body and the version that answered if it is a 200,
    else raise its typed error (the JSON error body, ``Retry-After`` honoured)."""
    if response.status_code == 200:
        return InvokeResult(response.content, answer_version(response.content))
    raise model_server_error(
        response.status_code, response.content, response.headers.get("retry-after")
    )


class Call(ABC):
    """One prediction as a provider sends it: the request of each attempt and the judgement
    of what came back. ``what`` names the callee in errors (``SageMaker endpoint 'x'``)."""

    what: str = "the endpoint"
    connect_timeout: float = 2.0

    @abstractmethod
    def request(self) -> httpx.Request:
        """The request of the next attempt (rebuilt each time: a provider may re-resolve)."""

    @abstractmethod
    def judge(self, sent: Sent) -> InvokeResult | Retry:
        """The result, a :class:`Retry`, or raise the typed error."""

    def carry_deadline(self, request: httpx.Request, left_ms: int) -> None:
        """Tell the model server this attempt's deadline: ``left_ms`` milliseconds from now.
        By default in :data:`aiaas.retry.TIMEOUT_HEADER`; a cloud that forwards no such
        header to the container carries it its own way (SageMaker: custom attributes)."""
        request.headers[TIMEOUT_HEADER] = str(left_ms)


def attempts(
    call: Call, policy: RetryPolicy, timeout: float
) -> Generator[Step, Sent | None, InvokeResult]:
    """The retry loop of one call, free of I/O: yields each request to send (send back the
    response or the transport error) and each backoff to sleep (send back ``None``); returns
    the result or raises the typed error. Never sleeps or sends past ``timeout`` seconds.

    A failure is retried while attempts are left, the backoff fits the deadline, the
    policy's budget allows it and the caller does not retry by itself
    (:data:`aiaas.retry.caller_retries`); else its error is raised with ``retry_after`` set
    to the back-off the caller should wait (the callee's own, else the next backoff's
    ceiling), so the caller learns when to come back. Each request carries the milliseconds
    left (:meth:`Call.carry_deadline`, rounded down, at least 1)."""
    deadline = time.monotonic() + timeout
    made = 0
    single = caller_retries.get()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"{call.what} did not answer within {timeout:g}s")
        request = call.request()
        call.carry_deadline(request, max(1, int(left * 1000)))
        request.extensions["timeout"] = httpx.Timeout(
            left, connect=min(call.connect_timeout, left)
        ).as_dict()
        sent = yield request
        assert sent is not None, "send the response or the transport error back"
        try:
            outcome = call.judge(sent)
        except AiaasError:
            policy.budget.record(ok=True)  # an answer (a refusal is one): the callee is up
            raise
        policy.budget.record(ok=not isinstance(outcome, Retry))
        if isinstance(outcome, InvokeResult):
            return outcome
        made += 1
        ceiling = policy.ceiling(made)
        hint = outcome.after or 0.0
        delay = max(float(policy.rng.uniform(0, ceiling)), hint)  # full jitter
        if (
            single
            or made >= policy.max_attempts
            or time.monotonic() + delay >= deadline
            or not policy.budget.can_retry()
        ):
            error = outcome.error
            if error.retry_after is not None or hint or isinstance(error, NotReady):
                error.retry_after = max(error.retry_after or 0.0, hint, ceiling)
            raise error
        yield delay


def _overall(request: httpx.Request) -> float:
    """The seconds this attempt may take in all (its deadline's remainder when it was
    yielded: httpx's own timeouts bound each read, not the whole exchange)."""
    timeout = request.extensions.get("timeout") or {}
    read = timeout.get("read")
    return float(read) if read is not None else 60.0


def run_sync(
    steps: Generator[Step, Sent | None, InvokeResult],
    client: httpx.Client,
    auth: httpx.Auth | None = None,
) -> InvokeResult:
    """Drive :func:`attempts` with a sync client (blocking sleeps)."""
    step = next(steps)
    while True:
        reply: Sent | None = None
        if isinstance(step, httpx.Request):
            try:
                reply = client.send(step, auth=auth) if auth else client.send(step)
            except httpx.TransportError as exc:
                reply = exc
        else:
            time.sleep(step)
        try:
            step = steps.send(reply)
        except StopIteration as done:
            result: InvokeResult = done.value
            return result


async def run_async(
    steps: Generator[Step, Sent | None, InvokeResult],
    client: httpx.AsyncClient,
    auth: httpx.Auth | None = None,
) -> InvokeResult:
    """Drive :func:`attempts` with an async client (sleeps on the event loop). Each attempt
    ends at the call's deadline, whatever httpx's per-read timeouts allow (a burst of new
    connections, a body trickling in): it then counts as a read timeout."""
    step = next(steps)
    while True:
        reply: Sent | None = None
        if isinstance(step, httpx.Request):
            sending = client.send(step, auth=auth) if auth else client.send(step)
            try:
                reply = await asyncio.wait_for(sending, _overall(step))
            except httpx.TransportError as exc:
                reply = exc
            except TimeoutError:
                reply = httpx.ReadTimeout("no answer within the deadline", request=step)
        else:
            await asyncio.sleep(step)
        try:
            step = steps.send(reply)
        except StopIteration as done:
            result: InvokeResult = done.value
            return result


def transport_kind(env: Mapping[str, str]) -> TransportKind:
    """``AIAAS_HTTP_TRANSPORT``: ``h11`` (the default, :mod:`adapters.transport`) or ``httpx``
    (httpx's own transport, the switch back)."""
    kind = env.get(TRANSPORT_VARIABLE, "h11").strip().lower() or "h11"
    if kind not in ("h11", "httpx"):
        raise ConfigError(f"{TRANSPORT_VARIABLE}={kind!r}: use 'h11' or 'httpx'")
    return "httpx" if kind == "httpx" else "h11"


def proxy_routes(env: Mapping[str, str]) -> dict[str, str | None]:
    """The proxy variables as httpx mount patterns: ``HTTP_PROXY``, ``HTTPS_PROXY`` and
    ``ALL_PROXY`` (lower case first, as curl reads them) route through a proxy, and each
    ``NO_PROXY`` entry (``host``, ``.domain``, ``*``) goes direct (``None``)."""

    def var(name: str) -> str:
        return (env.get(name.lower()) or env.get(name.upper()) or "").strip()

    routes: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        proxy = var(f"{scheme}_proxy")
        if proxy:
            routes[f"{scheme}://"] = proxy if "://" in proxy else f"http://{proxy}"
    if not routes:
        return routes
    for entry in var("no_proxy").split(","):
        host = entry.strip()
        if host == "*":
            return {}
        if host:
            domain = host.lstrip(".")
            routes[f"all://{domain}"] = None
            routes[f"all://*.{domain}"] = None
    return routes


class HttpClients:
    """The HTTP clients of one invoker: one async client per event loop and one sync client,
    TLS verified with ``ca_bundle`` (else the system's trust store, loaded on the first
    ``https`` use only). From ``env`` (default ``os.environ``), read once: the transport
    (:func:`transport_kind`) and, with ``use_proxies``, the proxy variables; nothing else."""

    def __init__(
        self,
        *,
        https: bool,
        ca_bundle: str | None = None,
        env: Mapping[str, str] | None = None,
        kind: TransportKind | None = None,
        max_response_bytes: int | None = None,
        use_proxies: bool = True,
    ) -> None:
        env = os.environ if env is None else env
        self.kind: TransportKind = kind or transport_kind(env)
        self.proxies = proxy_routes(env) if use_proxies else {}
        self.max_response_bytes = max_response_bytes
        self._https = https
        self._ca_bundle = ca_bundle
        self._ssl: ssl.SSLContext | None = None
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._transport: httpx.AsyncBaseTransport | None = None

    def _verify(self) -> ssl.SSLContext | bool:
        """TLS verification: ``ca_bundle``, else the system's trust store; made on the first
        use only (a plain-HTTP endpoint never loads a CA bundle: ~25 ms of a cold start)."""
        if not self._https:
            return False
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self._ca_bundle)
        return self._ssl

    def async_client(self) -> httpx.AsyncClient:
        """The async client of the running event loop (another loop, such as a test
        client's or a restarted app's, gets its own)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            if isinstance(self._transport, AsyncH11Transport):
                self._transport.close_idle()  # the previous loop's connections: closed now
            verify = self._verify()
            if self.kind == "h11":
                self._transport = AsyncH11Transport(
                    verify if isinstance(verify, ssl.SSLContext) else None,
                    max_response_bytes=self.max_response_bytes,
                )
            else:
                self._transport = httpx.AsyncHTTPTransport(verify=verify)
            mounts: dict[str, httpx.AsyncBaseTransport | None] = {
                pattern: None
                if proxy is None
                else httpx.AsyncHTTPTransport(verify=verify, proxy=proxy)
                for pattern, proxy in self.proxies.items()
            }
            self._async = httpx.AsyncClient(
                transport=self._transport, mounts=mounts, trust_env=False
            )
            self._async_loop = loop
        return self._async

    def sync_client(self) -> httpx.Client:
        """The sync client (the CLI's path), created on first use."""
        if self._sync is None:
            verify = self._verify()
            mounts: dict[str, httpx.BaseTransport | None] = {
                pattern: None if proxy is None else httpx.HTTPTransport(verify=verify, proxy=proxy)
                for pattern, proxy in self.proxies.items()
            }
            self._sync = httpx.Client(verify=verify, mounts=mounts, trust_env=False)
        return self._sync

    @property
    def sync_open(self) -> bool:
        """True while the sync client is open (made and not closed since)."""
        return self._sync is not None

    async def aclose(self) -> None:
        """Close the async client, if it belongs to the running loop (else forget it)."""
        if self._async is not None and self._async_loop is asyncio.get_running_loop():
            await self._async.aclose()
        self._async = self._async_loop = None

    def close(self) -> None:
        """Close the sync client."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None


class HttpInvoker(Invoker):
    """An :class:`~adapters.base.Invoker` over HTTP: ``invoke`` and ``invoke_sync`` run the
    same :func:`attempts` loop; a provider supplies :meth:`call` and, if it signs, :meth:`auth`."""

    clients: HttpClients
    retry: RetryPolicy

    @abstractmethod
    def call(self, name: str, body: bytes, request_id: str | None) -> Call:
        """The :class:`Call` of one prediction (raise the typed error for one never sent)."""

    def auth(self) -> httpx.Auth | None:
        """The auth that signs each attempt (none by default)."""
        return None

    async def invoke(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        call = self.call(name, body, request_id)
        steps = attempts(call, self.retry, timeout)
        return await run_async(steps, self.clients.async_client(), self.auth())

    def invoke_sync(
        self, name: str, body: bytes, *, request_id: str | None = None, timeout: float = 60.0
    ) -> InvokeResult:
        call = self.call(name, body, request_id)
        return run_sync(
            attempts(call, self.retry, timeout), self.clients.sync_client(), self.auth()
        )

    async def aclose(self) -> None:
        await self.clients.aclose()

    def close(self) -> None:
        self.clients.close()
