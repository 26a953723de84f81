"""``aiaas emulate alibaba`` as docs/rehearse.md runs it: the emulated PAI-EAS and OSS
serving the region and bucket of the project's ``pai:`` section (written for the real cloud:
no endpoint in it) and every ``--bucket``, and the pai provider reaching them through the
variables it prints alone (``AIAAS_PAI_EAS_URL``, ``AIAAS_PAI_OSS_URL``, the access key), with
the real SDKs: the bundle uploaded to OSS, the services listed on EAS. Then SIGTERM. ``main``
runs in this process; the command in a process of its own, deploying, invoking and deleting
through it, is tests/test_iac_workflow.py's run of the workflow's rehearse job. The refusals
run ``main`` here too."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PROJECTS

from aiaas.bundle import BuiltBundle
from aiaas.config import load_config
from emulators.cli import main

REGION = "cn-shanghai"  # not the emulator's default: the project's is served
BUCKET = "rehearsal-bundles"
PAI_YAML = f"""model:
  entrypoint: probe_model:Probe
provider: pai
pai:
  region: {REGION}
  oss_bucket: {BUCKET}
  image: registry-vpc.{REGION}.aliyuncs.com/aiaas/aiaas-server:1.0
  instance_type: ecs.c6.large
"""


def _exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rehearse-alibaba") / "probe"
    shutil.copytree(PROJECTS / "probe", root)
    (root / "aiaas.yaml").write_text(PAI_YAML)
    return root


def test_emulate_alibaba_serves_the_projects_region_and_bucket(
    project: Path,
    probe_bundle: BuiltBundle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``main`` in this process, as ``aiaas emulate alibaba -c <project> --bucket ...`` runs it
    (tests/test_iac_workflow.py runs the command itself, in the rehearse job, and deploys
    through it); a thread is the user's shell: it waits for the exports, uses them, then sends
    this process the SIGTERM that stops the emulator (the handler ``main`` installed)."""
    env_file = project.parent / "alibaba.env"
    argv = ["alibaba", "-c", str(project), "--bucket", "extra-bucket"]
    argv += ["--env-file", str(env_file), "--workdir", str(project.parent / "cloud")]
    returned = threading.Event()
    failures: list[BaseException] = []

    def shell() -> None:
        try:
            deadline = time.monotonic() + 60
            while not env_file.exists() or not env_file.read_text().endswith("\n"):
                if returned.is_set():
                    return  # main gave up: no handler of its own to signal
                assert time.monotonic() < deadline, "the emulator never printed its variables"
                time.sleep(0.02)
            try:
                use(_exports(env_file.read_text()))
            finally:
                os.kill(os.getpid(), signal.SIGTERM)
        except BaseException as exc:  # raised in the test's thread below
            failures.append(exc)

    def use(env: dict[str, str]) -> None:
        assert set(env) == {
            "AIAAS_PAI_EAS_URL",
            "AIAAS_PAI_OSS_URL",
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            "ALIBABA_CLOUD_ECS_METADATA_DISABLED",
            "ALIBABA_CLOUD_REGION_ID",
        }
        assert env["ALIBABA_CLOUD_REGION_ID"] == REGION
        assert env["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] == "true"
        assert env["AIAAS_PAI_EAS_URL"].startswith("http://127.0.0.1:")
        # this process as a shell with the exports: nothing else of Alibaba Cloud, HOME apart
        for name in list(os.environ):
            if name.startswith("ALIBABA_CLOUD_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", str(project.parent / "home"))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        from adapters.pai.provider import PaiProvider

        provider = PaiProvider.from_config(load_config(project))
        assert provider.settings.control_plane_url == env["AIAAS_PAI_EAS_URL"]
        where = provider.upload(probe_bundle.path)  # OSS V4-signed, into the project's bucket
        assert where.startswith(f"oss://{BUCKET}/aiaas/") and where.endswith("/model.tar.gz")
        assert provider.upload(probe_bundle.path) == where  # there now: not sent again
        assert provider.list() == []  # ListServices, ACS3-signed, in the project's region
        import alibabacloud_oss_v2 as oss

        put = oss.PutObjectRequest(bucket="extra-bucket", key="k", body=b"x")
        assert provider.oss.put_object(put).status_code == 200  # --bucket made it
        sessions = provider._oss_http
        provider.close()
        assert sessions.session is None and not provider.clients_open

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=shell, daemon=True)
    thread.start()
    try:
        code = main(argv)
    finally:
        returned.set()
        thread.join(timeout=60)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if failures:
        raise failures[0]
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == env_file.read_text()
    assert f"region {REGION}, buckets: {BUCKET}, extra-bucket." in err
    assert "Traceback" not in err


def test_refusals_are_one_line_naming_what_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project without a ``pai:`` section, a bad key, another cloud's option, the
    missing extra: exit status 2, one line, no traceback (``main`` raised nothing)."""
    (tmp_path / "aiaas.yaml").write_text("model:\n  entrypoint: m:M\n")
    assert main(["alibaba", "-c", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"aiaas emulate: {tmp_path}: aiaas.yaml has no pai: section (its region and bucket)\n"
    )
    (tmp_path / "aiaas.yaml").write_text(PAI_YAML.replace(REGION, "Shanghai", 1))
    assert main(["alibaba", "-c", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("aiaas emulate: ") and "pai.region" in line
    for argv, refused in [
        (["alibaba", "--workspace", "w"], "--workspace: azure only (not alibaba)"),
        (["aws", "--region", "r"], "--region: azure and alibaba only (not aws)"),
        (["azure", "--bucket", "b"], "--bucket: aws and alibaba only (not azure; azure's"),
    ]:
        with pytest.raises(SystemExit) as usage:
            main(argv)
        assert usage.value.code == 2 and refused in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "alibabacloud_oss_v2", None)  # as if not installed
    assert main(["alibaba", "--workdir", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == (
        "aiaas emulate: the emulated Alibaba Cloud is for the pai provider, which needs "
        "'alibabacloud_oss_v2', which is not installed (pip install 'aiaas[alibaba]')\n"
    )
