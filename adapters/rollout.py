"""The deploy transaction every cloud shares: no SDK inside.

A cloud supplies its :class:`Steps` (what it wants, what it has, a typed :class:`Diff`, and
one call per step: create the new version, one poll of whether it settled, switch traffic
one step, switch back, smoke test, remove, scaling read/apply/restore); :func:`run_rollout`
runs them in this order::

    desired → live → diff ─ unchanged? → done, no write call
                          └ upload (through Provider.upload) → [remove a failed entry]
                            → create the new version → poll until settled (one deadline)
                            → smoke test before traffic   (capabilities.pre_traffic_smoke)
                            → switch, step by step (rollout_schedule), each polled
                            → smoke test after the switch (a cloud that cannot pin a version)
                            → scaling → remove the replaced versions

The recovery rules SageMaker learned (and that hold for every cloud) are written here once:

- a create or switch call that failed may still have been **taken** (a read timeout, a lost
  answer): :meth:`Steps.taken` is asked, and when the cloud moves to the new version nothing
  is removed;
- past the deadline the change goes on in the cloud: :class:`StillSettling`, nothing removed;
- a deployment still settling from an earlier change (an interrupted deploy's) is waited
  for before the diff is taken (:class:`Busy`, within the same ``timeout_s``), not refused;
- traffic that reached the new version goes back (:meth:`Steps.switch_back`) when the
  version fails afterwards (its smoke test, a later step);
- a rollback or cleanup that fails **adds** to the error's message, never replaces it;
- scaling goes back exactly as it was (:meth:`Steps.restore_scaling` with what
  :meth:`Steps.read_scaling` saw before anything was written);
- only what the steps reported in the :class:`Diff` is removed: the new version's resources
  that the live version does not use (after a failure), the failed entry it replaces, and
  the ``leftovers`` the cloud found tagged as this project's (after success). The
  transaction never names a resource itself.

The smoke test checks what it got (:func:`smoke_problem`): a JSON answer whose ``outputs``
each fit the manifest's output schema, as many as the example request's inputs, naming the
version being deployed. A stand-in that answers ``200 body`` fails it.

Time is injected (``clock`` and ``sleep``), so the tests run every branch in milliseconds
against an in-memory cloud (``tests/test_rollout.py``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from adapters.base import Change, Plan, ProgressFn, no_progress
from aiaas.config import RolloutSection
from aiaas.errors import AiaasError, BundleError, DeployFailed, NotReady, Throttled
from aiaas.manifest import Manifest
from aiaas.plugins import Capabilities
from aiaas.protocol import InputCheck, brief

D = TypeVar("D")
"""What a cloud wants deployment ``name`` to be (its own type)."""
L = TypeVar("L")
"""What a cloud has now under that name (its own type)."""


@dataclass(frozen=True)
class Terms:
    """How messages name things on this cloud: ``noun`` (``endpoint``), ``cloud`` (``AWS``)
    and the setting that bounds a deploy (``sagemaker.deploy_timeout_s``)."""

    noun: str
    cloud: str
    timeout_key: str


@dataclass(frozen=True)
class TrafficStep:
    """Send ``pct`` percent of the traffic to the new version, then hold ``wait_s`` seconds
    before the next step."""

    pct: int
    wait_s: float


def rollout_schedule(rollout: RolloutSection) -> list[TrafficStep]:
    """The neutral ``deploy.rollout`` as traffic steps, ending at 100 %.

    ``all_at_once``: one step (held ``wait_s`` when ``rollback_alarms`` watch it, a baking
    period); ``canary``: ``canary_percent``, then the rest after ``wait_s``; ``linear``:
    ``step_percent`` more every ``wait_s``. The waits add up to what a server-side rollout
    of the same section waits (SageMaker's ``rollout_waits_s``).
    """
    if rollout.strategy == "canary":
        return [TrafficStep(rollout.canary_percent, rollout.wait_s), TrafficStep(100, 0.0)]
    if rollout.strategy == "linear":
        count = math.ceil(100 / rollout.step_percent)
        return [
            TrafficStep(min(100, rollout.step_percent * i), rollout.wait_s if i < count else 0.0)
            for i in range(1, count + 1)
        ]
    return [TrafficStep(100, rollout.wait_s if rollout.rollback_alarms else 0.0)]


SettleState = Literal["pending", "ok", "failed"]


@dataclass(frozen=True)
class Settle:
    """One poll's answer: ``pending`` (``detail``: what the cloud is doing, for progress),
    ``ok``, or ``failed`` (``detail``: the cloud's reason, as the error will say it)."""

    state: SettleState
    detail: str = ""


@dataclass(frozen=True)
class Diff:
    """What a deploy changes, typed: :meth:`Steps.diff` builds it, :meth:`plan` renders it,
    and :func:`run_rollout` takes its steps from the fields (never from display text).

    - ``upload``: the bundle archive (``create``: not where the cloud reads it yet);
    - ``new_version``: the resources the new version consists of (``create`` or ``keep``);
    - ``live_resources``: names of the resources the live version uses (never removed after
      a failure, even when ``new_version`` lists them);
    - ``replace_failed``: a failed entry only removal brings back (removed before create);
    - ``entry``: what takes the traffic (an endpoint): ``create`` (no version serves:
      removed again after a failure), ``update`` (a live version serves and is switched
      from), or ``keep`` (the new version already takes it);
    - ``scaling``: the autoscaling changes, rendered; :meth:`Steps.apply_scaling` applies;
    - ``leftovers``: replaced versions' resources tagged as this project's (``delete``),
      removed after success;
    - ``live_version``: the version serving now (what a rollback brings back).
    """

    name: str
    manifest: Manifest
    upload: Change
    new_version: tuple[Change, ...]
    entry: Change
    live_resources: frozenset[str] = frozenset()
    replace_failed: Change | None = None
    scaling: tuple[Change, ...] = ()
    leftovers: tuple[Change, ...] = ()
    live_version: str | None = None

    def changes(self) -> tuple[Change, ...]:
        """Every change in the order a deploy makes them."""
        failed = (self.replace_failed,) if self.replace_failed is not None else ()
        return (
            self.upload,
            *self.new_version,
            *failed,
            self.entry,
            *self.scaling,
            *self.leftovers,
        )

    @property
    def unchanged(self) -> bool:
        """True when deploying changes nothing: no write call at all."""
        return all(c.action == "keep" for c in self.changes())

    def plan(self) -> Plan:
        """The :class:`~adapters.base.Plan` a provider's ``plan()`` returns."""
        return Plan(self.name, self.manifest.version, self.changes())


class Steps(Protocol[D, L]):
    """What a cloud supplies to :func:`run_rollout`. Each method makes one call (or one
    short, fixed sequence of calls) and raises :mod:`aiaas.errors` types (mapped at the
    adapter boundary); none waits for the cloud to settle: the transaction polls.

    ``capabilities`` is the provider's :attr:`aiaas.plugins.ProviderSpec.capabilities`:
    ``pre_traffic_smoke`` (a request can reach the new version while it takes no traffic:
    the smoke test runs before any switch; without it, after the switch, and a failure
    switches back) and ``server_side_rollout`` (the cloud runs canary and linear shifts
    itself: the schedule is one step, its waits part of settling).

    The steps object may remember what ``create`` started (a local process) for the steps
    after it; the transaction calls it from one thread.
    """

    capabilities: Capabilities
    terms: Terms

    def desired(self, bundle: Path, name: str | None) -> D:
        """What deployment ``name`` (default: the manifest's) of ``bundle`` should be;
        refuses a bad name or bundle before any call."""
        ...

    def live(self, desired: D) -> L:
        """What the deployment is now (reads only)."""
        ...

    def diff(self, desired: D, live: L) -> Diff:
        """The typed changes from ``live`` to ``desired`` (reads only). Raises
        :class:`~aiaas.errors.DeployFailed` where the deploy must not start (the name is
        another project's), :class:`Busy` where the deployment is still settling from an
        earlier change (the transaction waits for it)."""
        ...

    def create(self, desired: D, diff: Diff) -> None:
        """Create the new version's resources (``diff.new_version``'s ``create`` ones),
        taking no traffic yet."""
        ...

    def settled(self, desired: D, traffic_pct: int) -> Settle:
        """One poll: has the deployment settled with the new version taking
        ``traffic_pct`` percent (0: created or switched back, not serving)?"""
        ...

    def taken(self, desired: D, traffic_pct: int) -> str | None:
        """After a create (``traffic_pct`` 0) or switch call that failed: where the cloud
        is, when it moves to the new version all the same (the call was taken: nothing may
        be removed), or None when it does not."""
        ...

    def switch(self, desired: D, live: L, step: TrafficStep) -> None:
        """Send ``step.pct`` percent of the traffic to the new version (on a first deploy:
        create the entry on it). A server-side rollout is started here, whole."""
        ...

    def switch_back(self, desired: D, live: L) -> None:
        """Send all the traffic back to the version of ``live``."""
        ...

    def smoke(self, desired: D, body: bytes, *, before_traffic: bool) -> bytes:
        """Send ``body`` (the manifest's example request) to the new version (pinned to
        it when ``before_traffic``) and return the answer's body as it came."""
        ...

    def remove(self, change: Change) -> None:
        """Remove the one resource ``change`` names (a change of this cloud's own
        :class:`Diff`, so one it reported as this project's); nothing when it is gone."""
        ...

    def read_scaling(self, desired: D) -> object:
        """The autoscaling as it is (opaque: only :meth:`restore_scaling` reads it)."""
        ...

    def apply_scaling(self, desired: D, changes: tuple[Change, ...]) -> None:
        """After success: bring autoscaling to what the config asks (``changes`` as
        planned); no write where it already is."""
        ...

    def restore_scaling(self, desired: D, before: object) -> None:
        """After a failure: put autoscaling back exactly as ``before`` was."""
        ...


class Busy(DeployFailed):
    """What :meth:`Steps.diff` raises where the deployment is still settling from an earlier
    change (a deploy interrupted while the cloud went on with it, a retry started right
    after): :func:`run_rollout` waits for it to settle, reading and diffing again every
    poll, within the deploy's ``timeout_s``, then goes on. ``message`` says what the cloud is
    doing (``endpoint 'probe' is Updating``); a plan, which never waits, shows it as is."""


class StillSettling(DeployFailed):
    """The deployment did not settle before the deadline: the change goes on in the cloud,
    so nothing it may still be moving to is removed (the next deploy removes what is
    unused)."""


@dataclass(frozen=True)
class Outcome:
    """What :func:`run_rollout` did: the diff it ran, whether it wrote anything, and what
    could not be done after the new version went live (the replaced version's removal)."""

    diff: Diff
    changed: bool
    warnings: tuple[str, ...] = field(default=())


SMOKE_PATIENCE_S = 300.0
"""How long a smoke test waits out a cold version that answers not ready or throttled (see
:attr:`Timing.smoke_s`)."""


@dataclass(frozen=True)
class Timing:
    """The deadline of a deploy (``timeout_s``, from the first write to the last settle),
    the poll interval, and the clock and sleep the transaction uses (tests inject both)."""

    timeout_s: float
    poll_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    smoke_s: float = 0.0
    """How long the smoke test asks again while the version answers not-ready or throttled:
    a cloud whose new version may be cold sets it (a serverless SageMaker endpoint answers
    429 ModelNotReadyException for minutes: :data:`SMOKE_PATIENCE_S`); 0 where not-ready
    means the version is gone (local's server died)."""


def smoke_problem(answer: bytes, manifest: Manifest) -> str | None:
    """What is wrong with ``answer`` to the manifest's example request (None: nothing).

    The answer must be a JSON object with an ``outputs`` list, one item per input of the
    example request, each valid under the manifest's output schema (the check the model
    server runs, compiled with fastjsonschema), and its ``version`` must be the manifest's:
    an old version answering, or a stand-in that answers ``200 body``, is no smoke test.
    """
    try:
        parsed = json.loads(answer)
    except ValueError:
        return f"the answer is not JSON: {brief(answer.decode('utf-8', 'replace'))!r}"
    outputs = parsed.get("outputs") if isinstance(parsed, dict) else None
    if not isinstance(outputs, list):
        return f"the answer has no 'outputs' list: {brief(answer.decode('utf-8', 'replace'))}"
    inputs = manifest.example_request.get("inputs")
    if isinstance(inputs, list) and len(outputs) != len(inputs):
        return f"{len(outputs)} outputs answered {len(inputs)} inputs"
    try:
        check = InputCheck(manifest.output_schema)
    except BundleError as exc:
        return f"the manifest's output schema cannot be checked: {exc.message}"
    for index, item in enumerate(outputs):
        found = check.problem(item)
        if found is not None:
            where = f"outputs[{index}]" + (f".{found['field']}" if found["field"] else "")
            return f"{where} does not fit the output schema: {found['message']}"
    version = parsed.get("version")
    if version != manifest.version:
        return f"the answer names version {version!r}, not the new {manifest.version}"
    return None


def run_rollout(
    steps: Steps[D, L],
    bundle: Path,
    *,
    name: str | None,
    rollout: RolloutSection,
    timing: Timing,
    upload: Callable[[Path], str],
    progress: ProgressFn = no_progress,
) -> Outcome:
    """Deploy ``bundle`` to deployment ``name`` through ``steps`` (see the module's doc).

    ``upload`` is the provider's :meth:`~adapters.base.Provider.upload`, called only when
    the diff says the archive is missing. Returns the :class:`Outcome` (the provider then
    describes the deployment); raises :class:`~aiaas.errors.DeployFailed` with the cloud's
    reason and, appended, what the recovery did or could not do; :class:`StillSettling`
    past the deadline.
    """
    desired = steps.desired(bundle, name)
    live, diff = _diff_once_settled(steps, desired, timing, progress)
    if diff.unchanged:
        progress(ALREADY_LIVE, 1.0)
        return Outcome(diff, changed=False)
    return _Run(steps, desired, live, diff, rollout, timing, progress).run(bundle, upload)


ALREADY_LIVE = "already live: nothing to do"
"""The progress message of a deploy that changes nothing (the digest and settings are
live): the last one it reports, with fraction 1.0."""


def _diff_once_settled(
    steps: Steps[D, L], desired: D, timing: Timing, progress: ProgressFn
) -> tuple[L, Diff]:
    """What is live and the diff to ``desired``, once the deployment is not settling from an
    earlier change (:class:`Busy`): polled within ``timing.timeout_s``, with progress."""
    clock = timing.clock
    started = clock()
    deadline = started + timing.timeout_s
    while True:
        live = steps.live(desired)
        try:
            return live, steps.diff(desired, live)
        except Busy as busy:
            elapsed = clock() - started
            if clock() >= deadline:
                raise DeployFailed(
                    f"{busy.message}, still after {elapsed:.0f}s ({steps.terms.timeout_key}): "
                    "an earlier change goes on there; deploy again once `aiaas status` shows "
                    "it settled"
                ) from None
            progress(f"waiting for an earlier change: {busy.message} ({elapsed:.0f}s)", None)
            timing.sleep(min(timing.poll_s, max(deadline - clock(), 0.0)))


class _Run:
    """One deploy's state: what was switched, what scaling was, the deadline."""

    def __init__(
        self,
        steps: Steps[Any, Any],
        desired: object,
        live: object,
        diff: Diff,
        rollout: RolloutSection,
        timing: Timing,
        progress: ProgressFn,
    ) -> None:
        self.steps, self.desired, self.live, self.diff = steps, desired, live, diff
        self.rollout, self.timing, self.progress = rollout, timing, progress
        self.terms = steps.terms
        self.what = f"{self.terms.noun} {diff.name}"
        self.version = diff.manifest.version
        self.scaling_before: object | None = None
        self.switched = False  # some traffic reached the new version and settled there
        self.entry_touched = False  # a switch call was made (on a first deploy: the entry)

    # -- the forward path ------------------------------------------------------------------

    def run(self, bundle: Path, upload: Callable[[Path], str]) -> Outcome:
        diff, steps, progress = self.diff, self.steps, self.progress
        if diff.upload.action == "create":
            progress(f"uploading {diff.upload.name}", 0.02)
            upload(bundle)
        started = self.timing.clock()
        deadline = started + self.timing.timeout_s
        if diff.entry.action == "update":
            self.scaling_before = steps.read_scaling(self.desired)
        if diff.replace_failed is not None:
            failed = diff.replace_failed
            progress(f"removing failed {failed.kind} {failed.name}", 0.05)
            steps.remove(failed)
        if diff.entry.action != "keep":
            if any(c.action == "create" for c in diff.new_version):
                progress(f"creating {self.version}", 0.06)
                self._write(lambda: steps.create(self.desired, diff), traffic_pct=0)
                self._settle(0, started, deadline, "creating")
            if steps.capabilities.pre_traffic_smoke:
                self._smoke(before_traffic=True)
            for step in self._schedule():
                self._switch(step, started, deadline)
        if not steps.capabilities.pre_traffic_smoke or diff.entry.action == "keep":
            self._smoke(before_traffic=False)
        progress("applying autoscaling", 0.9)
        steps.apply_scaling(self.desired, diff.scaling)
        return Outcome(diff, changed=True, warnings=self._remove_leftovers())

    def _schedule(self) -> list[TrafficStep]:
        if self.steps.capabilities.server_side_rollout:
            return [TrafficStep(100, 0.0)]  # the cloud shifts and waits; settling covers it
        if self.diff.entry.action == "create":
            return [TrafficStep(100, 0.0)]  # no version serves: nothing to share or watch
        return rollout_schedule(self.rollout)

    def _switch(self, step: TrafficStep, started: float, deadline: float) -> None:
        verb = "creating" if self.diff.entry.action == "create" else "switching"
        self.progress(
            f"{verb} {self.what}: {step.pct}% to {self.version} ({self.rollout.strategy})", 0.1
        )
        self.entry_touched = True
        self._write(lambda: self.steps.switch(self.desired, self.live, step), step.pct)
        self._settle(step.pct, started, deadline, verb)
        self.switched = True
        if step.wait_s > 0:
            self.progress(f"holding {step.pct}% on {self.version} for {step.wait_s:g}s", None)
            self.timing.sleep(step.wait_s)

    def _settle(self, traffic_pct: int, started: float, deadline: float, doing: str) -> None:
        """:meth:`_poll` on the forward path: a version the cloud failed is recovered from
        (:meth:`_fail`); past the deadline, nothing is touched."""
        try:
            self._poll(traffic_pct, started, deadline, doing)
        except StillSettling:
            raise
        except DeployFailed as failed:
            self._fail(failed.message, failed)

    def _write(self, call: Callable[[], None], traffic_pct: int) -> None:
        """A create or switch call; when it fails, the failure path for a call that may
        have been taken."""
        try:
            call()
        except StillSettling:
            raise  # a step that waited past the deadline: the change goes on, nothing touched
        except AiaasError as exc:
            message = exc.message
            if not isinstance(exc, DeployFailed):
                message = f"{self.what} did not take {self.version}: {message}"
            if self.switched:  # an earlier step put traffic on the new version
                self._fail(message, exc)
            raise DeployFailed(message + self._after_failure(traffic_pct)) from exc

    def _poll(
        self,
        traffic_pct: int,
        started: float,
        deadline: float,
        doing: str,
        failed: str | None = None,
    ) -> None:
        """Poll :meth:`Steps.settled` until ok; DeployFailed with ``failed`` (None: "did not
        take" the new version) before the cloud's reason, or :class:`StillSettling` past
        ``deadline``."""
        clock = self.timing.clock
        while True:
            seen = self.steps.settled(self.desired, traffic_pct)
            if seen.state == "ok":
                return
            if seen.state == "failed":
                prefix = f"{self.what} did not take {self.version}: " if failed is None else failed
                raise DeployFailed(prefix + seen.detail)
            elapsed = clock() - started
            if clock() >= deadline:
                raise StillSettling(
                    f"{self.what} still {seen.detail} after {elapsed:.0f}s "
                    f"({self.terms.timeout_key}); it goes on in {self.terms.cloud}: see "
                    "`aiaas status`, and deploy again once it settles to remove what it no "
                    "longer uses"
                )
            fraction = 0.1 + 0.8 * min(elapsed / max(self.timing.timeout_s, 1.0), 1.0)
            self.progress(f"{doing} {self.what}: {seen.detail} ({elapsed:.0f}s)", fraction)
            self.timing.sleep(min(self.timing.poll_s, max(deadline - clock(), 0.0)))

    def _smoke(self, *, before_traffic: bool) -> None:
        self.progress("smoke test" + (" (before traffic)" if before_traffic else ""), 0.88)
        body = json.dumps(self.diff.manifest.example_request).encode()
        try:
            answer = self._smoke_answer(body, before_traffic)
        except AiaasError as exc:
            problem: str | None = exc.message
            cause: BaseException | None = exc
        else:
            problem, cause = smoke_problem(answer, self.diff.manifest), None
        if problem is None:
            return
        if before_traffic:
            message = f"{self.what}: {self.version} took no traffic; its smoke test failed: "
        else:
            message = f"{self.what} is in service but its smoke test failed: "
        self._fail(message + problem, cause)

    def _smoke_answer(self, body: bytes, before_traffic: bool) -> bytes:
        """:meth:`Steps.smoke`, asked again after the wait it was told while the version
        answers not-ready or throttled (a cold start), until ``timing.smoke_s`` has passed:
        the smoke test's own deadline, not the invoke path's attempt count (0: once)."""
        timing = self.timing
        until = timing.clock() + timing.smoke_s
        while True:
            try:
                return self.steps.smoke(self.desired, body, before_traffic=before_traffic)
            except (NotReady, Throttled) as busy:
                wait = max(busy.retry_after or 0.0, timing.poll_s)
                if timing.clock() + wait > until:
                    raise
                self.progress(f"smoke test: {busy.message}; again in {wait:g}s", None)
                timing.sleep(wait)

    # -- the failure paths -----------------------------------------------------------------

    def _fail(self, message: str, cause: BaseException | None) -> None:
        """The new version failed after its create (or switch) settled: traffic it took goes
        back to the live version, then what it added goes. Always raises."""
        if self.switched and self.diff.entry.action == "update":
            old = self.diff.live_version or "the live version"
            self.progress(f"rolling {self.what} back to {old}", 0.9)
            try:
                self.steps.switch_back(self.desired, self.live)
                now = self.timing.clock()
                self._poll(0, now, now + self.timing.timeout_s, "rolling back", failed="")
            except AiaasError as exc:  # remove nothing: the new version may still serve
                raise DeployFailed(
                    f"{message}; rolling back to {old} failed too: {exc.message}; "
                    f"{self.version} may still serve: see `aiaas status {self.diff.name}`"
                ) from (cause or exc)
            message += f"; rolled back: {old} serves"
        raise DeployFailed(message + self._after_failure(None)) from cause

    def _after_failure(self, traffic_pct: int | None) -> str:
        """After the new version did not go live: scaling goes back as it was, and what the
        new version added goes, unless (``traffic_pct`` given: a create or switch call
        failed, and may have been taken all the same) the cloud moves to it. Returns what
        could not be done, for the error's message; never raises (the failure that got here
        is the news)."""
        if traffic_pct is not None:
            try:
                where = self.steps.taken(self.desired, traffic_pct)
            except AiaasError as exc:
                return f"; nothing removed: {self.what} could not be read ({exc.message})"
            if where is not None:
                return f"; {self.what} is {where}: nothing removed, deploy again once it settles"
        notes = []
        if self.scaling_before is not None:
            try:
                self.steps.restore_scaling(self.desired, self.scaling_before)
            except AiaasError as exc:
                notes.append(f"autoscaling could not be put back as it was: {exc.message}")
        self.progress("removing the failed version", 0.95)
        try:
            for change in self._failed_version():
                self.steps.remove(change)
        except AiaasError as exc:
            notes.append(f"the failed version could not be removed: {exc.message}")
        return "".join(f"; {note}" for note in notes)

    def _failed_version(self) -> Sequence[Change]:
        """What a failed deploy removes: the entry a switch created (no version served
        before), then the new version's resources the live version does not use."""
        diff = self.diff
        entry = (diff.entry,) if diff.entry.action == "create" and self.entry_touched else ()
        mine = tuple(c for c in diff.new_version if c.name not in diff.live_resources)
        return entry + mine

    def _remove_leftovers(self) -> tuple[str, ...]:
        """After success: the replaced versions go. One that cannot be removed is a warning
        (the new version serves; the next deploy removes it), not a failed deploy."""
        if not self.diff.leftovers:
            self.progress("ready", 1.0)
            return ()
        self.progress("removing replaced versions", 0.96)
        warnings = []
        for change in self.diff.leftovers:
            try:
                self.steps.remove(change)
            except AiaasError as exc:
                warnings.append(
                    f"{change.kind} {change.name} could not be removed: {exc.message} "
                    "(the next deploy removes it)"
                )
        for warning in warnings:
            self.progress(f"warning: {warning}", None)
        self.progress("ready", 1.0)
        return tuple(warnings)
