"""A function reads its packaged config and manifest without pydantic (:mod:`aiaas.packaged`),
and what it reads is what :func:`aiaas.config.load_config` and
:func:`aiaas.manifest.read_manifest_file` read, overrides and their messages included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aiaas.bundle import BuiltBundle
from aiaas.config import ProjectConfig, load_config
from aiaas.errors import BundleError, ConfigError
from aiaas.manifest import Manifest, read_manifest_file
from aiaas.packaged import (
    _OVERRIDES,
    CONFIG_KEYS,
    FunctionConfig,
    function_config,
    read_manifest_view,
)

SAGEMAKER = {
    "role_arn": "arn:aws:iam::123456789012:role/r",
    "bucket": "b-1",
    "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/aiaas:1",
}


def _packaged(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "aiaas.json"
    path.write_text(json.dumps({"model": {"entrypoint": "m:M"}, **config}))
    return path


def _same(light: FunctionConfig, full: FunctionConfig) -> None:
    assert light.project is None and full.project is not None
    for key in ("provider", "root", "state_path", "function", "max_items_per_request"):
        assert getattr(light, key) == getattr(full, key), key
    assert light.pricing == full.pricing


def test_the_core_keys_are_the_configs_fields() -> None:
    assert set(CONFIG_KEYS) == set(ProjectConfig.model_fields)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"state_dir": "st", "function": {"invoke_timeout_s": 3, "auth": "platform"}},
        {"server": {"max_items_per_request": 9}, "pricing": {"endpoint_hourly_usd": 2.5}},
        {"local": {"host": "127.0.0.2"}},
    ],
)
def test_a_packaged_local_config_reads_as_load_config_reads_it(
    tmp_path: Path, config: dict[str, object]
) -> None:
    path = _packaged(tmp_path, config)
    light = function_config(path, env={})
    _same(light, FunctionConfig.of(load_config(path, env={})))
    assert light.settings.host == FunctionConfig.of(load_config(path, env={})).settings.host


@pytest.mark.parametrize(
    "section",
    [
        SAGEMAKER,
        {**SAGEMAKER, "region": "eu-west-1", "instance_type": "ml.m5.xlarge"},
        {**SAGEMAKER, "serverless": {}},
        {**SAGEMAKER, "serverless": {"memory_mb": 4096}},
    ],
)
def test_a_packaged_sagemaker_config_prices_and_limits_as_its_pydantic_section(
    tmp_path: Path, section: dict[str, object]
) -> None:
    from aiaas.plugins import provider_spec

    path = _packaged(tmp_path, {"provider": "sagemaker", "sagemaker": section})
    light = function_config(path, env={})
    full = FunctionConfig.of(load_config(path, env={}))
    _same(light, full)
    spec = provider_spec("sagemaker")
    assert spec.price(light.settings) == spec.price(full.settings)
    assert spec.limits(light.settings) == spec.limits(full.settings)
    assert light.settings.region == full.settings.region
    assert light.settings.instance == full.settings.instance


VALUES = ["5", " 5 ", "5.0", "5.5", "1e3", "+5", "-1", "0", "0.0", "nan", "inf", "1_000"]
VALUES += ["abc", "", "5x", "0x10", "٣", "api_key", "platform", "API_KEY"]


@pytest.mark.parametrize("key", sorted(_OVERRIDES))
def test_an_override_is_checked_at_start_with_load_configs_message(
    tmp_path: Path, key: tuple[str, ...]
) -> None:
    path = _packaged(tmp_path, {})
    variable = "AIAAS_" + "__".join(part.upper() for part in key)
    for value in VALUES:
        env = {variable: value}
        try:
            expected: object = FunctionConfig.of(load_config(path, env=env))
        except ConfigError as exc:
            expected = str(exc)
        try:
            got: object = function_config(path, env=env)
        except ConfigError as exc:
            got = str(exc)
        if isinstance(expected, str) or isinstance(got, str):
            assert got == expected, (variable, value)
        else:
            assert isinstance(got, FunctionConfig) and isinstance(expected, FunctionConfig)
            assert got.project is None  # read without pydantic
            _same(got, expected)


def test_an_override_of_another_key_is_validated_by_load_config(tmp_path: Path) -> None:
    path = _packaged(tmp_path, {})
    read = function_config(path, env={"AIAAS_SERVER__MAX_QUEUE_SIZE": "3"})
    assert read.project is not None and read.project.server.max_queue_size == 3
    with pytest.raises(ConfigError, match=r"AIAAS_SERVER__MAX_QUEUE_SIZE .*max_queue_size"):
        function_config(path, env={"AIAAS_SERVER__MAX_QUEUE_SIZE": "0"})
    with pytest.raises(ConfigError, match=r"AIAAS_PROVIDER .*unknown provider 'nope'"):
        function_config(path, env={"AIAAS_PROVIDER": "nope"})
    with pytest.raises(ConfigError, match=r"AIAAS_LOCAL__HOST .*local\.host"):
        function_config(path, env={"AIAAS_LOCAL__HOST": "10.0.0.1"})
    # Other AIAAS_* variables are not config keys: the light path stays.
    other = {"AIAAS_API_KEYS": "x", "AIAAS_DEPLOYMENT": "d", "AIAAS_CONFIG": str(path)}
    assert function_config(path, env=other).project is None


def test_naming_the_packaged_provider_again_keeps_the_light_path(tmp_path: Path) -> None:
    """The IaC templates set AIAAS_PROVIDER to the packaged provider (it documents it): the
    same provider is no override, another one is load_config's to read."""
    path = _packaged(tmp_path, {"provider": "sagemaker", "sagemaker": SAGEMAKER})
    same = function_config(path, env={"AIAAS_PROVIDER": "sagemaker"})
    assert same.project is None and same.provider == "sagemaker"
    _same(same, FunctionConfig.of(load_config(path, env={"AIAAS_PROVIDER": "sagemaker"})))
    other = function_config(path, env={"AIAAS_PROVIDER": "local"})
    assert other.project is not None and other.provider == "local"


