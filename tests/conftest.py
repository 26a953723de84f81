"""Shared fixtures: example bundles built once per session, free ports, the repo root."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from emulators.fleet import free_port as free_port  # re-exported: the one definition

if TYPE_CHECKING:
    from aiaas.bundle import BuiltBundle

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent

# The emulated AWS of the SageMaker provider's test modules (aws, fresh, bundles, failing):
# module-scoped, so each module that asks gets its own emulator, and xdist runs them apart.
pytest_plugins = ["sagemaker_emulated"]

# The network guard (tests/guarded_site/netguard.py): no process of the test run reaches past
# loopback. Installed here for this process and, through sitecustomize on PYTHONPATH, for
# every Python process a test starts; those report refusals through a log file.
NETGUARD_DIR = Path(__file__).resolve().parent / "guarded_site"
sys.path.insert(0, str(NETGUARD_DIR))
import netguard  # noqa: E402 - found through the path set just above
import worker_exit  # noqa: E402 - as netguard

netguard.install()
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(NETGUARD_DIR), os.environ.get("PYTHONPATH", "")) if p
)
_NETGUARD_LOG = Path(tempfile.mkdtemp(prefix="aiaas-netguard-")) / "refusals.log"
_NETGUARD_LOG.touch()
os.environ[netguard.LOG_VARIABLE] = str(_NETGUARD_LOG)
_netguard_seen = {"local": 0, "file": 0}  # what earlier tests were already charged with


def guard_environment() -> dict[str, str]:
    """What a test that builds a child's environment from nothing adds to it, so that the
    network guard goes along."""
    return {k: os.environ[k] for k in ("PYTHONPATH", netguard.LOG_VARIABLE)}


AIAAS = str(Path(sys.executable).with_name("aiaas"))
"""The ``aiaas`` command of the test run's environment, as a shell finds it."""


