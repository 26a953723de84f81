"""``aiaas emulate <cloud>`` (or ``python -m emulators <cloud>``): an emulated cloud on
127.0.0.1 to rehearse a deploy with no account.

It starts the cloud's emulated control plane and runtime, with the real model server
behind every endpoint, creates the storage a deploy needs (AWS: ``--bucket``, or the one the
project's ``aiaas.yaml`` names; Azure: the workspace's default datastore, in Azurite, for the
subscription, resource group, workspace and region of the project's ``azureml:`` section or
the options; Alibaba: PAI-EAS and OSS in the region of the project's ``pai:`` section or
``--region``, with its ``oss_bucket`` and every ``--bucket``), prints the variables that
point the provider (and every SDK client) at it, and runs until Ctrl-C or SIGTERM. See
docs/rehearse.md.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLOUDS = ("aws", "azure", "alibaba")
AZURE_WORKSPACE_KEYS = ("subscription_id", "resource_group", "workspace", "region")
OPTION_CLOUDS = {
    "bucket": ("aws", "alibaba"),
    "subscription_id": ("azure",),
    "resource_group": ("azure",),
    "workspace": ("azure",),
    "region": ("azure", "alibaba"),
}
"""The clouds each cloud-specific option is for (any other refuses it by name)."""
ALIBABA_EXTRA = ("alibabacloud_eas20210701", "alibabacloud_oss_v2")
"""The pai provider's SDKs (``aiaas[alibaba]``), without which the emulator has no user."""


def _buckets(given: Sequence[str], project: Path | None) -> list[str]:
    """The buckets to create: ``--bucket``s, and the project's ``sagemaker.bucket``."""
    buckets = list(given)
    if project is not None:
        from aiaas.config import load_config
        from aiaas.errors import ConfigError
        from aiaas.plugins import provider_spec

        config = load_config(project)
        if "sagemaker" not in config.provider_sections():
            raise ConfigError(f"{project}: aiaas.yaml has no sagemaker: section (its bucket)")
        section = provider_spec("sagemaker").settings_of(config)
        bucket = getattr(section, "bucket", None)
        if bucket and bucket not in buckets:
            buckets.append(bucket)
    return buckets


def _azure_workspace(project: Path | None, given: dict[str, str | None]) -> dict[str, str]:
    """The emulated workspace's coordinates: the options given, else the project's
    ``azureml:`` section's, else the emulator's defaults (left out)."""
    found: dict[str, str] = {}
    if project is not None:
        from aiaas.config import load_config
        from aiaas.errors import ConfigError
        from aiaas.plugins import provider_spec

        config = load_config(project)
        if "azureml" not in config.provider_sections():
            raise ConfigError(f"{project}: aiaas.yaml has no azureml: section (its workspace)")
        section = provider_spec("azureml").settings_of(config)
        for key in AZURE_WORKSPACE_KEYS:
            value = getattr(section, key, None)
            if value:
                found[key] = str(value)
    found.update({k: v for k, v in given.items() if v})
    return found


def _alibaba_cloud(
    given: Sequence[str], project: Path | None, region: str | None
) -> tuple[list[str], str | None]:
    """The OSS buckets to create (the project's ``pai.oss_bucket`` first, then the
    ``--bucket``s) and the region (``--region``, else the project's ``pai.region``; None:
    the emulator's default)."""
    buckets: list[str] = []
    if project is not None:
        from aiaas.config import load_config
        from aiaas.errors import ConfigError
        from aiaas.plugins import provider_spec

        config = load_config(project)
        if "pai" not in config.provider_sections():
            raise ConfigError(f"{project}: aiaas.yaml has no pai: section (its region and bucket)")
        section: Any = provider_spec("pai").settings_of(config)
        buckets.append(str(section.oss_bucket))
        region = region or str(section.region)
    buckets += [bucket for bucket in given if bucket not in buckets]
    return buckets, region


