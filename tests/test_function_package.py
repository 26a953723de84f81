"""`aiaas function package`: target-platform wheels, no torch, within limits, and a zip that
runs on its own (a fresh interpreter with no site-packages answers a Lambda event).

The packagings read one wheel cache per run (tests/wheel_cache.py); one CLI packaging
(``test_packaging_says_what_the_platform_must_set``) downloads cold, as a user's first does."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import FunctionSetup, function_url_event, tampered_archive
from wheel_cache import shared_wheel_cache

from aiaas.config import load_config
from aiaas.errors import BundleError, ConfigError
from aiaas.manifest import read_manifest_file
from functions.packaging import (
    function_config_json,
    imported_modules,
    invoke_path_modules,
    package_function,
    packaging_of,
)

HEAVY = ("torch/", "transformers/", "boto3/", "botocore/", "moto/", "azure/ai/ml/")

# What the providers' specs listed by hand (ProviderSpec.invoke_modules) before the invoke
# path's modules were derived from its imports: the derived set must still hold each one.
HAND_KEPT = {
    "local": ("adapters.http_invoker", "adapters.local.state", "adapters.local.invoke"),
    "sagemaker": (
        "adapters.http_invoker", "adapters.auth", "adapters.sagemaker.instance_types",
        "adapters.sagemaker.prices", "adapters.sagemaker.names", "adapters.sagemaker.aws",
        "adapters.sagemaker.invoke",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def packaged(
    probe_function: FunctionSetup, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    config = load_config(probe_function.env["AIAAS_CONFIG"], env={})
    manifest = read_manifest_file(Path(probe_function.env["AIAAS_MANIFEST"]))
    out = tmp_path_factory.mktemp("packages")
    cache = shared_wheel_cache()
    zips = {}
    for target, arch in [
        ("aws", "x86_64"),
        ("aws", "arm64"),
        ("azure", "x86_64"),
        ("alibaba", "x86_64"),
    ]:
        zips[f"{target}-{arch}"] = package_function(
            config,
            manifest,
            target,
            out / f"{target}-{arch}.zip",
            arch=arch,
            allow_local=True,
            wheel_cache=cache,
        ).path
    return zips


def _names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def test_each_zip_has_its_entrypoint_target_wheels_and_no_torch(packaged: dict[str, Path]) -> None:
    for key, path in packaged.items():
        names = _names(path)
        target, arch = key.split("-")
        spec = packaging_of(target)
        site = spec.site_packages
        assert f"{spec.entrypoint.replace('.', '/')}.py" in names
        assert f"functions/platforms/{target}.py" in names  # its record, and no other's
        others = {"aws", "azure", "alibaba", "local"} - {target}
        assert not [n for n in names if n in {f"functions/platforms/{o}.py" for o in others}]
        assert "aiaas-manifest.json" in names and "aiaas.json" in names
        assert not [n for n in names if n.startswith("yaml/")]  # no YAML parser at cold start
        assert not [n for n in names if n.startswith(HEAVY) or f"/{HEAVY[0]}" in n]
        assert not [n for n in names if n.startswith(("aiaas/runtime/", "aiaas/cli/"))]
        assert "aiaas/api.py" not in names  # the Python API builds control planes
        assert "functions/packaging.py" not in names
        core = [n for n in names if "pydantic_core/_pydantic_core" in n and n.endswith(".so")]
        machine = "aarch64" if arch == "arm64" else "x86_64"
        assert len(core) == 1 and machine in core[0] and core[0].startswith(site)
        assert path.stat().st_size < 10 * 1024 * 1024  # the target for the AWS zip
    assert "function_app.py" in _names(packaged["azure-x86_64"]) and "host.json" in _names(
        packaged["azure-x86_64"]
    )
    with zipfile.ZipFile(packaged["alibaba-x86_64"]) as zf:
        assert (zf.getinfo("bootstrap").external_attr >> 16) & 0o111


def test_the_invoke_path_is_derived_and_holds_what_was_listed_by_hand() -> None:
    """Each provider's invoke-path modules come from its invoker's imports: every module the
    hand-kept lists named is found, and no control-plane module is."""
    for provider, listed in HAND_KEPT.items():
        modules = invoke_path_modules(provider)
        assert set(listed) <= set(modules), provider
        assert f"adapters.{provider}" in modules  # the spec, read by entry point
        control = [m for m in modules if m.rpartition(".")[2] in {"provider", "steps", "rollout"}]
        assert control == [], provider
        assert "aiaas.api" not in modules and not [m for m in modules if "runtime" in m]


def test_the_zip_carries_exactly_the_modules_its_entrypoint_and_invoke_path_import(
    packaged: dict[str, Path],
) -> None:
    """No module of ours ships that neither the entrypoint nor the invoke path imports."""
    for key, path in packaged.items():
        spec = packaging_of(key.split("-")[0])
        expected = {*imported_modules([spec.entrypoint]), *invoke_path_modules("local")}
        shipped = {
            name[: -len(".py")].replace("/", ".").removesuffix(".__init__")
            for name in _names(path)
            if name.split("/")[0] in {"aiaas", "adapters", "functions"} and name.endswith(".py")
        }
        assert shipped == expected, key


def test_packaging_is_deterministic(
    probe_function: FunctionSetup,
    packaged: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Packaged again from the filled wheel cache, with no index to ask (pip is pointed at a
    closed port on 127.0.0.1): the same bytes."""
    config = load_config(probe_function.env["AIAAS_CONFIG"], env={})
    manifest = read_manifest_file(Path(probe_function.env["AIAAS_MANIFEST"]))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    again = package_function(
        config, manifest, "aws", tmp_path / "again.zip", allow_local=True,
        wheel_cache=shared_wheel_cache(),
    ).path  # fmt: skip
    assert again.read_bytes() == packaged["aws-x86_64"].read_bytes()


