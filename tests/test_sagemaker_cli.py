"""``provider: sagemaker`` end to end, as a user drives it: the ``aiaas`` command in a shell
(deploy, status, invoke, logs, delete) against the AWS emulators, and the Lambda entrypoint
answering a function URL event with the model's real prediction through the SigV4-signed
invoke path. The emulators run in this process; the CLI reaches them through
``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, as boto3 honours them."""

from __future__ import annotations

import base64
import copy
import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from conformance.harnesses.sagemaker import sagemaker_yaml
from conftest import PROJECTS
from sagemaker_emulated import emulated_aws_with_bucket
from wheel_cache import shared_wheel_cache

from aiaas.manifest import MANIFEST_FILE
from emulators.aws import AwsEmulator
from functions.auth import create_key

AIAAS = str(Path(sys.executable).with_name("aiaas"))
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lambda"
MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsEmulator]:
    with emulated_aws_with_bucket(tmp_path_factory.mktemp("aws")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe project with ``provider: local`` in its file: the CLI's ``--provider``
    switches it to SageMaker, whose section sits beside."""
    root = tmp_path_factory.mktemp("sagemaker-cli") / "probe"
    shutil.copytree(PROJECTS / "probe", root)
    (root / "aiaas.yaml").write_text(MODEL_YAML + "provider: local\n" + sagemaker_yaml("cli"))
    return root


def aiaas(
    aws: AwsEmulator, project: Path, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """``aiaas <args>`` in a shell-like environment with only the emulators' AWS settings."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project.parent), "HF_HUB_OFFLINE": "1"}
    env.update(aws.env())
    # `function package` runs pip download: the machine's package index settings go along.
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    pip_conf = Path.home() / ".config" / "pip" / "pip.conf"
    if pip_conf.is_file():
        env.setdefault("PIP_CONFIG_FILE", str(pip_conf))
    done = subprocess.run(
        [AIAAS, *args, "-c", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=project.parent,
    )
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_deploy_status_invoke_logs_delete_from_the_cli(aws: AwsEmulator, project: Path) -> None:
    deployed = aiaas(aws, project, "deploy", "--provider", "sagemaker")
    assert "probe" in deployed.stdout
    status = aiaas(aws, project, "status", "probe", "--provider", "sagemaker")
    assert "ready" in status.stdout and "sagemaker" in status.stdout
    answer = aiaas(
        aws,
        project,
        "invoke",
        "probe",
        "--provider",
        "sagemaker",
        "-d",
        '{"inputs": [{"value": 21}]}',
    )
    body = json.loads(answer.stdout)
    assert body["outputs"][0]["value"] == 42.0 and body["model"] == "probe"
    assert [c.endpoint for c in aws.runtime_calls if c.status == 200][-1] == "probe"
    logs = aiaas(aws, project, "logs", "probe", "--provider", "sagemaker")
    assert logs.stdout.strip()  # the container's own output, read from CloudWatch Logs
    dry = aiaas(aws, project, "deploy", "--dry-run", "--provider", "sagemaker")
    assert "keep" in dry.stdout
    deleted = aiaas(aws, project, "delete", "probe", "--provider", "sagemaker")
    assert "probe" in deleted.stdout
    gone = aiaas(aws, project, "status", "probe", "--provider", "sagemaker", ok=False)
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
    assert "probe" in gone.stdout + gone.stderr


def test_a_lambda_function_url_event_gets_the_real_prediction(
    aws: AwsEmulator, project: Path, tmp_path: Path
) -> None:
    aiaas(aws, project, "deploy", "--provider", "sagemaker")
    try:
        built = sorted((project / "dist").glob("*.tar.gz"))
        assert built, "deploy builds the bundle into dist/"
        manifest = tmp_path / MANIFEST_FILE
        from aiaas.bundle import inspect_archive

        manifest.write_text(inspect_archive(built[0]).model_dump_json())
        key, record = create_key()
        event = copy.deepcopy(json.loads((FIXTURES / "function_url_v2.json").read_text()))
        body = b'{"inputs": [{"value": 2.5}]}'
        event["headers"]["authorization"] = f"Bearer {key}"
        event["headers"]["content-length"] = str(len(body))
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
        context = SimpleNamespace(
            aws_request_id="req-sm",
            function_name="aiaas",
            get_remaining_time_in_millis=lambda: 30000,
        )
        with pytest.MonkeyPatch.context() as mp:
            # What the packaged function's environment carries, plus what Lambda sets: the
            # role's credentials and region (here: the emulators').
            for name, value in aws.env().items():
                mp.setenv(name, value)
            mp.setenv("AIAAS_CONFIG", str(project / "aiaas.yaml"))
            mp.setenv("AIAAS_PROVIDER", "sagemaker")
            mp.setenv("AIAAS_MANIFEST", str(manifest))
            mp.setenv("AIAAS_API_KEYS", str(record))
            sys.modules.pop("functions.aws_lambda", None)
            try:
                handler = importlib.import_module("functions.aws_lambda").handler
                response = handler(event, context)
            finally:
                sys.modules.pop("functions.aws_lambda", None)
        assert response["statusCode"] == 200, response
        answer = json.loads(response["body"])
        assert answer["outputs"][0]["value"] == 5.0 and answer["model"] == "probe"
        signed = [c for c in aws.runtime_calls if c.endpoint == "probe" and c.status == 200]
        assert signed  # through the runtime emulator, whose SigV4 check it passed
    finally:
        aiaas(aws, project, "delete", "probe", "--provider", "sagemaker")


def test_the_packaged_aws_zip_answers_through_sagemaker_on_its_own(
    aws: AwsEmulator, project: Path, tmp_path: Path
) -> None:
    """``aiaas function package --target aws --provider sagemaker``, unzipped and run by a
    fresh ``python -S`` (only the zip's files importable, as in Lambda) with what Lambda sets:
    the role's credentials and region. It answers a function URL event with the prediction
    and loads no boto3."""
    aiaas(aws, project, "deploy", "--provider", "sagemaker")
    try:
        out, cache = tmp_path / "fn.zip", shared_wheel_cache()
        package = ["function", "package", "--target", "aws", "--provider", "sagemaker"]
        packaged = aiaas(aws, project, *package, "-o", str(out), "--wheel-cache", str(cache))
        # It names what the invoke path needs set (the provider spec's invoke_environment).
        assert "AWS_REGION" in packaged.stdout and "sagemaker:InvokeEndpoint" in packaged.stdout
        with zipfile.ZipFile(out) as zf:
            names = zf.namelist()
            zf.extractall(tmp_path / "task")
            entry_points = [n for n in names if n.endswith("entry_points.txt")]
            providers = "".join(zf.read(n).decode() for n in entry_points)
        assert "adapters/sagemaker/invoke.py" in names
        assert any(n.startswith("httpx_auth/") for n in names)
        assert not [n for n in names if n.startswith(("boto3/", "botocore/", "moto/", "torch/"))]
        assert "sagemaker" in providers and "local" not in providers
        assert out.stat().st_size < 10 * 1024 * 1024
        key, record = create_key()
        event = copy.deepcopy(json.loads((FIXTURES / "function_url_v2.json").read_text()))
        event["headers"]["authorization"] = f"Bearer {key}"
        event["body"], event["isBase64Encoded"] = '{"inputs": [{"value": 7}]}', False
        code = (
            "import json, sys\n"
            "from functions.aws_lambda import handler\n"
            "response = handler(json.loads(sys.argv[1]), None)\n"
            "sdk = [m for m in ('boto3', 'botocore') if m in sys.modules]\n"
            "print(json.dumps([response, sdk]))\n"
        )
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AIAAS_API_KEYS": str(record),
               **aws.env()}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-S", "-c", code, json.dumps(event)],
            capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path / "task",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        response, loaded = json.loads(done.stdout.strip().splitlines()[-1])
        assert response["statusCode"] == 200, response
        assert json.loads(response["body"])["outputs"][0]["value"] == 14.0
        assert loaded == []
    finally:
        aiaas(aws, project, "delete", "probe", "--provider", "sagemaker")
