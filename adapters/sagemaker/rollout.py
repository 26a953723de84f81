"""The neutral ``deploy:`` section compiled to SageMaker's own mechanisms.

- ``deploy.rollout`` → UpdateEndpoint's ``DeploymentConfig``: a blue/green update whose
  traffic shifts all at once, as a canary, or linearly, rolled back automatically while any
  of ``rollback_alarms`` (CloudWatch alarm names) fires
  (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DeploymentConfig.html).
- ``deploy.scaling`` → an Application Auto Scaling scalable target on the variant's
  ``DesiredInstanceCount`` and a target-tracking policy on
  ``SageMakerVariantConcurrentRequestsPerModelHighResolution``: the requests in flight at
  the model container, emitted every 10 s ("Define a scaling policy",
  endpoint-auto-scaling-add-code-define.html; botocore's application-autoscaling MetricType),
  which is the neutral ``target_concurrency`` itself. The older
  ``SageMakerVariantInvocationsPerInstance`` counts invocations per instance per minute, so
  ``target_concurrency * 60`` on it is right only for one-second predictions (10 x too many
  instances for a 100 ms model). Not checked against a live account: whether AWS emits the
  high-resolution metric for every single-model real-time endpoint.
"""

from __future__ import annotations

from typing import Any

from adapters.sagemaker import MAX_EXECUTION_TIMEOUT_S
from adapters.sagemaker.names import scaling_resource_id
from aiaas.config import RolloutSection, ScalingSection

DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantConcurrentRequestsPerModelHighResolution"
SCALE_IN_COOLDOWN_S = 300  # AWS's default: scale in slowly
SCALE_OUT_COOLDOWN_S = 60


def deployment_config(rollout: RolloutSection, *, max_execution_s: float) -> dict[str, Any]:
    """UpdateEndpoint's keyword arguments for ``rollout`` (``DeploymentConfig``).

    ``max_execution_s`` (``sagemaker.deploy_timeout_s``) becomes the update's
    ``MaximumExecutionTimeoutInSeconds``, within AWS's 600-28800: AWS then rolls back by
    itself about when aiaas stops waiting, instead of carrying on under its own default
    while the next deploy is refused as Updating."""
    low, high = MAX_EXECUTION_TIMEOUT_S
    wait = int(rollout.wait_s)
    routing: dict[str, Any]
    if rollout.strategy == "canary":
        routing = {
            "Type": "CANARY",
            "WaitIntervalInSeconds": wait,
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": rollout.canary_percent},
        }
    elif rollout.strategy == "linear":
        routing = {
            "Type": "LINEAR",
            "WaitIntervalInSeconds": wait,
            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": rollout.step_percent},
        }
    else:  # all at once; with alarms, wait_s is the baking period they are watched for
        routing = {
            "Type": "ALL_AT_ONCE",
            "WaitIntervalInSeconds": wait if rollout.rollback_alarms else 0,
        }
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": 0,
            "MaximumExecutionTimeoutInSeconds": int(min(max(max_execution_s, low), high)),
        }
    }
    if rollout.rollback_alarms:
        config["AutoRollbackConfiguration"] = {
            "Alarms": [{"AlarmName": alarm} for alarm in rollout.rollback_alarms]
        }
    return {"DeploymentConfig": config}


def scaling_target(endpoint: str, scaling: ScalingSection) -> dict[str, Any]:
    """RegisterScalableTarget's keyword arguments."""
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": scaling_resource_id(endpoint),
        "ScalableDimension": DIMENSION,
        "MinCapacity": scaling.min_instances,
        "MaxCapacity": scaling.max_instances,
    }


def scaling_policy(endpoint: str, scaling: ScalingSection) -> dict[str, Any]:
    """PutScalingPolicy's keyword arguments (target tracking)."""
    return {
        # The name of the first version's policy (on invocations per minute): kept, so
        # PutScalingPolicy replaces that policy in place on the next deploy.
        "PolicyName": f"aiaas-{endpoint}-invocations",
        "ServiceNamespace": "sagemaker",
        "ResourceId": scaling_resource_id(endpoint),
        "ScalableDimension": DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(scaling.target_concurrency),
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
            "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
        },
    }