def test_the_aws_zip_runs_on_its_own(
    probe_function: FunctionSetup, packaged: dict[str, Path], tmp_path: Path
) -> None:
    root = _unzip(packaged["aws-x86_64"], tmp_path / "task")
    event = function_url_event(
        '{"inputs": [{"value": 4}]}', headers={"authorization": f"Bearer {probe_function.api_key}"}
    )
    code = (
        "import json, sys\n"
        "from functions.aws_lambda import handler\n"
        f"response = handler(json.loads({json.dumps(json.dumps(event))}), None)\n"
        # what a first request does not need: the model stack, a cloud SDK, and (cut from the
        # cold start) the YAML parser and SQLite, which only local deployments use
        "unneeded = ('torch', 'transformers', 'boto3', 'yaml', 'sqlite3')\n"
        "heavy = [m for m in unneeded if m in sys.modules]\n"
        "ours = [m for m in sys.modules if m.split('.')[0] in ('aiaas', 'adapters')]\n"
        "print(json.dumps({'response': response, 'heavy': heavy, 'path': sys.path,\n"
        "                  'ours': ours}))\n"
    )
    # -S: no site-packages at all; only the zip's own files are importable, as in Lambda.
    # The project's config as the zip carries it (JSON), but in the project folder, so the
    # local provider finds the probe deployment's state there.
    packed = json.loads((root / "aiaas.json").read_text())
    project_config = Path(probe_function.env["AIAAS_CONFIG"]).with_name("aiaas.json")
    project_config.write_text(json.dumps(packed))
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(root),
        "AIAAS_CONFIG": str(project_config),
        "AIAAS_API_KEYS": probe_function.env["AIAAS_API_KEYS"],
        "HOME": str(tmp_path),
    }
    # cwd=root too: `-c` puts the working directory first on sys.path, as Lambda's task root is.
    cmd = [sys.executable, "-S", "-c", code]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=root)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert not [p for p in result["path"] if "site-packages" in p or p.startswith("/work/main")]
    assert result["response"]["statusCode"] == 200, result["response"]
    assert json.loads(result["response"]["body"])["outputs"][0]["value"] == 8.0
    # What answered the call is what was derived for the zip (the walk also ships what only
    # lazy imports reach, so the derived set can be larger, never smaller).
    derived = set(invoke_path_modules("local")) | set(imported_modules(["functions.aws_lambda"]))
    assert set(result["ours"]) <= derived
    assert set(HAND_KEPT["local"]) <= set(result["ours"])  # the invoke path ran from the zip


