"""The shared deploy transaction (adapters/rollout.py), every branch against an in-memory
cloud in milliseconds: the clock and the sleep are injected, and :class:`FakeCloud` refuses,
loses the answer of, delays or fails each step on demand. No mock: the fake cloud is the
boundary the transaction talks to (a real cloud's steps are tested on its emulator)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Change
from adapters.rollout import (
    ALREADY_LIVE,
    Busy,
    Diff,
    Outcome,
    Settle,
    StillSettling,
    Terms,
    Timing,
    TrafficStep,
    rollout_schedule,
    run_rollout,
    smoke_problem,
)
from adapters.sagemaker import rollout_waits_s
from aiaas.config import RolloutSection
from aiaas.errors import AiaasError, DeployFailed, NotReady, ProviderError, Throttled
from aiaas.manifest import Batching, Manifest, Resources
from aiaas.plugins import Capabilities

PROJECT = "ours"
OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"value": {"type": "number"}},
    "required": ["value"],
}


def manifest(version: str) -> Manifest:
    return Manifest(
        name="probe",
        version=version,
        digest=f"sha256:{version}{'0' * 48}",
        entrypoint="probe_model:Probe",
        input_schema={"type": "object"},
        output_schema=OUTPUT_SCHEMA,
        example_request={"inputs": [{"value": 1}, {"value": 2}]},
        batching=Batching(max_batch_size=1, max_delay_ms=0),
        resources=Resources(gpu_count=0, memory_mb=128),
    )


V1, V2 = manifest("1" * 16), manifest("2" * 16)
BUNDLES = {Path("v1.tar.gz"): V1, Path("v2.tar.gz"): V2}


def good_answer(version: str, count: int = 2) -> bytes:
    outputs = [{"value": float(i)} for i in range(count)]
    return json.dumps({"outputs": outputs, "model": "probe", "version": version}).encode()


class Clock:
    """Injected time: sleeping moves it on, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.001)


@dataclass
class FakeCloud:
    """One deployment's worth of cloud in memory: versions (resources named
    ``probe-<version>``), their traffic shares, autoscaling, and uploads. Every write is
    recorded; each can be refused, done with its answer lost, left pending for a number of
    polls, or settle failed."""

    uploads: set[str] = field(default_factory=set)
    owners: dict[str, str] = field(default_factory=dict)  # resource -> project tag
    traffic: dict[str, int] = field(default_factory=dict)  # resource -> percent
    scaling: dict[str, int] | None = None
    writes: list[tuple[str, Any]] = field(default_factory=list)
    refuse: dict[str, AiaasError] = field(default_factory=dict)  # op -> its refusal
    lose_answer: set[str] = field(default_factory=set)  # op carried out, answer failed
    pending_polls: int = 0  # polls answering "pending" after each write
    never_settles: bool = False
    switch_never_settles: bool = False  # creates settle, traffic shifts do not
    settle_fails: dict[str, str] = field(default_factory=dict)  # op -> the cloud's reason
    switch_drops_scaling: bool = False  # as SageMaker's instance type change does
    answers: dict[str, Callable[[str], bytes]] = field(default_factory=dict)
    smoke_calls: list[tuple[str, bool]] = field(default_factory=list)
    busy_polls: int = 0  # diffs answering "still Updating from an earlier change" (-1: ever)
    _pending: int = 0
    _failure: str | None = None

    def write(self, op: str, arg: Any, effect: Callable[[], None]) -> None:
        self.writes.append((op, arg))
        if op in self.refuse:
            raise self.refuse.pop(op)
        effect()
        self._pending = self.pending_polls
        self._failure = self.settle_fails.pop(op, None)
        if op in self.lose_answer:
            self.lose_answer.discard(op)
            raise ProviderError(f"{op}: the answer was lost (simulated)")

    def serving(self) -> str | None:
        shares = {r: pct for r, pct in self.traffic.items() if pct > 0}
        return max(shares, key=lambda r: shares[r]) if shares else None


@dataclass(frozen=True)
class Desired:
    name: str
    manifest: Manifest
    resource: str
    scaling: dict[str, int] | None


