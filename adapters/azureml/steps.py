"""Azure ML's steps of the shared deploy transaction (:mod:`adapters.rollout`): the write
side of ``deploy``. The provider (:mod:`adapters.azureml.provider`) keeps the clients, the
error mapping and the reads; these steps use them.

The new version is a model version, the environment version (the one image, registered
once), and an online deployment at 0 % traffic (``create``; on a first deploy the endpoint
is created first, with no traffic, and waited for: past ``deploy_timeout_s`` it is
:class:`~adapters.rollout.StillSettling`, and :meth:`AzureMLSteps.taken` reports the endpoint
still creating, so nothing is removed). Azure routes a request pinned with
``azureml-model-deployment`` to a deployment whatever its share, so the smoke test runs
before any traffic (``pre_traffic_smoke``). With ``azureml.mirror`` set and another
deployment serving, the endpoint then mirrors that share of the live traffic to the new
deployment for the mirror's ``duration_s`` (the live traffic unchanged). Each traffic step
is one endpoint PUT with the traffic map and an empty mirror map (aiaas steps canary and
linear rollouts itself, holding ``wait_s`` between steps); a failure puts the map back as it
was. The replaced deployment is deleted last; after a failure, the new deployment goes
before the endpoint a first deploy created. Autoscaling is Azure Monitor's (refused in
``check_deploy``): the scaling steps do nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.azureml import SPEC, names
from adapters.azureml.errors import azure_error
from adapters.azureml.provider import (
    CREATED_TAG,
    FAILED,
    SETTLING,
    SMOKE_TIMEOUT_S,
    Desired,
    Live,
)
from adapters.base import Change, ProgressFn, no_progress
from adapters.cloud_text import log_tail
from adapters.rollout import Busy, Diff, Settle, Terms, TrafficStep
from aiaas.errors import AiaasError, DeployFailed

if TYPE_CHECKING:
    from adapters.azureml.provider import AzureMLProvider

# The kinds of the changes an Azure ML plan lists (and the Steps' remove is given)
BLOB, MODEL, ENVIRONMENT = "blob", "model version", "environment version"
ENDPOINT, DEPLOYMENT = "online endpoint", "online deployment"
REGISTRY = frozenset({MODEL, ENVIRONMENT})
LOG_LINES_IN_ERROR = 15
REASON_WAIT_S = 10.0
"""How long a failed deployment's error waits for the SDK's poller to read the operation's
reason (the deployment shows Failed on a GET before its poller has polled the end)."""


class AzureMLSteps:
    """Azure ML's :class:`~adapters.rollout.Steps` over one :class:`AzureMLProvider`."""

    capabilities = SPEC.capabilities  # pre_traffic_smoke, traffic_split
    terms = Terms("endpoint", "Azure", "azureml.deploy_timeout_s")

    def __init__(
        self,
        provider: AzureMLProvider,
        *,
        progress: ProgressFn = no_progress,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.progress = progress  # the deploy's progress (the mirror phase reports there)
        self.sleep = sleep  # the mirror phase's hold
        self._pollers: dict[str, Any] = {}  # deployment -> the poller of its create
        self._traffic_before: dict[str, int] | None = None  # the map before the first switch
        self._endpoint: str | None = None

    # -- what is wanted, what is there ---------------------------------------------------

    def desired(self, bundle: Path, name: str | None) -> Desired:
        desired = self.provider._desired(bundle, name)
        self._endpoint = desired.endpoint  # the endpoint whose deployments remove() deletes
        return desired

    def live(self, desired: Desired) -> Live:
        return self.provider._live(desired.endpoint)

    def diff(self, desired: Desired, live: Live) -> Diff:
        """The blob, the model and environment versions and the deployment (each found by
        name: no write for what is there), the endpoint's traffic, and the replaced
        deployments. Refuses an endpoint that is not this project's; one settling from an
        earlier change (or with a deployment settling) is :class:`Busy`."""
        p, s = self.provider, self.provider.settings
        ep, dep = desired.endpoint, desired.deployment
        if live.exists and not p._owned_by_us(live):
            raise DeployFailed(
                f"endpoint {ep!r} exists in workspace {s.workspace} and is not this "
                f"project's (no tag {names.PROJECT_TAG}={p.project}): choose another name"
            )
        if live.state in SETTLING:
            raise Busy(f"endpoint {ep!r} is {live.state}")
        settling = [d for d in live.deployments if d.state in SETTLING]
        if settling:
            raise Busy(f"deployment {settling[0].name!r} of endpoint {ep!r} is {settling[0].state}")
        uri = p._blob_uri(desired.blob_path)
        uploaded = p._blob_exists(desired.blob_path)
        upload = Change(
            "keep" if uploaded else "create",
            BLOB,
            uri,
            "already uploaded" if uploaded else "PUT the manifest, then the archive",
        )
        model = f"{desired.model_name}:{desired.model_version}"
        environment = f"{names.ENVIRONMENT_NAME}:{desired.environment_version}"
        has_model = p._registered_already("model", desired.model_name, desired.model_version)
        has_env = p._registered_already(
            "environment", names.ENVIRONMENT_NAME, desired.environment_version
        )
        new_version = [
            Change(
                "keep" if has_model else "create",
                MODEL,
                model,
                "registered" if has_model else f"PUT models/{model} (by {desired.blob_path})",
            ),
            Change(
                "keep" if has_env else "create",
                ENVIRONMENT,
                environment,
                "registered" if has_env else f"PUT environments/{environment} ({s.image})",
            ),
        ]
        replace_failed = None
        failed_endpoint = live.state in FAILED
        if failed_endpoint:
            replace_failed = Change("delete", ENDPOINT, ep, f"{live.state}: deleted first")
        if not live.exists or failed_endpoint:
            new_version.append(
                Change(
                    "create", ENDPOINT, ep, f"PUT onlineEndpoints/{ep} ({s.auth_mode}, no traffic)"
                )
            )
        there = live.deployment(dep) if not failed_endpoint else None
        if there is not None and there.state in FAILED and replace_failed is None:
            replace_failed = Change("delete", DEPLOYMENT, dep, f"{there.state}: deleted first")
            there = None
        count = desired.spec["instance_count"]
        new_version.append(
            Change(
                "keep" if there is not None else "create",
                DEPLOYMENT,
                dep,
                f"{desired.manifest.version} serves"
                if there is not None
                else f"PUT onlineEndpoints/{ep}/deployments/{dep} ({s.instance_type} x {count}, "
                "no traffic)",
            )
        )
        serving = live.serving if not failed_endpoint else None
        auth_changes = live.exists and not failed_endpoint and live.auth_mode != s.auth_mode
        rollout = p.config.deploy.rollout
        if not live.exists or failed_endpoint:
            entry = Change("create", ENDPOINT, ep, f"PUT onlineEndpoints/{ep}: {dep} takes 100%")
        elif serving is None or serving.name != dep or serving.traffic != 100 or auth_changes:
            was = serving.name if serving is not None else "no deployment"
            mirror = s.mirror
            first = (
                f"mirror {mirror.percent}% to {dep} for {mirror.duration_s:g}s, then "
                if mirror is not None and serving is not None and serving.name != dep
                else ""
            )
            entry = Change(
                "update",
                ENDPOINT,
                ep,
                f"PUT onlineEndpoints/{ep} {first}traffic: {was} -> {dep} ({rollout.strategy})",
            )
        else:
            entry = Change("keep", ENDPOINT, ep, f"{desired.manifest.version} takes all traffic")
        gone = {replace_failed.name} if replace_failed is not None else set()
        leftovers = tuple(
            Change(
                "delete", DEPLOYMENT, d.name, f"DELETE onlineEndpoints/{ep}/deployments/{d.name}"
            )
            for d in live.deployments
            if d.name != dep and d.name not in gone and not failed_endpoint
        )
        taking = (
            {d.name for d in live.deployments if d.traffic > 0} if not failed_endpoint else set()
        )
        live_resources = frozenset(
            taking | ({ep} if live.exists and not failed_endpoint else set())
        )
        return Diff(
            name=desired.name,
            manifest=desired.manifest,
            upload=upload,
            new_version=tuple(new_version),
            entry=entry,
            live_resources=live_resources,
            replace_failed=replace_failed,
            leftovers=leftovers,
            live_version=(serving.version or serving.name) if serving is not None else None,
        )

    # -- the new version -----------------------------------------------------------------

    def create(self, desired: Desired, diff: Diff) -> None:
        """Register what is new (model, environment), create the endpoint on a first deploy
        (waited for: a deployment needs it), and start the deployment's creation."""
        from azure.ai.ml.entities import (
            Environment,
            ManagedOnlineDeployment,
            ManagedOnlineEndpoint,
            Model,
            OnlineRequestSettings,
            ProbeSettings,
        )

        p, s, ml = self.provider, self.provider.settings, self.provider.ml
        to_create = {(c.kind, c.name) for c in diff.new_version if c.action == "create"}
        tags = p._tags(desired.name, desired.manifest.version)
        ep, dep = desired.endpoint, desired.deployment
        model = f"{desired.model_name}:{desired.model_version}"
        if (MODEL, model) in to_create:
            path = p._model_path(desired.model_version)
            p._call(
                f"register model {model}",
                lambda: ml.models.create_or_update(
                    Model(
                        name=desired.model_name,
                        version=desired.model_version,
                        type="custom_model",
                        path=path,
                        tags=tags,
                        description=f"aiaas bundle {desired.manifest.name} {desired.model_version}",
                    )
                ),
            )
            p._registered.add(("model", desired.model_name, desired.model_version))
        environment = f"{names.ENVIRONMENT_NAME}:{desired.environment_version}"
        if (ENVIRONMENT, environment) in to_create:
            p._call(
                f"register environment {environment}",
                lambda: ml.environments.create_or_update(
                    Environment(
                        name=names.ENVIRONMENT_NAME,
                        version=desired.environment_version,
                        image=s.image,
                        inference_config=p.inference_config(),
                        tags={names.PROJECT_TAG: p.project},
                    )
                ),
            )
            p._registered.add(("environment", names.ENVIRONMENT_NAME, desired.environment_version))
        if (ENDPOINT, ep) in to_create:
            endpoint = ManagedOnlineEndpoint(name=ep, auth_mode=s.auth_mode, tags=tags)
            poller = p._call(
                f"create endpoint {ep}",
                lambda: ml.online_endpoints.begin_create_or_update(endpoint),
            )
            p._wait(f"create endpoint {ep}", poller)
        if (DEPLOYMENT, dep) not in to_create:
            return
        spec = desired.spec
        deployment = ManagedOnlineDeployment(
            name=dep,
            endpoint_name=ep,
            model=spec["model"],
            environment=spec["environment"],
            instance_type=spec["instance_type"],
            instance_count=spec["instance_count"],
            environment_variables=spec["environment_variables"],
            request_settings=OnlineRequestSettings(
                request_timeout_ms=spec["request_timeout_ms"],
                max_concurrent_requests_per_instance=spec["max_concurrent_requests_per_instance"],
            ),
            liveness_probe=ProbeSettings(**_probe(spec["liveness_probe"], liveness=True)),
            readiness_probe=ProbeSettings(**_probe(spec["readiness_probe"], liveness=False)),
            tags={**tags, CREATED_TAG: str(time.time_ns())},
        )
        self._pollers[dep] = p._call(
            f"create deployment {dep} of endpoint {ep}",
            lambda: ml.online_deployments.begin_create_or_update(deployment),
        )

    def settled(self, desired: Desired, traffic_pct: int) -> Settle:
        live = self.provider._live(desired.endpoint)
        dep = live.deployment(desired.deployment)
        if not live.exists:
            return Settle("failed", f"endpoint {desired.endpoint} is gone")
        if live.state in FAILED:
            return Settle("failed", f"endpoint {desired.endpoint} is {live.state}")
        if dep is None:
            return Settle("failed", f"deployment {desired.deployment} is gone")
        if dep.state in SETTLING:
            return Settle("pending", f"deployment {dep.name} is {dep.state}")
        if dep.state in FAILED:
            return Settle("failed", self._failure(desired, dep.state))
        if live.state in SETTLING:
            return Settle("pending", f"endpoint {desired.endpoint} is {live.state}")
        if dep.traffic != traffic_pct:
            return Settle(
                "failed",
                f"deployment {dep.name} takes {dep.traffic}% of the traffic, not {traffic_pct}%",
            )
        return Settle("ok")

    def _failure(self, desired: Desired, state: str) -> str:
        """Why the deployment failed: its operation's error and its container's last log
        lines, made safe to quote (:func:`adapters.cloud_text.log_tail`), on one line."""
        p, dep = self.provider, desired.deployment
        reason = ""
        poller = self._pollers.get(dep)
        if poller is not None:  # the SDK's poller may not have seen the operation end yet
            with contextlib.suppress(Exception):  # wait() raises the failure: read below
                poller.wait(timeout=REASON_WAIT_S)
        if poller is not None and poller.done():
            try:
                poller.result(timeout=0)
            except Exception as exc:
                reason = azure_error(exc, f"deployment {dep}").message
        message = f"deployment {dep} is {state.capitalize()}" + (f" ({reason})" if reason else "")
        try:
            lines = p.deployment_logs(desired.endpoint, dep, LOG_LINES_IN_ERROR)
        except AiaasError as exc:
            return f"{message}; its logs could not be read: {exc.message}"
        tail = log_tail(lines)  # escapes, control characters and secret-like values gone
        if tail:
            message += "; its logs end: " + tail
        return message

    def taken(self, desired: Desired, traffic_pct: int) -> str | None:
        """Where the endpoint is when a create or switch call failed and Azure may have
        taken it all the same: the endpoint or the new deployment still settling (a create
        that timed out, an answer lost), or the new deployment taking traffic; None when
        neither, so what the deploy added may be removed."""
        live = self.provider._live(desired.endpoint)
        dep = live.deployment(desired.deployment)
        if live.state in SETTLING:
            return f"{live.state}"
        if dep is not None and dep.state in SETTLING:
            return f"{dep.state} deployment {dep.name}"
        if traffic_pct > 0 and dep is not None and dep.traffic > 0:
            return f"sending {dep.traffic}% to {dep.name}"
        return None

    # -- traffic -------------------------------------------------------------------------

    def switch(self, desired: Desired, live: Live, step: TrafficStep) -> None:
        """One endpoint PUT: ``step.pct`` to the new deployment, the rest to the one that
        served (every other deployment 0), the mirror map empty. Before the first step,
        with ``azureml.mirror`` set and another deployment serving, the mirror phase
        (:meth:`_mirror`)."""
        first = self._traffic_before is None
        before = dict(live.traffic or {})
        if self._traffic_before is None:
            self._traffic_before = before
        dep = desired.deployment
        serving = live.serving
        mirror = self.provider.settings.mirror
        if first and mirror is not None and serving is not None and serving.name != dep:
            self._mirror(desired, live, mirror.percent, mirror.duration_s)
        traffic = {d.name: 0 for d in live.deployments if d.state not in FAILED}
        traffic[dep] = step.pct
        if serving is not None and serving.name != dep and step.pct < 100:
            traffic[serving.name] = 100 - step.pct
        self._put_traffic(desired, traffic, wait=False)

    def _mirror(self, desired: Desired, live: Live, percent: int, duration_s: float) -> None:
        """The endpoint mirrors ``percent`` % of its live traffic to the new deployment
        (the live traffic unchanged; the copies' answers go nowhere): one endpoint PUT,
        waited for, then held ``duration_s``. The first traffic step clears it (Azure lets
        no deployment take both); a failure before that clears it when the new deployment
        is removed (:meth:`remove`)."""
        dep = desired.deployment
        self.progress(f"mirroring {percent}% of the live traffic to {dep}", None)
        traffic = {k: v for k, v in (live.traffic or {}).items() if v > 0}
        now = replace(live, tags=self._tags(desired), auth_mode=self.provider.settings.auth_mode)
        self.provider._put_maps(now, traffic, {dep: percent})
        self.progress(f"holding the mirror ({percent}% to {dep}) for {duration_s:g}s", None)
        self.sleep(duration_s)

    def _tags(self, desired: Desired) -> dict[str, str]:
        return self.provider._tags(desired.name, desired.manifest.version)

    def switch_back(self, desired: Desired, live: Live) -> None:
        """All the traffic back as it was before the first switch."""
        before = self._traffic_before if self._traffic_before is not None else live.traffic or {}
        now = self.provider._live(desired.endpoint)
        traffic = {d.name: 0 for d in now.deployments if d.state not in FAILED}
        traffic.update({k: v for k, v in before.items() if k in traffic})
        traffic[desired.deployment] = 0
        self._put_traffic(desired, traffic, wait=False)

    def _put_traffic(self, desired: Desired, traffic: dict[str, int], *, wait: bool) -> None:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        p = self.provider
        ep = desired.endpoint
        endpoint = ManagedOnlineEndpoint(
            name=ep,
            auth_mode=p.settings.auth_mode,
            tags=p._tags(desired.name, desired.manifest.version),
            traffic=traffic,
            mirror_traffic={},
        )
        shown = ", ".join(f"{k} {v}%" for k, v in sorted(traffic.items()))
        poller = p._call(
            f"set the traffic of endpoint {ep} ({shown})",
            lambda: p.ml.online_endpoints.begin_create_or_update(endpoint),
        )
        if wait:
            p._wait(f"set the traffic of endpoint {ep}", poller)

    # -- smoke test, removal, scaling ------------------------------------------------------

    def smoke(self, desired: Desired, body: bytes, *, before_traffic: bool) -> bytes:
        """The example request through the invoke path, pinned to the new deployment with
        ``azureml-model-deployment`` (before any traffic: Azure routes it there all the
        same)."""
        invoker = self.provider.invoker_for(desired.endpoint)
        return invoker.invoke_sync(
            desired.name, body, timeout=SMOKE_TIMEOUT_S, deployment=desired.deployment
        ).body

    def remove(self, change: Change) -> None:
        """Delete the deployment or endpoint ``change`` names and wait. A deployment the
        endpoint mirrors to is taken out of the mirror first (Azure refuses to delete it);
        one whose endpoint is gone is gone. An endpoint goes after its deployments
        (:meth:`AzureMLProvider._delete_endpoint`), so a failed first deploy removes the
        deployment, then the endpoint. Model and environment versions stay: they are
        content-addressed registry records that cost nothing, and the next deploy of the
        same digest uses them again (Azure ML archives model versions; it does not delete
        them through azure-ai-ml)."""
        p = self.provider
        if change.kind == DEPLOYMENT and self._endpoint is not None:
            live = p._live(self._endpoint)
            if not live.exists or live.deployment(change.name) is None:
                return
            if change.name.lower() in (live.mirror or {}):
                p._put_maps(live, dict(live.traffic or {}), {})
            p._delete_deployment(self._endpoint, change.name)
        elif change.kind == ENDPOINT:
            p._delete_endpoint(change.name)

    def read_scaling(self, desired: Desired) -> object:
        return None

    def apply_scaling(self, desired: Desired, changes: tuple[Change, ...]) -> None:
        return None

    def restore_scaling(self, desired: Desired, before: object) -> None:
        return None


def _probe(values: dict[str, int], *, liveness: bool) -> dict[str, int]:
    probe = dict(values)
    if liveness:
        probe.pop("success_threshold", None)  # fixed at 1 by Azure
    return probe