# What still imports pydantic at a packaged function's cold start: the function tier's
# modules import the name Manifest (for annotations) from aiaas.manifest, a pydantic model,
# and adapters/local/state.py imports NAME_PATTERN from aiaas.config. Each is one import
# line in files this change could not edit (docs/benchmarks.md, "Function tier overhead").


def test_the_aws_zip_starts_and_answers_without_pydantic(
    probe_function: FunctionSetup, packaged: dict[str, Path], tmp_path: Path
) -> None:
    """The packaged config and manifest were validated in full by `aiaas function package`:
    the cold start reads them without pydantic (~40 ms of it), and so does the first call,
    with an AIAAS_* override of a key the function reads (checked by hand, naming it)."""
    root = _unzip(packaged["aws-x86_64"], tmp_path / "task")
    packed = json.loads((root / "aiaas.json").read_text())
    project_config = Path(probe_function.env["AIAAS_CONFIG"]).with_name("aiaas.json")
    project_config.write_text(json.dumps(packed))
    event = function_url_event(
        '{"inputs": [{"value": 4}]}', headers={"authorization": f"Bearer {probe_function.api_key}"}
    )
    code = (
        "import json, sys\n"
        "from functions.aws_lambda import handler\n"
        "cold = 'pydantic' in sys.modules\n"
        f"response = handler(json.loads({json.dumps(json.dumps(event))}), None)\n"
        "print(json.dumps({'status': response['statusCode'], 'cold': cold,\n"
        "                  'after': 'pydantic' in sys.modules}))\n"
    )
    env = {
        "PATH": os.environ["PATH"], "PYTHONPATH": str(root), "HOME": str(tmp_path),
        "AIAAS_CONFIG": str(project_config),
        "AIAAS_API_KEYS": probe_function.env["AIAAS_API_KEYS"],
        "AIAAS_FUNCTION__INVOKE_TIMEOUT_S": "20",
    }  # fmt: skip
    cmd = [sys.executable, "-S", "-c", code]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=root)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "cold": False, "after": False}
    bad = {**env, "AIAAS_FUNCTION__INVOKE_TIMEOUT_S": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=bad, timeout=60, cwd=root)
    assert done.returncode != 0
    assert "AIAAS_FUNCTION__INVOKE_TIMEOUT_S (overrides" in done.stderr
    assert "function.invoke_timeout_s: Input should be greater than 0" in done.stderr


