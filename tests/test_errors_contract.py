"""The error hierarchy and the contract's status values round-trip through the wire shapes."""

from __future__ import annotations

import json

from adapters.base import Deployment, DeploymentStatus, VersionState
from aiaas.errors import AccessDenied, ProviderError, error_from_body
from functions.app import function_error


def test_access_denied_round_trips_and_is_a_provider_error() -> None:
    sent = AccessDenied("sagemaker:InvokeEndpoint on endpoint/probe was refused")
    back = error_from_body(502, sent.to_dict("r1"))
    assert type(back) is AccessDenied
    assert isinstance(back, ProviderError)
    assert back.message == sent.message


def test_a_function_caller_sees_access_denied_as_502_with_its_code() -> None:
    response = function_error(AccessDenied("refused"), "r2")
    assert response.status_code == 502
    assert json.loads(bytes(response.body))["error"]["code"] == "access_denied"


def test_deployment_carries_every_version_with_its_traffic() -> None:
    split = (
        VersionState("v2", 10, DeploymentStatus.READY),
        VersionState("v1", 90, DeploymentStatus.READY),
    )
    d = Deployment("m", "fake", "v1", DeploymentStatus.UPDATING, versions=split)
    assert sum(v.traffic_pct for v in d.versions) == 100
    assert Deployment("m", "fake", "v1", DeploymentStatus.READY).versions == ()
    assert DeploymentStatus("unknown") is DeploymentStatus.UNKNOWN
