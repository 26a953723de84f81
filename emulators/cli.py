"""``aiaas emulate <cloud>`` (or ``python -m emulators <cloud>``): an emulated cloud on
127.0.0.1 to rehearse a deploy with no account.

It starts the cloud's emulated control plane and runtime, with the real model server
behind every endpoint, creates the storage a deploy needs (``--bucket``, or the one the
project's ``aiaas.yaml`` names), prints the variables that point the provider (and every SDK
client) at it, and runs until Ctrl-C or SIGTERM. See docs/rehearse.md.
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

CLOUDS = ("aws",)  # azure and alibaba join as their providers land


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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the emulated cloud."""
    parser = argparse.ArgumentParser(
        prog="aiaas emulate", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("cloud", choices=CLOUDS)
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket")
    parser.add_argument(
        "-c", "--config", type=Path, help="project folder or aiaas.yaml: create its bucket"
    )
    parser.add_argument("--env-file", type=Path, help="also write the export lines here")
    parser.add_argument("--workdir", type=Path, help="where containers unpack models")
    args = parser.parse_args(argv)
    from aiaas.errors import AiaasError

    try:
        buckets = _buckets(args.bucket, args.config)
    except AiaasError as exc:  # a config error names its key: say it, no traceback
        print(f"aiaas emulate: {exc.message}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        return run_aws(workdir, buckets, args.env_file)


if __name__ == "__main__":
    sys.exit(main())
