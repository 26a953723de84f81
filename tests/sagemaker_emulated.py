"""The emulated AWS that the SageMaker provider's tests share: one emulator per test module
(moto's server and the runtime emulator, real boto3 clients pointed at them), the probe
bundles, and helpers that read what the emulators received. Fixtures are imported by the
test modules (tests/test_sagemaker_provider.py, tests/test_sagemaker_failures.py), which
each get their own module-scoped emulator, so pytest-xdist runs the two files side by side."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conformance.harnesses.sagemaker import BUCKET, sagemaker_yaml
from conftest import PROJECTS

from adapters.base import DeploymentStatus, Provider
from adapters.sagemaker.provider import SageMakerProvider
from aiaas.bundle import BuiltBundle, build_bundle
from aiaas.config import load_config
from emulators.aws import AwsEmulator, running

MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"


@contextlib.contextmanager
def emulated_aws_in_env(workdir: Path) -> Iterator[tuple[AwsEmulator, pytest.MonkeyPatch]]:
    """An :class:`AwsEmulator` started in ``workdir``, its :meth:`~AwsEmulator.env` set in
    this process (so plain boto3 clients and providers reach it) until it stops; the
    monkeypatch is given for more variables, undone with it."""
    with running(workdir) as emulator, pytest.MonkeyPatch.context() as mp:
        for key, value in emulator.env().items():
            mp.setenv(key, value)
        yield emulator, mp


@contextlib.contextmanager
def deployed_probe(
    work: Path, prefix: str, extra_yaml: str = ""
) -> Iterator[tuple[AwsEmulator, pytest.MonkeyPatch, Path, BuiltBundle]]:
    """The probe project copied into ``work`` (``provider: sagemaker``, S3 prefix ``prefix``,
    ``extra_yaml`` added), deployed as ``probe`` on emulated AWS (:func:`emulated_aws_in_env`,
    bundle bucket made): the emulator, the monkeypatch, the project and its bundle."""
    project = work / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(
        MODEL_YAML + "provider: sagemaker\n" + extra_yaml + sagemaker_yaml(prefix)
    )
    with emulated_aws_in_env(work / "aws") as (emulator, mp):
        with contextlib.closing(emulator.client("s3")) as s3:
            s3.create_bucket(Bucket=BUCKET)
        bundle = build_bundle(project, work / "probe.tar.gz")
        with SageMakerProvider.from_config(load_config(project)) as provider:
            provider.deploy(bundle.path)
        yield emulator, mp, project, bundle


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEmulator]:
    with emulated_aws_in_env(tmp_path_factory.mktemp("aws")) as (emulator, _):
        yield emulator


@pytest.fixture
def fresh(aws: AwsEmulator) -> Iterator[AwsEmulator]:
    """The emulators with nothing in them but the bundle bucket."""
    aws.reset()
    with contextlib.closing(boto3.client("s3")) as s3:
        s3.create_bucket(Bucket=BUCKET)
    yield aws
    aws.reset()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[BuiltBundle]:
    """The probe at three versions."""
    return probes(tmp_path_factory.mktemp("sagemaker-bundles"), "123")


def probes(work: Path, salts: str) -> list[BuiltBundle]:
    """The probe built once per salt (one character each: a version apiece), in ``work``."""
    built = []
    for salt in salts:
        project = work / f"v{salt}"
        shutil.copytree(PROJECTS / "probe", project)
        (project / "aiaas.yaml").write_text(MODEL_YAML)
        model = project / "probe_model.py"
        model.write_text(
            model.read_text().replace('VERSION_SALT = "1"', f'VERSION_SALT = "{salt}"')
        )
        built.append(build_bundle(project, work / f"v{salt}.tar.gz"))
    return built


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    """A probe that answers its load-time warm-up (so it passes SageMaker's ping), then fails
    every prediction: the smoke test included."""
    project = tmp_path_factory.mktemp("sagemaker-failing") / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(MODEL_YAML)
    model = project / "probe_model.py"
    source = model.read_text()
    first = "        if any(item.fail for item in batch):\n"
    assert first in source
    after_warm_up = (
        '        if getattr(self, "warmed_up", False):\n'
        '            raise RuntimeError("probe fails after its warm-up")\n'
        "        self.warmed_up = True\n"
    )
    model.write_text(source.replace(first, after_warm_up + first))
    return build_bundle(project, project.parent / "failing.tar.gz")


def provider(
    tmp_path: Path, extra: str = "", prefix: str = "tests", section: str = ""
) -> SageMakerProvider:
    """A control plane over a project whose aiaas.yaml ends with ``extra``; ``section``:
    lines replacing or added to the ``sagemaker:`` section's (``  instance_type: ...``)."""
    project = tmp_path / f"project-{prefix}"
    project.mkdir(exist_ok=True)
    lines = sagemaker_yaml(prefix)
    for line in section.splitlines(keepends=True):
        key = line.split(":", 1)[0] + ":"
        kept = [x for x in lines.splitlines(keepends=True) if not x.startswith(key)]
        lines = "".join(kept) + line
    (project / "aiaas.yaml").write_text(
        MODEL_YAML
        + "provider: sagemaker\n"
        + lines
        + "  tags:\n    team: search\n"
        + "server:\n  max_queue_size: 4\n"
        + extra
    )
    return SageMakerProvider.from_config(load_config(project))


def calls(aws: AwsEmulator, action: str) -> list[dict[str, Any]]:
    """The parameters of every ``action`` call the emulators received."""
    return [c.params for c in aws.calls if c.action == action]


def models_and_configs() -> tuple[set[str], set[str]]:
    """The names of every SageMaker model and endpoint config in the emulated account."""
    with contextlib.closing(boto3.client("sagemaker")) as client:
        models = {m["ModelName"] for m in client.list_models()["Models"]}
        configs = {
            c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]
        }
    return models, configs


