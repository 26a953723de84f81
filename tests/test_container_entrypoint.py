"""The container entrypoint (``python -m aiaas.runtime.container``) under each cloud's contract.

The locating and port rules are checked as functions; then the entrypoint runs as a real
process against a real bundle laid out in a tmp dir as each cloud lays it out, bound to
127.0.0.1 (``AIAAS_HOST``; the image binds 0.0.0.0), and that cloud's health and scoring
routes must answer a real prediction; SIGTERM must stop it cleanly. The image itself is
checked by ``make image-check`` (scripts/image_check.py), which is not part of ``make test``.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import free_port

from aiaas.bundle import BuiltBundle
from aiaas.config import ServerSection, server_environment
from aiaas.manifest import MANIFEST_FILE
from aiaas.runtime.container import (
    DEFAULT_PORT,
    ContainerError,
    check_args,
    choose_port,
    locate_bundle,
    main,
    server_settings,
)


def unpack(archive: Path, into: Path) -> Path:
    """Extract a bundle archive into ``into`` (what SageMaker does with model.tar.gz)."""
    into.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")
    assert (into / MANIFEST_FILE).is_file()
    return into


def copy_as(archive: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(archive, target)
    return target


# -- where the bundle is found ---------------------------------------------------------------


class TestLocate:
    def test_sagemaker_extracts_model_tar_gz_into_opt_ml_model(
        self, probe_bundle: BuiltBundle, tmp_path: Path
    ) -> None:
        model = unpack(probe_bundle.path, tmp_path / "opt" / "ml" / "model")
        found = locate_bundle({"SAGEMAKER_BASE_DIR": str(tmp_path / "opt" / "ml")})
        assert (found.bundle, found.source) == (model, "SAGEMAKER_BASE_DIR")

    def test_sagemaker_default_place_is_opt_ml_model(self) -> None:
        with pytest.raises(ContainerError, match=r"/opt/ml/model"):
            locate_bundle({})  # nothing there on a test machine

    def test_an_archive_inside_the_folder_is_accepted(
        self, probe_bundle: BuiltBundle, tmp_path: Path
    ) -> None:
        archive = copy_as(probe_bundle.path, tmp_path / "data" / "model.tar.gz")
        found = locate_bundle({"AIAAS_MODEL_DIR": str(tmp_path / "data")})
        assert (found.bundle, found.source) == (archive, "AIAAS_MODEL_DIR")

    def test_azureml_model_dir_naming_the_file(
        self, probe_bundle: BuiltBundle, tmp_path: Path
    ) -> None:
        archive = copy_as(probe_bundle.path, tmp_path / "azureml-models" / "probe" / "1" / "p.tgz")
        assert locate_bundle({"AZUREML_MODEL_DIR": str(archive)}).bundle == archive

    def test_azureml_model_folder_one_level_deeper(
        self, probe_bundle: BuiltBundle, tmp_path: Path
    ) -> None:
        version_dir = tmp_path / "azureml-models" / "probe" / "1"
        model = unpack(probe_bundle.path, version_dir / "probe")
        found = locate_bundle({"AZUREML_MODEL_DIR": str(version_dir)})
        assert (found.bundle, found.source) == (model, "AZUREML_MODEL_DIR")

    def test_azureml_registered_archive_under_its_own_name(
        self, probe_bundle: BuiltBundle, tmp_path: Path
    ) -> None:
        version_dir = tmp_path / "azureml-models" / "probe" / "3"
        archive = copy_as(probe_bundle.path, version_dir / "probe-v3.tar.gz")
        assert locate_bundle({"AZUREML_MODEL_DIR": str(version_dir)}).bundle == archive

    def test_our_variable_decides_over_the_clouds(
        self, probe_bundle: BuiltBundle, tmp_path: Path
    ) -> None:
        unpack(probe_bundle.path, tmp_path / "azure")
        mine = copy_as(probe_bundle.path, tmp_path / "mine" / "model.tar.gz")
        env = {"AIAAS_MODEL_DIR": str(mine.parent), "AZUREML_MODEL_DIR": str(tmp_path / "azure")}
        assert locate_bundle(env).bundle == mine

    def test_a_set_variable_does_not_fall_through(
        self, probe_bundle: BuiltBundle, tmp_path: Path
    ) -> None:
        unpack(probe_bundle.path, tmp_path / "opt" / "ml" / "model")
        env = {
            "AIAAS_MODEL_DIR": str(tmp_path / "mnt" / "model"),
            "SAGEMAKER_BASE_DIR": str(tmp_path / "opt" / "ml"),
        }
        with pytest.raises(ContainerError) as caught:
            locate_bundle(env)
        message = str(caught.value)
        assert f"AIAAS_MODEL_DIR ({tmp_path / 'mnt' / 'model'} does not exist)" in message

    def test_an_empty_folder_names_what_was_missing(self, tmp_path: Path) -> None:
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        with pytest.raises(ContainerError, match=r"no aiaas-manifest.json and no \*\.tar\.gz in"):
            locate_bundle({"AZUREML_MODEL_DIR": str(tmp_path / "empty")})

    def test_two_archives_are_ambiguous(self, probe_bundle: BuiltBundle, tmp_path: Path) -> None:
        copy_as(probe_bundle.path, tmp_path / "m" / "a.tar.gz")
        copy_as(probe_bundle.path, tmp_path / "m" / "b.tar.gz")
        with pytest.raises(ContainerError, match=r"a\.tar\.gz, b\.tar\.gz"):
            locate_bundle({"AIAAS_MODEL_DIR": str(tmp_path / "m")})


class TestPortAndArgs:
    def test_default_is_sagemakers_8080(self) -> None:
        assert choose_port({}) == DEFAULT_PORT == 8080

    def test_sagemaker_bind_to_port(self) -> None:
        assert choose_port({"SAGEMAKER_BIND_TO_PORT": "9123"}) == 9123

    def test_our_port_variable_wins(self) -> None:
        assert choose_port({"AIAAS_PORT": "5001", "SAGEMAKER_BIND_TO_PORT": "9123"}) == 5001

    @pytest.mark.parametrize("raw", ["http", "0", "70000", "-1"])
    def test_a_bad_port_is_named(self, raw: str) -> None:
        with pytest.raises(ContainerError, match=rf"AIAAS_PORT='{raw}' is not a TCP port"):
            choose_port({"AIAAS_PORT": raw})

    def test_serve_or_nothing(self) -> None:
        check_args([])
        check_args(["serve"])
        with pytest.raises(ContainerError, match="unexpected arguments 'train'"):
            check_args(["train"])
        # the local provider names the bundle folder after serve (ps shows which version runs)
        assert check_args(["serve", "/srv/bundles/v1"]) == Path("/srv/bundles/v1")
        for refused in (["serve", "a", "b"], ["serve", "--port"], ["train", "/x"]):
            with pytest.raises(ContainerError, match="unexpected arguments"):
                check_args(refused)

    def test_a_bundle_named_after_serve_decides_over_every_variable(
        self, probe_bundle: BuiltBundle, tmp_path: Path
    ) -> None:
        named = unpack(probe_bundle.path, tmp_path / "named")
        env = {"AIAAS_MODEL_DIR": str(unpack(probe_bundle.path, tmp_path / "ours"))}
        found = locate_bundle(env, named)
        assert (found.bundle, found.source) == (named, "the command line")
        missing = f"looked at the command line ({tmp_path / 'nowhere'} does not exist)"
        with pytest.raises(ContainerError, match=re.escape(missing)):
            locate_bundle(env, tmp_path / "nowhere")


# -- the entrypoint as a real process, one cloud at a time -------------------------------------


@dataclass
class Cloud:
    """How one cloud lays out the bundle, what it sets, and which routes it probes."""

    name: str
    args: list[str]
    layout: Callable[[Path, Path], dict[str, str]]  # (archive, root) -> environment
    health: list[str]
    scoring: str


def sagemaker_layout(archive: Path, root: Path) -> dict[str, str]:
    unpack(archive, root / "opt" / "ml" / "model")
    return {"SAGEMAKER_BASE_DIR": str(root / "opt" / "ml"), "SAGEMAKER_BIND_TO_PORT": "{port}"}


def azureml_layout(archive: Path, root: Path) -> dict[str, str]:
    version_dir = root / "var" / "azureml-app" / "azureml-models" / "probe" / "1"
    copy_as(archive, version_dir / "probe" / "model.tar.gz")  # a registered folder
    return {"AZUREML_MODEL_DIR": str(version_dir), "AIAAS_PORT": "{port}"}


def pai_layout(archive: Path, root: Path) -> dict[str, str]:
    copy_as(archive, root / "mnt" / "model" / "model.tar.gz")  # OSS path at mount_path
    return {"AIAAS_MODEL_DIR": str(root / "mnt" / "model"), "AIAAS_PORT": "{port}"}


CLOUDS = [
    Cloud("sagemaker", ["serve"], sagemaker_layout, ["/ping"], "/invocations"),
    Cloud("azureml", [], azureml_layout, ["/", "/ready"], "/score"),
    Cloud("pai", [], pai_layout, ["/ready"], "/api/predict/probe-svc"),
]


@pytest.fixture
def run_entrypoint(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start the entrypoint with exactly the given environment (plus what Python needs)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home")}
        base["AIAAS_HOST"] = "127.0.0.1"  # were a server to start, never on every interface
        base["HF_HUB_OFFLINE"] = "1"
        log = (tmp_path / f"entrypoint-{len(started)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiaas.runtime.container", *args],
            env={**base, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_until_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the entrypoint exited before it was ready"
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout}s")


@pytest.mark.parametrize("cloud", CLOUDS, ids=lambda c: c.name)
def test_each_cloud_layout_serves_and_drains(
    cloud: Cloud,
    probe_bundle: BuiltBundle,
    tmp_path: Path,
    run_entrypoint: Callable[..., subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    env = {k: v.format(port=port) for k, v in cloud.layout(probe_bundle.path, tmp_path).items()}
    proc = run_entrypoint(cloud.args, {**env, "AIAAS_HOST": "127.0.0.1"})
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url + cloud.health[-1], proc)
    for path in cloud.health:
        assert httpx.get(url + path).status_code == 200, path
    r = httpx.post(url + cloud.scoring, json={"inputs": [{"value": 1.25}]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["value"] == 2.5
    assert r.json()["version"] == probe_bundle.manifest.version
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    log = (tmp_path / "entrypoint-0.log").read_text()
    assert "Traceback" not in log
    assert f"on 127.0.0.1:{port}" in log


def test_missing_bundle_exits_non_zero_naming_the_place(
    tmp_path: Path, run_entrypoint: Callable[..., subprocess.Popen[bytes]]
) -> None:
    proc = run_entrypoint(["serve"], {"SAGEMAKER_BASE_DIR": str(tmp_path / "opt" / "ml")})
    assert proc.wait(timeout=60) == 2
    log = (tmp_path / "entrypoint-0.log").read_text()
    assert f"looked at SAGEMAKER_BASE_DIR ({tmp_path / 'opt' / 'ml' / 'model'} does not" in log
    assert "AIAAS_MODEL_DIR" in log and "AZUREML_MODEL_DIR" in log
    assert "Traceback" not in log


def test_a_gpu_expected_but_not_seen_exits_non_zero_and_never_serves(
    probe_bundle: BuiltBundle,
    tmp_path: Path,
    run_entrypoint: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """``AIAAS_DEVICE=cuda`` (a provider paying for a GPU) where torch sees none (this
    machine's CPU wheel): the model does not load on the CPU instead; the container exits
    non-zero saying why, so the cloud's health check fails the deploy with that reason."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here: the refusal cannot be shown")
    port = free_port()
    proc = run_entrypoint(
        ["serve", str(probe_bundle.path)], {"AIAAS_PORT": str(port), "AIAAS_DEVICE": "cuda"}
    )
    assert proc.wait(timeout=120) != 0
    log = (tmp_path / "entrypoint-0.log").read_text()
    assert "device 'cuda' was asked for" in log and "sees no CUDA GPU" in log, log
    assert "Traceback" not in log


def test_unexpected_argument_exits_non_zero(
    tmp_path: Path, run_entrypoint: Callable[..., subprocess.Popen[bytes]]
) -> None:
    proc = run_entrypoint(["train"], {})
    assert proc.wait(timeout=60) == 2
    log = (tmp_path / "entrypoint-0.log").read_text()
    assert "unexpected arguments 'train'" in log
    assert "Traceback" not in log


def test_sigterm_drains_an_in_flight_request(
    probe_bundle: BuiltBundle,
    tmp_path: Path,
    run_entrypoint: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """SIGTERM while a request is being computed: it still gets its answer, then exit 0."""
    port = free_port()
    env = {k: v.format(port=port) for k, v in sagemaker_layout(probe_bundle.path, tmp_path).items()}
    proc = run_entrypoint(["serve"], {**env, "AIAAS_HOST": "127.0.0.1"})
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url + "/ping", proc)
    # 9 items, max_batch_size 8: while the first 8 sleep in predict, the 9th waits in the
    # queue, so a queue depth of 1 proves the request is inside the server.
    items = [{"value": float(i), "sleep_ms": 1000} for i in range(9)]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.post, url + "/invocations", json={"inputs": items}, timeout=60)
        deadline = time.monotonic() + 30
        while 'aiaas_queue_depth{model="probe"} 1.0' not in httpx.get(url + "/metrics").text:
            assert time.monotonic() < deadline, "the request never reached the queue"
            assert not answer.done(), answer.result().text
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        r = answer.result()
    assert r.status_code == 200, r.text
    assert [o["value"] for o in r.json()["outputs"]] == [2.0 * i for i in range(9)]
    assert proc.wait(timeout=40) == 0


