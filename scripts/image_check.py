"""make image-check: run the built image's own entrypoint under each cloud's contract.

``podman run`` does not work on this machine (see shared notes), so the image's filesystem
is used directly: ``podman image mount`` gives its files read-only, a throwaway overlay on
top (in a temporary folder) makes them writable without touching the image, and the
image's ``ENTRYPOINT`` runs there under ``env -i`` + ``chroot`` as the image's ``USER``, with
the image's ``ENV`` plus one cloud's environment and file layout at a time:

* sagemaker: ``<image> serve``, the bundle extracted into ``/opt/ml/model``,
  ``SAGEMAKER_BIND_TO_PORT``; probes ``GET /ping``, ``POST /invocations``;
* azureml: the registered archive under ``AZUREML_MODEL_DIR``
  (``/var/azureml-app/azureml-models/<name>/<version>``), ``AIAAS_PORT``; probes
  liveness ``GET /``, readiness ``GET /ready``, ``POST /score``;
* pai: the OSS path mounted at ``/mnt/model`` (``AIAAS_MODEL_DIR``), ``AIAAS_PORT``; probes
  ``GET /ready`` and ``POST /api/predict/<service>``.

Each binds 127.0.0.1 (``AIAAS_HOST``) on a free port, must answer a real prediction of the
probe test model, and must exit 0 on SIGTERM. Prints one PASS/FAIL line per cloud with
timings; exits 1 if any failed. This checks the image's contents and entrypoint, not the
container runtime. Run as root (mounts); ``IMAGE`` selects the image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
PROBE_PROJECT = REPO / "tests" / "projects" / "probe"
DEFAULT_IMAGE = "localhost/aiaas-server:latest"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 40.0
# Device nodes a Python server may open; made in the overlay (never bound from the host).
DEVICES = {"null": (1, 3), "zero": (1, 5), "random": (1, 8), "urandom": (1, 9)}


@dataclass
class Cloud:
    """One cloud's file layout, environment, start argument and routes."""

    name: str
    args: list[str]
    layout: Callable[[Path, Path, int], dict[str, str]]  # (root, archive, port) -> env
    health: list[str]
    scoring: str


def sagemaker(root: Path, archive: Path, port: int) -> dict[str, str]:
    """As SageMaker lays it out for a container that does not run as root: the archive
    extracted by root under umask 022 into ``/opt/ml/model``, then made read-only (the
    image's USER can read it, nobody can write it); no ``SAGEMAKER_BASE_DIR`` (the
    entrypoint's default ``/opt/ml`` must find it)."""
    model = root / "opt" / "ml" / "model"
    model.mkdir(parents=True)
    previous = os.umask(0o022)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(model, filter="data")
    finally:
        os.umask(previous)
    for path in [model, *model.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)  # read-only for everyone
    return {"SAGEMAKER_BIND_TO_PORT": str(port)}


def azureml(root: Path, archive: Path, port: int) -> dict[str, str]:
    version_dir = Path("/var/azureml-app/azureml-models/probe/1")
    (root / version_dir.relative_to("/")).mkdir(parents=True)
    shutil.copy2(archive, root / version_dir.relative_to("/") / "probe.tar.gz")
    return {"AZUREML_MODEL_DIR": str(version_dir), "AIAAS_PORT": str(port)}


def pai(root: Path, archive: Path, port: int) -> dict[str, str]:
    (root / "mnt" / "model").mkdir(parents=True)
    shutil.copy2(archive, root / "mnt" / "model" / "model.tar.gz")
    return {"AIAAS_MODEL_DIR": "/mnt/model", "AIAAS_PORT": str(port)}


CLOUDS = [
    Cloud("sagemaker", ["serve"], sagemaker, ["/ping"], "/invocations"),
    Cloud("azureml", [], azureml, ["/", "/ready"], "/score"),
    Cloud("pai", [], pai, ["/ready"], "/api/predict/probe-svc"),
]
# What each layout creates at the root, removed before the next cloud's turn.
LAYOUT_DIRS = ["opt/ml", "var/azureml-app", "mnt/model"]


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mounts)."""
    prefix = str(path.resolve())
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


@contextmanager
def image_root(image: str) -> Iterator[Path]:
    """A writable view of ``image``'s filesystem (overlay in a temporary folder)."""
    work = Path(tempfile.mkdtemp(prefix="aiaas-image-check-"))
    lower = Path(run("podman", "image", "mount", image))
    root = work / "root"
    for name in ("upper", "work", "root"):
        (work / name).mkdir()
    mounted: list[Path] = []
    try:
        options = f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'work'}"
        run("mount", "-t", "overlay", "overlay", "-o", options, str(root))
        mounted.append(root)
        (root / "proc").mkdir(exist_ok=True)
        run("mount", "-t", "proc", "proc", str(root / "proc"))
        mounted.append(root / "proc")
        (root / "dev").mkdir(exist_ok=True)
        for name, (major, minor) in DEVICES.items():
            node = root / "dev" / name
            if not node.exists():
                os.mknod(node, 0o666 | 0o020000, os.makedev(major, minor))
                node.chmod(0o666)
        yield root
    finally:
        for point in reversed(mounted):
            subprocess.run(["umount", str(point)], check=False)
        subprocess.run(["podman", "image", "unmount", image], check=False, capture_output=True)
        left = mounts_under(work)
        if left:  # never delete through a mount
            print(f"image-check: still mounted, not removing {work}: {left}", file=sys.stderr)
        else:
            shutil.rmtree(work)