@dataclass(frozen=True)
class Live:
    traffic: dict[str, int]
    scaling: dict[str, int] | None


class FakeSteps:
    """The :class:`~adapters.rollout.Steps` of :class:`FakeCloud`."""

    terms = Terms("endpoint", "the fake cloud", "fake.deploy_timeout_s")

    def __init__(
        self, cloud: FakeCloud, *, pre_traffic: bool = False, server_side: bool = False
    ) -> None:
        self.cloud = cloud
        self.capabilities = Capabilities(pre_traffic, server_side)
        self.scaling: dict[str, int] | None = None  # what the config asks for

    def desired(self, bundle: Path, name: str | None) -> Desired:
        found = BUNDLES[bundle]
        name = name or found.name
        return Desired(name, found, f"{name}-{found.version}", self.scaling)

    def live(self, desired: Desired) -> Live:
        return Live(dict(self.cloud.traffic), self.cloud.scaling)

    def diff(self, desired: Desired, live: Live) -> Diff:
        cloud, new = self.cloud, desired.resource
        if cloud.busy_polls:
            if cloud.busy_polls > 0:
                cloud.busy_polls -= 1
            raise Busy(f"endpoint {desired.name} is Updating")
        serving = cloud.serving()
        there = new in cloud.owners
        entry: Change
        if serving is None:
            entry = Change("create", "endpoint", desired.name)
        elif serving == new:
            entry = Change("keep", "endpoint", desired.name)
        else:
            entry = Change("update", "endpoint", desired.name, f"{serving} -> {new}")
        scaling: tuple[Change, ...] = ()
        if desired.scaling != live.scaling:
            scaling = (Change("update", "scaling", desired.name),)
        ours = [r for r, owner in cloud.owners.items() if owner == PROJECT and r != new]
        return Diff(
            name=desired.name,
            manifest=desired.manifest,
            upload=Change(
                "keep" if desired.manifest.digest in cloud.uploads else "create",
                "archive",
                desired.manifest.digest,
            ),
            new_version=(Change("keep" if there else "create", "version", new),),
            entry=entry,
            live_resources=frozenset(r for r, pct in live.traffic.items() if pct > 0),
            scaling=scaling,
            leftovers=tuple(Change("delete", "version", r, "replaced") for r in sorted(ours)),
            live_version=serving.rsplit("-", 1)[1] if serving else None,
        )

    def upload(self, bundle: Path) -> str:
        digest = BUNDLES[bundle].digest
        self.cloud.write("upload", digest, lambda: self.cloud.uploads.add(digest))
        return digest

    def create(self, desired: Desired, diff: Diff) -> None:
        cloud = self.cloud

        def effect() -> None:
            cloud.owners[desired.resource] = PROJECT
            cloud.traffic[desired.resource] = 0

        cloud.write("create", desired.resource, effect)

    def settled(self, desired: Desired, traffic_pct: int) -> Settle:
        cloud = self.cloud
        if cloud.never_settles or (cloud.switch_never_settles and traffic_pct > 0):
            return Settle("pending", "Updating")
        if cloud._pending > 0:
            cloud._pending -= 1
            return Settle("pending", "Updating")
        if cloud._failure is not None:
            return Settle("failed", cloud._failure)
        now = cloud.traffic.get(desired.resource)
        if now == traffic_pct:
            return Settle("ok")
        return Settle("failed", f"the new version takes {now}%, not {traffic_pct}%")

    def taken(self, desired: Desired, traffic_pct: int) -> str | None:
        cloud = self.cloud
        if cloud.never_settles or cloud._pending > 0:
            return "Updating"
        now = cloud.traffic.get(desired.resource)
        if now is not None and (traffic_pct == 0 or now > 0):
            return f"serving {now}% from {desired.resource}"
        return None

    def switch(self, desired: Desired, live: Live, step: TrafficStep) -> None:
        cloud = self.cloud

        def effect() -> None:
            if cloud.switch_drops_scaling:
                cloud.scaling = None
            if "switch" in cloud.settle_fails:
                return  # the cloud refuses the shift once it tried: traffic stays
            for resource in cloud.traffic:
                cloud.traffic[resource] = 0 if resource != desired.resource else step.pct
            old = max(live.traffic, key=lambda r: live.traffic[r]) if live.traffic else None
            if old is not None and old != desired.resource:
                cloud.traffic[old] = 100 - step.pct

        cloud.write("switch", step.pct, effect)

    def switch_back(self, desired: Desired, live: Live) -> None:
        cloud = self.cloud

        def effect() -> None:
            for resource in cloud.traffic:
                cloud.traffic[resource] = live.traffic.get(resource, 0)

        cloud.write("switch_back", None, effect)

    def smoke(self, desired: Desired, body: bytes, *, before_traffic: bool) -> bytes:
        cloud = self.cloud
        target = desired.resource if before_traffic else (cloud.serving() or "")
        cloud.smoke_calls.append((target, before_traffic))
        assert json.loads(body) == desired.manifest.example_request
        answer = cloud.answers.get(target)
        if answer is not None:
            return answer(target)
        return good_answer(target.rsplit("-", 1)[1])

    def remove(self, change: Change) -> None:
        cloud = self.cloud

        def effect() -> None:
            cloud.owners.pop(change.name, None)
            cloud.traffic.pop(change.name, None)

        cloud.write("remove", change.name, effect)

    def read_scaling(self, desired: Desired) -> object:
        return None if self.cloud.scaling is None else dict(self.cloud.scaling)

    def apply_scaling(self, desired: Desired, changes: tuple[Change, ...]) -> None:
        if self.cloud.scaling != desired.scaling:
            wanted = desired.scaling
            self.cloud.write("scale", wanted, lambda: setattr(self.cloud, "scaling", wanted))

    def restore_scaling(self, desired: Desired, before: object) -> None:
        assert before is None or isinstance(before, dict)
        if self.cloud.scaling != before:
            self.cloud.write("restore", before, lambda: setattr(self.cloud, "scaling", before))


