"""PAI-EAS's steps of the shared deploy transaction (:mod:`adapters.rollout`): the write side
of ``deploy``. The provider (:mod:`adapters.pai.provider`) keeps the clients, the error
mapping and the reads; these steps use them.

- a first deploy: CreateService (the labels, the workspace), settled once the service is
  ``Running``; a failure deletes the service again, unless the call may have been taken
  (a 5xx or no answer, not EAS refusing it: :meth:`PaiSteps.taken`), which removes nothing;
- a new digest (or new settings): UpdateService with ``UpdateType=replace`` makes a new
  service version that EAS rolls out in place (``CurrentVersion`` moves to it at once), settled
  once it is ``Running``; EAS cannot send a request to a version that takes no traffic
  (``pre_traffic_smoke`` is off), so the smoke test runs after it, and a version that failed
  (EAS's reason and Warning events in the error) or whose smoke test failed goes back with
  UpdateServiceVersion to the version that served before (EAS keeps every version; only an
  older one can be switched to);
- traffic: one service has one version serving, so the switch itself writes nothing;
- autoscaling: CreateServiceAutoScaler / UpdateServiceAutoScaler when ``deploy.scaling`` has
  max > min (a qps threshold per instance, :func:`adapters.pai.qps_threshold`),
  DeleteServiceAutoScaler when it no longer has; put back as it was after a failure.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.base import Change
from adapters.cloud_text import log_tail, safe_line
from adapters.pai import SPEC, names
from adapters.pai.errors import refused
from adapters.pai.provider import FAILED, SETTLING, SMOKE_TIMEOUT_S, Desired, Live
from adapters.rollout import Busy, Diff, Settle, StillSettling, Terms, Timing, TrafficStep
from aiaas.errors import DeployFailed, NotFound

if TYPE_CHECKING:
    from adapters.pai.provider import PaiProvider

T = TypeVar("T")

OBJECT, SERVICE, VERSION = "oss object", "EAS service", "service version"
ENDPOINT, AUTOSCALER = "service endpoint", "autoscaler"
LOG_LINES_IN_ERROR = 10
MAX_EVENTS = 600
"""The most of the Warning events an error quotes (the log's tail: errors.MAX_LOG_TAIL)."""


class PaiSteps:
    """PAI-EAS's :class:`~adapters.rollout.Steps` over one :class:`PaiProvider`."""

    capabilities = SPEC.capabilities  # no pre-traffic smoke, no traffic split
    terms = Terms("service", "PAI-EAS", "pai.deploy_timeout_s")

    def __init__(self, provider: PaiProvider, *, timing: Timing | None = None) -> None:
        """``timing``: the deploy's (:func:`~adapters.rollout.run_rollout`'s), whose clock,
        sleep and deadline the rollback's wait shares; by default the provider's settings'
        ``deploy_timeout_s`` and ``poll_interval_s`` on the real clock."""
        self.provider = provider
        s = provider.settings
        self.timing = timing or Timing(s.deploy_timeout_s, s.poll_interval_s)
        self._deadline: float | None = None  # the deploy's, from its first write
        self._previous: int | None = None  # the service version that served before
        self._want: int | None = None  # the service version that should end Running
        self._refused: bool | None = None  # the last write failed: EAS refused it (a 4xx)

    # -- what is wanted, what is there ---------------------------------------------------

    def desired(self, bundle: Path, name: str | None) -> Desired:
        return self.provider._desired(bundle, name)

    def live(self, desired: Desired) -> Live:
        return self.provider._live(desired.service)

    def diff(self, desired: Desired, live: Live) -> Diff:
        """The OSS object, the service (created, or a new version by a replace update, or
        kept when its config already is the desired one), and the autoscaler. Refuses a
        service that is not this project's deployment; one settling is :class:`Busy`."""
        p, s = self.provider, self.provider.settings
        svc = desired.service
        if live.exists and not p._owned_by_us(live, desired.name):
            raise DeployFailed(
                f"service {svc!r} exists in {s.region} and is not this project's deployment "
                f"{desired.name!r} (no labels {names.PROJECT_LABEL}={p.project}, "
                f"{names.DEPLOYMENT_LABEL}={desired.name}): choose another name"
            )
        if live.status in SETTLING:
            raise Busy(f"service {svc!r} is {live.status}")
        uploaded = p._object_exists(desired.archive_key)
        uri = f"oss://{s.oss_bucket}/{desired.archive_key}"
        upload = Change(
            "keep" if uploaded else "create",
            OBJECT,
            uri,
            "already uploaded" if uploaded else "PUT the manifest, then the archive",
        )
        version = desired.manifest.version
        scaling: tuple[Change, ...] = ()
        if not live.exists:
            p.check_instance_type()  # before any write: EAS's own list of types
            new_version: tuple[Change, ...] = (
                Change("create", SERVICE, svc, f"CreateService ({self._where()}, {version})"),
            )
            entry = Change("create", ENDPOINT, svc, f"{version} serves once Running")
            if desired.autoscaler is not None:
                scaling = (Change("create", AUTOSCALER, svc, _shown(desired.autoscaler)),)
            return Diff(
                name=desired.name,
                manifest=desired.manifest,
                upload=upload,
                new_version=new_version,
                entry=entry,
                scaling=scaling,
            )
        same = live.status == "running" and _contains(live.config, desired.config)
        if same:
            new_version = (Change("keep", SERVICE, svc, f"{version} serves"),)
            entry = Change("keep", ENDPOINT, svc, f"{version} takes all traffic")
        else:
            p.check_instance_type()
            number = live.latest_version + 1
            new_version = (
                Change(
                    "create",
                    VERSION,
                    f"{svc} v{number}",
                    f"UpdateService replace ({self._where()}, {version})",
                ),
            )
            entry = Change(
                "update",
                ENDPOINT,
                svc,
                f"service version {live.current_version} ({live.version or '?'}) -> {number} "
                f"({version})",
            )
        scaling = self._scaling(desired, p.read_autoscaler(svc))
        return Diff(
            name=desired.name,
            manifest=desired.manifest,
            upload=upload,
            new_version=new_version,
            entry=entry,
            live_resources=frozenset({svc}),
            scaling=scaling,
            live_version=live.version,
        )

    def _where(self) -> str:
        s = self.provider.settings
        if s.instance_type is not None:
            return s.instance_type
        return f"{s.cpu} cpu, {s.memory_mb} MB on {s.resource_group}"

    def _scaling(self, desired: Desired, there: dict[str, Any] | None) -> tuple[Change, ...]:
        want, svc = desired.autoscaler, desired.service
        if want is None and there is None:
            return ()
        if want is None:
            return (Change("delete", AUTOSCALER, svc, "min == max: no autoscaler"),)
        if there is None:
            return (Change("create", AUTOSCALER, svc, _shown(want)),)
        if _contains(there, want):
            return (Change("keep", AUTOSCALER, svc, _shown(want)),)
        return (Change("update", AUTOSCALER, svc, f"{_shown(there)} -> {_shown(want)}"),)

    # -- the new version -----------------------------------------------------------------

    def create(self, desired: Desired, diff: Diff) -> None:
        """CreateService (a first deploy) or UpdateService with ``UpdateType=replace``."""
        from alibabacloud_eas20210701 import models

        p, s = self.provider, self.provider.settings
        if self._deadline is None:  # the first write: the deploy's deadline runs from here
            self._deadline = self.timing.clock() + self.timing.timeout_s
        body = json.dumps(desired.config)
        if any(c.kind == SERVICE and c.action == "create" for c in diff.new_version):
            request = models.CreateServiceRequest(
                body=body, labels=desired.labels, workspace_id=s.workspace_id
            )
            p._call(
                f"create service {desired.service}",
                lambda: self._write(lambda: p.eas.create_service(request)),
            )
            self._want = 1
            return
        live = p._live(desired.service)
        self._previous = live.current_version
        update = models.UpdateServiceRequest(body=body, update_type="replace")
        p._call(
            f"update service {desired.service}",
            lambda: self._write(lambda: p.eas.update_service(s.region, desired.service, update)),
        )
        self._want = live.latest_version + 1

    def _write(self, call: Callable[[], T]) -> T:
        """``call()``, remembering whether a failure was EAS refusing it (a 4xx: not carried
        out) or left it open (a 5xx, no answer: it may have been taken), for :meth:`taken`."""
        self._refused = None
        try:
            return call()
        except Exception as exc:
            self._refused = refused(exc)
            raise

    def settled(self, desired: Desired, traffic_pct: int) -> Settle:
        """The service ``Running`` on the version wanted; ``Failed``: EAS's message and its
        Warning events."""
        live = self.provider._live(desired.service)
        if not live.exists:
            return Settle("failed", f"service {desired.service} is gone")
        if live.status in FAILED:
            return Settle("failed", self._failure(desired, live))
        if live.status in SETTLING:
            return Settle("pending", f"service {desired.service} is {live.status}")
        if live.status != "running":
            return Settle("failed", f"service {desired.service} is {live.status}")
        if self._want is not None and live.current_version != self._want:
            return Settle(
                "pending",
                f"service {desired.service} runs version {live.current_version}, not {self._want}",
            )
        return Settle("ok")

    def _failure(self, desired: Desired, live: Live) -> str:
        """Why the version failed, as the error says it: EAS's reason and message, its last
        Warning events and the log's last lines (as azureml's error quotes its deployment's
        log), each made safe to show (:func:`~adapters.cloud_text.safe_line`: no control
        characters, no service token or anything named like a secret, bounded)."""
        p = self.provider
        secrets = self._secrets(live)
        said = safe_line(live.message or "no message", secrets)
        message = f"service {desired.service} version {live.current_version} is Failed"
        reason = safe_line(live.reason, secrets)
        message += f" ({reason}: {said})" if reason else f" ({said})"
        try:
            events = p.events(desired.service)
            lines = p.service_logs(desired.service, LOG_LINES_IN_ERROR)
        except Exception:  # the failure is the news; its details are a bonus
            return message
        if events:
            message += "; events: " + log_tail(events, secrets, limit=MAX_EVENTS)
        tail = log_tail(lines, secrets)
        if tail:
            message += "; its log ends: " + tail
        if self._previous:
            message += f"; version {self._previous} kept serving"
        return message

    def _secrets(self, live: Live) -> tuple[str, ...]:
        """What an error must never quote: the service's token, and the deploying
        credentials' secret and STS token (when they can be read)."""
        found = [live.token or ""]
        with contextlib.suppress(Exception):
            credentials = self.provider.credentials()
            found += [credentials.access_key_secret, credentials.security_token or ""]
        return tuple(x for x in found if x)

    def taken(self, desired: Desired, traffic_pct: int) -> str | None:
        """After a create or update call failed: where the service is when the call was (or
        may have been) taken, so that nothing is removed; None only when it is proven not
        taken: EAS refused the call (a 4xx) and the service shows no trace of it. A call
        that got a 5xx or no answer may still be carried out though a read does not show it
        yet (the shared rule: a call that failed but may have been taken removes nothing)."""
        live = self.provider._live(desired.service)
        unclear = not self._refused
        if self._previous is None:  # a create
            if live.exists:  # created (or someone else's: never ours to delete)
                return live.status or "there"
            if unclear:
                return (
                    "not visible yet, but CreateService failed without PAI-EAS refusing it, "
                    "so it may still be created"
                )
            return None
        if not live.exists:
            return None
        if live.latest_version > self._previous and live.current_version > self._previous:
            return f"{live.status} on version {live.current_version}"
        if unclear:
            return (
                f"still on version {live.current_version}, but UpdateService failed without "
                "PAI-EAS refusing it, so the new version may still come"
            )
        return None

    # -- traffic -------------------------------------------------------------------------

    def switch(self, desired: Desired, live: Live, step: TrafficStep) -> None:
        """Nothing to write: the service's one version takes all of its traffic."""

    def switch_back(self, desired: Desired, live: Live) -> None:
        """UpdateServiceVersion to the version that served before."""
        self._roll_back(desired.service)

    def _roll_back(self, service: str) -> bool:
        from alibabacloud_eas20210701 import models

        p = self.provider
        previous = self._previous
        if previous is None:
            return False
        now = p._live(service)
        if not now.exists or now.current_version == previous:
            self._want = previous
            return False
        request = models.UpdateServiceVersionRequest(version=previous)
        p._call(
            f"roll service {service} back to version {previous}",
            lambda: p.eas.update_service_version(p.settings.region, service, request),
        )
        self._want = previous
        return True

    # -- smoke test, removal, scaling ------------------------------------------------------

    def smoke(self, desired: Desired, body: bytes, *, before_traffic: bool) -> bytes:
        """The example request through the invoke path, at the service's endpoint with its
        token (DescribeService's)."""
        live = self.provider._live(desired.service)
        invoker = self.provider.invoker_for(live)
        return invoker.invoke_sync(desired.name, body, timeout=SMOKE_TIMEOUT_S).body

    def remove(self, change: Change) -> None:
        """A service: DeleteService. A service version (a failed update): the service goes
        back to the version before (UpdateServiceVersion), waited for until the deploy's
        deadline (:meth:`_wait_running`); nothing when it already runs it."""
        p = self.provider
        if change.kind == SERVICE:
            p.delete_service(change.name)
        elif change.kind == VERSION:
            service = change.name.rsplit(" ", 1)[0]
            if self._roll_back(service):
                self._wait_running(service)

    def _wait_running(self, service: str) -> None:
        """Poll until the service runs the version rolled back to, on the deploy's clock and
        until its deadline (the one :func:`~adapters.rollout.run_rollout` set at the first
        write): past it, :class:`~adapters.rollout.StillSettling` (the rollback goes on in
        PAI-EAS; nothing else is touched)."""
        p, timing = self.provider, self.timing
        clock = timing.clock
        started = clock()
        deadline = self._deadline if self._deadline is not None else started + timing.timeout_s
        while True:
            live = p._live(service)
            if not live.exists:
                return
            if live.status == "running" and live.current_version == self._want:
                return
            if live.status in FAILED and live.current_version == self._want:
                said = safe_line(live.message or live.status, self._secrets(live))
                raise DeployFailed(
                    f"rolling service {service} back to version {self._want} failed: {said}"
                )
            if clock() >= deadline:
                raise StillSettling(
                    f"service {service} still rolling back to version {self._want} "
                    f"({live.status}) at the deploy's deadline ({self.terms.timeout_key}, "
                    f"{clock() - started:.0f}s of it spent rolling back); it goes on in "
                    "PAI-EAS: see `aiaas status`"
                )
            timing.sleep(min(timing.poll_s, max(deadline - clock(), 0.0)))

    def read_scaling(self, desired: Desired) -> object:
        return self.provider.read_autoscaler(desired.service)

    def apply_scaling(self, desired: Desired, changes: tuple[Change, ...]) -> None:
        for change in changes:
            if change.action == "keep":
                continue
            self._put_autoscaler(desired.service, desired.autoscaler, change.action)

    def restore_scaling(self, desired: Desired, before: object) -> None:
        there = self.provider.read_autoscaler(desired.service)
        wanted = before if isinstance(before, dict) else None
        if there == wanted or (
            there is not None and wanted is not None and _contains(there, wanted)
        ):
            return
        if wanted is None:
            self._put_autoscaler(desired.service, None, "delete")
        else:
            self._put_autoscaler(desired.service, wanted, "update" if there else "create")

    def _put_autoscaler(self, service: str, spec: dict[str, Any] | None, action: str) -> None:
        from alibabacloud_eas20210701 import models

        p = self.provider
        region = p.settings.region
        if action == "delete" or spec is None:
            with contextlib.suppress(NotFound):
                p._call(
                    f"delete the autoscaler of service {service}",
                    lambda: p.eas.delete_service_auto_scaler(region, service),
                )
            return
        if action == "create":
            create = models.CreateServiceAutoScalerRequest().from_map(spec)
            p._call(
                f"create the autoscaler of service {service}",
                lambda: p.eas.create_service_auto_scaler(region, service, create),
            )
        else:
            update = models.UpdateServiceAutoScalerRequest().from_map(spec)
            p._call(
                f"update the autoscaler of service {service}",
                lambda: p.eas.update_service_auto_scaler(region, service, update),
            )


def _contains(live: Any, wanted: Any) -> bool:
    from adapters.pai.provider import contains

    return contains(live, wanted)


def _shown(spec: dict[str, Any]) -> str:
    strategies = ", ".join(
        f"{s.get('metricName')} {s.get('threshold')}" for s in spec.get("scaleStrategies") or []
    )
    return f"min {spec.get('min')}, max {spec.get('max')}" + (
        f", {strategies}" if strategies else ""
    )
