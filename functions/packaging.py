"""``aiaas function package``: the deployable zip of the function tier for one platform.

What goes in it is the platform's record (:mod:`functions.platforms`): its entrypoint, the
entrypoint's own requirements, where dependencies go and the zip's limit. The zip holds the
modules of ``aiaas``, ``adapters`` and ``functions`` (and of a third-party provider's own
package) that the entrypoint and the configured provider's invoke path import: its spec's
module and its invoker's module, followed through every import statement, so no hand-kept
list of files or modules; their dependencies as wheels for the *target* platform and
Python (``pip download --platform``; never the build machine's own wheels), the bundle
manifest and the project's ``aiaas.yaml`` (as ``aiaas.json``: no YAML parser at cold start).
Never torch or transformers. Entries are sorted and dated 1980-01-01, so the same inputs
give the same bytes.

Every module ships with its bytecode compiled by an interpreter of the target Python version,
as unchecked-hash ``.pyc`` files: Lambda's ``/var/task`` is read-only, so without them the
function compiles every module again at every cold start (the zip's fixed 1980 timestamps
would invalidate timestamp-based ``.pyc`` files; unchecked-hash ones are used as they are).

The function tier packages itself here, a library the CLI, the benchmarks and the tests call;
the CLI (the composition root, which nothing imports) only parses the options.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from aiaas import __version__
from aiaas.config import PACKAGED_CONFIG_FILE, ProjectConfig
from aiaas.errors import BundleError, ConfigError
from aiaas.manifest import MANIFEST_FILE, Manifest
from aiaas.plugins import ENTRY_POINT_GROUP, provider_spec
from aiaas.template_files import templates_dir
from functions.platforms import Packaging, packaged_platforms

TEMPLATES = templates_dir() / "functions"
_EPOCH = (1980, 1, 1, 0, 0, 0)
MIN_PYTHON = (3, 11)  # what aiaas itself needs (pyproject's requires-python)

# What the function tier imports at run time, whatever the platform. What the provider's
# invoke path needs comes from its spec (ProviderSpec.invoke_requirements), what the
# platform's entrypoint needs from the platform's record.
COMMON_REQUIREMENTS = [
    "starlette>=0.37",
    "pydantic>=2.7,<3",
    "orjson>=3.10",
    "fastjsonschema>=2.19",
]
PACKAGES = ("aiaas", "adapters", "functions")
"""The import packages whose modules the zip carries as source (when something imports them)."""
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
    wheel_cache: Path | None = None,
) -> FunctionPackage:
    """Build the zip for ``target`` (aws, azure, alibaba); refuse it above the platform limit.

    ``provider: local`` is refused unless ``allow_local``: such a function would call
    127.0.0.1 from the cloud. It is allowed for trying the zip on this machine (the tests and
    ``bench/function_overhead.py`` do). ``compile_bytecode=False`` ships source only.
    ``wheel_cache``: a folder that keeps the wheels downloaded (one subfolder per Python and
    architecture): the same requirements are then packaged again without pip or the index.
    """
    spec = packaging_of(target)
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
    requirements = [*COMMON_REQUIREMENTS, *provider.invoke_requirements, *spec.requirements]
    files = _code_entries(config, spec)
    files.append((MANIFEST_FILE, manifest.model_dump_json(indent=2).encode()))
    files.append((PACKAGED_CONFIG_FILE, function_config_json(config)))
    files += _metadata_entries(spec.site_packages, config.provider)
    zipped = zip_with_wheels(
        files,
        requirements,
        site_packages=spec.site_packages,
        arch=arch,
        python=python,
        compile_bytecode=compile_bytecode,
        wheel_cache=wheel_cache,
        # Bytecode only adds entries: a zip already too large without it is refused
        # before anything is compiled.
        check_size=lambda size: _check_size(target, spec, size, "at least", " before its bytecode"),
    )
    _check_size(target, spec, len(zipped.data))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(zipped.data)
    return FunctionPackage(
        output,
        len(zipped.data),
        spec.max_zip_bytes,
        zipped.wheels,
        handler=spec.handler.format(python=python, arch=arch),
        environment=_environment(config),
        compiled=zipped.compiled,
    )


@dataclass(frozen=True)
class ZipContents:
    """A zip built by :func:`zip_with_wheels`."""

    data: bytes
    wheels: list[str]
    """The names of the wheels unpacked into it."""
    compiled: bool
    """Whether its modules carry bytecode (False: no interpreter of the target Python)."""


def zip_with_wheels(
    files: list[tuple[str, bytes]],
    requirements: list[str],
    *,
    site_packages: str = "",
    arch: str = "x86_64",
    python: str = "3.11",
    compile_bytecode: bool = True,
    wheel_cache: Path | None = None,
    check_size: Callable[[int], None] | None = None,
) -> ZipContents:
    """A deterministic zip of ``files`` (``(name, bytes)``) and the target-platform wheels of
    ``requirements`` unpacked under ``site_packages``, every module with unchecked-hash
    bytecode of the target Python unless ``compile_bytecode`` is False.

    What :func:`package_function` builds every function zip with; ``bench/function_overhead.py``
    builds its floor function (Mangum, Starlette and httpx alone) with it too, so both are
    packaged the same way. ``check_size`` is given the zip's size before any bytecode is
    compiled (it raises to refuse it); ``wheel_cache`` as in :func:`package_function`.
    """
    with tempfile.TemporaryDirectory(prefix="aiaas-fn-") as tmp:
        wheels = _download(requirements, Path(tmp) / "wheels", arch, python, wheel_cache)
        entries = [*files, *_wheel_entries(wheels, site_packages)]
        with _ZipWriter() as zipped:
            zipped.add(entries)
            if check_size is not None:
                check_size(zipped.size())
            compiled = False
            if compile_bytecode:
                interpreter = _interpreter_for(python)
                if interpreter is not None:
                    zipped.add(_bytecode_entries(entries, interpreter, Path(tmp) / "compile"))
                    compiled = True
        data = zipped.data()
    return ZipContents(data, sorted(w.name for w in wheels), compiled)


def unpack(package: Path, folder: Path) -> Path:
    """``package`` unzipped into ``folder`` (emptied first) as a platform unpacks it, each
    file's mode kept (``zipfile`` drops modes: FC's ``bootstrap`` must stay executable)."""
    shutil.rmtree(folder, ignore_errors=True)
    with zipfile.ZipFile(package) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, folder))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                path.chmod(mode)
    return folder


def packaging_of(target: str) -> Packaging:
    """What goes in ``target``'s zip (its platform record); a :class:`ConfigError` naming the
    platforms a zip is built for."""
    for record in packaged_platforms():
        if record.name == target and record.package is not None:
            return record.package
    names = ", ".join(p.name for p in packaged_platforms())
    raise ConfigError(f"--target {target}: use one of {names}")


def _check_size(target: str, spec: Packaging, size: int, bound: str = "", when: str = "") -> None:
    if size > spec.max_zip_bytes:
        raise BundleError(
            f"the {target} package would be {bound + ' ' if bound else ''}"
            f"{size / 1e6:.1f} MB{when}; the limit is "
            f"{spec.max_zip_bytes / 1e6:.0f} MB ({spec.limit_source})"
        )


def function_config_json(config: ProjectConfig) -> bytes:
    """The config a packaged function starts with (its ``aiaas.json``): what was checked here,
    ``--provider`` and ``AIAAS_*`` overrides of this build included, keys the user set only
    (defaults stay defaults), read at cold start without a YAML parser."""
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
    spec = provider_spec(config.provider)  # what the provider's invoke path reads
    env.update({name: f"{spec.name}: {why}" for name, why in spec.invoke_environment.items()})
    if config.function.auth == "api_key":
        env["AIAAS_API_KEYS"] = (
            "required: the key records from `aiaas keys create`, comma-separated, "
            "from the platform's secret store (or AIAAS_API_KEYS_FILE: a mounted file of "
            "records, re-read within 1 s, for rotation without a restart)"
        )
    return env


def _download(
    requirements: list[str], dest: Path, arch: str, python: str, cache: Path | None = None
) -> list[Path]:
    """Wheels for the target platform and Python, never built or taken from this machine.

    With a ``cache``, a set of requirements downloaded once for this Python and architecture
    is taken from it as it was resolved then (no pip, no index); a new set is downloaded and
    kept there, with the list of wheels it resolved to."""
    dest.mkdir(parents=True, exist_ok=True)
    if cache is None:
        _pip_download(requirements, dest, arch, python)
        return sorted(dest.glob("*.whl"))
    folder = cache / f"cp{python.replace('.', '')}-{arch}"
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]
    resolved = folder / f"resolved-{key}.json"
    # One packaging at a time per folder: parallel ones (several CI jobs, test workers) share
    # a cache, and none may read a wheel another is still writing.
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        names = _resolved_names(resolved)
        if names and all((folder / name).is_file() for name in names):
            for name in names:
                shutil.copyfile(folder / name, dest / name)
        else:
            _pip_download(requirements, dest, arch, python)
            names = sorted(wheel.name for wheel in dest.glob("*.whl"))
            for name in names:  # each file whole or not at all: a run killed midway
                _replace_with_copy(dest / name, folder / name)  # leaves no half a wheel
            partial = resolved.with_suffix(".partial")
            partial.write_text(json.dumps(names))
            os.replace(partial, resolved)
    return sorted(dest.glob("*.whl"))


def _resolved_names(resolved: Path) -> list[str]:
    """The wheel names a cached resolution lists; none (a miss) if unreadable."""
    try:
        names = json.loads(resolved.read_text())
    except (OSError, ValueError):
        return []
    return [str(name) for name in names] if isinstance(names, list) else []


def _replace_with_copy(src: Path, dst: Path) -> None:
    partial = dst.with_name(dst.name + ".partial")
    shutil.copyfile(src, partial)
    os.replace(partial, dst)


def _pip_download(requirements: list[str], dest: Path, arch: str, python: str) -> None:
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


def _code_entries(config: ProjectConfig, spec: Packaging) -> list[tuple[str, bytes]]:
    """The source of every module the function can import: the platform's entrypoint and
    what it imports, and the provider's invoke path (:func:`invoke_path_modules`)."""
    modules = {*imported_modules([spec.entrypoint]), *invoke_path_modules(config.provider)}
    entries = [_module_entry(module) for module in sorted(modules)]
    for template in spec.templates:
        entries.append((Path(template).name, (TEMPLATES / template).read_bytes()))
    return entries