@dataclass
class Run:
    """One deploy against a fake cloud: its progress messages and injected time."""

    steps: FakeSteps
    clock: Clock = field(default_factory=Clock)
    messages: list[str] = field(default_factory=list)
    smoke_s: float = 0.0  # the cloud's patience with a cold version (Timing.smoke_s)

    def deploy(self, bundle: Path, rollout: RolloutSection | None = None) -> Outcome:
        return run_rollout(
            self.steps,
            bundle,
            name=None,
            rollout=rollout or RolloutSection(),
            timing=Timing(
                60.0, 2.0, clock=self.clock, sleep=self.clock.sleep, smoke_s=self.smoke_s
            ),
            upload=self.steps.upload,
            progress=lambda message, _fraction: self.messages.append(message),
        )


V1_PATH, V2_PATH = Path("v1.tar.gz"), Path("v2.tar.gz")
OLD, NEW = f"probe-{V1.version}", f"probe-{V2.version}"


def live_on_v1(**knobs: Any) -> tuple[FakeCloud, Run]:
    """A cloud serving v1 (with autoscaling max 2), and a run set to deploy v2 (max 5)."""
    cloud = FakeCloud()
    steps = FakeSteps(cloud, pre_traffic=knobs.pop("pre_traffic", False))
    steps.scaling = {"max": 2}
    Run(steps).deploy(V1_PATH)
    for name, value in knobs.items():
        setattr(cloud, name, value)
    cloud.writes.clear()
    cloud.smoke_calls.clear()
    steps.scaling = {"max": 5}
    return cloud, Run(steps)


def ops(cloud: FakeCloud) -> list[str]:
    return [op for op, _ in cloud.writes]