def assert_nothing_left() -> None:
    """No endpoint, model or endpoint config is left in the emulated account."""
    with contextlib.closing(boto3.client("sagemaker")) as client:
        assert client.list_endpoints()["Endpoints"] == []
    assert models_and_configs() == (set(), set())


def wait_until_ready(sm: Provider, name: str = "probe") -> None:
    """Poll describe until the emulated endpoint has settled back to ready."""
    deadline = time.monotonic() + 60
    while sm.describe(name).status is not DeploymentStatus.READY:
        assert time.monotonic() < deadline, "the emulated update never settled"
        time.sleep(0.1)


SCALING = "deploy:\n  scaling:\n    min_instances: 1\n    max_instances: {max}\n"


def scaling_now() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every scalable target and scaling policy of the emulated account (times left out)."""
    with contextlib.closing(boto3.client("application-autoscaling")) as scaling:
        targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")
        policies = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")
    drop = {"CreationTime", "ResponseMetadata", "Alarms", "PolicyARN", "ScalableTargetARN"}
    return (
        [{k: v for k, v in t.items() if k not in drop} for t in targets["ScalableTargets"]],
        [{k: v for k, v in p.items() if k not in drop} for p in policies["ScalingPolicies"]],
    )


def tags_of(arn: str) -> dict[str, str]:
    with contextlib.closing(boto3.client("sagemaker")) as sm:
        return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


@contextlib.contextmanager
def emulated_aws_with_bucket(workdir: Path, **options: Any) -> Iterator[AwsEmulator]:
    """An :class:`AwsEmulator` started in ``workdir`` (``options``: the emulator's, e.g.
    ``min_transition_s``) with the bundle bucket made; stopped afterwards. For modules
    whose tests drive the CLI in other processes (they pass the emulator's env themselves)."""
    with running(workdir, **options) as emulator:
        with contextlib.closing(emulator.client("s3")) as s3:
            s3.create_bucket(Bucket=BUCKET)
        yield emulator
