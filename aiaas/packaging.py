"""``aiaas function package``: the deployable zip of the function tier for one platform.

The zip holds the function code, the parts of the ``aiaas`` core and of ``adapters`` the
configured provider needs, their dependencies as wheels for the *target* platform and
Python (``pip download --platform``; never the build machine's own wheels), the bundle
manifest and the project's ``aiaas.yaml`` (as ``aiaas.json``: no YAML parser at cold start).
Never torch or transformers. Entries are sorted and dated 1980-01-01, so the same inputs
give the same bytes.

Every module ships with its bytecode compiled by an interpreter of the target Python version,
as unchecked-hash ``.pyc`` files: Lambda's ``/var/task`` is read-only, so without them the
function compiles every module again at every cold start (the zip's fixed 1980 timestamps
would invalidate timestamp-based ``.pyc`` files; unchecked-hash ones are used as they are).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from aiaas import __version__
from aiaas.config import PACKAGED_CONFIG_FILE, ProjectConfig
from aiaas.errors import BundleError, ConfigError
from aiaas.manifest import MANIFEST_FILE, Manifest
from aiaas.plugins import ENTRY_POINT_GROUP, provider_spec
from aiaas.template_files import templates_dir

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = templates_dir() / "functions"
_EPOCH = (1980, 1, 1, 0, 0, 0)
MIN_PYTHON = (3, 11)  # what aiaas itself needs (pyproject's requires-python)

# What the function tier imports at run time, whatever the platform. What the provider's
# invoke path needs comes from its spec (ProviderSpec.invoke_requirements).
COMMON_REQUIREMENTS = [
    "starlette>=0.37",
    "pydantic>=2.7,<3",
    "orjson>=3.10",
    "fastjsonschema>=2.19",
]
# Core modules the function tier uses (not the CLI, the model server or the templates).
CORE_MODULES = [
    "__init__.py", "bundle.py", "config.py", "errors.py", "http.py", "manifest.py", "model.py",
    "oip.py", "plugins.py", "pricing.py", "protocol.py", "client.py",
]  # fmt: skip
# The provider contract, whatever the provider.
ADAPTER_MODULES = ["adapters", "adapters.base", "adapters.transport"]


@dataclass(frozen=True)
class Target:
    """One serverless platform's packaging rules."""

    entrypoint: str
    requirements: list[str]
    site_packages: str  # where dependencies go inside the zip
    templates: list[str] = field(default_factory=list)
    max_zip_bytes: int = 50 * 1024 * 1024
    limit_source: str = ""
    handler: str = ""  # what the platform is told to run (printed after packaging)


TARGETS: dict[str, Target] = {
    "aws": Target(
        "aws_lambda.py",
        ["mangum>=0.17"],
        "",
        max_zip_bytes=50 * 1024 * 1024,
        limit_source="Lambda: 50 MB zipped for a direct upload",
        handler="functions.aws_lambda.handler (runtime python{python}, architecture {arch})",
    ),
    "azure": Target(
        "azure_functions.py",
        ["azure-functions>=1.18"],
        ".python_packages/lib/site-packages",
        ["azure/function_app.py", "azure/host.json", "azure/requirements.txt"],
        max_zip_bytes=100 * 1024 * 1024,
        limit_source="Azure Functions: no zip limit found in the notes; aiaas caps at 100 MB",
        handler="function_app.py (Python {python}, v2 programming model; host.json included)",
    ),
    "alibaba": Target(
        "alibaba_fc.py",
        ["uvicorn>=0.30"],
        "python",
        ["alibaba/bootstrap"],
        max_zip_bytes=100 * 1024 * 1024,
        limit_source="Function Compute 3.0: code package limit unconfirmed; aiaas caps at 100 MB",
        handler="custom runtime: ./bootstrap serves on port 9000 (needs python{python} as python3)",
    ),
}
ARCHES = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}


@dataclass(frozen=True)
class FunctionPackage:
    """The built zip and what went into it."""

    path: Path
    size: int
    limit: int
    wheels: list[str]
    handler: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    """Variables the platform must (or may) set, each with what it is for."""
    compiled: bool = True
    """False when no interpreter of the target Python was found: source only, slower start."""