def test_a_first_deploy_uploads_creates_switches_smokes_and_scales() -> None:
    cloud = FakeCloud(pending_polls=2)
    steps = FakeSteps(cloud)
    steps.scaling = {"max": 2}
    run = Run(steps)
    outcome = run.deploy(V1_PATH)
    assert outcome.changed and outcome.warnings == ()
    assert cloud.writes == [
        ("upload", V1.digest),
        ("create", OLD),
        ("switch", 100),
        ("scale", {"max": 2}),
    ]
    assert cloud.traffic == {OLD: 100} and cloud.smoke_calls == [(OLD, False)]
    assert run.clock.sleeps == [2.0] * 4  # two pending polls after create, two after switch
    assert run.messages == [
        f"uploading {V1.digest}",
        f"creating {V1.version}",
        "creating endpoint probe: Updating (0s)",
        "creating endpoint probe: Updating (2s)",
        f"creating endpoint probe: 100% to {V1.version} (all_at_once)",
        "creating endpoint probe: Updating (4s)",
        "creating endpoint probe: Updating (6s)",
        "smoke test",
        "applying autoscaling",
        "ready",
    ]


def test_the_live_digest_makes_no_write_call() -> None:
    cloud, run = live_on_v1()
    run.steps.scaling = {"max": 2}
    outcome = run.deploy(V1_PATH)
    assert not outcome.changed and outcome.diff.unchanged
    assert cloud.writes == [] and cloud.smoke_calls == []
    assert run.messages == ["already live: nothing to do"]
    assert outcome.diff.plan().unchanged


def test_an_update_switches_then_removes_the_replaced_version() -> None:
    cloud, run = live_on_v1()
    outcome = run.deploy(V2_PATH)
    assert ops(cloud) == ["upload", "create", "switch", "scale", "remove"]
    assert cloud.writes[-1] == ("remove", OLD)
    assert cloud.traffic == {NEW: 100} and cloud.scaling == {"max": 5}
    assert outcome.diff.plan().changes[-1] == Change("delete", "version", OLD, "replaced")
    assert "removing replaced versions" in run.messages and run.messages[-1] == "ready"


def test_a_refused_create_removes_nothing_it_did_not_make_and_the_old_serves() -> None:
    cloud, run = live_on_v1(refuse={"create": DeployFailed("quota exceeded (simulated)")})
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message == "quota exceeded (simulated)"
    assert ops(cloud) == ["upload", "create", "remove"]  # the new version's name: gone
    assert cloud.traffic == {OLD: 100} and cloud.owners == {OLD: PROJECT}
    assert cloud.scaling == {"max": 2}


def test_a_refused_create_on_a_first_deploy_removes_no_entry_it_never_made() -> None:
    cloud = FakeCloud(refuse={"create": DeployFailed("quota exceeded (simulated)")})
    with pytest.raises(DeployFailed):
        Run(FakeSteps(cloud)).deploy(V1_PATH)
    assert cloud.writes == [("upload", V1.digest), ("create", OLD), ("remove", OLD)]


def test_a_refused_call_of_another_kind_is_a_deploy_failure_naming_the_version() -> None:
    cloud, run = live_on_v1(refuse={"switch": ProviderError("AWS said ValidationException")})
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message == (
        f"endpoint probe did not take {V2.version}: AWS said ValidationException"
    )
    assert cloud.traffic == {OLD: 100} and cloud.owners == {OLD: PROJECT}


@pytest.mark.parametrize("op", ["create", "switch"])
def test_a_call_taken_though_its_answer_failed_removes_nothing(op: str) -> None:
    cloud, run = live_on_v1(lose_answer={op}, pending_polls=3)
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message.endswith(
        "endpoint probe is Updating: nothing removed, deploy again once it settles"
    )
    assert "remove" not in ops(cloud) and "restore" not in ops(cloud)
    assert NEW in cloud.owners and OLD in cloud.owners


def test_a_deploy_waits_for_an_earlier_change_to_settle_then_goes_on() -> None:
    """A retry started right after an interrupted deploy: the endpoint is still Updating
    from it. The deploy waits, with progress, reading again each poll, then deploys."""
    cloud, run = live_on_v1()
    cloud.busy_polls = 3
    outcome = run.deploy(V2_PATH)
    assert outcome.changed and cloud.serving() == NEW
    waits = [m for m in run.messages if m.startswith("waiting for an earlier change")]
    assert waits == [
        f"waiting for an earlier change: endpoint probe is Updating ({s}s)" for s in (0, 2, 4)
    ]
    assert run.clock.sleeps[:3] == [2.0, 2.0, 2.0]
    assert ops(cloud)[:2] == ["upload", "create"]  # nothing written while it waited


