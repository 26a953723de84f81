"""The model server's data plane, free of any transport.

Body bytes and the few header values it needs go in; a :class:`Answer` (status, body,
media type, extra headers) comes out, or a typed :class:`~aiaas.errors.AiaasError` is
raised and :meth:`DataPlane.respond` maps it to one. It owns what a request goes through
(parse → validate → batch → encode), readiness, and the metrics hooks. Two transports call
it: the Starlette app (:mod:`aiaas.runtime.app`: every route) and the plain-ASGI fast path
(:mod:`aiaas.runtime.fastpath`: the simple protocol's POSTs). It imports neither.

Deadlines: a prediction ends at ``server.request_timeout_s`` or at the caller's deadline
(:func:`caller_deadline`: ``x-aiaas-timeout-ms``, or ``aiaas-timeout-ms`` in SageMaker's
custom attributes), whichever comes first, with 504 ``deadline_exceeded``; its items still
queued then are never run (:meth:`~aiaas.runtime.batcher.Batcher.submit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel
from starlette.requests import ClientDisconnect  # what both transports raise on a lost body
from starlette.responses import Response

from aiaas import oip
from aiaas.config import ServerSection
from aiaas.custom_attributes import TIMEOUT_ATTRIBUTE, timeout_in_attributes
from aiaas.errors import (
    AiaasError,
    DeadlineExceeded,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
)
from aiaas.http import JSON, error_response, oip_error_response, read_limited_body
from aiaas.protocol import (
    InputCheck,
    parse_json,
    simple_inputs,
    simple_response,
    validate_items,
)
from aiaas.retry import TIMEOUT_HEADER, timeout_ms
from aiaas.runtime.batcher import OVERLOADED, Batcher
from aiaas.runtime.door import Door
from aiaas.runtime.inference_process import InferenceProcessDied
from aiaas.runtime.metrics import CONTENT_TYPE, ServerMetrics
from aiaas.runtime.runner import ModelRunner

log = logging.getLogger("aiaas.server")

#: The status /metrics records for a request whose client left before sending its whole
#: body (nginx's convention; nothing is sent).
CLIENT_CLOSED_REQUEST = 499


class ClientGone(ClientDisconnect):
    """The client closed its connection while its request waited for its result: nobody is
    left to answer, and its items still queued are never run (answered 499, like a client
    gone before its whole body)."""


def caller_deadline(
    header: str | None, attributes: str | None, now: float | None = None
) -> float | None:
    """The caller's deadline as a :func:`time.monotonic` instant: ``now`` (default: the
    present) plus the milliseconds of ``x-aiaas-timeout-ms`` (``header``), else of
    ``aiaas-timeout-ms`` in SageMaker's custom attributes (``attributes``, the header's
    value); None when neither says. A malformed value is
    :class:`~aiaas.errors.BadRequest` (400) naming the header or the attribute."""
    if header is not None:
        ms = timeout_ms(header, TIMEOUT_HEADER)
    else:
        ms = timeout_ms(timeout_in_attributes(attributes), TIMEOUT_ATTRIBUTE)
    if ms is None:
        return None
    return (time.monotonic() if now is None else now) + ms / 1000.0


#: The headers a transport sets itself; an :class:`Answer` never carries them.
_TRANSPORT_HEADERS = frozenset({"content-length", "content-type"})


class Answer(NamedTuple):
    """What to send: status, body, its media type (None: no ``content-type``) and any
    other headers (``retry-after``, OIP's ``inference-header-content-length``). The
    transport adds ``content-length`` and ``x-request-id``."""

    status: int
    body: bytes
    media_type: str | None = JSON
    headers: Mapping[str, str] | None = None


def json_answer(body: dict[str, Any], status: int = 200) -> Answer:
    """``body`` as an orjson-encoded JSON answer."""
    return Answer(status, orjson.dumps(body))


def answer_of(response: Response) -> Answer:
    """The :class:`Answer` a Starlette ``Response`` value (as :mod:`aiaas.oip` and
    :mod:`aiaas.http` build them) holds."""
    extra = {k: v for k, v in response.headers.items() if k not in _TRANSPORT_HEADERS}
    return Answer(response.status_code, bytes(response.body), response.media_type, extra or None)


class DataPlane:
    """State of one serving process (the runner, the batcher, readiness, metrics) and every
    request it serves, whatever carried it."""

    def __init__(
        self,
        runner: ModelRunner,
        settings: ServerSection,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.runner = runner
        self._on_fatal = on_fatal
        self.manifest = runner.manifest
        self.settings = settings
        #: The one validation truth, shared with the function tier's edge.
        self.input_check = InputCheck(self.manifest.input_schema)
        self.metrics = ServerMetrics(
            self.manifest.name,
            lambda: self.batcher.queue_depth,
            lambda: self.batcher.waiting_items,
            lambda: self.door.waiting,
        )
        self.batcher = Batcher(
            runner.run_batch,
            max_batch_size=self.manifest.batching.max_batch_size,
            max_delay_ms=self.manifest.batching.max_delay_ms,
            max_queue_size=settings.max_queue_size,
            on_batch=self.metrics.observe_batch,
            workers=runner.workers,
            queue_wait_ms=settings.queue_wait_ms,
        )
        #: Requests past the point where bodies are read: what fills the queue and the
        #: batches in flight; the rest wait at the door, unread, as long as the waiting room
        #: would hold them (``queue_wait_ms``, ``max_queue_size`` of them).
        self.door = Door(
            settings.max_queue_size + runner.workers * self.manifest.batching.max_batch_size,
            max_waiting=settings.max_queue_size,
            wait_s=settings.queue_wait_ms / 1000.0,
        )
        self.ready = False
        self.load_error: str | None = None
        self.died: InferenceProcessDied | None = None  # an inference process is gone
        self._load_task: asyncio.Future[None] | None = None
        self._stopping = False

    # -- lifetime ------------------------------------------------------------------------

    def start(self) -> None:
        """Start batching and load the model in the background (call it on the running
        loop): readiness turns true only once the model is loaded and warmed up."""
        loop = asyncio.get_running_loop()
        self.runner.start()  # inference processes, if any: started from this thread
        # Loading goes to the inference thread first; batching starts there once it is done.
        self._load_task = loop.run_in_executor(self.batcher.executor, self.runner.load)
        self._load_task.add_done_callback(self._loaded)
        self.batcher.start()

    async def stop(self) -> None:
        """Stop being ready and drain the batcher. While the model is still loading there is
        nothing to drain, and the load cannot be interrupted: the batcher is abandoned, not
        joined (the process exits without waiting the load out, see ``serve``). Inference
        processes stop last, once their batches are answered (killed if still loading)."""
        self.ready = False
        self._stopping = True
        self.door.close()  # those waiting at the door: 503 not_ready, as the queue's leftovers
        loading = self._load_task is not None and not self._load_task.done()
        await self.batcher.stop(abandon=loading)
        if self.runner.processes:
            await asyncio.to_thread(self.runner.close, now=loading)

    def _loaded(self, task: asyncio.Future[None]) -> None:
        if task.cancelled() or self._stopping:  # stopped while loading: no failure
            return
        exc = task.exception()
        if exc is None:
            self.ready = True
            self.runner.watch(asyncio.get_running_loop(), self._inference_died)
        else:
            self.load_error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, AiaasError):  # aiaas's own refusal: its message says it all
                log.error("model failed to load: %s", exc.message)
            else:  # the model's code raised: where it did matters
                log.error("model failed to load", exc_info=exc)
            if self._on_fatal is not None:
                self._on_fatal(exc)

    def _inference_died(self, what: str) -> None:
        """An inference process died: not ready from now on (every prediction 503, the
        batches in flight on it too), and ``on_fatal`` stops the server, so that its
        platform starts a new one."""
        if self.died is not None:
            return
        self.died = InferenceProcessDied(what)
        self.ready = False
        log.error("%s: not ready from now on; the server stops", what)
        if self._on_fatal is not None:
            self._on_fatal(self.died)

    def require_ready(self) -> None:
        """Raise :class:`~aiaas.errors.NotReady` (503) unless the model is loaded."""
        if self.died is not None:
            raise InferenceProcessDied(self.died.message)
        if not self.ready:
            reason = (
                f"model failed to load: {self.load_error}"
                if self.load_error
                else "model is loading"
            )
            raise NotReady(reason)

    # -- the predict path ----------------------------------------------------------------

    async def read_body(
        self,
        chunks: AsyncIterator[bytes],
        declared: str | None,
        deadline: float | None = None,
        own: float | None = None,
    ) -> bytes:
        """The whole body from ``chunks``, refused (413) as soon as it is over the limit:
        at once if the declared ``content-length`` says so. A request let in holds a place
        while its body is read: 408 ``request_timeout`` unless all of it arrives within
        ``server.body_timeout_s``, 504 when the caller's ``deadline`` or the server's ``own``
        (see :meth:`admitted`) passes first."""
        timeout = self.settings.body_timeout_s
        now = time.monotonic()
        ends = [now + timeout, *(t for t in (deadline, own) if t is not None)]
        end = min(ends)
        try:
            async with asyncio.timeout(end - now):
                return await read_limited_body(chunks, declared, self.settings.max_body_bytes)
        except TimeoutError:
            if end == ends[0]:
                raise RequestTimeout(
                    f"the request's body did not arrive within {timeout:g}s (server.body_timeout_s)"
                ) from None
            raise self._late(deadline, own if own is not None else end) from None

    @contextlib.asynccontextmanager
    async def admitted(self, deadline: float | None) -> AsyncIterator[float]:
        """Let a request in before its body is read, for the block's duration; yields its
        own deadline (``server.request_timeout_s`` from now, the door's wait included),
        for :meth:`read_body`, :meth:`simple`, :meth:`infer` and :meth:`predict`.

        Refused before any of the body is read, so under overload a refusal costs the event
        loop next to nothing (no body read, parsed, nor validated), even a body that would
        have been malformed (400) or too large (413), which only a request let in is told:

        - 503 ``not_ready`` while the model is not loaded (or the server stops);
        - 503 ``overloaded`` (``Retry-After``) at once when the waiting room is full, or the
          door holds ``max_queue_size`` requests; after ``queue_wait_ms`` at the door when
          no place came (:class:`~aiaas.runtime.door.Door`);
        - 504 ``deadline_exceeded`` when the caller's ``deadline`` (or the server's own)
          passes at the door.
        """
        own = time.monotonic() + self.settings.request_timeout_s
        self.require_ready()
        if self.batcher.refuses_now():
            raise Overloaded(OVERLOADED, retry_after=1.0)
        try:
            await self.door.enter(own if deadline is None else min(own, deadline))
        except DeadlineExceeded:
            raise self._late(deadline, own, "while the request waited for room") from None
        try:
            yield own
        finally:
            self.door.leave()

    def check_item_count(self, count: int) -> None:
        """Refuse (413 ``payload_too_large``) a request of more than
        ``server.max_items_per_request`` items, before any of them is validated or expanded:
        a few bytes per item must not buy seconds of validation and a huge error list."""
        limit = self.settings.max_items_per_request
        if count > limit:
            raise PayloadTooLarge(
                f"request has {count} items; the limit is {limit} per request "
                "(server.max_items_per_request)",
                details={"items": count, "limit": limit},
            )

    def validate(self, raw_items: list[Any], where: str = "inputs") -> list[BaseModel]:
        """The items as the model's input objects, or :class:`~aiaas.errors.InvalidInput`.

        First the manifest's JSON Schema (:class:`~aiaas.protocol.InputCheck`, the check
        the function tier's edge runs: same verdict, index, field and message), then the
        model's pydantic input schema builds the objects and runs the model's own
        validators, which no JSON Schema carries (those refusals are the server's alone).
        """
        self.check_item_count(len(raw_items))
        self.input_check.check(raw_items, where)
        return validate_items(self.runner.input_schema, raw_items, where)

    async def predict(
        self,
        raw_items: list[Any],
        request_id: str,
        where: str = "inputs",
        deadline: float | None = None,
        own: float | None = None,
    ) -> list[Any]:
        """Validate the items, queue them for a batch, and return their results: within
        the server's ``own`` deadline (default: ``server.request_timeout_s`` from now; a
        request let in by :meth:`admitted` passes the one it got there) and the caller's
        ``deadline`` (:func:`time.monotonic` instants, see :func:`caller_deadline`), else
        :class:`~aiaas.errors.DeadlineExceeded` (504), and the items still queued are never
        run."""
        self.require_ready()
        items = self.validate(raw_items, where)
        if own is None:
            own = time.monotonic() + self.settings.request_timeout_s
        try:
            return await self.batcher.submit(
                items, request_id, own if deadline is None else min(own, deadline)
            )
        except DeadlineExceeded:
            raise self._late(deadline, own) from None

    def _late(
        self, deadline: float | None, own: float, when: str = "before the result was ready"
    ) -> DeadlineExceeded:
        """The 504 for a request whose deadline passed ``when``: the caller's (``deadline``)
        or the server's ``own`` (``server.request_timeout_s``), whichever came first."""
        if deadline is not None and deadline < own:
            # from the header or SageMaker's custom attributes
            return DeadlineExceeded(f"the caller's deadline passed {when}; the request was dropped")
        return DeadlineExceeded(
            f"the request took longer than {self.settings.request_timeout_s:g}s "
            f"(server.request_timeout_s): its deadline passed {when}"
        )

    async def simple(
        self,
        body: bytes,
        request_id: str,
        deadline: float | None = None,
        own: float | None = None,
    ) -> bytes:
        """The simple protocol, request body to response body:
        ``{"inputs": [...]}`` → ``{"outputs": [...], "model", "version"}`` (JSON), within
        ``deadline`` and ``own`` (see :meth:`predict`)."""
        inputs = simple_inputs(parse_json(body))
        outputs = await self.predict(inputs, request_id, deadline=deadline, own=own)
        return simple_response(outputs, self.manifest.name, self.manifest.version)

    async def infer(
        self,
        body: bytes,
        path_params: dict[str, Any],
        *,
        header_length: str | None,
        content_type: str | None,
        request_id: str,
        deadline: float | None = None,
        own: float | None = None,
    ) -> Answer:
        """Open Inference Protocol ``/infer``: tensors in, tensors out (as JSON or as binary
        tensor data, see :mod:`aiaas.oip`), within ``deadline`` and ``own`` (see
        :meth:`predict`)."""
        oip.check_model(self.manifest, path_params)
        infer = oip.parse_infer(
            body,
            header_length=header_length,
            content_type=content_type,
            max_items=self.settings.max_items_per_request,
            output_names=oip.output_names(self.manifest),
        )
        outputs = await self.predict(infer.items, request_id, "instances", deadline, own)
        response = oip.infer_response(infer, outputs, self.manifest.name, self.manifest.version)
        return answer_of(response)

    # -- health and metadata -------------------------------------------------------------

    def ping(self) -> Answer:
        """SageMaker health check: 200 (empty) once loaded and warmed up."""
        self.require_ready()
        return Answer(200, b"", None)

    def live(self) -> Answer:
        """Liveness: the process serves (also while the model loads)."""
        return json_answer({"live": True})

    def readiness(self) -> Answer:
        """Readiness: the model is loaded and warmed up."""
        self.require_ready()
        return json_answer(
            {"ready": True, "model": self.manifest.name, "version": self.manifest.version}
        )

    def server_metadata(self) -> Answer:
        """OIP ``GET /v2``: server metadata, with the extensions supported."""
        return json_answer(oip.server_metadata())

    def model_metadata(self, path_params: dict[str, Any]) -> Answer:
        """OIP ``GET /v2/models/{name}``: tensors derived from the manifest's schemas."""
        oip.check_model(self.manifest, path_params)
        return json_answer(oip.model_metadata(self.manifest))

    def model_ready(self, path_params: dict[str, Any]) -> Answer:
        """OIP ``GET /v2/models/{name}/ready``."""
        oip.check_model(self.manifest, path_params)
        self.require_ready()
        return json_answer({"name": self.manifest.name, "ready": True})

    def metrics_text(self) -> Answer:
        """Prometheus text exposition."""
        return Answer(200, self.metrics.render(), CONTENT_TYPE)

    # -- errors and metrics --------------------------------------------------------------

    async def respond(self, work: Awaitable[Answer], request_id: str, *, oip: bool) -> Answer:
        """``work``'s answer, or its error as JSON (aiaas's shape, or with ``oip`` the Open
        Inference Protocol's ``{"error": "<message>"}``): one error mapping for every
        route of both transports."""
        try:
            return await work
        except Exception as exc:  # mapped; logged when unexpected
            return self.failure(exc, request_id, oip=oip)

    def failure(self, exc: Exception, request_id: str, *, oip: bool) -> Answer:
        """The answer for ``exc``: its own status for an :class:`AiaasError`, 499 (nothing
        sent) for a client gone before its whole body arrived or before its result
        (:class:`ClientGone`), 500 for anything else."""
        if isinstance(exc, ClientGone):
            log.info("client disconnected before its answer; dropped (request_id=%s)", request_id)
            return Answer(CLIENT_CLOSED_REQUEST, b"", None)
        if isinstance(exc, ClientDisconnect):
            # Nobody is left to answer: not a server error. One line, and status 499 (nginx's
            # "client closed request") so /metrics counts it apart from the 5xx.
            log.info(
                "client disconnected before sending its whole body (request_id=%s)", request_id
            )
            return Answer(CLIENT_CLOSED_REQUEST, b"", None)
        if not isinstance(exc, AiaasError):
            log.error("unhandled error (request_id=%s)", request_id, exc_info=exc)
            exc = AiaasError("internal server error")
        answer = oip_error_response if oip else error_response
        return answer_of(answer(exc, request_id))

    def observe(self, route: str, status: int, started: float) -> None:
        """Count one finished request on ``route`` (its template), begun at ``started``
        (:func:`time.perf_counter`)."""
        self.metrics.observe_request(route, status, time.perf_counter() - started)
