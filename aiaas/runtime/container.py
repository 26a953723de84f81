"""The container image's entrypoint: ``python -m aiaas.runtime.container [serve [BUNDLE]]``.

One image serves on AWS SageMaker, Azure ML and Alibaba PAI-EAS. This module finds the
bundle where the cloud put it, picks the port the cloud gives, and runs the model server
(:func:`aiaas.runtime.serve.serve`: every cloud's routes at once; SIGTERM drains, then exits).

Where the bundle is looked for (the first that is given decides; nothing falls through to
another cloud's place):

======================  ==============================================================
``serve BUNDLE``        a folder or archive named after ``serve``: the local provider
                        names it there, so ``ps`` and ``/proc`` show which version each
                        server process runs (it is looked at as ``AIAAS_MODEL_DIR`` is)
``AIAAS_MODEL_DIR``     ours: PAI-EAS mounts the OSS path at the service's ``mount_path``
                        and the service config sets this to it (any cloud may set it)
``AZUREML_MODEL_DIR``   Azure ML: the registered model (a file or a folder, possibly one
                        level deeper, e.g. ``.../<name>/<version>/<folder>``)
``$SAGEMAKER_BASE_DIR/model``  SageMaker: ``model.tar.gz`` extracted there (``/opt/ml/model``)
======================  ==============================================================

In each place a bundle folder (holding the manifest), a ``model.tar.gz`` (or the only
``*.tar.gz``) or either of these one folder deeper is accepted. The port is ``AIAAS_PORT``
(Azure ML and PAI-EAS configs set it to the port their probes use), else
``SAGEMAKER_BIND_TO_PORT``, else 8080. The host is ``AIAAS_HOST``, default ``0.0.0.0``
(tests bind 127.0.0.1). The model server's settings (``server:`` in ``aiaas.yaml``) come as
``AIAAS_SERVER__<KEY>`` variables, which a provider sets in the container's environment.
``AIAAS_DEVICE`` (``cuda``, ``cpu``, ...) is the torch device the provider expects: a
provider that pays for a GPU sets ``cuda``, and the model then fails to load (the container
exits non-zero, so the deploy fails with that reason) when torch sees no CUDA GPU, instead
of serving on the CPU.
A ``model.tar.gz`` is unpacked under ``$HOME/.cache/aiaas``. Problems exit with status 2
and one line naming what was looked at; never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiaas.config import DEVICE_VARIABLE
from aiaas.manifest import MANIFEST_FILE

if TYPE_CHECKING:
    from aiaas.config import ServerSection

DEFAULT_HOST = "0.0.0.0"  # a container listens on every interface
DEFAULT_PORT = 8080
SAGEMAKER_BASE_DIR = "/opt/ml"
ARCHIVE_NAME = "model.tar.gz"
USAGE = "usage: python -m aiaas.runtime.container [serve [BUNDLE]]"
COMMAND_LINE = "the command line"


class ContainerError(Exception):
    """The container cannot start: the message says why, in one line."""


@dataclass(frozen=True)
class Located:
    """Where the bundle is (a folder or an archive) and which variable pointed there."""

    bundle: Path
    source: str


def bundle_places(env: Mapping[str, str], named: Path | None = None) -> tuple[str, Path]:
    """The variable (or the command line, when ``named``) that decides where to look, and
    the path it names."""
    if named is not None:
        return COMMAND_LINE, named
    for name in ("AIAAS_MODEL_DIR", "AZUREML_MODEL_DIR"):
        if env.get(name):
            return name, Path(env[name])
    base = env.get("SAGEMAKER_BASE_DIR") or SAGEMAKER_BASE_DIR
    return "SAGEMAKER_BASE_DIR", Path(base) / "model"


def _bundle_in(folder: Path) -> Path | None:
    """A bundle right in ``folder``: the folder itself, or its one archive."""
    if (folder / MANIFEST_FILE).is_file():
        return folder
    if (folder / ARCHIVE_NAME).is_file():
        return folder / ARCHIVE_NAME
    archives = sorted(p for p in folder.glob("*.tar.gz") if p.is_file())
    if len(archives) > 1:
        names = ", ".join(p.name for p in archives)
        raise ContainerError(f"{folder}: more than one archive ({names}); which is the bundle?")
    return archives[0] if archives else None


def locate_bundle(env: Mapping[str, str], named: Path | None = None) -> Located:
    """Find the bundle where the cloud put it (or at ``named``, given after ``serve``);
    :class:`ContainerError` names the places."""
    source, path = bundle_places(env, named)
    if path.is_file():
        return Located(path, source)
    if path.is_dir():
        found = _bundle_in(path)
        if found is not None:
            return Located(found, source)
        deeper = [f for f in sorted(path.iterdir()) if f.is_dir()]
        matches = [m for m in (_bundle_in(f) for f in deeper) if m is not None]
        if len(matches) == 1:
            return Located(matches[0], source)
        if len(matches) > 1:
            names = ", ".join(str(m) for m in matches)
            raise ContainerError(f"{_shown(source, path)} holds more than one bundle: {names}")
        what = f"no {MANIFEST_FILE} and no *.tar.gz in {path} or its sub-folders"
    else:
        what = f"{path} does not exist"
    hint = "set AIAAS_MODEL_DIR (PAI-EAS mount path), AZUREML_MODEL_DIR (Azure ML)"
    hint += f" or SAGEMAKER_BASE_DIR (SageMaker, {SAGEMAKER_BASE_DIR}/model)"
    raise ContainerError(f"no model bundle found: looked at {source} ({what}); {hint}")


def _shown(source: str, path: Path) -> str:
    return str(path) if source == COMMAND_LINE else f"{source}={path}"


def _port_from(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ContainerError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return port


def choose_port(env: Mapping[str, str]) -> int:
    """``AIAAS_PORT``, else ``SAGEMAKER_BIND_TO_PORT``, else 8080."""
    for name in ("AIAAS_PORT", "SAGEMAKER_BIND_TO_PORT"):
        port = _port_from(env, name)
        if port is not None:
            return port
    return DEFAULT_PORT


SERVER_PREFIX = "AIAAS_SERVER__"


def server_settings(env: Mapping[str, str]) -> ServerSection:
    """The model server's settings from the ``AIAAS_SERVER__<KEY>`` variables."""
    from pydantic import ValidationError

    from aiaas.config import ServerSection

    given = {
        k[len(SERVER_PREFIX) :].lower(): (k, v)
        for k, v in env.items()
        if k.startswith(SERVER_PREFIX)
    }
    try:
        return ServerSection.model_validate({key: value for key, (_, value) in given.items()})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            variable = given[key][0] if key in given else SERVER_PREFIX + key.upper()
            problems.append(f"{variable}: {error['msg']}")
        raise ContainerError("; ".join(problems)) from None