def test_a_broken_archive_exits_non_zero_in_one_line(
    tmp_path: Path, run_entrypoint: Callable[..., subprocess.Popen[bytes]]
) -> None:
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / "model.tar.gz").write_bytes(b"not a gzip file")
    env = {"AIAAS_MODEL_DIR": str(tmp_path / "mnt"), "AIAAS_PORT": str(free_port())}
    proc = run_entrypoint([], env)
    assert proc.wait(timeout=60) == 2
    log = (tmp_path / "entrypoint-0.log").read_text()
    assert f"aiaas container: {tmp_path / 'mnt' / 'model.tar.gz'}: not a bundle archive" in log
    assert "Traceback" not in log


def test_server_settings_come_from_aiaas_server_variables() -> None:
    # What a provider writes into the container's environment (SageMaker's Environment).
    settings = server_settings(
        {"AIAAS_SERVER__MAX_QUEUE_SIZE": "4", "AIAAS_SERVER__QUEUE_WAIT_MS": "0.0", "PATH": "/x"}
    )
    assert (settings.max_queue_size, settings.queue_wait_ms) == (4, 0.0)
    assert server_settings({}).max_queue_size == ServerSection().max_queue_size


def test_server_environment_is_what_the_entrypoint_reads_back() -> None:
    """Every provider builds its server's environment with server_environment; the entrypoint
    reads the same settings back, whatever their type (int, float, None, a literal string)."""
    written = ServerSection(
        max_queue_size=4, queue_wait_ms=0, output_validation="warn", torch_threads=2
    )
    env = server_environment(written)
    assert env == {
        "AIAAS_SERVER__MAX_QUEUE_SIZE": "4",
        "AIAAS_SERVER__OUTPUT_VALIDATION": "warn",
        "AIAAS_SERVER__QUEUE_WAIT_MS": "0.0",
        "AIAAS_SERVER__TORCH_THREADS": "2",
    }  # only what was written, in key order: a cloud resource named by its spec keeps its name
    assert server_settings(env) == written
    assert server_environment(ServerSection()) == {}
    every = ServerSection.model_validate(ServerSection().model_dump())  # every key written
    assert server_settings(server_environment(every)) == every
    assert "AIAAS_SERVER__TORCH_THREADS" not in server_environment(every)  # None: the default


def test_a_bad_server_variable_is_named_and_the_container_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"AIAAS_SERVER__MAX_QUEUE_SIZE": "many", "AIAAS_SERVER__NO_SUCH": "1"}
    with pytest.raises(ContainerError) as error:
        server_settings(env)
    assert "AIAAS_SERVER__MAX_QUEUE_SIZE" in str(error.value)
    assert "AIAAS_SERVER__NO_SUCH" in str(error.value)
    assert main(["serve"], env) == 2
    assert "AIAAS_SERVER__MAX_QUEUE_SIZE" in capsys.readouterr().err