def image_config(image: str) -> dict[str, Any]:
    (info,) = json.loads(run("podman", "image", "inspect", image))
    config: dict[str, Any] = info["Config"]
    return config


def user_spec(root: Path, user: str) -> str:
    """``uid:gid`` for the image's ``USER`` (a name or a number), from its /etc/passwd."""
    name_or_uid = user.split(":")[0] or "0"
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if name_or_uid in (fields[0], fields[2]):
            return f"{fields[2]}:{fields[3]}"
    raise SystemExit(f"image-check: USER {user!r} is not in the image's /etc/passwd")


def build_probe(into: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from aiaas.bundle import build_bundle

    return build_bundle(PROBE_PROJECT, into / "probe.tar.gz").path


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the entrypoint exited ({proc.returncode}) before it was ready")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {READY_TIMEOUT_S:.0f} s")


def check_cloud(cloud: Cloud, root: Path, archive: Path, config: dict[str, Any], log: Path) -> str:
    """Lay out, start, probe and stop one cloud's container; return the timings line."""
    for rel in LAYOUT_DIRS:
        if (root / rel).exists():
            shutil.rmtree(root / rel)
    port = free_port()
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    env.update(cloud.layout(root, archive, port))
    env["AIAAS_HOST"] = "127.0.0.1"
    entrypoint = list(config.get("Entrypoint") or [])
    userspec = user_spec(root, config.get("User") or "0")
    cmd = ["env", "-i", *(f"{k}={v}" for k, v in sorted(env.items()))]
    cmd += ["chroot", f"--userspec={userspec}", str(root), *entrypoint, *cloud.args]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd="/")
    try:
        wait_ready(url + cloud.health[-1], proc)
        ready_s = time.monotonic() - started
        for path in cloud.health:
            r = httpx.get(url + path, timeout=5.0)
            if r.status_code != 200:
                raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
        t0 = time.monotonic()
        r = httpx.post(url + cloud.scoring, json={"inputs": [{"value": 1.25}]}, timeout=30.0)
        predict_ms = (time.monotonic() - t0) * 1000
        if r.status_code != 200 or r.json()["outputs"][0]["value"] != 2.5:
            raise RuntimeError(f"POST {cloud.scoring}: {r.status_code} {r.text[:200]}")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_TIMEOUT_S)
        stop_s = time.monotonic() - t0
        if code != 0:
            raise RuntimeError(f"exit status {code} after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    routes = ", ".join([*cloud.health, cloud.scoring])
    return (
        f"ready {ready_s:.1f} s, first prediction {predict_ms:.0f} ms, "
        f"SIGTERM->exit 0 in {stop_s:.1f} s ({routes})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=os.environ.get("IMAGE", DEFAULT_IMAGE))
    parser.add_argument("--cloud", action="append", choices=[c.name for c in CLOUDS])
    opts = parser.parse_args()
    if shutil.which("podman") is None:
        print(
            "image-check: podman is not installed: run `make image` first (it installs podman "
            "and builds the image this checks)",
            file=sys.stderr,
        )
        return 2
    if os.geteuid() != 0:
        print("image-check: run as root (it mounts the image)", file=sys.stderr)
        return 2
    if subprocess.run(["podman", "image", "exists", opts.image], check=False).returncode:
        print(f"image-check: no image {opts.image}; run `make image` first", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    config = image_config(opts.image)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="aiaas-image-check-logs-") as tmp:
        archive = build_probe(Path(tmp))
        with image_root(opts.image) as root:
            for cloud in CLOUDS:
                if opts.cloud and cloud.name not in opts.cloud:
                    continue
                log = Path(tmp) / f"{cloud.name}.log"
                try:
                    line = check_cloud(cloud, root, archive, config, log)
                    print(f"PASS {cloud.name}: {line}", flush=True)
                except Exception as exc:
                    failed += 1
                    print(f"FAIL {cloud.name}: {exc}", flush=True)
                    print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    print(f"image-check: {opts.image}: {time.monotonic() - t_start:.1f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