def test_a_deployment_settling_past_the_deadline_is_refused_with_nothing_written() -> None:
    cloud, run = live_on_v1()
    cloud.busy_polls = -1  # never settles
    with pytest.raises(DeployFailed) as refused:
        run.deploy(V2_PATH)
    assert refused.value.message == (
        "endpoint probe is Updating, still after 60s (fake.deploy_timeout_s): an earlier "
        "change goes on there; deploy again once `aiaas status` shows it settled"
    )
    assert not isinstance(refused.value, StillSettling)
    assert ops(cloud) == [] and run.clock.now == pytest.approx(1060.0, abs=0.01)


def test_the_live_digest_reports_already_live_last() -> None:
    cloud, run = live_on_v1()
    cloud.writes.clear()
    run.steps.scaling = {"max": 2}
    assert not run.deploy(V1_PATH).changed
    assert run.messages == [ALREADY_LIVE]


def test_a_deploy_past_its_deadline_removes_nothing() -> None:
    cloud, run = live_on_v1(switch_drops_scaling=True)
    cloud.never_settles = True
    with pytest.raises(StillSettling) as late:
        run.deploy(V2_PATH)
    assert late.value.message.startswith("endpoint probe still Updating after 60s")
    assert "fake.deploy_timeout_s" in late.value.message
    assert "it goes on in the fake cloud" in late.value.message
    assert ops(cloud) == ["upload", "create"]  # never even switched: create did not settle
    assert run.clock.now == pytest.approx(1060.0, abs=0.01)  # one deadline, not waited past
    assert NEW in cloud.owners


@pytest.mark.parametrize("op", ["create", "switch"])
def test_a_step_that_waited_past_the_deadline_itself_removes_nothing(op: str) -> None:
    # A step may wait inside its one call (Azure ML's create waits for a new endpoint): its
    # own StillSettling is the transaction's, not a failure to clean up after.
    late = StillSettling("endpoint probe still Creating after 60s (simulated)")
    cloud, run = live_on_v1(refuse={op: late}, switch_drops_scaling=True)
    with pytest.raises(StillSettling) as raised:
        run.deploy(V2_PATH)
    assert raised.value is late
    assert "remove" not in ops(cloud) and "restore" not in ops(cloud)
    assert cloud.traffic.get(OLD) == 100


def test_a_switch_past_the_deadline_removes_nothing_and_restores_nothing() -> None:
    cloud, run = live_on_v1(switch_drops_scaling=True, switch_never_settles=True)
    with pytest.raises(StillSettling):
        run.deploy(V2_PATH)
    assert ops(cloud) == ["upload", "create", "switch"]
    assert cloud.scaling is None  # as the cloud has it mid-update: not touched


def test_a_version_that_settles_failed_surfaces_the_reason_and_scaling_goes_back() -> None:
    cloud, run = live_on_v1(
        settle_fails={"switch": "Insufficient capacity (simulated)"}, switch_drops_scaling=True
    )
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message == (
        f"endpoint probe did not take {V2.version}: Insufficient capacity (simulated)"
    )
    assert ops(cloud) == ["upload", "create", "switch", "restore", "remove"]
    assert cloud.writes[-1] == ("remove", NEW)
    assert cloud.scaling == {"max": 2}  # exactly as it was, not the failed deploy's 5
    assert cloud.traffic == {OLD: 100} and cloud.owners == {OLD: PROJECT}


def test_a_version_that_fails_to_start_is_removed_before_any_traffic_moves() -> None:
    cloud, run = live_on_v1(settle_fails={"create": "the image could not be pulled (simulated)"})
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message == (
        f"endpoint probe did not take {V2.version}: the image could not be pulled (simulated)"
    )
    assert ops(cloud) == ["upload", "create", "remove"] and cloud.writes[-1] == ("remove", NEW)
    assert cloud.traffic == {OLD: 100} and cloud.owners == {OLD: PROJECT}
    assert cloud.smoke_calls == []


