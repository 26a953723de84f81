"""The Alibaba Function Compute 3.0 package with ``provider: pai``, run as FC runs a custom
runtime, answering a real prediction from a service on the emulated PAI-EAS.

The package is what ``aiaas function package --target alibaba`` builds for the probe's project
with ``provider: pai``, unpacked with its files' modes (``bootstrap`` is executable) and started
the way FC starts it: its ``bootstrap`` as a fresh process, ``FC_SERVER_HOST``/``FC_SERVER_PORT``
moving uvicorn to 127.0.0.1 (FC itself binds 0.0.0.0:9000), ``AIAAS_PAI_ENDPOINT`` and
``AIAAS_PAI_TOKEN`` the service's (DescribeService's), the function role's credentials in the
``ALIBABA_CLOUD_*`` variables as FC sets them. ``python3`` there is a bare virtual environment
of this Python: like FC's runtime it has none of the package's dependencies, so only the
package's own files import (and this machine's site-packages stay out).

What the FC process loaded is its ``sys.modules`` when it ends (after the first call, so
lazy imports count): a module that a ``.pth`` file in that bare runtime's site-packages
imports at start (:data:`RECORD_MODULES`) writes it to the file ``MODULES_FILE`` names at exit
or SIGTERM. (``-X importtime`` would not do: it does not log a module that
``importlib.import_module`` loads, which is how the invoke path is loaded.) One emulator for
the module (one deploy), one FC process per scenario.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from alibaba_emulated import alibaba  # noqa: F401 - the module's emulator fixture
from conformance.harnesses.pai import pai_yaml
from conftest import PROJECTS, free_port, guard_environment
from wheel_cache import shared_wheel_cache

from adapters.pai import names
from adapters.pai.provider import PaiProvider
from aiaas.bundle import BuiltBundle
from aiaas.config import load_config
from emulators.alibaba import AlibabaEmulator
from functions.auth import create_key
from functions.packaging import (
    imported_modules,
    invoke_path_modules,
    package_function,
    packaging_of,
    unpack,
)

pytestmark = pytest.mark.package_index  # pip download of the wheels (cached after the first run)

MODEL_YAML = "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
# Never in a function's cold start or first call: the Alibaba Cloud SDKs (tea-openapi, the
# credentials client, eas-prediction), pydantic (the packaged config was validated when
# packaged), the model stack, YAML.
HEAVY = ("alibabacloud", "Tea", "darabonba", "eas_prediction", "pydantic", "torch", "yaml")
MODULES_FILE = "AIAAS_TEST_MODULES_FILE"
# Put in the bare runtime's site-packages with a .pth that imports it (site runs it at start).
# uvicorn, once shut down by SIGTERM, raises the signal again with the handler it found at
# start: this one, which writes the list and then dies of the signal as before.
RECORD_MODULES = f"""
import atexit, json, os, signal, sys

def _write(out=os.environ.get({MODULES_FILE!r})):
    if out:
        with open(out, "w") as file:
            json.dump(sorted(sys.modules), file)

def _terminated(signum, frame):
    _write()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)