def package_function(
    config: ProjectConfig,
    manifest: Manifest,
    target: str,
    output: Path,
    *,
    arch: str = "x86_64",
    python: str = "3.11",
    allow_local: bool = False,
    compile_bytecode: bool = True,
) -> FunctionPackage:
    """Build the zip for ``target`` (aws, azure, alibaba); refuse it above the platform limit.

    ``provider: local`` is refused unless ``allow_local``: such a function would call
    127.0.0.1 from the cloud. It is allowed for trying the zip on this machine (the tests and
    ``bench/function_overhead.py`` do). ``compile_bytecode=False`` ships source only.
    """
    if target not in TARGETS:
        raise ConfigError(f"--target {target}: use one of {', '.join(TARGETS)}")
    if arch not in ARCHES:
        raise ConfigError(f"--arch {arch}: use one of {', '.join(ARCHES)}")
    _check_python(python)
    provider = provider_spec(config.provider)
    if config.provider == "local" and not allow_local:
        raise ConfigError(
            "provider: local: a packaged function would call the model server on 127.0.0.1 "
            "from the cloud; set provider to the cloud that serves the model (or pass "
            "--allow-local to try the zip on this machine)"
        )
    spec = TARGETS[target]
    provider_reqs = list(provider.invoke_requirements)
    with tempfile.TemporaryDirectory(prefix="aiaas-fn-") as tmp:
        wheels = _download(
            COMMON_REQUIREMENTS + provider_reqs + spec.requirements, Path(tmp), arch, python
        )
        entries = _code_entries(config, spec) + _wheel_entries(wheels, spec.site_packages)
        entries.append((MANIFEST_FILE, manifest.model_dump_json(indent=2).encode()))
        entries.append((PACKAGED_CONFIG_FILE, function_config_json(config)))
        entries += _metadata_entries(spec.site_packages, config.provider)
        compiled = False
        if compile_bytecode:
            interpreter = _interpreter_for(python)
            if interpreter is not None:
                entries += _bytecode_entries(entries, interpreter, Path(tmp) / "compile")
                compiled = True
        data = _zip(entries)
    if len(data) > spec.max_zip_bytes:
        raise BundleError(
            f"the {target} package would be {len(data) / 1e6:.1f} MB; the limit is "
            f"{spec.max_zip_bytes / 1e6:.0f} MB ({spec.limit_source})"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    return FunctionPackage(
        output,
        len(data),
        spec.max_zip_bytes,
        sorted(w.name for w in wheels),
        handler=spec.handler.format(python=python, arch=arch),
        environment=_environment(config),
        compiled=compiled,
    )


def function_config_json(config: ProjectConfig) -> bytes:
    """The config a packaged function starts with (its ``aiaas.json``): what was checked here,
    ``--provider`` and ``AIAAS_*`` overrides of this build included, keys the user set only
    (defaults stay defaults), read at cold start without a YAML parser."""
    import json

    raw = config.model_dump(mode="json", exclude_unset=True)
    # Only the packaged provider's section: the zip carries no other provider.
    sections = config.provider_sections()
    if config.provider in sections:
        raw[config.provider] = sections[config.provider]
    return json.dumps(raw, indent=2, sort_keys=True).encode() + b"\n"


def _check_python(python: str) -> None:
    match = re.fullmatch(r"(\d+)\.(\d+)", python)
    if match is None:
        raise ConfigError(f"--python {python}: give major.minor, e.g. 3.11")
    if (int(match[1]), int(match[2])) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        raise ConfigError(f"--python {python}: aiaas needs Python {need} or newer")


def _interpreter_for(python: str) -> str | None:
    """An interpreter of Python ``python`` (major.minor) on this machine, or None.

    Bytecode is only valid for the version that wrote it (the magic number differs between
    minor versions), so it is compiled by such an interpreter, never by whatever runs us.
    """
    if python == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    found = shutil.which(f"python{python}")
    if found is None:
        return None
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    done = subprocess.run([found, "-c", probe], capture_output=True, text=True)
    return found if done.returncode == 0 and done.stdout.strip() == python else None


# Compiles every .py below argv[1] as unchecked-hash .pyc, paths relative to the zip's root
# (tracebacks then name "functions/app.py", found from the task root on sys.path).
_COMPILE = """
import compileall, py_compile, sys
compileall.compile_dir(sys.argv[1], quiet=2, stripdir=sys.argv[1], workers=1,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def _bytecode_entries(
    entries: list[tuple[str, bytes]], interpreter: str, workdir: Path
) -> list[tuple[str, bytes]]:
    """``__pycache__/*.pyc`` entries for the ``.py`` entries, written by ``interpreter``.

    A file that does not compile (some packages ship templates named ``.py``) simply gets
    no ``.pyc`` and is compiled on import, as before.
    """
    for name, data in entries:
        if name.endswith(".py"):
            path = workdir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    # A fixed hash seed: set and frozenset constants are marshalled in hash order, so with
    # the default random seed the same source would give different bytes from run to run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [interpreter, "-c", _COMPILE, str(workdir)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise BundleError(f"compiling the function's bytecode failed: {done.stderr.strip()}")
    return [
        (pyc.relative_to(workdir).as_posix(), pyc.read_bytes())
        for pyc in sorted(workdir.rglob("__pycache__/*.pyc"))
    ]


def _environment(config: ProjectConfig) -> dict[str, str]:
    """What the platform's function configuration sets, and why."""
    env = {
        "AIAAS_DEPLOYMENT": "optional: the deployment to call (default: the model's name)",
    }
    if config.function.auth == "api_key":
        env["AIAAS_API_KEYS"] = (
            "required: the key records from `aiaas keys create`, comma-separated, "
            "from the platform's secret store (or AIAAS_API_KEYS_FILE: a mounted file of "
            "records, re-read within 1 s, for rotation without a restart)"
        )
    return env


def _download(requirements: list[str], dest: Path, arch: str, python: str) -> list[Path]:
    """Wheels for the target platform and Python, never built or taken from this machine."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
        "--platform", ARCHES[arch], "--python-version", python, "--implementation", "cp",
        "--dest", str(dest), *requirements,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [
            ln for ln in done.stderr.splitlines() if "ERROR" in ln
        ] or done.stderr.splitlines()[-3:]
        raise BundleError("cannot download the function's wheels: " + " ".join(errors))
    return sorted(dest.glob("*.whl"))


def _code_entries(config: ProjectConfig, spec: Target) -> list[tuple[str, bytes]]:
    entries = [(f"aiaas/{name}", (ROOT / "aiaas" / name).read_bytes()) for name in CORE_MODULES]
    provider = provider_spec(config.provider)
    spec_module = _entry_point(config.provider).value.partition(":")[0]
    modules = [*ADAPTER_MODULES, *_parents(spec_module), *provider.invoke_modules]
    for module in dict.fromkeys(modules):
        entries.append(_module_entry(module))
    for name in (
        "__init__.py",
        "app.py",
        "auth.py",
        "bootstrap.py",
        "edge.py",
        "metering.py",
        "openapi.py",
        spec.entrypoint,
    ):
        entries.append((f"functions/{name}", (ROOT / "functions" / name).read_bytes()))
    for template in spec.templates:
        entries.append((Path(template).name, (TEMPLATES / template).read_bytes()))
    return entries


def _wheel_entries(wheels: list[Path], prefix: str) -> list[tuple[str, bytes]]:
    entries = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as whl:
            for info in whl.infolist():
                if not info.is_dir():
                    entries.append((f"{prefix}/{info.filename}".lstrip("/"), whl.read(info)))
    return entries


def _entry_point(provider: str) -> EntryPoint:
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == provider]
    if not found:
        raise ConfigError(f"provider: {provider!r} is not installed")
    return found[0]


def _parents(module: str) -> list[str]:
    """``a.b.c`` → ``a``, ``a.b``, ``a.b.c``: a module needs its packages' ``__init__``."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _module_entry(module: str) -> tuple[str, bytes]:
    """The zip entry of one module of the provider, from its installed source."""
    import importlib.util

    found = importlib.util.find_spec(module)
    if found is None or found.origin is None or not found.origin.endswith(".py"):
        raise ConfigError(f"provider: module {module!r} is not installed as source")
    origin = Path(found.origin)
    parts = module.split(".")
    name = "/".join(parts) + ("/__init__.py" if origin.name == "__init__.py" else ".py")
    return name, origin.read_bytes()


def _metadata_entries(prefix: str, provider: str) -> list[tuple[str, bytes]]:
    """A dist-info for aiaas naming the packaged provider's entry point (the only provider
    the zip carries), so it is discovered inside the zip as it is here."""
    base = f"{prefix}/aiaas-{__version__}.dist-info".lstrip("/")
    ep = _entry_point(provider)
    providers = f"{ep.name} = {ep.value}\n"
    return [
        (
            f"{base}/METADATA",
            f"Metadata-Version: 2.1\nName: aiaas\nVersion: {__version__}\n".encode(),
        ),
        (f"{base}/entry_points.txt", f"[aiaas.providers]\n{providers}".encode()),
    ]


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    seen: set[str] = set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, data in sorted(entries):
            if name in seen:
                continue
            seen.add(name)
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name.endswith("bootstrap") else 0o644) << 16
            zf.writestr(info, data)
    return buffer.getvalue()
