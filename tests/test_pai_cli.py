"""``provider: pai`` end to end, as a user drives it: the ``aiaas`` command in a shell (deploy,
status, invoke, logs, a dry run, delete) against the emulated PAI-EAS and OSS, which verify
every request's ACS3 / OSS4 signature. The emulators run in this process; each ``aiaas``
process reaches them through the variables ``aiaas emulate alibaba`` prints (the access key,
``AIAAS_PAI_EAS_URL``, ``AIAAS_PAI_OSS_URL``), with a ``pai:`` section written for the real
cloud. ``aiaas invoke`` is given no service token: it reads the endpoint and token with one
signed DescribeService, as from a laptop."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from alibaba_emulated import alibaba
from conftest import PROJECTS, aiaas_in_shell

import aiaas.api as aiaas_api
from aiaas.errors import ConfigError
from emulators.alibaba import AlibabaEmulator

__all__ = ["alibaba"]  # a fixture, used by name

MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"


@pytest.fixture(scope="module")
def project(alibaba: AlibabaEmulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe project with ``provider: local`` in its file: ``--provider pai`` switches it
    to PAI-EAS, whose section (no endpoint in it) sits beside."""
    root = tmp_path_factory.mktemp("pai-cli") / "probe"
    shutil.copytree(PROJECTS / "probe", root)
    pai = (
        "pai:\n"
        f"  region: {alibaba.region}\n  oss_bucket: {alibaba.bucket}\n  prefix: cli\n"
        "  image: registry-vpc.cn-hangzhou.aliyuncs.com/aiaas/aiaas-server:1.0\n"
        "  instance_type: ecs.c6.large\n"
    )
    (root / "aiaas.yaml").write_text(MODEL_YAML + "provider: local\n" + pai)
    return root


def aiaas(
    alibaba: AlibabaEmulator, project: Path, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """``aiaas <args> --provider pai`` from a shell holding only the emulated cloud's
    variables (deploy polling fast)."""
    env = {**alibaba.env(), "AIAAS_PAI__POLL_INTERVAL_S": "0.05"}
    return aiaas_in_shell(project, [*args, "--provider", "pai"], env, ok=ok)


def test_deploy_status_invoke_logs_delete_from_the_cli(
    alibaba: AlibabaEmulator, project: Path
) -> None:
    deployed = aiaas(alibaba, project, "deploy")
    assert "probe" in deployed.stdout
    (service,) = {
        c.path.rsplit("/", 1)[-1] for c in alibaba.calls() if c.action == "DescribeService"
    }
    assert alibaba.service_status(service) == "Running"
    assert service.startswith("probe_")  # the deployment's name and the project's hash

    status = aiaas(alibaba, project, "status", "probe")
    assert "ready" in status.stdout and "pai" in status.stdout

    answer = aiaas(alibaba, project, "invoke", "probe", "-d", '{"inputs": [{"value": 21}]}')
    body = json.loads(answer.stdout)
    assert body["outputs"][0]["value"] == 42.0 and body["model"] == "probe"
    served = [c for c in alibaba.predict_calls() if c.status == 200]
    assert served and served[-1].service == service  # through the gateway, with the token

    logs = aiaas(alibaba, project, "logs", "probe")
    assert "aiaas container: serving" in logs.stdout  # the container's own output

    writes = len(alibaba.writes())
    dry = aiaas(alibaba, project, "deploy", "--dry-run")
    assert "keep" in dry.stdout and len(alibaba.writes()) == writes

    deleted = aiaas(alibaba, project, "delete", "probe")
    assert "probe" in deleted.stdout
    assert alibaba.service_status(service) is None
    gone = aiaas(alibaba, project, "status", "probe", ok=False)
    assert gone.returncode == 1 and "probe" in gone.stdout + gone.stderr


def test_an_instance_type_eas_does_not_offer_is_refused_before_any_write(
    alibaba: AlibabaEmulator, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form is right (load accepts it); EAS's own list (DescribeMachineSpec) lacks it.
    In this process: the message is the same one the CLI prints."""
    monkeypatch.setenv("AIAAS_PAI__INSTANCE_TYPE", "ecs.c6.largex")
    writes = len(alibaba.writes())
    with pytest.raises(ConfigError) as refused:
        aiaas_api.plan(project, provider="pai")
    message = refused.value.message
    assert "pai.instance_type" in message and "'ecs.c6.largex'" in message
    assert "did you mean 'ecs.c6.large'" in message
    assert any(c.action == "DescribeMachineSpec" for c in alibaba.calls())
    assert len(alibaba.writes()) == writes


def test_an_instance_type_without_stock_is_refused_naming_it(
    alibaba: AlibabaEmulator, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIAAS_PAI__INSTANCE_TYPE", "ecs.c7.xlarge")
    alibaba.sell_out("ecs.c7.xlarge")
    try:
        with pytest.raises(ConfigError) as refused:
            aiaas_api.plan(project, provider="pai")
    finally:
        alibaba.sell_out("ecs.c7.xlarge", False)
    message = refused.value.message
    assert "pai.instance_type" in message and "not available" in message, message
    assert "NoStock" in message, message


def test_the_live_version_deploys_with_no_write_even_when_its_type_sold_out(
    alibaba: AlibabaEmulator, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIAAS_PAI__POLL_INTERVAL_S", "0.05")
    aiaas_api.deploy(project, provider="pai", name="stocked")
    writes = len(alibaba.writes())
    alibaba.sell_out("ecs.c6.large")
    try:
        again = aiaas_api.deploy(project, provider="pai", name="stocked")
    finally:
        alibaba.sell_out("ecs.c6.large", False)
    assert again.status.value == "ready" and len(alibaba.writes()) == writes
    assert aiaas_api.delete(project, provider="pai", name="stocked") is True