def test_a_first_deploy_that_fails_removes_the_entry_and_the_version() -> None:
    cloud = FakeCloud(settle_fails={"switch": "did not pass the ping (simulated)"})
    run = Run(FakeSteps(cloud))
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V1_PATH)
    assert "did not pass the ping (simulated)" in failed.value.message
    assert cloud.writes[-2:] == [("remove", "probe"), ("remove", OLD)]
    assert cloud.owners == {} and "rolled back" not in failed.value.message


def test_a_smoke_failure_before_traffic_removes_the_new_version_and_never_switches() -> None:
    cloud, run = live_on_v1(pre_traffic=True)
    cloud.answers[NEW] = lambda _: b"body"
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message.startswith(
        f"endpoint probe: {V2.version} took no traffic; its smoke test failed: "
        "the answer is not JSON"
    )
    assert cloud.smoke_calls == [(NEW, True)]
    assert ops(cloud) == ["upload", "create", "remove"]
    assert cloud.traffic == {OLD: 100} and cloud.owners == {OLD: PROJECT}
    assert cloud.scaling == {"max": 2}


def test_a_cold_version_is_asked_again_until_the_smoke_tests_own_deadline() -> None:
    """A serverless cold start answers 429 ModelNotReady for minutes: the smoke test waits
    as told and asks again, however many times, within Timing.smoke_s (300 s)."""
    cloud, run = live_on_v1()
    cold = iter([NotReady("ModelNotReadyException (simulated)", retry_after=20.0)] * 6)

    def answer(target: str) -> bytes:
        refusal = next(cold, None)
        if refusal is not None:
            raise refusal
        return good_answer(target.rsplit("-", 1)[1])

    cloud.answers[NEW] = answer
    run.smoke_s = 300.0
    outcome = run.deploy(V2_PATH)
    assert outcome.changed and cloud.traffic == {NEW: 100}
    assert run.clock.sleeps.count(20.0) == 6 and len(cloud.smoke_calls) == 7
    cloud, run = live_on_v1()
    cloud.answers[NEW] = lambda _: (_ for _ in ()).throw(
        Throttled("busy (simulated)", retry_after=60)
    )
    run.smoke_s = 300.0
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert "busy (simulated)" in failed.value.message and failed.value.message.endswith(
        f"; rolled back: {V1.version} serves"
    )
    assert run.clock.sleeps.count(60) == 5  # 5 x 60 s fit the 300 s; a sixth would not
    cloud, run = live_on_v1()  # a cloud without patience (local: not ready means gone)
    cloud.answers[NEW] = lambda _: (_ for _ in ()).throw(NotReady("gone (simulated)"))
    with pytest.raises(DeployFailed, match="gone \\(simulated\\)"):
        run.deploy(V2_PATH)
    assert len(cloud.smoke_calls) == 1 and 60 not in run.clock.sleeps


def test_a_pre_traffic_cloud_smokes_the_pinned_version_and_not_after() -> None:
    cloud, run = live_on_v1(pre_traffic=True)
    run.deploy(V2_PATH)
    assert cloud.smoke_calls == [(NEW, True)]
    assert cloud.traffic == {NEW: 100}


def test_a_smoke_failure_after_the_switch_switches_back_and_removes_the_new_version() -> None:
    cloud, run = live_on_v1(switch_drops_scaling=True)
    cloud.answers[NEW] = lambda _: good_answer(V1.version)  # the old version answered
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message == (
        "endpoint probe is in service but its smoke test failed: the answer names version "
        f"'{V1.version}', not the new {V2.version}; rolled back: {V1.version} serves"
    )
    assert ops(cloud) == ["upload", "create", "switch", "switch_back", "restore", "remove"]
    assert cloud.traffic == {OLD: 100} and cloud.owners == {OLD: PROJECT}
    assert cloud.scaling == {"max": 2}
    assert f"rolling endpoint probe back to {V1.version}" in run.messages


