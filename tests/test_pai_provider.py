"""The PAI-EAS control plane (adapters/pai/provider.py and steps.py) against the emulated
Alibaba Cloud with the real SDK clients, for what the conformance suite does not see: the
service config as EAS received it (the mount, the environment, rpc, labels), a real prediction
through the invoker after deploy, no write for the live digest, an update that replaces the
config (never merges it), a failed update rolled back with UpdateServiceVersion and EAS's
reason in the error, the autoscaler calls, and delete's idempotence. One emulator for the
module; each test deploys under a name of its own (or reads the module's first deployment,
which no test changes), so any one runs alone or in any order.
"""

from __future__ import annotations

import json
import shutil
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alibaba_emulated import alibaba  # noqa: F401 - the module's emulator fixture
from conformance.harnesses.pai import pai_yaml
from conftest import PROJECTS

from adapters.base import DeploymentStatus
from adapters.pai import names
from adapters.pai.provider import MOUNT_PATH, PaiProvider
from adapters.pai.steps import PaiSteps
from adapters.rollout import Timing, run_rollout
from aiaas.bundle import BuiltBundle, build_bundle
from aiaas.config import load_config
from aiaas.errors import DeployFailed
from emulators.alibaba import WRITE_ACTIONS, AlibabaEmulator, EasCall

MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
SERVER_YAML = "server:\n  max_queue_size: 4\n  queue_wait_ms: 0\n"
SCALING = (
    "deploy:\n  scaling:\n    min_instances: 1\n    max_instances: 3\n    target_concurrency: 4\n"
)
NAME = "probe"


@dataclass(frozen=True)
class Bundles:
    v1: BuiltBundle
    v2: BuiltBundle
    v3: BuiltBundle


def _build(work: Path, salt: str) -> BuiltBundle:
    project = work / f"v{salt}"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(MODEL_YAML)
    model = project / "probe_model.py"
    model.write_text(model.read_text().replace('VERSION_SALT = "1"', f'VERSION_SALT = "{salt}"'))
    return build_bundle(project, work / f"v{salt}.tar.gz")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    work = tmp_path_factory.mktemp("pai-bundles")
    return Bundles(_build(work, "1"), _build(work, "2"), _build(work, "3"))


def _provider(root: Path, emulator: AlibabaEmulator, extra: str = "") -> PaiProvider:
    root.mkdir(parents=True, exist_ok=True)
    yaml = MODEL_YAML + "provider: pai\n" + pai_yaml(emulator, "tests") + SERVER_YAML + extra
    (root / "aiaas.yaml").write_text(yaml)
    return PaiProvider.from_config(load_config(root))


@pytest.fixture(scope="module")
def provider(
    alibaba: AlibabaEmulator,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PaiProvider]:
    made = _provider(tmp_path_factory.mktemp("pai-project") / "p", alibaba, SCALING)
    try:
        yield made
    finally:
        made.close()


def _writes(emulator: AlibabaEmulator, service: str, since: int) -> list[str]:
    """The write actions carried out on ``service`` since call ``since`` (the emulator's
    record: CreateService names the service in its body, the others in their path)."""
    found = []
    for call in emulator.calls()[since:]:
        if call.action not in WRITE_ACTIONS or call.status >= 300:
            continue
        named = call.path.split("/")[5:6] == [service] or (
            call.action == "CreateService" and f'"name": "{service}"' in call.body
        )
        if named:
            found.append(call.action)
    return found


def _fresh(provider: PaiProvider, bundle: BuiltBundle, name: str) -> str:
    """``bundle`` deployed as ``name`` (a deployment no other test uses); its service."""
    provider.deploy(bundle.path, name=name)
    return names.service_name(name, provider.settings)


@dataclass(frozen=True)
class First:
    """The module's first deployment ("probe", v1) and the control-plane calls it made."""

    service: str
    calls: list[EasCall]