def check_args(args: Sequence[str]) -> Path | None:
    """SageMaker runs the image with ``serve``; the other clouds with no argument; the local
    provider with ``serve BUNDLE``. The bundle named, if any."""
    args = list(args)
    if args in ([], ["serve"]):
        return None
    if len(args) == 2 and args[0] == "serve" and args[1] and not args[1].startswith("-"):
        return Path(args[1])
    raise ContainerError(f"unexpected arguments {' '.join(args)!r}; {USAGE}")


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Locate the bundle, choose host and port, and serve until SIGTERM."""
    env = os.environ if env is None else env
    args = sys.argv[1:] if argv is None else argv
    if list(args) in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    try:
        named = check_args(args)
        port = choose_port(env)
        settings = server_settings(env)
        located = locate_bundle(env, named)
    except (ContainerError, OSError) as exc:  # OSError: a place it may not read
        print(f"aiaas container: {exc}", file=sys.stderr)
        return 2
    host = env.get("AIAAS_HOST") or DEFAULT_HOST
    print(
        f"aiaas container: serving {located.bundle} (from {located.source}) on {host}:{port}",
        file=sys.stderr,
        flush=True,
    )
    # Imported here: the locating above stays fast and free of torch for its tests.
    from aiaas.errors import AiaasError
    from aiaas.runtime.serve import serve

    # uvicorn drains on SIGTERM, then raises the signal again once its handler is gone:
    # this one makes that (and a SIGTERM while the bundle is still unpacked) exit 0.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        serve(
            located.bundle,
            host=host,
            port=port,
            settings=settings,
            device=env.get(DEVICE_VARIABLE) or None,
        )
    except AiaasError as exc:  # a malformed bundle: one line, no traceback
        print(f"aiaas container: {exc.message}", file=sys.stderr)  # it names the file
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
