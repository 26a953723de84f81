"""The neutral ``deploy:`` section compiled to SageMaker's own mechanisms.

- ``deploy.rollout`` → UpdateEndpoint's ``DeploymentConfig``: a blue/green update whose
  traffic shifts all at once, as a canary, or linearly, rolled back automatically while any
  of ``rollback_alarms`` (CloudWatch alarm names) fires
  (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DeploymentConfig.html).
- ``deploy.scaling`` → an Application Auto Scaling scalable target on the variant's
  ``DesiredInstanceCount`` and a target-tracking policy on
  ``SageMakerVariantInvocationsPerInstance``. That metric counts invocations per instance
  per **minute**; the neutral ``target_concurrency`` (requests in flight per instance) is
  turned into it by Little's law with one-second predictions: ``target_concurrency * 60``.
"""

from __future__ import annotations

from typing import Any

from adapters.sagemaker.names import scaling_resource_id
from aiaas.config import RolloutSection, ScalingSection

DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
SCALE_IN_COOLDOWN_S = 300  # AWS's default: scale in slowly
SCALE_OUT_COOLDOWN_S = 60


def deployment_config(rollout: RolloutSection) -> dict[str, Any]:
    """UpdateEndpoint's keyword arguments for ``rollout`` (``DeploymentConfig``)."""
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
        "PolicyName": f"aiaas-{endpoint}-invocations",
        "ServiceNamespace": "sagemaker",
        "ResourceId": scaling_resource_id(endpoint),
        "ScalableDimension": DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(scaling.target_concurrency * 60),
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
            "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
        },
    }
