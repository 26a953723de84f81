"""Every guarantee of the provider contract (adapters/base.py), for every registered provider.

The tests run in this file's order against one deployment per provider (a module-scoped
fixture), following a deployment's life: deploy, ready, invoke, redeploy, plan, roll out,
errors, throttling, describe and list, delete, close. Each test first establishes what it
needs through calls the contract makes idempotent, so one test also runs alone (``-k``).
Providers come from ``tests/conformance/harnesses/`` (see conformance/harness.py): this file
is never edited to add one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import PROJECTS

from adapters.base import Deployment, DeploymentStatus, Invoker, InvokeResult
from aiaas.bundle import BuiltBundle, build_bundle
from aiaas.config import RolloutSection
from aiaas.errors import (
    BadRequest,
    DeadlineExceeded,
    DeployFailed,
    InvalidInput,
    ModelError,
    NotFound,
    PayloadTooLarge,
    Throttled,
)
from aiaas.plugins import provider_spec
from conformance.harness import Candidate, Harness, discover

NAME = "probe"  # the deployment under test: the probe manifest's name, deploy()'s default
OTHER = "probe-b"  # a second deployment of the project, for list()
FOREIGN = "probe-other"  # a deployment someone else manages, which list() must not show
PLANNED = "probe-planned"  # only ever planned, never deployed
CANARY_HOLD_S = 5.0  # how long the canary step holds: describe and 20 calls fit in it

# One item per batch, no batching delay: the answers and the throttling are deterministic.
MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
LOAD_LINE = 'time.sleep(float(os.environ.get("PROBE_LOAD_DELAY_S", "0")))'
REFERENCE = Path(__file__).with_name("reference.py")

T = TypeVar("T")


def _params() -> list[Any]:
    params = []
    for candidate in discover():
        skip = candidate.skip is not None and not candidate.required
        marks = [pytest.mark.skip(reason=str(candidate.skip))] if skip else []
        params.append(pytest.param(candidate, id=candidate.id, marks=marks))
    return params


# -- fixtures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundles:
    """The probe at two versions, one only ever planned and one that cannot load, with
    the model's own answers."""

    v1: BuiltBundle
    v2: BuiltBundle
    unseen: BuiltBundle  # planned, never uploaded nor deployed
    broken: BuiltBundle
    outputs: dict[str, Any]  # version -> the model's own outputs for the example request

    def example(self, bundle: BuiltBundle | None = None) -> bytes:
        """The example request of the manifest, as a caller sends it."""
        return json.dumps((bundle or self.v1).manifest.example_request).encode()


