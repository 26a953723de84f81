"""SageMaker's steps of the shared deploy transaction (:mod:`adapters.rollout`): the write
side of ``deploy``. The provider (:mod:`adapters.sagemaker.provider`) keeps the clients, the
error mapping and the reads; these steps use them (one package, one boundary).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from adapters.base import Change
from adapters.rollout import Busy, Diff, Settle, Terms, TrafficStep
from adapters.sagemaker import SPEC, names
from adapters.sagemaker.rollout import (
    METRIC,
    deployment_config,
    scaling_policy,
    scaling_target,
)
from aiaas.config import ScalingSection
from aiaas.errors import DeployFailed

if TYPE_CHECKING:
    from adapters.sagemaker.provider import Desired, Live, SageMakerProvider, ScalingState

# The kinds of the changes a SageMaker plan lists (and the Steps' remove is given)
S3_OBJECT, MODEL, ENDPOINT_CONFIG, ENDPOINT = "s3 object", "model", "endpoint config", "endpoint"


class SageMakerSteps:
    """SageMaker's steps of the shared deploy transaction (:mod:`adapters.rollout`).

    The new version is a model and an endpoint config (``create``: they take no traffic
    until the endpoint moves to the config); the one traffic step is CreateEndpoint, or
    UpdateEndpoint with the ``DeploymentConfig`` compiled from ``deploy.rollout`` (AWS runs
    canary and linear shifts itself: ``server_side_rollout``). SageMaker cannot send a
    request to a config the endpoint is not on, so the smoke test runs after the switch and
    a failure switches back (UpdateEndpoint to the old config, all at once).
    """

    capabilities = SPEC.capabilities  # server_side_rollout; no pre-traffic smoke test
    terms = Terms("endpoint", "AWS", "sagemaker.deploy_timeout_s")

    def __init__(self, provider: SageMakerProvider) -> None:
        self.provider = provider
        # The endpoint as DescribeEndpoint showed it before this deploy's last Create or
        # UpdateEndpoint: an answer that still shows exactly that is not yet about the write.
        self._before_write: Live | None = None
        self._latest: Live | None = None  # the newest view seen (see _seen)

    def desired(self, bundle: Path, name: str | None) -> Desired:
        return self.provider._desired(bundle, name)

    def live(self, desired: Desired) -> Live:
        return self.provider._live(desired.name)

    def diff(self, desired: Desired, live: Live) -> Diff:
        """The S3 object, the model and config (found by name: no write for what is
        there), the endpoint, autoscaling, and the replaced versions' models and configs
        tagged with this project. Refuses another project's endpoint; one still settling
        (Creating, Updating, SystemUpdating, ...) is :class:`Busy`: the deploy waits."""
        p = self.provider
        name, sm = desired.name, p._sm
        p._check_regions()
        if live.arn is not None and not p._owned_by_us(live.arn):
            raise DeployFailed(
                f"endpoint {name!r} exists in {p.region} and is not this project's "
                f"(no tag {names.PROJECT_TAG}={p.project}): choose another name"
            )
        if live.status in names.SETTLING:  # an earlier change, AWS's maintenance: waited for
            raise Busy(f"endpoint {name!r} is {live.status}")
        if live.status == names.OUT_OF_SERVICE:
            raise DeployFailed(
                f"endpoint {name!r} is OutOfService: it takes no requests and SageMaker "
                f"updates no such endpoint ({live.failure or 'no reason given'}); delete it "
                f"(`aiaas delete {name}`) and deploy again"
            )
        has_object = p._object_exists(desired.uri)
        upload = Change(
            "keep" if has_object else "create",
            S3_OBJECT,
            desired.uri,
            "already uploaded" if has_object else "upload (server-side encrypted)",
        )
        new_version = []
        for kind, resource, describe in (
            (MODEL, desired.model, lambda: sm.describe_model(ModelName=desired.model)),
            (
                ENDPOINT_CONFIG,
                desired.config,
                lambda: sm.describe_endpoint_config(EndpointConfigName=desired.config),
            ),
        ):
            there = p._exists(f"describe {kind} {resource}", describe)
            new_version.append(Change("keep" if there else "create", kind, resource))
        replace_failed = None
        if live.status is None:
            entry = Change("create", ENDPOINT, name, f"on {desired.config}")
        elif live.status in names.FAILED:
            replace_failed = Change(
                "delete", ENDPOINT, name, f"{live.status}: {live.failure or ''}"
            )
            entry = Change("create", ENDPOINT, name, f"on {desired.config}")
        elif live.config != desired.config or live.status == names.MIXED:
            rollout = p.config.deploy.rollout
            entry = Change("update", ENDPOINT, name,
                           f"{live.config} -> {desired.config} ({rollout.strategy})")  # fmt: skip
        else:
            entry = Change("keep", ENDPOINT, name, f"{desired.manifest.version} is live")
        configs, models = p._ours_left(name, {desired.config, desired.model})
        leftovers = [Change("delete", ENDPOINT_CONFIG, c, "replaced") for c in configs]
        leftovers += [Change("delete", MODEL, m, "replaced") for m in models]
        serving = live.status not in {None, *names.FAILED}
        return Diff(
            name=name,
            manifest=desired.manifest,
            upload=upload,
            new_version=tuple(new_version),
            entry=entry,
            live_resources=frozenset(r for r in (live.config, live.model) if r and serving),
            replace_failed=replace_failed,
            scaling=tuple(self._scaling_changes(name, live)),
            leftovers=tuple(leftovers),
            live_version=(names.version_of(live.config) or live.config) if live.config else None,
        )

    def _scaling_changes(self, name: str, live: Live) -> Iterator[Change]:
        p = self.provider
        scaling = p.config.deploy.scaling
        target, policy = (None, None) if live.status is None else p._scaling_now(name)
        resource = names.scaling_resource_id(name)
        if scaling is None:
            if target is not None:
                yield Change("delete", "scalable target", resource, "deploy.scaling removed")
            return
        wanted_policy = scaling_policy(name, scaling)
        detail = f"{scaling.min_instances}-{scaling.max_instances} instances"
        yield Change(
            "keep" if _same_target(target, name, scaling) else ("update" if target else "create"),
            "scalable target",
            resource,
            detail,
        )
        yield Change(
            "keep" if _same_policy(policy, name, scaling) else ("update" if policy else "create"),
            "scaling policy",
            wanted_policy["PolicyName"],
            f"target tracking on {METRIC}",
        )

    def create(self, desired: Desired, diff: Diff) -> None:
        p, sm = self.provider, self.provider._sm
        tags = p._tags(desired.name, desired.manifest.version)
        to_create = {c.name for c in diff.new_version if c.action == "create"}
        if desired.model in to_create:
            spec = desired.model_spec
            p._call(
                f"create model {desired.model}",
                lambda: sm.create_model(
                    ModelName=desired.model,
                    PrimaryContainer={
                        "Image": spec["Image"],
                        "ModelDataUrl": spec["ModelDataUrl"],
                        "Environment": spec["Environment"],
                    },
                    ExecutionRoleArn=spec["Role"],
                    Tags=tags,
                ),
            )
        if desired.config in to_create:
            p._call_when_visible(  # names the model just created
                f"create endpoint config {desired.config}",
                lambda: sm.create_endpoint_config(
                    EndpointConfigName=desired.config, **desired.config_spec, Tags=tags
                ),
            )

    def settled(self, desired: Desired, traffic_pct: int) -> Settle:
        live = self._seen(self.provider._live(desired.name))
        if live.status in names.SETTLING:
            return Settle("pending", live.status or "")
        if self._stale(live):
            return Settle("pending", "waiting for DescribeEndpoint to show the change")
        on_new = live.config == desired.config
        if traffic_pct == 0:  # created, or switched back: the endpoint is not on the new config
            if live.status == names.MIXED or (not on_new and live.status in {None, "InService"}):
                return Settle("ok")  # (a mixed endpoint may name the new config already)
            return Settle("failed", live.failure or f"it is {live.status} on {live.config}")
        if live.status == "InService" and on_new:
            return Settle("ok")
        reason = live.failure or f"the endpoint is {live.status} on {live.config}"
        still = f"; {live.config} still serves" if live.status == "InService" else ""
        return Settle("failed", reason + still)

    def _stale(self, live: Live) -> bool:
        """True when ``live`` is still the view from before this deploy's last write.

        DescribeEndpoint is eventually consistent: just after CreateEndpoint it may not find
        the endpoint yet, and just after UpdateEndpoint it may still answer InService on the
        old config ("Amazon SageMaker API eventual consistency"; fidelity finding 16), which
        would otherwise read as an update that failed at once. AWS sets LastModifiedTime
        when it takes an update, so an answer that carries it no later than before the write
        is waited out (within the deploy's deadline) instead of judged."""
        before = self._before_write
        if before is None:
            return False
        if before.status is None:  # created: not found yet
            return live.status is None
        return (
            live.modified is not None
            and before.modified is not None
            and live.modified <= before.modified
        )

    def _seen(self, live: Live) -> Live:
        """Remember the latest view of the endpoint (by LastModifiedTime): what a switch back
        compares later answers with, should its own fresh read lag behind."""
        last = self._latest
        if last is None or (
            live.modified is not None and (last.modified is None or live.modified > last.modified)
        ):
            self._latest = live
        return live

    def taken(self, desired: Desired, traffic_pct: int) -> str | None:
        if traffic_pct == 0:
            return None  # a model or config nothing uses yet: removing it is safe
        now = self._seen(self.provider._live(desired.name))
        on_new = now.status == "InService" and now.config == desired.config
        if now.status in names.SETTLING or on_new:
            return f"{now.status} on {now.config}"
        return None

    def switch(self, desired: Desired, live: Live, step: TrafficStep) -> None:
        p, name = self.provider, desired.name
        self._before_write = live
        if live.status is None or live.status in names.FAILED:  # a Failed one was removed first
            self._before_write = replace(live, status=None)  # created: "not found" is stale
            p._call_when_visible(  # names the config just created
                f"create endpoint {name}",
                lambda: p._sm.create_endpoint(
                    EndpointName=name,
                    EndpointConfigName=desired.config,
                    Tags=p._tags(name, desired.manifest.version),
                ),
            )
            return
        variant = desired.config_spec["ProductionVariants"][0]
        new_type = variant.get("InstanceType")
        target, _ = p._scaling_now(name)
        if target is not None and new_type != live.instance_type:
            # AWS refuses an update that changes the instance type of a scaled variant:
            # deregister first (the scaling step registers it again, or a failure restores it)
            p._deregister_scaling(name)
            target = None
        update: dict[str, Any] = {}
        if "ServerlessConfig" not in variant:
            # Deployment guardrails apply to real-time (and asynchronous) endpoints only
            # ("Deployment guardrails", deployment-guardrails.html): a serverless update
            # takes AWS's default.
            update.update(
                deployment_config(
                    p.config.deploy.rollout, max_execution_s=p.settings.deploy_timeout_s
                )
            )
        if target is not None:
            # Autoscaling is blocked while an update runs ("Update endpoints that use auto
            # scaling", endpoint-scaling-update.html): the new fleet keeps the count it has
            # scaled to, unless deploy.instance_count itself changed.
            update["RetainAllVariantProperties"] = True
            if variant.get("InitialInstanceCount") != live.initial_count:
                update["ExcludeRetainedVariantProperties"] = [
                    {"VariantPropertyType": "DesiredInstanceCount"}
                ]
        p._call_when_visible(  # names the config just created
            f"update endpoint {name}",
            lambda: p._sm.update_endpoint(
                EndpointName=name, EndpointConfigName=desired.config, **update
            ),
        )

    def switch_back(self, desired: Desired, live: Live) -> None:
        p, name, back_to = self.provider, desired.name, live.config
        self._before_write = self._seen(p._live(name))
        latest = self._latest  # a fresh read may lag behind one seen before: take the newer
        if latest is not None and latest.modified is not None:
            fresh = self._before_write.modified
            if fresh is None or latest.modified > fresh:
                self._before_write = latest
        p._call(
            f"roll endpoint {name} back to {back_to}",
            lambda: p._sm.update_endpoint(EndpointName=name, EndpointConfigName=back_to),
        )

    def smoke(self, desired: Desired, body: bytes, *, before_traffic: bool) -> bytes:
        return self.provider.invoker.invoke_sync(desired.name, body, timeout=70.0).body

    def remove(self, change: Change) -> None:
        if change.kind == ENDPOINT:
            self.provider._delete_endpoint_and_wait(change.name)
        else:
            self.provider._delete_resource(change.kind, change.name)

    def read_scaling(self, desired: Desired) -> object:
        return self.provider._scaling_now(desired.name)

    def restore_scaling(self, desired: Desired, before: object) -> None:
        """Register again, as it was, the scalable target and policy a failed update took
        off (an instance type change deregisters them first)."""
        p, name = self.provider, desired.name
        target, policy = cast("ScalingState", before)
        if target is None or p._scaling_now(name)[0] is not None:
            return
        client = p._client("application-autoscaling")
        where = {k: target[k] for k in ("ServiceNamespace", "ResourceId", "ScalableDimension")}
        p._call(
            "register scalable target again",
            lambda: client.register_scalable_target(
                **where, MinCapacity=target["MinCapacity"], MaxCapacity=target["MaxCapacity"]
            ),
        )
        if policy is not None:
            p._call(
                "put scaling policy again",
                lambda: client.put_scaling_policy(
                    **where,
                    PolicyName=policy["PolicyName"],
                    PolicyType=policy["PolicyType"],
                    TargetTrackingScalingPolicyConfiguration=policy[
                        "TargetTrackingScalingPolicyConfiguration"
                    ],
                ),
            )

    def apply_scaling(self, desired: Desired, changes: tuple[Change, ...]) -> None:
        """Bring the endpoint's autoscaling to ``deploy.scaling``, read as it is now (an
        instance type change deregistered it); no write where it already is."""
        p, name = self.provider, desired.name
        scaling = p.config.deploy.scaling
        target, policy = p._scaling_now(name)
        if scaling is None:
            if target is not None:
                p._deregister_scaling(name)
            return
        client = p._client("application-autoscaling")
        if not _same_target(target, name, scaling):
            p._call(
                "register scalable target",
                lambda: client.register_scalable_target(**scaling_target(name, scaling)),
            )
        if target is None or not _same_policy(policy, name, scaling):
            p._call(
                "put scaling policy",
                lambda: client.put_scaling_policy(**scaling_policy(name, scaling)),
            )


def _same_target(target: dict[str, Any] | None, name: str, scaling: ScalingSection) -> bool:
    wanted = scaling_target(name, scaling)
    return target is not None and all(
        target.get(k) == wanted[k] for k in ("MinCapacity", "MaxCapacity")
    )


def _same_policy(policy: dict[str, Any] | None, name: str, scaling: ScalingSection) -> bool:
    wanted = scaling_policy(name, scaling)["TargetTrackingScalingPolicyConfiguration"]
    return (
        policy is not None
        and policy.get("TargetTrackingScalingPolicyConfiguration", {}).get("TargetValue")
        == wanted["TargetValue"]
    )