def test_a_missing_or_broken_packaged_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"aiaas\.json: config file not found"):
        function_config(tmp_path / "aiaas.json", env={})
    (tmp_path / "aiaas.json").write_text('{"model": ')
    with pytest.raises(ConfigError, match=r"aiaas\.json: not valid JSON"):
        function_config(tmp_path / "aiaas.json", env={})


def test_a_packaged_manifest_reads_as_the_full_one(
    probe_bundle: BuiltBundle, tmp_path: Path
) -> None:
    manifest: Manifest = probe_bundle.manifest
    path = tmp_path / "aiaas-manifest.json"
    path.write_text(manifest.model_dump_json(indent=2))
    view, full = read_manifest_view(path), read_manifest_file(path)
    for key in ("name", "version", "digest", "entrypoint", "input_schema", "output_schema"):
        assert getattr(view, key) == getattr(full, key), key
    assert view.example_request == full.example_request
    with pytest.raises(BundleError, match=r"cannot read the manifest"):
        read_manifest_view(tmp_path / "nope.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "name": 3}))
    with pytest.raises(BundleError, match=r"aiaas-manifest\.json: name: Input should be"):
        read_manifest_view(path)


def test_the_light_modules_do_not_import_pydantic() -> None:
    """What a cold start loads of these packages, and the packaged config and manifest
    readers, load no pydantic (a fresh interpreter: this one has it)."""
    code = (
        "import sys\n"
        "import aiaas, aiaas.packaged, aiaas.plugins, aiaas.protocol, aiaas.pricing\n"
        "import adapters, adapters.base, adapters.local, adapters.sagemaker\n"
        "from aiaas.plugins import installed_providers\n"
        "installed_providers()\n"
        "print(','.join(m for m in ('pydantic', 'aiaas.config', 'aiaas.manifest',"
        " 'aiaas.model') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
