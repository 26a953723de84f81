"""The ``sagemaker`` provider under the conformance suite, against the AWS emulators.

moto's server stands in for S3, the SageMaker control plane, Application Auto Scaling and
CloudWatch Logs; the SageMaker runtime emulator checks every InvokeEndpoint's SigV4 signature
and runs each endpoint's bundle the way the container would (see emulators/aws.py for
what they do and where they differ from AWS). What the provider wrote is counted at the
emulator (every write call it received), and which versions still run is read from the
emulated control plane's models and endpoint configs and from the running containers, not
from the provider. Throttling is the runtime answering ``ThrottlingException`` with HTTP 400, as
AWS does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import boto3
from moto.sagemaker.models import sagemaker_backends

from adapters.base import Provider
from adapters.sagemaker import names
from adapters.sagemaker.provider import SageMakerProvider
from conformance.harness import Harness, register
from emulators.aws import AwsEmulator

BUCKET = "aiaas-conformance"
ROLE = "arn:aws:iam::123456789012:role/aiaas-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/aiaas-server:latest"


def sagemaker_yaml(prefix: str) -> str:
    """A ``sagemaker:`` section for the emulators (CPU instances: the emulated container runs
    the CPU build here), polling fast."""
    return (
        "sagemaker:\n"
        f"  role_arn: {ROLE}\n  bucket: {BUCKET}\n  prefix: {prefix}\n  image_uri: {IMAGE}\n"
        "  instance_type: ml.m5.xlarge\n  poll_interval_s: 0.05\n  deploy_timeout_s: 120\n"
    )


@register
class SageMakerHarness(Harness):
    """``provider: sagemaker`` against moto and the SageMaker runtime emulator."""

    name = "sagemaker"
    aws: AwsEmulator

    def start(self) -> None:
        self.aws = AwsEmulator(self.workdir / "aws")
        self.aws.start()
        # The canary test's 5 s WaitIntervalInSeconds holds 1.5 s: its describe and 20 calls
        # take a few tenths of a second.
        self.aws.wait_scale = 0.3
        for key, value in self.aws.env().items():
            self.setenv(key, value)
        with contextlib.closing(boto3.client("s3")) as s3:
            s3.create_bucket(Bucket=BUCKET)

    def config_yaml(self) -> str:
        return (
            "provider: sagemaker\n"
            + sagemaker_yaml("conformance")
            # a small queue and no waiting for room, as the local harness (same server)
            + "server:\n  max_queue_size: 4\n  queue_wait_ms: 0\n"
            # SageMaker's canary shifts whole instances: at least two (check_deploy); the
            # emulator runs one container per fleet whatever the count
            + "deploy:\n  instance_count: 2\n"
        )

    def writes(self) -> Hashable:
        return tuple(self.aws.writes())

    def running_versions(self, name: str) -> set[str]:
        # The emulated control plane's own records (moto's backend, read in-process).
        backend = sagemaker_backends[AwsEmulator.ACCOUNT][self.aws.region]
        base = names.base_name(name)
        found = [
            r
            for r in [*backend._models, *backend.endpoint_configs]
            if names.deployment_of(r) == base
        ]
        versions = {names.version_of(resource) for resource in found}
        versions |= {
            names.version_of(container.model_name)
            for container in self.aws.containers()
            if container.endpoint == name
        }
        return {v for v in versions if v}

    @contextlib.contextmanager
    def throttled(self, name: str) -> Iterator[None]:
        self.aws.fault(name, 400, code="ThrottlingException")
        try:
            yield
        finally:
            self.aws.clear_faults()

    def foreign(self, name: str, bundle: Path) -> AbstractContextManager[None]:
        # Another project in the same account: its bundles under another prefix, so another
        # aiaas:project tag.
        return self.another_projects_deployment(name, bundle)

    def clients_closed(self, provider: Provider) -> bool:
        assert isinstance(provider, SageMakerProvider)
        return not provider._clients and provider._invoker is None

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if hasattr(self, "aws"):
                self.aws.stop()