def invoke_path_modules(provider: str) -> list[str]:
    """The modules a function needs for ``provider``'s invoke path, sorted: its spec's module
    (the entry point the function reads it by) and its invoker's module (``ProviderSpec.invoker``,
    the one module a function imports by name), with every module of ours and of the
    provider's own top-level package that they import (:func:`imported_modules`).

    Nothing is listed by hand: what the invoke path imports is what ships, and its control
    plane (``ProviderSpec.control_plane``, imported only by name) does not.
    """
    spec_module = _entry_point(provider).value.partition(":")[0]
    own = spec_module.split(".")[0]  # a third-party provider's package ships as ours do
    packages = PACKAGES if own in PACKAGES else (*PACKAGES, own)
    return imported_modules([spec_module, provider_spec(provider).invoke_module], packages)


def imported_modules(roots: Iterable[str], packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """``roots`` and every module of ``packages`` they import, directly or not, with the
    packages above each (a module needs its packages' ``__init__``), sorted.

    Every import statement counts, wherever it is (in a function, under ``TYPE_CHECKING``):
    a lazy import still runs when its code does. An import by name at run time
    (``importlib.import_module``) is not seen: the platform record a function loads is
    named by the entrypoint's own import, the provider's invoker (loaded by name from its
    spec) is a root of its own (:func:`invoke_path_modules`), and ``aiaas.api`` (which builds
    a control plane) is deliberately not shipped.
    """
    found: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in found or module.split(".")[0] not in packages:
            continue
        origin = _source_of(module)
        if origin is None:  # a name imported from a module (``from a import b``), not a module
            continue
        found.add(module)
        todo += _parents(module)[:-1]
        todo += _imports_of(origin, module)
    return sorted(found)


def _source_of(module: str) -> Path | None:
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent is a module, not a package
        return None
    if found is None or found.origin is None or not found.origin.endswith(".py"):
        return None
    return Path(found.origin)


def _imports_of(path: Path, module: str) -> list[str]:
    """The modules (and, for ``from a import b``, the candidate modules ``a.b``) that
    ``path`` imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


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
    """The zip entry of one module, from its installed source."""
    origin = _source_of(module)
    if origin is None:
        raise ConfigError(f"module {module!r} is not installed as source")
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


class _ZipWriter:
    """A deterministic zip built in memory: each :meth:`add` writes its entries sorted by
    name, dated 1980-01-01, a name already written is skipped; its size can be read between
    additions."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._zip = zipfile.ZipFile(self._buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6)
        self._seen: set[str] = set()

    def __enter__(self) -> _ZipWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def add(self, entries: list[tuple[str, bytes]]) -> None:
        for name, data in sorted(entries):
            if name in self._seen:
                continue
            self._seen.add(name)
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name.endswith("bootstrap") else 0o644) << 16
            self._zip.writestr(info, data)

    def size(self) -> int:
        """The bytes written so far (the central directory, written at the end, aside)."""
        return self._buffer.tell()

    def data(self) -> bytes:
        """The finished zip (after the ``with`` block)."""
        return self._buffer.getvalue()