atexit.register(_write)
signal.signal(signal.SIGTERM, _terminated)
"""


@dataclass(frozen=True)
class Function:
    """The unpacked FC package, what it was built from, and the env FC would give it."""

    task: Path
    names: list[str]
    version: str
    service: str
    env: dict[str, str]
    api_key: str


@pytest.fixture(scope="module")
def function(
    alibaba: AlibabaEmulator,  # noqa: F811
    probe_bundle: BuiltBundle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Function]:
    """The probe deployed on the emulated EAS by the pai provider, and the FC package of its
    project (``provider: pai``) unpacked beside a bare ``python3``."""
    work = tmp_path_factory.mktemp("pai-function")
    project = work / "probe"
    project.mkdir()
    (project / "probe_model.py").write_text((PROJECTS / "probe" / "probe_model.py").read_text())
    (project / "aiaas.yaml").write_text(MODEL_YAML + "provider: pai\n" + pai_yaml(alibaba, "fn"))
    config = load_config(project, env={})
    provider = PaiProvider.from_config(config)
    try:
        provider.deploy(probe_bundle.path, name="probe")
        service = names.service_name("probe", provider.settings)
        live = provider._live(service)  # DescribeService: the endpoint and token FC is given
        assert live.endpoint and live.token
        package = package_function(
            config, probe_bundle.manifest, "alibaba", work / "fc.zip",
            wheel_cache=shared_wheel_cache(),
        )  # fmt: skip
        with zipfile.ZipFile(package.path) as zf:
            shipped = zf.namelist()
        task = unpack(package.path, work / "code")
        runtime = work / "runtime"  # FC's python3: nothing of the package's installed
        python = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([python, "-m", "venv", "--without-pip", str(runtime)], check=True)
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        site = runtime / "lib" / version / "site-packages"
        (site / "aiaas_test_modules.py").write_text(RECORD_MODULES)
        (site / "aiaas_test_modules.pth").write_text("import aiaas_test_modules\n")
        key, record = create_key()
        env = {
            "PATH": f"{runtime / 'bin'}:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work),
            "AIAAS_API_KEYS": str(record), "AIAAS_PAI_ENDPOINT": live.endpoint,
            "AIAAS_PAI_TOKEN": live.token, **alibaba.env(), **guard_environment(),
        }  # fmt: skip
        yield Function(task, shipped, probe_bundle.manifest.version, service, env, key)
    finally:
        provider.close()  # the service goes with the module's emulator


@dataclass
class Running:
    """An FC process: its URL, and once it stopped, its stderr and the modules it had."""

    url: str
    stderr: str = ""
    modules: list[str] = field(default_factory=list)


@contextlib.contextmanager
def fc_process(function: Function, **env: str) -> Iterator[Running]:
    """The package's ``bootstrap`` as FC starts it, on a free port of 127.0.0.1, until it
    listens (``env``: variables replaced); stopped with SIGTERM."""
    port = free_port()
    log = function.task.parent / f"fc-{port}.stderr"
    modules = log.with_suffix(".modules")
    variables = {**function.env, **env, "FC_SERVER_HOST": "127.0.0.1",
                 "FC_SERVER_PORT": str(port), MODULES_FILE: str(modules)}  # fmt: skip
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(function.task / "bootstrap")], env=variables, cwd=function.task.parent,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    running = Running(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                httpx.get(running.url + "/v2/health/live", timeout=1.0)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the FC custom runtime did not start"
                time.sleep(0.02)
        yield running
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        running.stderr = log.read_text()
        if modules.exists():
            running.modules = json.loads(modules.read_text())


def _predict(running: Running, function: Function, value: float) -> httpx.Response:
    return httpx.post(
        running.url + "/predict", json={"inputs": [{"value": value}]}, timeout=30,
        headers={"authorization": f"Bearer {function.api_key}", "x-request-id": "fc-pai-1"},
    )  # fmt: skip


def test_the_fc_package_answers_a_real_prediction_from_eas_and_loads_no_sdk(
    function: Function,
    alibaba: AlibabaEmulator,  # noqa: F811
) -> None:
    """The package ships the pai invoke path alone (no control plane, no Alibaba Cloud SDK);
    its bootstrap answers a prediction through the emulated EAS gateway with the service's
    token, and the process never imported an SDK, pydantic nor torch."""
    ours = {
        n[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for n in function.names
        if n.split("/")[0] in {"aiaas", "adapters", "functions"} and n.endswith(".py")
    }
    assert ours == {*imported_modules(["functions.alibaba_fc"]), *invoke_path_modules("pai")}
    assert "adapters.pai.invoke" in ours
    assert not ours & {f"adapters.pai.{m}" for m in ("provider", "steps", "errors")}
    site = packaging_of("alibaba").site_packages
    assert not [n for n in function.names if n.removeprefix(site + "/").startswith(HEAVY[:4])]
    before = len(alibaba.predict_calls())
    with fc_process(function) as running:
        response = _predict(running, function, 5)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["value"] == 10.0
        assert response.json()["version"] == function.version
        assert response.headers["x-request-id"] == "fc-pai-1"
    calls = alibaba.predict_calls()[before:]
    assert [(c.service, c.status) for c in calls] == [(function.service, 200)]
    loaded = set(running.modules)
    assert {"functions.bootstrap", "adapters.pai.invoke", "uvicorn"} <= loaded, running.stderr
    assert [m for m in running.modules if m.split(".")[0].startswith(HEAVY)] == []
    assert "Traceback" not in running.stderr


def test_a_wrong_token_is_the_function_tiers_access_denied_not_a_500(
    function: Function,
    alibaba: AlibabaEmulator,  # noqa: F811
) -> None:
    """EAS refuses the call (401); the function answers its mapped error: 502
    ``access_denied`` naming AIAAS_PAI_TOKEN, with no traceback in its log."""
    before = len(alibaba.predict_calls())
    with fc_process(function, AIAAS_PAI_TOKEN="not-the-service-token") as running:
        response = _predict(running, function, 5)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "access_denied" and "AIAAS_PAI_TOKEN" in error["message"]
    assert "not-the-service-token" not in response.text
    assert [c.status for c in alibaba.predict_calls()[before:]] == [401]
    assert "Traceback" not in running.stderr


def test_without_endpoint_and_token_the_function_looks_them_up_with_its_role(
    function: Function,
    alibaba: AlibabaEmulator,  # noqa: F811
) -> None:
    """With neither variable set, the function's first call reads the endpoint and token with
    one DescribeService signed by the role's credentials (ACS3 over httpx, verified by the
    emulator) and answers; still no SDK nor pydantic loaded."""
    described = len([c for c in alibaba.calls() if c.action == "DescribeService"])
    with fc_process(function, AIAAS_PAI_ENDPOINT="", AIAAS_PAI_TOKEN="") as running:
        first, second = _predict(running, function, 2), _predict(running, function, 3)
    assert (first.status_code, second.status_code) == (200, 200), first.text
    assert second.json()["outputs"][0]["value"] == 6.0
    lookups = [c for c in alibaba.calls() if c.action == "DescribeService"][described:]
    assert [(c.status, c.path.rsplit("/", 1)[-1]) for c in lookups] == [(200, function.service)]
    assert [m for m in running.modules if m.split(".")[0].startswith(HEAVY)] == []
    assert "Traceback" not in running.stderr