@pytest.fixture(scope="module")
def first(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
) -> First:
    since = len(alibaba.calls())
    deployment = provider.deploy(bundles.v1.path, name=NAME)
    assert deployment.version == bundles.v1.manifest.version
    assert deployment.status is DeploymentStatus.READY
    return First(names.service_name(NAME, provider.settings), alibaba.calls()[since:])


def test_deploy_creates_the_service_and_it_answers_through_the_invoker(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
    first: First,
) -> None:
    create = next(c for c in first.calls if c.action == "CreateService")
    config = json.loads(create.body)
    assert config["metadata"]["name"] == first.service
    container = config["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AIAAS_MODEL_DIR"] == MOUNT_PATH and env["AIAAS_PORT"] == str(container["port"])
    assert env["AIAAS_SERVER__MAX_QUEUE_SIZE"] == "4"
    assert config["storage"] == [
        {
            "oss": {
                "path": f"oss://{alibaba.bucket}/aiaas/{bundles.v1.manifest.version}/",
                "readOnly": True,
            },
            "mount_path": MOUNT_PATH,
        }
    ]
    assert config["metadata"]["rpc"]["max_queue_size"] == 2
    assert config["cloud"]["computing"]["instances"] == [{"type": "ecs.c6.large"}]
    labels = json.loads(create.query["Labels"])
    assert labels[names.PROJECT_LABEL] == "tests" and labels[names.DEPLOYMENT_LABEL] == NAME
    # a real prediction through the invoke path, with the service's endpoint and token
    live = provider._live(first.service)
    answer = provider.invoker_for(live).invoke_sync(
        NAME, json.dumps(bundles.v1.manifest.example_request).encode()
    )
    assert answer.version == bundles.v1.manifest.version
    # the autoscaler: max > min, a qps threshold per instance (target 4 / 1 s)
    scaler = next(c for c in first.calls if c.action == "CreateServiceAutoScaler")
    assert json.loads(scaler.body) == {
        "min": 1,
        "max": 3,
        "scaleStrategies": [{"metricName": "qps", "threshold": 4}],
    }
    assert provider.live_manifest(NAME) == bundles.v1.manifest