def test_a_refused_switch_back_says_both_and_removes_nothing() -> None:
    cloud, run = live_on_v1()
    cloud.answers[NEW] = lambda _: good_answer(V2.version, count=1)
    cloud.refuse["switch_back"] = DeployFailed("AWS said ResourceLimitExceeded (simulated)")
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message == (
        "endpoint probe is in service but its smoke test failed: 1 outputs answered 2 inputs; "
        f"rolling back to {V1.version} failed too: AWS said ResourceLimitExceeded "
        f"(simulated); {V2.version} may still serve: see `aiaas status probe`"
    )
    assert "remove" not in ops(cloud)
    assert cloud.traffic == {NEW: 100, OLD: 0}


def test_a_failed_cleanup_of_the_failed_version_adds_to_the_error() -> None:
    cloud, run = live_on_v1(settle_fails={"switch": "Failed (simulated)"})
    cloud.refuse["remove"] = ProviderError("AccessDenied (simulated)")
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message == (
        f"endpoint probe did not take {V2.version}: Failed (simulated); "
        "the failed version could not be removed: AccessDenied (simulated)"
    )


def test_a_failed_scaling_restore_adds_to_the_error() -> None:
    cloud, run = live_on_v1(settle_fails={"switch": "Failed (simulated)"})
    cloud.switch_drops_scaling = True
    cloud.refuse["restore"] = ProviderError("Throttled (simulated)")
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert failed.value.message.endswith(
        "; autoscaling could not be put back as it was: Throttled (simulated)"
    )
    assert cloud.writes[-1] == ("remove", NEW)  # the removal still ran


def test_a_failed_removal_of_the_replaced_version_is_a_warning_the_new_one_serves() -> None:
    cloud, run = live_on_v1()
    cloud.refuse["remove"] = ProviderError("AccessDenied (simulated)")
    outcome = run.deploy(V2_PATH)
    assert outcome.warnings == (
        f"version {OLD} could not be removed: AccessDenied (simulated) "
        "(the next deploy removes it)",
    )
    assert f"warning: {outcome.warnings[0]}" in run.messages
    assert cloud.traffic[NEW] == 100 and OLD in cloud.owners
    again = run.deploy(V2_PATH)  # the next deploy removes it, nothing else
    assert again.changed and cloud.writes[-1] == ("remove", OLD)


def test_only_what_the_steps_reported_as_ours_is_removed() -> None:
    cloud, run = live_on_v1()
    cloud.owners["probe-" + "f" * 16] = "another project"
    run.deploy(V2_PATH)
    assert cloud.owners == {NEW: PROJECT, "probe-" + "f" * 16: "another project"}
    cloud.settle_fails["switch"] = "Failed (simulated)"
    with pytest.raises(DeployFailed):
        run.deploy(V1_PATH)
    assert "probe-" + "f" * 16 in cloud.owners


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"body", "the answer is not JSON: 'body'"),
        (b'{"outputs": "x", "version": "v"}', "the answer has no 'outputs' list"),
        (good_answer(V1.version), f"the answer names version '{V1.version}', not the new"),
        (
            json.dumps({"outputs": [{"value": "two"}, {"value": 1}], "version": V2.version}),
            "outputs[0].value does not fit the output schema: must be number",
        ),
        (
            json.dumps({"outputs": [{}, {"value": 1}], "version": V2.version}),
            "outputs[0].value does not fit the output schema: Field required",
        ),
    ],
    ids=["body", "no-outputs", "old-version", "wrong-type", "missing-field"],
)
def test_a_bad_smoke_answer_fails_the_deploy_naming_what_was_wrong(
    answer: bytes | str, problem: str
) -> None:
    body = answer.encode() if isinstance(answer, str) else answer
    cloud, run = live_on_v1()
    cloud.answers[NEW] = lambda _: body
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH)
    assert problem in failed.value.message
    assert failed.value.message.endswith(f"; rolled back: {V1.version} serves")
    assert cloud.traffic == {OLD: 100} and cloud.owners == {OLD: PROJECT}