def _build(work: Path, label: str, edits: dict[str, str]) -> BuiltBundle:
    project = work / label
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(MODEL_YAML)
    model = project / "probe_model.py"
    source = model.read_text()
    for old, new in edits.items():
        assert old in source, f"{old!r} is not in the probe model"
        source = source.replace(old, new)
    model.write_text(source)
    return build_bundle(project, work / f"{label}.tar.gz")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    work = tmp_path_factory.mktemp("conformance-bundles")
    v1 = _build(work, "v1", {})
    v2 = _build(work, "v2", {'VERSION_SALT = "1"': 'VERSION_SALT = "2"'})
    unseen = _build(work, "unseen", {'VERSION_SALT = "1"': 'VERSION_SALT = "3"'})
    broken = _build(work, "broken", {LOAD_LINE: 'raise RuntimeError("this version cannot load")'})
    # The model's own answer: its class loaded from the bundle and called directly, in a
    # fresh interpreter (no server, no provider).
    reference = subprocess.run(
        [sys.executable, str(REFERENCE), str(work / "reference"), str(v1.path), str(v2.path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert reference.returncode == 0, reference.stderr
    answers = [json.loads(line) for line in reference.stdout.splitlines()]
    outputs = {a["version"]: a["outputs"] for a in answers}
    assert set(outputs) == {v1.manifest.version, v2.manifest.version}
    assert outputs[v1.manifest.version] != outputs[v2.manifest.version]  # told apart by salt
    return Bundles(v1, v2, unseen, broken, outputs)


@pytest.fixture(scope="module", params=_params())
def h(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """The provider under test, through its harness (one per module and provider)."""
    candidate: Candidate = request.param
    if candidate.harness is None or candidate.skip is not None:
        pytest.fail(
            f"conformance run {candidate.id!r} is required but cannot run: {candidate.skip}"
        )
    harness = candidate.harness(tmp_path_factory.mktemp(f"conformance-{candidate.id}"))
    try:
        harness.start()
        project = harness.workdir / "project"
        project.mkdir()
        (project / "aiaas.yaml").write_text(MODEL_YAML + harness.config_yaml())
        harness.open(project)
        yield harness
    finally:
        harness.stop()


@dataclass(frozen=True)
class FirstDeploy:
    """The first deploy of :data:`NAME`: what it returned, what ``describe`` said meanwhile,
    and the first prediction sent right after it returned."""

    deployment: Deployment
    seen: list[tuple[str, str]]
    first_answer: InvokeResult | Exception


@pytest.fixture(scope="module")
def first_deploy(h: Harness, bundles: Bundles) -> FirstDeploy:
    with _watching(h, NAME) as seen:
        deployment = h.provider.deploy(bundles.v1.path)
    first: InvokeResult | Exception
    try:
        first = h.invoker.invoke_sync(NAME, bundles.example())
    except Exception as exc:  # asserted by the test, not here
        first = exc
    return FirstDeploy(deployment, list(seen), first)


# -- helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def _watching(h: Harness, name: str) -> Iterator[list[tuple[str, str]]]:
    """Ask ``describe(name)`` about every 50 ms from another control plane (as ``aiaas
    status`` would, in another process) while the block runs; yield what it said:
    ``(status, version)``, ``("absent", "")`` for NotFound, ``("error", repr)`` otherwise."""
    seen: list[tuple[str, str]] = []
    stop = threading.Event()
    watcher = h.make_provider()

    def watch() -> None:
        while not stop.is_set():
            try:
                d = watcher.describe(name)
                seen.append((d.status.value, d.version))
            except NotFound:
                seen.append(("absent", ""))
            except Exception as exc:
                seen.append(("error", repr(exc)))
            stop.wait(0.05)  # pacing, not synchronisation

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=30)
        watcher.close()


def _collapsed(seen: list[T]) -> list[T]:
    """``seen`` without consecutive repeats."""
    return [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]


def _in_order(seen: list[T], order: list[T]) -> bool:
    """True if every element of ``seen`` is in ``order`` and they never go back in it."""
    ranks = [order.index(s) if s in order else -1 for s in seen]
    return -1 not in ranks and ranks == sorted(ranks)


def _run(invoker: Invoker, make: Callable[[], Awaitable[T]]) -> T:
    """Await ``make()`` on a fresh event loop (as a function app would), closing the
    invoker's async clients on that loop afterwards."""

    async def main() -> T:
        try:
            return await make()
        finally:
            await invoker.aclose()

    return asyncio.run(main())


def _outputs(result: InvokeResult) -> Any:
    return json.loads(result.body)["outputs"]


def _serves(h: Harness, body: bytes) -> bool:
    """True if ``body`` is answered now; False if refused as throttled (retry later)."""
    try:
        return isinstance(h.invoker.invoke_sync(NAME, body), InvokeResult)
    except Throttled as exc:
        time.sleep(min(exc.retry_after, 0.2))  # as told, capped: the test polls
        return False


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# -- deploy, ready, invoke -----------------------------------------------------------------


def test_deploy_returns_once_the_version_answers(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    d = first_deploy.deployment
    assert (d.name, d.provider, d.version) == (NAME, h.name, bundles.v1.manifest.version)
    assert d.status is DeploymentStatus.READY
    assert d.endpoint
    # deploy() returned only once the version answered: the very next call is served
    assert isinstance(first_deploy.first_answer, InvokeResult), first_deploy.first_answer
    described = h.provider.describe(NAME)
    assert (described.status, described.version) == (DeploymentStatus.READY, d.version)
    assert _run(h.invoker, lambda: h.invoker.status(NAME)) is DeploymentStatus.READY
    # what describe() said while the first deploy ran: absent, then creating, then ready
    statuses = _collapsed([status for status, _ in first_deploy.seen])
    assert _in_order(statuses, ["absent", "creating", "ready"]), statuses
    assert "creating" in statuses, statuses


def test_invoke_answers_what_the_model_itself_answers(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    v1 = bundles.v1.manifest.version
    result = h.invoker.invoke_sync(NAME, bundles.example(), request_id="conformance-1")
    assert _outputs(result) == bundles.outputs[v1]
    assert result.version == v1


def test_async_invoke_gives_the_same_answer(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    v1 = bundles.v1.manifest.version
    result = _run(h.invoker, lambda: h.invoker.invoke(NAME, bundles.example(), timeout=30))
    assert _outputs(result) == bundles.outputs[v1]
    assert result.version == v1


def test_upload_is_content_addressed(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    before = h.writes()
    uri = h.provider.upload(bundles.v1.path)  # deploy uploaded it: nothing to write now
    assert h.writes() == before
    assert bundles.v1.manifest.version in uri
    uri2 = h.provider.upload(bundles.v2.path)
    assert uri2 != uri and bundles.v2.manifest.version in uri2
    after = h.writes()
    assert after != before  # a new digest is written (and writes() sees writes)
    assert h.provider.upload(bundles.v2.path) == uri2
    assert h.writes() == after


def test_deploying_the_live_digest_changes_nothing(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    h.provider.deploy(bundles.v1.path)  # v1 is live (a no-op, unless run alone after others)
    live = h.provider.describe(NAME)
    before = h.writes()
    again = h.provider.deploy(bundles.v1.path)
    assert h.writes() == before
    assert (again.version, again.status) == (bundles.v1.manifest.version, DeploymentStatus.READY)
    assert (again.endpoint, again.details) == (live.endpoint, live.details)
    now = h.provider.describe(NAME)
    assert (now.version, now.endpoint, now.details) == (live.version, live.endpoint, live.details)


# -- plan ----------------------------------------------------------------------------------


def test_plan_of_the_live_digest_is_unchanged(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    h.provider.deploy(bundles.v1.path)  # v1 is live
    before = h.writes()
    plan = h.provider.plan(bundles.v1.path)
    assert (plan.name, plan.version) == (NAME, bundles.v1.manifest.version)
    assert plan.unchanged, plan
    assert h.writes() == before


def test_plan_of_a_new_digest_lists_the_changes_and_makes_none(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    h.provider.deploy(bundles.v1.path)  # v1 is live
    before = h.writes()
    plan = h.provider.plan(bundles.unseen.path)  # a digest the provider has never seen
    assert (plan.name, plan.version) == (NAME, bundles.unseen.manifest.version)
    assert not plan.unchanged
    assert {c.action for c in plan.changes} & {"create", "update"}, plan
    assert all(c.kind and c.name for c in plan.changes), plan
    fresh = h.provider.plan(bundles.unseen.path, name=PLANNED)  # a deployment that does not exist
    assert fresh.name == PLANNED and "create" in {c.action for c in fresh.changes}, fresh
    assert {c.action for c in fresh.changes} <= {"create", "keep"}, fresh
    assert h.writes() == before
    live = h.provider.describe(NAME)
    assert (live.version, live.status) == (bundles.v1.manifest.version, DeploymentStatus.READY)
    assert h.invoker.invoke_sync(NAME, bundles.example()).version == bundles.v1.manifest.version
    with pytest.raises(NotFound):
        h.provider.describe(PLANNED)


# -- roll out ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One prediction of the looping client: when it was sent, and what came back."""

    sent: float
    result: InvokeResult | Exception


def test_a_new_digest_goes_live_without_failing_a_request(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    v1, v2 = bundles.v1.manifest.version, bundles.v2.manifest.version
    h.provider.deploy(bundles.v1.path)  # v1 is live
    calls: list[Call] = []
    stop = threading.Event()

    def sync_client() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                result: InvokeResult | Exception = h.invoker.invoke_sync(
                    NAME, bundles.example(), timeout=30
                )
            except Exception as exc:  # every failure is kept and reported
                result = exc
            calls.append(Call(sent, result))
            stop.wait(0.02)  # pacing, not synchronisation

    async def async_client() -> None:  # a function app's way: awaited, one loop throughout
        while not stop.is_set():
            sent = time.monotonic()
            try:
                result: InvokeResult | Exception = await h.invoker.invoke(
                    NAME, bundles.example(), timeout=30
                )
            except Exception as exc:  # every failure is kept and reported
                result = exc
            calls.append(Call(sent, result))
            await asyncio.sleep(0.02)  # pacing, not synchronisation

    clients = [
        threading.Thread(target=sync_client, daemon=True),
        threading.Thread(target=lambda: _run(h.invoker, async_client), daemon=True),
    ]
    for client in clients:
        client.start()
    try:
        _wait_for(lambda: len(calls) >= 6, 30, "the clients' first answers")
        with _watching(h, NAME) as seen:
            deployment = h.provider.deploy(bundles.v2.path)
        live_at = time.monotonic()
        _wait_for(lambda: len([c for c in calls if c.sent > live_at]) >= 6, 30, "calls after")
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
    failed = [c.result for c in calls if isinstance(c.result, Exception)]
    assert not failed, failed
    answers = [(c.sent, c.result) for c in calls if isinstance(c.result, InvokeResult)]
    assert answers[0][1].version == v1
    assert {r.version for sent, r in answers if sent > live_at} == {v2}
    for _, r in answers:  # each answer is its version's own
        assert r.version is not None and _outputs(r) == bundles.outputs[r.version]
    assert (deployment.version, deployment.status) == (v2, DeploymentStatus.READY)
    described = h.provider.describe(NAME)
    assert (described.version, described.status) == (v2, DeploymentStatus.READY)
    assert h.running_versions(NAME) == {v2}  # the old version is removed
    manifest = h.provider.live_manifest(NAME)
    assert manifest is None or manifest.version == v2
    # describe() meanwhile: ready (v1), updating, ready (v2); never absent, failed, stopped
    states = _collapsed(seen)
    order: list[tuple[str, str]] = [
        ("ready", v1),
        ("updating", v1),
        ("updating", v2),
        ("ready", v2),
    ]
    assert _in_order(states, order), states
    assert "updating" in {status for status, _ in states}, states


def test_a_failed_deploy_raises_deploy_failed_and_the_old_version_serves(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    live = h.provider.describe(NAME).version
    with pytest.raises(DeployFailed) as failed:
        h.provider.deploy(bundles.broken.path)
    assert failed.value.message  # the provider's reason
    described = h.provider.describe(NAME)
    assert (described.version, described.status) == (live, DeploymentStatus.READY)
    assert h.invoker.invoke_sync(NAME, bundles.example()).version == live
    assert h.running_versions(NAME) == {live}


def test_a_canary_serves_both_versions_then_moves_all_traffic_to_the_new_one(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    """While the canary step holds, describe reports each version's share and both answer
    (each its own answers); then all the traffic is on the new one and the old one is gone.
    Gated on ``Capabilities.traffic_split``: a provider whose split cannot be watched (its
    describe cannot report the shares, or its emulator cannot split) is skipped, named."""
    if not provider_spec(h.name).capabilities.traffic_split:
        pytest.skip(f"{h.name} does not declare Capabilities.traffic_split")
    v1, v2 = bundles.v1.manifest.version, bundles.v2.manifest.version
    h.provider.deploy(bundles.v1.path)  # v1 is live
    rollout = RolloutSection(strategy="canary", canary_percent=50, wait_s=CANARY_HOLD_S)
    deploy = h.config.deploy.model_copy(update={"rollout": rollout})
    canary = h.make_provider(h.config.model_copy(update={"deploy": deploy}))
    outcome: list[Deployment | Exception] = []

    def roll_out() -> None:
        try:
            outcome.append(canary.deploy(bundles.v2.path))
        except Exception as exc:  # asserted below
            outcome.append(exc)

    def shares() -> set[tuple[str, int]]:
        described = h.provider.describe(NAME)
        return {(v.version, v.traffic_pct) for v in described.versions if v.traffic_pct > 0}

    thread = threading.Thread(target=roll_out, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: shares() == {(v1, 50), (v2, 50)} or bool(outcome), 120, "the split")
        held = h.provider.describe(NAME)
        answers = [h.invoker.invoke_sync(NAME, bundles.example()) for _ in range(20)]
        still_held = shares() == {(v1, 50), (v2, 50)}
    finally:
        thread.join(timeout=120)
    assert not thread.is_alive() and len(outcome) == 1, outcome
    deployed = outcome[0]
    assert isinstance(deployed, Deployment), deployed
    assert held.status is DeploymentStatus.UPDATING and held.version == v1, held
    assert still_held, f"the step ended before 20 calls: raise CANARY_HOLD_S ({CANARY_HOLD_S})"
    assert {r.version for r in answers} == {v1, v2}  # one version only: 2 * 0.5**20, 2e-6
    for r in answers:  # each answer is its version's own
        assert r.version is not None and _outputs(r) == bundles.outputs[r.version]
    assert (deployed.version, deployed.status) == (v2, DeploymentStatus.READY)
    described = h.provider.describe(NAME)
    assert [(v.version, v.traffic_pct) for v in described.versions] == [(v2, 100)]
    assert h.running_versions(NAME) == {v2}
    assert {h.invoker.invoke_sync(NAME, bundles.example()).version for _ in range(10)} == {v2}


# -- errors --------------------------------------------------------------------------------


def test_bad_input_is_invalid_input_naming_the_index_and_field(
    h: Harness, first_deploy: FirstDeploy
) -> None:
    body = json.dumps({"inputs": [{"value": 1}, {"value": "x"}]}).encode()
    with pytest.raises(InvalidInput) as sync_error:
        h.invoker.invoke_sync(NAME, body)
    with pytest.raises(InvalidInput) as async_error:
        _run(h.invoker, lambda: h.invoker.invoke(NAME, body))
    for error in (sync_error.value, async_error.value):
        problems = [(p.get("index"), p.get("field")) for p in error.details]
        assert problems == [(1, "value")], error.details
        assert "inputs[1].value" in error.message
    with pytest.raises(BadRequest):
        h.invoker.invoke_sync(NAME, b'{"inputs": [')


def test_model_errors_and_deadlines_are_typed(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    with pytest.raises(ModelError):
        h.invoker.invoke_sync(NAME, b'{"inputs": [{"value": 1, "fail": true}]}')
    slow = b'{"inputs": [{"value": 1, "sleep_ms": 1500}]}'
    with pytest.raises(DeadlineExceeded):
        h.invoker.invoke_sync(NAME, slow, timeout=0.3)
    with pytest.raises(DeadlineExceeded):
        _run(h.invoker, lambda: h.invoker.invoke(NAME, slow, timeout=0.3))
    # the endpoint serves again once the abandoned slow calls are done (retried as told)
    _wait_for(lambda: _serves(h, bundles.example()), 30, "the endpoint to serve again")


def test_a_body_over_the_request_limit_is_payload_too_large(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    limit = h.request_limit()
    head, tail = b'{"inputs": [{"value": 1}], "padding": "', b'"}'
    body = head + b"x" * (limit + 1 - len(head) - len(tail)) + tail
    assert len(body) == limit + 1
    with pytest.raises(PayloadTooLarge):
        h.invoker.invoke_sync(NAME, body)
    with pytest.raises(PayloadTooLarge):
        _run(h.invoker, lambda: h.invoker.invoke(NAME, body))
    assert isinstance(h.invoker.invoke_sync(NAME, bundles.example()), InvokeResult)


def test_a_throttled_endpoint_raises_throttled_with_retry_after(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    # An invoke path that retries throttling gives up within the call's timeout.
    with h.throttled(NAME):
        with pytest.raises(Throttled) as sync_error:  # Overloaded is a Throttled
            h.invoker.invoke_sync(NAME, bundles.example(), timeout=10)
        with pytest.raises(Throttled) as async_error:
            _run(h.invoker, lambda: h.invoker.invoke(NAME, bundles.example(), timeout=10))
    for error in (sync_error.value, async_error.value):
        assert error.retry_after > 0
    assert isinstance(h.invoker.invoke_sync(NAME, bundles.example()), InvokeResult)


# -- describe, list, logs ------------------------------------------------------------------


def test_describe_and_list_report_the_projects_deployments_and_no_others(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    live = h.provider.describe(NAME).version
    other = h.provider.deploy(bundles.v1.path, name=OTHER)
    assert (other.name, other.status) == (OTHER, DeploymentStatus.READY)
    with h.foreign(FOREIGN, bundles.v1.path):
        listed = {d.name: d for d in h.provider.list()}
        assert set(listed) == {NAME, OTHER}
        assert listed[NAME].version == live and listed[OTHER].version == bundles.v1.manifest.version
        for d in listed.values():
            assert (d.provider, d.status) == (h.name, DeploymentStatus.READY)
            assert h.provider.describe(d.name).status is DeploymentStatus.READY
    lines = h.provider.logs(NAME, tail=5)
    assert isinstance(lines, list) and len(lines) <= 5 and all(isinstance(x, str) for x in lines)
    assert h.provider.delete(OTHER) is True
    assert [d.name for d in h.provider.list()] == [NAME]


# -- delete --------------------------------------------------------------------------------


def test_delete_removes_the_deployment(h: Harness, first_deploy: FirstDeploy) -> None:
    assert h.provider.delete(NAME) is True
    assert h.running_versions(NAME) == set()
    assert NAME not in {d.name for d in h.provider.list()}


def test_delete_again_is_a_no_op(h: Harness, first_deploy: FirstDeploy) -> None:
    h.provider.delete(NAME)  # gone (a no-op after the test before)
    assert h.provider.delete(NAME) is False
    assert h.provider.delete(PLANNED) is False  # never deployed


def test_after_delete_invoke_describe_and_status_raise_not_found(
    h: Harness, bundles: Bundles, first_deploy: FirstDeploy
) -> None:
    h.provider.delete(NAME)  # gone (a no-op after the tests before)
    with pytest.raises(NotFound):
        h.invoker.invoke_sync(NAME, bundles.example())
    with pytest.raises(NotFound):
        _run(h.invoker, lambda: h.invoker.invoke(NAME, bundles.example()))
    with pytest.raises(NotFound):
        _run(h.invoker, lambda: h.invoker.status(NAME))
    with pytest.raises(NotFound):
        h.provider.describe(NAME)


# -- close ---------------------------------------------------------------------------------


def test_close_releases_the_clients_and_the_provider_is_a_context_manager(h: Harness) -> None:
    provider = h.make_provider()
    with provider as entered:
        assert entered is provider
        entered.list()  # used, so it has clients to release
    assert h.clients_closed(provider)
    provider.close()  # closing twice is harmless
    invoker = h.make_invoker()
    with pytest.raises(NotFound):
        invoker.invoke_sync("never-deployed", b"{}")
    invoker.close()

    async def ask() -> None:
        with pytest.raises(NotFound):
            await invoker.status("never-deployed")

    _run(invoker, ask)  # then aclose() on the same loop