def test_bad_target_arch_and_limit(
    probe_function: FunctionSetup,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config(probe_function.env["AIAAS_CONFIG"], env={})
    manifest = read_manifest_file(Path(probe_function.env["AIAAS_MANIFEST"]))
    with pytest.raises(ConfigError, match="--target gcp"):
        package_function(config, manifest, "gcp", tmp_path / "x.zip", allow_local=True)
    with pytest.raises(ConfigError, match="--arch sparc"):
        package_function(config, manifest, "aws", tmp_path / "x.zip", arch="sparc")
    with pytest.raises(ConfigError, match=r"--python 3\.9: aiaas needs Python 3\.11 or newer"):
        package_function(config, manifest, "aws", tmp_path / "x.zip", python="3.9")
    with pytest.raises(ConfigError, match=r"--python three: give major\.minor"):
        package_function(config, manifest, "aws", tmp_path / "x.zip", python="three")
    with pytest.raises(ConfigError, match="--target local: use one of aws, azure, alibaba"):
        package_function(config, manifest, "local", tmp_path / "x.zip", allow_local=True)
    import functions.platforms.aws as aws

    assert aws.PLATFORM.package is not None
    tiny = aws.PLATFORM.package._replace(max_zip_bytes=1024)
    monkeypatch.setattr(aws, "PLATFORM", aws.PLATFORM._replace(package=tiny))
    # Refused before any bytecode is compiled: the zip without it is already too large.
    with pytest.raises(
        BundleError,
        match=r"would be at least .* MB before its bytecode; the limit is 0 MB \(Lambda",
    ):
        package_function(
            config, manifest, "aws", tmp_path / "x.zip", allow_local=True,
            wheel_cache=shared_wheel_cache(),
        )  # fmt: skip
    assert not (tmp_path / "x.zip").exists()


def test_local_provider_is_refused_unless_asked_for(
    probe_function: FunctionSetup, tmp_path: Path
) -> None:
    """A zip for provider: local would call 127.0.0.1 from the cloud."""
    config = load_config(probe_function.env["AIAAS_CONFIG"], env={})
    manifest = read_manifest_file(Path(probe_function.env["AIAAS_MANIFEST"]))
    with pytest.raises(ConfigError, match=r"provider: local: .*127\.0\.0\.1.*--allow-local"):
        package_function(config, manifest, "aws", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
    cli = _cli_project(probe_function)
    cmd = [
        str(cli),
        "function",
        "package",
        "--target",
        "aws",
        "-c",
        probe_function.env["AIAAS_CONFIG"],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "--allow-local" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_every_module_ships_unchecked_hash_bytecode_for_the_target_python(
    packaged: dict[str, Path],
) -> None:
    """Lambda's task root is read-only: without .pyc every cold start compiles every module."""
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    for key, path in packaged.items():
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            sources = [n for n in names if n.endswith(".py")]
            for source in sources:
                folder, _, file = source.rpartition("/")
                pyc = f"{folder}/__pycache__/{file[:-3]}.{tag}.pyc".lstrip("/")
                assert pyc in names, f"{key}: {source} has no {pyc}"
            header = zf.read(f"functions/__pycache__/app.{tag}.pyc")[:8]
        # PEP 552: flags 0b01 = hash-based, check_source off (the 1980 dates do not matter)
        assert int.from_bytes(header[4:8], "little") == 0b01, key
        assert header[:4] == importlib.util.MAGIC_NUMBER


def test_the_shipped_bytecode_is_what_runs(
    probe_function: FunctionSetup, packaged: dict[str, Path], tmp_path: Path
) -> None:
    """Change a source file after packaging: the unchecked .pyc still runs, so it is used."""
    root = _unzip(packaged["aws-x86_64"], tmp_path / "task")
    edge = root / "functions" / "edge.py"
    edge.write_text(edge.read_text() + "\nRAN_FROM_SOURCE = True\n")
    code = "import functions.edge as e; print(hasattr(e, 'RAN_FROM_SOURCE'))"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(root), "HOME": str(tmp_path)}
    # -B: write no bytecode, as on Lambda's read-only /var/task.
    done = subprocess.run(
        [sys.executable, "-S", "-B", "-c", code], capture_output=True, text=True, env=env,
        cwd=root, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_packaging_says_what_the_platform_must_set(
    probe_function: FunctionSetup, packaged: dict[str, Path], tmp_path: Path
) -> None:
    cli = _cli_project(probe_function)
    out = tmp_path / "fn.zip"
    cmd = [str(cli), "function", "package", "--target", "aws", "--allow-local", "-o", str(out),
           "-c", probe_function.env["AIAAS_CONFIG"]]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "handler: functions.aws_lambda.handler (runtime python3.11" in done.stdout
    assert "AIAAS_API_KEYS  required" in done.stdout


def _cli_project(setup: FunctionSetup) -> Path:
    """Put the fixture's bundle where the CLI looks for it; return the ``aiaas`` executable."""
    project = Path(setup.env["AIAAS_CONFIG"]).parent
    (project / "dist").mkdir(exist_ok=True)
    shutil.copyfile(project.parent / "probe.tar.gz", project / "dist" / "model.tar.gz")
    return Path(sys.executable).parent / "aiaas"


def test_the_packaged_config_is_the_projects_as_json(
    probe_function: FunctionSetup, packaged: dict[str, Path], tmp_path: Path
) -> None:
    """The zip carries aiaas.yaml as aiaas.json: the same config, read without YAML."""
    with zipfile.ZipFile(packaged["aws-x86_64"]) as zf:
        (tmp_path / "aiaas.json").write_bytes(zf.read("aiaas.json"))
    from_json = load_config(tmp_path / "aiaas.json", env={"AIAAS_SERVER__MAX_QUEUE_SIZE": "7"})
    from_yaml = load_config(probe_function.env["AIAAS_CONFIG"], env={})
    assert from_json.model_dump() == {**from_yaml.model_dump(), "server": {
        **from_yaml.server.model_dump(), "max_queue_size": 7}}  # fmt: skip
    (tmp_path / "broken.json").write_text('{"model": ')
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON"):
        load_config(tmp_path / "broken.json", env={})


def test_a_tampered_bundle_is_not_packaged(probe_function: FunctionSetup, tmp_path: Path) -> None:
    """The edge enforces the packaged manifest's schemas: it must be the bundle's own."""
    cli = _cli_project(probe_function)
    model = Path(probe_function.env["AIAAS_CONFIG"]).parent / "dist" / "model.tar.gz"
    tampered_archive(model, tmp_path / "t.tar.gz", {"code/probe_model.py": b"# edited\n"})
    shutil.copyfile(tmp_path / "t.tar.gz", model)
    cmd = [str(cli), "function", "package", "--target", "aws", "--allow-local"]
    cmd += ["-o", str(tmp_path / "fn.zip"), "-c", probe_function.env["AIAAS_CONFIG"]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "code/probe_model.py" in done.stderr, done.stderr
    assert not (tmp_path / "fn.zip").exists()


def test_the_packaged_config_is_the_one_that_was_checked(probe_function: FunctionSetup) -> None:
    """``--provider`` and ``AIAAS_*`` overrides of the build go into the zip's aiaas.json:
    the provider whose adapter was packaged is the one the function starts with."""
    config = load_config(
        probe_function.env["AIAAS_CONFIG"], env={"AIAAS_SERVER__MAX_QUEUE_SIZE": "3"}
    )
    config.provider = "other"  # what `--provider other` does
    packed = json.loads(function_config_json(config))
    assert packed["provider"] == "other" and packed["server"] == {"max_queue_size": 3}
    assert "function" not in packed  # defaults stay defaults: not frozen into the zip


def _unzip(zip_path: Path, root: Path) -> Path:
    """The zip unpacked into ``root``, as Lambda lays it out in its task root."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root)
    return root


def test_a_truncated_cache_record_is_a_miss_not_an_error(tmp_path: Path) -> None:
    """A packaging killed while writing the wheel cache's record leaves it unreadable: the
    next one downloads again instead of failing on it (the cache lives between runs)."""
    from functions.packaging import _resolved_names

    record = tmp_path / "resolved-0123.json"
    record.write_text('["httpx-0.28.1-py3-none-any.whl", "h11-')
    assert _resolved_names(record) == []
    record.write_text('["httpx-0.28.1-py3-none-any.whl"]')
    assert _resolved_names(record) == ["httpx-0.28.1-py3-none-any.whl"]
    assert _resolved_names(tmp_path / "missing.json") == []