def test_the_public_endpoint_is_shown_and_smoke_tested_over_tls(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    first: First,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EAS gives its public gateway as an ``http://`` URL; the provider (``status``, the
    deploy's smoke test) uses its https form: the token must not cross the internet in clear.
    The emulated EAS is scripted to give the real domain (it serves on 127.0.0.1 itself)."""
    region = provider.settings.region
    public = f"1.{region}.pai-eas.aliyuncs.com"
    monkeypatch.setattr(alibaba, "_internet", lambda name: f"http://{public}/api/predict/{name}")
    live = provider._live(first.service)
    assert live.endpoint == f"https://{public}/api/predict/{first.service}"
    assert provider.describe(NAME).endpoint == live.endpoint  # what `aiaas status` shows
    # the smoke test trusts AIAAS_PAI_CA_BUNDLE as aiaas invoke does (a TLS-intercepting
    # network); read once, by from_config
    assert provider.invoker_for(live).clients._ca_bundle is None
    bundle = "/nonexistent/ca.pem"  # never opened: no https call is made here
    with_bundle = PaiProvider.from_config(provider.config, {"AIAAS_PAI_CA_BUNDLE": bundle})
    assert with_bundle.invoker_for(live).clients._ca_bundle == bundle
    with_bundle.close()
    monkeypatch.setattr(alibaba, "_internet", lambda name: "")  # a VPC-only service
    vpc = provider._live(first.service).endpoint
    assert vpc is not None and vpc.startswith(f"http://{alibaba.account_id}.vpc.{region}.")


def test_the_live_digest_writes_nothing(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
    first: First,
) -> None:
    since, objects = len(alibaba.calls()), len(alibaba.oss.objects(alibaba.bucket, ""))
    assert provider.plan(bundles.v1.path, name=NAME).unchanged
    assert provider.deploy(bundles.v1.path, name=NAME).version == bundles.v1.manifest.version
    assert _writes(alibaba, first.service, since) == []
    assert len(alibaba.oss.objects(alibaba.bucket, "")) == objects


def test_a_new_digest_replaces_the_config_and_the_autoscaler_is_kept(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
) -> None:
    service = _fresh(provider, bundles.v1, "updated")
    since = len(alibaba.calls())
    deployment = provider.deploy(bundles.v2.path, name="updated")
    assert deployment.version == bundles.v2.manifest.version
    assert _writes(alibaba, service, since) == ["UpdateService"]  # the autoscaler: no write
    update = [c for c in alibaba.calls()[since:] if c.action == "UpdateService"][-1]
    assert update.query.get("UpdateType") == "replace"
    assert bundles.v2.manifest.version in json.loads(update.body)["storage"][0]["oss"]["path"]
    assert deployment.details["service_version"] == 2


def test_a_failed_update_is_rolled_back_with_update_service_version(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
) -> None:
    service = _fresh(provider, bundles.v1, "rolled")
    since = len(alibaba.calls())
    alibaba.fail_next_version("Failed to pull image: manifest unknown", reason="ImagePullFailed")
    with pytest.raises(DeployFailed) as failed:
        provider.deploy(bundles.v3.path, name="rolled")
    message = failed.value.message
    assert "Failed to pull image: manifest unknown" in message, message
    assert "ImagePullFailed" in message, message
    assert _writes(alibaba, service, since) == ["UpdateService", "UpdateServiceVersion"]
    rollback = [c for c in alibaba.calls()[since:] if c.action == "UpdateServiceVersion"][-1]
    assert json.loads(rollback.body) == {"Version": 1}
    described = provider.describe("rolled")
    assert described.version == bundles.v1.manifest.version
    assert described.status is DeploymentStatus.READY
    assert described.details["service_version"] == 1


def test_a_failed_versions_error_quotes_its_log_safely(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
) -> None:
    service = _fresh(provider, bundles.v1, "leaky")
    token = provider._live(service).token
    assert token
    dangerous = [
        "\x1b[31mERROR\x1b[0m model failed to load\r\x07",
        f"Authorization: {token}",
        f"calling back with token={token} and \u202eevil\u200b text",
        f'{{"password": "hunter22", "note": "the token is {token}"}}',
        "x" * 5000,
        "last words",
    ]
    # noise first, so that the log ends on a whole page of DescribeServiceLog's 10 lines
    # (the provider's service_logs reads the first page and the last)
    before = len(alibaba.container_output(service).splitlines())
    noise = [f"noise {i}" for i in range(10 + (-(before + 10 + len(dangerous))) % 10)]
    alibaba.fail_next_version(f"container exited (token {token})", log=noise + dangerous)
    with pytest.raises(DeployFailed) as failed:
        provider.deploy(bundles.v2.path, name="leaky")
    message = failed.value.message
    assert token not in message and "hunter22" not in message, message
    assert not any(unicodedata.category(c)[0] == "C" for c in message), repr(message)
    assert "ERROR model failed to load" in message and "last words" in message, message
    assert "Authorization: [redacted]" in message and "token=[redacted]" in message, message
    assert "noise 0" not in message  # the last lines only
    assert len(message) < 2500, len(message)


def test_the_rollback_waits_on_the_deploys_clock_until_its_deadline(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
) -> None:
    service = _fresh(provider, bundles.v1, "late")
    since = len(alibaba.calls())

    class Clock:
        """The deploy's clock: 1 s a poll, and the deadline past once the rollback is sent."""

        now = 0.0

        def __call__(self) -> float:
            rolled = any(c.action == "UpdateServiceVersion" for c in alibaba.calls()[since:])
            return self.now + (1000.0 if rolled else 0.0)

        def sleep(self, seconds: float) -> None:
            self.now += seconds
            time.sleep(0.01)  # the emulator's versions start on its threads, in real time

    clock = Clock()
    timing = Timing(60.0, 1.0, clock=clock, sleep=clock.sleep)
    alibaba.fail_next_version("scripted: the new version does not start")
    with pytest.raises(DeployFailed) as failed:
        run_rollout(  # provider.deploy, on this clock
            PaiSteps(provider, timing=timing),
            bundles.v2.path,
            name="late",
            rollout=provider.config.deploy.rollout,
            timing=timing,
            upload=provider.upload,
        )
    message = failed.value.message
    assert "scripted: the new version does not start" in message, message
    assert "still rolling back to version 1" in message and "goes on in PAI-EAS" in message
    assert _writes(alibaba, service, since) == ["UpdateService", "UpdateServiceVersion"]
    assert alibaba.wait(service) == "Running"  # the rollback went on
    assert provider.describe("late").details["service_version"] == 1


def test_equal_min_and_max_delete_the_autoscaler(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
    tmp_path: Path,
) -> None:
    service = _fresh(provider, bundles.v1, "fixed")  # with an autoscaler (min 1, max 3)
    fixed = "deploy:\n  scaling:\n    min_instances: 2\n    max_instances: 2\n"
    with _provider(tmp_path / "fixed", alibaba, fixed) as other:
        since = len(alibaba.calls())
        other.deploy(bundles.v1.path, name="fixed")
        assert _writes(alibaba, service, since) == ["DeleteServiceAutoScaler"]


def test_delete_is_idempotent_and_logs_read_the_service_log(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
) -> None:
    service = _fresh(provider, bundles.v1, "deleted")
    assert "deleted" in [d.name for d in provider.list()]
    # a failed update's 13 lines after the live version's: a log of many pages
    alibaba.fail_next_version("exited", log=[f"line {i}" for i in range(13)])
    with pytest.raises(DeployFailed):
        provider.deploy(bundles.v2.path, name="deleted")

    def printed() -> list[str]:
        return [line for line in alibaba.container_output(service).split("\n") if line.strip()]

    assert len(printed()) >= 15 and "line 12" in printed(), printed()
    for tail in range(1, len(printed()) + 2):  # pages of `tail` lines; the last one often short
        for _ in range(20):  # the restarted container may still be printing: a quiet moment
            before = printed()
            got = provider.logs("deleted", tail=tail)
            if printed() == before:
                break
        assert got == before[-tail:], (tail, before, got)
    assert provider.delete("deleted") is True
    assert provider.delete("deleted") is False
    assert "deleted" not in [d.name for d in provider.list()]


def test_a_create_without_a_clear_answer_removes_nothing(
    provider: PaiProvider,
    alibaba: AlibabaEmulator,  # noqa: F811
    bundles: Bundles,
) -> None:
    # A 503 leaves open whether EAS took the call, and a read that does not find the service
    # proves nothing (it may be created yet): no DeleteService, the error says so.
    service = names.service_name("unclear", provider.settings)
    since = len(alibaba.calls())
    alibaba.refuse_next("CreateService", 503, "ServiceUnavailable", "The server is busy.")
    with pytest.raises(DeployFailed) as failed:
        provider.deploy(bundles.v1.path, name="unclear")
    message = failed.value.message
    assert "ServiceUnavailable" in message and "may still be created" in message, message
    assert "nothing removed" in message, message
    assert "DeleteService" not in [c.action for c in alibaba.calls()[since:]]
    # EAS refusing it (a 4xx) proves it was not carried out: the cleanup may go ahead
    alibaba.refuse_next("CreateService", 400, "InvalidParameter", "Scripted refusal.")
    with pytest.raises(DeployFailed) as refused:
        provider.deploy(bundles.v1.path, name="unclear")
    assert "may still" not in refused.value.message, refused.value.message
    # and deploying again once nothing is pending creates it
    since = len(alibaba.calls())
    assert provider.deploy(bundles.v1.path, name="unclear").status is DeploymentStatus.READY
    assert _writes(alibaba, service, since)[0] == "CreateService"


def test_the_service_token_never_shows_in_what_the_provider_reads() -> None:
    from adapters.pai.provider import Live

    live = Live("probe_abc123", status="running", endpoint="http://e", token="tok-SECRET-1")
    assert "tok-SECRET-1" not in repr(live) and "tok-SECRET-1" not in str(live)