def test_smoke_problem_accepts_a_valid_answer_of_the_new_version() -> None:
    assert smoke_problem(good_answer(V2.version), V2) is None


def test_a_client_driven_canary_steps_in_order_and_holds() -> None:
    cloud, run = live_on_v1()
    rollout = RolloutSection(strategy="canary", canary_percent=10, wait_s=30)
    run.deploy(V2_PATH, rollout)
    assert [arg for op, arg in cloud.writes if op == "switch"] == [10, 100]
    assert 30 in run.clock.sleeps
    assert f"holding 10% on {V2.version} for 30s" in run.messages
    assert cloud.smoke_calls == [(NEW, False)]  # after the last step: all traffic is new


def test_a_client_driven_linear_rollout_steps_in_order() -> None:
    cloud, run = live_on_v1()
    run.deploy(V2_PATH, RolloutSection(strategy="linear", step_percent=30, wait_s=5))
    assert [arg for op, arg in cloud.writes if op == "switch"] == [30, 60, 90, 100]
    assert run.clock.sleeps.count(5) == 3


def test_a_failure_at_a_later_step_switches_back() -> None:
    cloud, run = live_on_v1()
    original = run.steps.switch

    def switch(desired: Desired, live: Live, step: TrafficStep) -> None:
        if step.pct == 100:
            cloud.settle_fails["switch"] = "the new version's error rate (simulated)"
        original(desired, live, step)

    run.steps.switch = switch  # type: ignore[method-assign]
    with pytest.raises(DeployFailed) as failed:
        run.deploy(V2_PATH, RolloutSection(strategy="canary", canary_percent=10, wait_s=1))
    assert "the new version's error rate (simulated)" in failed.value.message
    assert failed.value.message.endswith(f"; rolled back: {V1.version} serves")
    assert ops(cloud) == ["upload", "create", "switch", "switch", "switch_back", "remove"]
    assert cloud.traffic == {OLD: 100}


def test_a_first_deploy_takes_all_the_traffic_at_once_whatever_the_strategy() -> None:
    """No version serves yet: there is nothing to share the traffic with or watch."""
    cloud = FakeCloud()
    run = Run(FakeSteps(cloud))
    run.deploy(V1_PATH, RolloutSection(strategy="canary", canary_percent=10, wait_s=30))
    assert [arg for op, arg in cloud.writes if op == "switch"] == [100]
    assert 30 not in run.clock.sleeps


def test_a_server_side_rollout_is_one_switch() -> None:
    cloud = FakeCloud()
    steps = FakeSteps(cloud, server_side=True)
    Run(steps).deploy(V1_PATH)
    run = Run(steps)
    run.deploy(V2_PATH, RolloutSection(strategy="linear", step_percent=10, wait_s=60))
    assert [arg for op, arg in cloud.writes if op == "switch"] == [100, 100]
    assert run.clock.sleeps == []


@pytest.mark.parametrize(
    ("rollout", "steps"),
    [
        (RolloutSection(), [(100, 0.0)]),
        (RolloutSection(wait_s=9, rollback_alarms=["p-5xx"]), [(100, 9.0)]),
        (RolloutSection(strategy="canary", canary_percent=20, wait_s=3), [(20, 3.0), (100, 0.0)]),
        (
            RolloutSection(strategy="linear", step_percent=25, wait_s=2),
            [(25, 2.0), (50, 2.0), (75, 2.0), (100, 0.0)],
        ),
        (
            RolloutSection(strategy="linear", step_percent=40, wait_s=2),
            [(40, 2.0), (80, 2.0), (100, 0.0)],
        ),
    ],
    ids=["all_at_once", "baked", "canary", "linear", "linear-uneven"],
)
def test_rollout_schedule_and_its_waits_agree_with_the_server_side_ones(
    rollout: RolloutSection, steps: list[tuple[int, float]]
) -> None:
    schedule = rollout_schedule(rollout)
    assert [(s.pct, s.wait_s) for s in schedule] == steps
    assert sum(s.wait_s for s in schedule) == rollout_waits_s(rollout)