def aiaas_in_shell(
    project: Path, args: Sequence[str], cloud_env: Mapping[str, str], *, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """``aiaas <args> -c <project>`` run as from a shell whose environment holds only
    ``cloud_env`` (an emulated cloud's variables, as ``aiaas emulate`` prints them), a home
    beside the project, the model hub off and the run's network guard. ``ok``: it must exit
    0. Never a traceback on stderr."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project.parent), "HF_HUB_OFFLINE": "1"}
    env.update(guard_environment())
    env.update(cloud_env)
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
    assert "Traceback" not in done.stderr, done.stderr
    return done


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-unit-seconds",
        action="store_true",
        help=f"write each work unit's seconds (setup, call and teardown of its tests) into "
        f"tests/{UNIT_SECONDS.name}, which orders the units longest first",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "package_index: the test (or its module's fixtures) installs from the package "
        "index; the network guard lets its hosts through",
    )


CONFORMANCE_FILE = "conformance/test_conformance.py"


def work_unit(nodeid: str) -> str:
    """The xdist work unit a test belongs to: its file (``--dist loadfile``: a module's
    fixtures and emulators stay on one worker), except the conformance suite, whose run for
    each provider (``test_x[azureml]``) is a unit of its own: each provider's runs share only
    that provider's fixtures, and the suite for every cloud in one worker was the run's
    longest unit."""
    file, _, rest = nodeid.partition("::")
    if file.endswith(CONFORMANCE_FILE) and rest.endswith("]") and "[" in rest:
        return f"{file}[{rest.rsplit('[', 1)[1]}"
    return file


UNIT_SECONDS = Path(__file__).resolve().parent / "unit_seconds.json"
"""Each work unit's seconds in a recorded run (``pytest -n 4 --dist loadfile
--record-unit-seconds``): the scheduler hands out the longest units first."""
SECONDS_PER_UNKNOWN_TEST = 0.5
"""A unit not in :data:`UNIT_SECONDS` (a new file) counts this much per test."""


def longest_first(units: Mapping[str, Sequence[str]], seconds: Mapping[str, float]) -> list[str]:
    """The work units (name: its tests), longest first by their recorded ``seconds``, a unit
    not recorded by its number of tests. With each file on one worker, the run lasts as
    long as its busiest worker: xdist's own order (most tests first) left long units of one
    test for the end, with the other workers idle meanwhile."""

    def estimate(unit: str) -> float:
        return seconds.get(unit, SECONDS_PER_UNKNOWN_TEST * len(units[unit]))

    return sorted(units, key=estimate, reverse=True)  # stable: ties keep xdist's order


def read_unit_seconds() -> dict[str, float]:
    """:data:`UNIT_SECONDS` (empty where it is missing or unreadable: xdist's order then)."""
    import json

    try:
        recorded = json.loads(UNIT_SECONDS.read_text())
        return {str(unit): float(s) for unit, s in recorded.items()}
    except (OSError, ValueError, TypeError, AttributeError):  # missing, not JSON, not {unit: s}
        return {}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with the conformance suite split by provider (:func:`work_unit`),
    the units handed out longest first (:func:`longest_first`)."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling  # type: ignore[import-untyped]

    class ProviderSplitScheduling(LoadFileScheduling):  # type: ignore[misc]
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:  # the first hand-out: the queue is complete and in xdist's order
                self.ordered = True
                order = longest_first(self.workqueue, read_unit_seconds())
                queue = {unit: self.workqueue[unit] for unit in order}
                self.workqueue.clear()
                self.workqueue.update(queue)
            super()._assign_work_unit(node)

    return ProviderSplitScheduling(config, log)


_unit_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Each unit's seconds so far, for ``--record-unit-seconds`` (under xdist the controlling
    process receives every worker's reports)."""
    unit = work_unit(report.nodeid)
    _unit_seconds[unit] = _unit_seconds.get(unit, 0.0) + report.duration


def _record_unit_seconds(config: pytest.Config) -> None:
    """Merge this run's unit seconds into :data:`UNIT_SECONDS` (units this run did not run keep
    theirs)."""
    import json

    if not config.getoption("record_unit_seconds") or hasattr(config, "workerinput"):
        return
    recorded = read_unit_seconds()
    recorded.update({unit: round(s, 1) for unit, s in _unit_seconds.items()})
    UNIT_SECONDS.write_text(json.dumps(dict(sorted(recorded.items())), indent=1) + "\n")


# Modules whose tests (or module fixtures) run `pip download` for a function package: the
# package index is the one place past loopback a test may reach.
PACKAGE_INDEX_MODULES = frozenset({"test_function_package.py", "test_sagemaker_cli.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in PACKAGE_INDEX_MODULES:
            item.add_marker(pytest.mark.package_index)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Tests marked ``package_index`` (setup and teardown included) may reach the index."""
    marked = item.get_closest_marker("package_index") is not None
    if marked:
        os.environ[netguard.ALLOW_VARIABLE] = "index"
    try:
        yield
    finally:
        if marked:
            os.environ.pop(netguard.ALLOW_VARIABLE, None)


@pytest.fixture(autouse=True)
def network_guard() -> Iterator[None]:
    """Fail the test if any of its processes looked past loopback (refusals made while its
    module's fixtures were set up count for the first test that uses them)."""
    yield
    local = netguard.violations[_netguard_seen["local"] :]
    with _NETGUARD_LOG.open("rb") as log:
        log.seek(_netguard_seen["file"])
        children = log.read().decode("utf-8", "replace").splitlines()
        _netguard_seen["file"] = log.tell()
    _netguard_seen["local"] = len(netguard.violations)
    if local or children:
        pytest.fail("\n".join([*local, *children]), pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(_NETGUARD_LOG.parent, ignore_errors=True)
    _record_unit_seconds(session.config)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """An xdist worker whose session is over exits without its interpreter's teardown
    (tests/guarded_site/worker_exit.py)."""
    if hasattr(config, "workerinput"):
        os.environ[worker_exit.VARIABLE] = str(os.getpid())


EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def build_example(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], BuiltBundle]:
    """``build_example("iris")`` builds ``examples/iris`` once per session and returns it."""
    from aiaas.bundle import build_bundle

    out_dir = tmp_path_factory.mktemp("bundles")
    cache: dict[str, BuiltBundle] = {}

    def build(name: str) -> BuiltBundle:
        if name not in cache:
            cache[name] = build_bundle(EXAMPLES / name, out_dir / f"{name}.tar.gz")
        return cache[name]

    return build


PROJECTS = Path(__file__).resolve().parent / "projects"
FUNCTION_URL_EVENT = (
    Path(__file__).resolve().parent / "fixtures" / "lambda" / "function_url_v2.json"
)


def function_url_event(
    body: bytes | str,
    *,
    path: str = "/predict",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One request as a Lambda function URL event (payload 2.0, the recorded event in
    ``tests/fixtures/lambda/function_url_v2.json``): its path, method, body (text) and
    ``headers`` added to the recorded ones."""
    import json

    event: dict[str, Any] = json.loads(FUNCTION_URL_EVENT.read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["headers"].update(headers or {})
    event["body"] = body.decode() if isinstance(body, bytes) else body
    return event


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, all threads) process ``pid`` has used so far, from
    /proc. Tests that guard against a request buying seconds of work bound this, not the
    wall clock: a busy machine (four test workers on two cores) stretches wall time by
    whatever else runs, but not the work the process itself does."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """``aiaas serve`` as a real subprocess on 127.0.0.1; its output goes to a log file."""

    PORT_TRIES = 3

    def __init__(self, bundle: Path, log_path: Path, args: list[str], env: dict[str, str]) -> None:
        self.log_path = log_path
        self._bundle, self._args, self._env = bundle, args, env
        self._tries = 0
        self._spawn()

    def _spawn(self) -> None:
        import subprocess

        self._tries += 1
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "aiaas", "serve", str(self._bundle), "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), *self._args]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self._env}
            )

    def _lost_its_port(self) -> bool:
        """The free port was taken by another process (a parallel test worker) before the
        server bound it: ``free_port`` can only say what was free when it looked."""
        return "[Errno 98]" in self.log() and self._tries < self.PORT_TRIES

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        """Block until ``GET /ping`` answers 200 (on a new port if the first was taken)."""
        import time

        from emulators.fleet import ping

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self._lost_its_port():
                    self._spawn()
                    continue
                raise RuntimeError(f"server exited early:\n{self.log()}")
            # http.client, not httpx.get: each httpx.get builds a TLS context (~18 ms of CPU),
            # which a 50 ms poll loop paid for as long as the server took to start.
            if ping(self.port, "/ping", timeout=1.0):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def cpu_seconds(self) -> float:
        """The CPU time the server process has used so far (see :func:`cpu_seconds`)."""
        return cpu_seconds(self.proc.pid)

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 40 s."""
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(bundle, "--max-queue-size", "2", env={...})``; stopped after the test."""
    started: list[ServerProcess] = []

    def start(
        bundle: Path, *args: str, env: dict[str, str] | None = None, ready: bool = True
    ) -> ServerProcess:
        server = ServerProcess(
            bundle, tmp_path / f"server-{len(started)}.log", list(args), env or {}
        )
        started.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def probe_bundle(tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    """The probe test model (tests/projects/probe) built once per session."""
    from aiaas.bundle import build_bundle

    return build_bundle(PROJECTS / "probe", tmp_path_factory.mktemp("probe") / "probe.tar.gz")


PROBE_BREAKS = {
    "numpy": 13, "nan": 14, "short": 15, "big_int": 17, "int_key": 18, "str_float": 19,
    "bool_int": 20, "wrong_key": 21,
}  # fmt: skip
"""The value on which :func:`broken_probe` misbehaves in each way (see ``PROBE_BREAK`` in
``tests/projects/probe/probe_model.py``)."""


def _probe_break(breaks: dict[str, int]) -> str:
    return ",".join(f"{kind}:{value}" for kind, value in breaks.items())


@pytest.fixture(scope="session")
def broken_probe(
    probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One probe server, strict output validation, misbehaving on every value of
    :data:`PROBE_BREAKS` at once (its tests count log lines and metrics as deltas)."""
    log = tmp_path_factory.mktemp("broken-probe") / "server.log"
    env = {"PROBE_BREAK": _probe_break(PROBE_BREAKS)}
    server = ServerProcess(probe_bundle.path, log, [], env)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def broken_probe_warn(
    probe_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A probe server with ``--output-validation warn`` whose results for value 1 (its own
    warm-up example's) break the schema, and for ``PROBE_BREAKS["big_int"]`` cannot be
    encoded."""
    log = tmp_path_factory.mktemp("broken-probe-warn") / "server.log"
    env = {"PROBE_BREAK": _probe_break({"wrong_key": 1, "big_int": PROBE_BREAKS["big_int"]})}
    server = ServerProcess(probe_bundle.path, log, ["--output-validation", "warn"], env)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def build_probe_variant(workdir: Path, old: str, new: str) -> BuiltBundle:
    """Build a copy of the probe project with ``old`` replaced by ``new`` in its model code."""
    import shutil

    from aiaas.bundle import build_bundle

    project = workdir / f"probe-variant-{abs(hash((old, new)))}"
    shutil.copytree(PROJECTS / "probe", project)
    model = project / "probe_model.py"
    source = model.read_text()
    assert old in source, f"{old!r} is not in the probe model"
    model.write_text(source.replace(old, new))
    return build_bundle(project, workdir / f"{project.name}.tar.gz")


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread on a free 127.0.0.1 port; yield its URL."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclasses.dataclass
class FunctionSetup:
    """A probe deployment (one-item queue, batch 1) and the env a function entrypoint needs."""

    env: dict[str, str]
    api_key: str
    provider: Any


@pytest.fixture(scope="module")
def probe_function(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunctionSetup]:
    """Deploy the probe locally and write what a packaged function would carry."""
    import shutil

    from adapters.local.provider import LocalProvider
    from aiaas.bundle import build_bundle
    from aiaas.config import load_config
    from aiaas.manifest import MANIFEST_FILE
    from functions.auth import create_key

    work = tmp_path_factory.mktemp("function")
    project = work / "probe"
    shutil.copytree(PROJECTS / "probe", project)
    (project / "aiaas.yaml").write_text(
        "model:\n  entrypoint: probe_model:Probe\n  max_batch_size: 1\n  max_delay_ms: 0\n"
        "server:\n  max_queue_size: 1\n"
    )
    built = build_bundle(project, work / "probe.tar.gz")
    (work / MANIFEST_FILE).write_text(built.manifest.model_dump_json())
    provider = LocalProvider.from_config(load_config(project, env={}))
    provider.deploy(built.path)
    key, record = create_key()
    env = {"AIAAS_CONFIG": str(project / "aiaas.yaml"), "AIAAS_MANIFEST": str(work / MANIFEST_FILE),
           "AIAAS_API_KEYS": str(record)}  # fmt: skip
    try:
        yield FunctionSetup(env, key, provider)
    finally:
        provider.delete("probe")


def saturate(provider: Any, seconds: float = 3.0) -> Any:
    """Fill the probe's one running slot and one queue slot; return the two calls' futures.

    Returns once the server reports one item queued (so a third call is refused), rather
    than after a fixed sleep that a busy machine can outrun.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    slow = f'{{"inputs": [{{"value": 1, "sleep_ms": {int(seconds * 1000)}}}]}}'.encode()
    pool = ThreadPoolExecutor(2)
    first = pool.submit(provider.invoker.invoke_sync, "probe", slow)
    time.sleep(0.2)  # the first is taken off the queue and runs; the second then waits
    second = pool.submit(provider.invoker.invoke_sync, "probe", slow)
    pool.shutdown(wait=False)
    metrics = provider.describe("probe").endpoint + "/metrics"
    deadline = time.monotonic() + seconds / 2
    while 'aiaas_queue_depth{model="probe"} 1.0' not in httpx.get(metrics).text:
        assert time.monotonic() < deadline, "the probe server never had an item queued"
        time.sleep(0.02)
    return [first, second]


def tampered_archive(src: Path, out: Path, edits: dict[str, bytes | None]) -> Path:
    """Copy the bundle archive ``src`` member by member, replacing (or, with None, dropping) some
    members' contents and appending the ones that were not there; the manifest is kept."""
    import io
    import tarfile

    with tarfile.open(src, "r:gz") as tar, tarfile.open(out, "w:gz") as new:
        for member in tar:
            data = tar.extractfile(member)
            content = data.read() if data else b""
            if member.name in edits:
                replaced = edits.pop(member.name)
                if replaced is None:
                    continue
                content = replaced
            member.size = len(content)
            new.addfile(member, io.BytesIO(content))
        for name, added in edits.items():
            assert added is not None
            info = tarfile.TarInfo(name)
            info.size = len(added)
            new.addfile(info, io.BytesIO(added))
    return out