def exports(env: dict[str, str]) -> str:
    """``export NAME=value`` lines, quoted for a POSIX shell."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items()))


def run_aws(workdir: Path, buckets: Sequence[str], env_file: Path | None) -> int:
    """Serve an emulated AWS until SIGINT/SIGTERM."""
    try:
        from emulators.aws import AwsEmulator
    except ImportError as exc:
        print(
            f"aiaas emulate: the emulated AWS needs {exc.name!r}, which is not installed "
            "(pip install 'aiaas[emulate]')",
            file=sys.stderr,
        )
        return 2

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator = AwsEmulator(workdir)
    emulator.start()
    try:
        with contextlib.closing(emulator.client("s3")) as s3:
            for bucket in buckets:
                s3.create_bucket(Bucket=bucket)
        text = exports(emulator.env())
        if env_file is not None:
            env_file.write_text(text)
        sys.stdout.write(text)
        sys.stdout.flush()
        made = ", ".join(buckets) or "none (pass --bucket or -c)"
        print(
            f"emulated AWS on 127.0.0.1 (S3, SageMaker, Application Auto Scaling, CloudWatch "
            f"Logs, SageMaker runtime); buckets: {made}. Export the lines above, then use "
            "`aiaas deploy --provider sagemaker` as against AWS. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    finally:
        emulator.stop()
    return 0


def _start_problem(exc: BaseException) -> str:
    """One line saying why the emulated Azure did not start, and what to do about it."""
    from emulators.azurite import VERSION

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if "azurite" in first.lower():  # Azurite.start: missing, or it exited / never listened
        said = f" (its last words: {lines[-1][:200]})" if len(lines) > 1 else ""
        return (
            f"Azurite did not start{said}: install it with `make install` (or `npm install "
            f"--prefix .venv/azurite azurite@{VERSION}`), or point AZURITE_BLOB at a working "
            "azurite-blob"
        )
    return f"{type(exc).__name__}: {first}"  # a port or a file: the OS's words say which


def run_azure(workdir: Path, workspace: dict[str, str], env_file: Path | None) -> int:
    """Serve an emulated Azure (ARM + Azure ML, Azurite, a managed identity) until
    SIGINT/SIGTERM."""
    try:
        from emulators import azurite
        from emulators.azure import AzureEmulator
    except ImportError as exc:
        print(
            f"aiaas emulate: the emulated Azure needs {exc.name!r}, which is not installed "
            "(pip install 'aiaas[emulate]')",
            file=sys.stderr,
        )
        return 2
    missing = azurite.unavailable()
    if missing is not None:
        print(f"aiaas emulate: the emulated Azure needs Azurite: {missing}", file=sys.stderr)
        return 2

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator = AzureEmulator(workdir, **workspace)  # type: ignore[arg-type]
    try:
        emulator.start()  # stops what it started when it fails
    except Exception as exc:  # one line for the user, no traceback
        problem = _start_problem(exc)
        print(f"aiaas emulate: the emulated Azure did not start: {problem}", file=sys.stderr)
        return 2
    try:
        text = exports(emulator.env())
        if env_file is not None:
            env_file.write_text(text)
        sys.stdout.write(text)
        sys.stdout.flush()
        print(
            f"emulated Azure on 127.0.0.1 (ARM + Azure ML over TLS, Azurite, a managed "
            f"identity): subscription {emulator.subscription_id}, resource group "
            f"{emulator.resource_group}, workspace {emulator.workspace}, region "
            f"{emulator.region}; default datastore container {emulator.blob_container}. "
            "Export the lines above, then use `aiaas deploy --provider azureml` as against "
            "Azure. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    finally:
        emulator.stop()
    return 0


def _missing(modules: Sequence[str]) -> str | None:
    """The first of ``modules`` that cannot be imported (looked for, not imported)."""
    import importlib.util

    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except (ImportError, ValueError):  # ValueError: blocked (None in sys.modules)
            return module
    return None


def run_alibaba(
    workdir: Path, buckets: Sequence[str], region: str | None, env_file: Path | None
) -> int:
    """Serve an emulated Alibaba Cloud (PAI-EAS and OSS) until SIGINT/SIGTERM."""
    missing = _missing(ALIBABA_EXTRA)
    if missing is not None:
        print(
            f"aiaas emulate: the emulated Alibaba Cloud is for the pai provider, which needs "
            f"{missing!r}, which is not installed (pip install 'aiaas[alibaba]')",
            file=sys.stderr,
        )
        return 2
    from emulators.alibaba import AlibabaEmulator

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    options: dict[str, Any] = {"region": region} if region else {}
    if buckets:
        options["bucket"] = buckets[0]
    emulator = AlibabaEmulator(workdir, **options)
    try:
        emulator.start()
    except OSError as exc:  # a port or the workdir: the OS's words say which
        print(f"aiaas emulate: the emulated Alibaba Cloud did not start: {exc}", file=sys.stderr)
        return 2
    try:
        for bucket in buckets[1:]:
            emulator.oss.create_bucket(bucket)
        text = exports(emulator.env())
        if env_file is not None:
            env_file.write_text(text)
        sys.stdout.write(text)
        sys.stdout.flush()
        made = ", ".join(buckets or [emulator.bucket])
        print(
            f"emulated Alibaba Cloud on 127.0.0.1 (PAI-EAS's control plane and service "
            f"gateway, OSS; ACS3 and OSS V4 signatures checked): region {emulator.region}, "
            f"buckets: {made}. Export the lines above, then use `aiaas deploy --provider pai` "
            "as against Alibaba Cloud. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    finally:
        emulator.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the emulated cloud."""
    parser = argparse.ArgumentParser(
        prog="aiaas emulate", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("cloud", choices=CLOUDS)
    parser.add_argument(
        "--bucket", action="append", default=[], help="aws, alibaba: create this bucket"
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        help="project folder or aiaas.yaml: create its bucket (aws), serve its workspace "
        "(azure), its region and OSS bucket (alibaba)",
    )
    for key in AZURE_WORKSPACE_KEYS:
        flag = "--" + key.replace("_", "-")
        what = "azure: the emulated workspace's region; alibaba: the emulated region"
        parser.add_argument(
            flag,
            dest=key,
            help=what if key == "region" else f"azure: the emulated workspace's {key}",
        )
    parser.add_argument("--env-file", type=Path, help="also write the export lines here")
    parser.add_argument("--workdir", type=Path, help="where containers unpack models")
    args = parser.parse_args(argv)
    from aiaas.errors import AiaasError

    refused = [
        f"--{key.replace('_', '-')}: {' and '.join(clouds)} only"
        for key, clouds in OPTION_CLOUDS.items()
        if args.cloud not in clouds and getattr(args, key)
    ]
    if refused:
        why = "; azure's storage is the workspace's datastore" if args.cloud == "azure" else ""
        parser.error(f"{'; '.join(refused)} (not {args.cloud}{why})")
    given = {key: getattr(args, key) for key in AZURE_WORKSPACE_KEYS}
    try:
        if args.cloud == "aws":
            buckets = _buckets(args.bucket, args.config)
        elif args.cloud == "alibaba":
            buckets, region = _alibaba_cloud(args.bucket, args.config, args.region)
        else:
            workspace = _azure_workspace(args.config, given)
    except AiaasError as exc:  # a config error names its key: say it, no traceback
        print(f"aiaas emulate: {exc.message}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.cloud == "aws":
            return run_aws(workdir, buckets, args.env_file)
        if args.cloud == "alibaba":
            return run_alibaba(workdir, buckets, region, args.env_file)
        return run_azure(workdir, workspace, args.env_file)


if __name__ == "__main__":
    sys.exit(main())
