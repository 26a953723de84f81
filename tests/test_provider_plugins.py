"""A new cloud is a package registered under the ``aiaas.providers`` entry-point group.

These tests install a provider the way a third party would (a dist-info with an entry point
and a module on ``sys.path``; importlib.metadata finds it as it finds any distribution) and
check what the core does with it without any edit: its config section, its refusals of
neutral ``deploy:`` keys, its prices and its function-package facts.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiaas.config import load_config
from aiaas.errors import ConfigError
from aiaas.plugins import installed_providers

SPEC_MODULE = """
from typing import Any, Literal
from pydantic import BaseModel, ConfigDict, Field
from aiaas.plugins import ProviderSpec
from aiaas.pricing import Price


class AcmeSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field(pattern=r"^[a-z]+-[0-9]$")
    instance_type: Literal["gpu.small", "gpu.large"] = "gpu.small"


def check_deploy(deploy: Any, settings: Any) -> list[tuple[str, str]]:
    if deploy.rollout.strategy == "linear":
        return [("deploy.rollout.strategy", "acme shifts traffic all at once or by canary")]
    return []


SPEC = ProviderSpec(
    name="acme", settings=AcmeSection,
    control_plane="acme_cloud.control:AcmeProvider", invoker="acme_cloud.invoke:AcmeInvoker",
    price=lambda settings: Price(
        {"gpu.small": 1.5, "gpu.large": 4.0}[settings.instance_type], "hour", "acme", "test"
    ),
    invoke_requirements=("httpx>=0.27",),
    check_deploy=check_deploy,
)
"""

INVOKE_MODULE = """
import httpx  # the invoke path


class AcmeInvoker:
    def sign(self, body: bytes) -> bytes:
        from acme_cloud import signing  # imported on first use: still the invoke path's

        return signing.hmac.new(b"k", body, "sha256").digest()
"""


@pytest.fixture
def acme(tmp_path: Path) -> Iterator[Path]:
    """The ``acme`` provider installed on ``sys.path`` for this test only."""
    site = tmp_path / "site"
    (site / "acme_cloud").mkdir(parents=True)
    (site / "acme_cloud" / "__init__.py").write_text(SPEC_MODULE)
    (site / "acme_cloud" / "invoke.py").write_text(INVOKE_MODULE)
    (site / "acme_cloud" / "signing.py").write_text("import hmac\n")
    (site / "acme_cloud" / "control.py").write_text("import acme_sdk  # the control plane\n")
    dist = site / "acme_cloud-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-cloud\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[aiaas.providers]\nacme = acme_cloud:SPEC\n")
    sys.path.insert(0, str(site))
    installed_providers.cache_clear()
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m.startswith("acme_cloud")]:
            del sys.modules[name]
        installed_providers.cache_clear()


def _config(directory: Path, text: str) -> Path:
    path = directory / "aiaas.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_every_cloud_section_sits_side_by_side_and_one_line_switches(acme: Path) -> None:
    path = _config(
        acme,
        """
        model: {entrypoint: m:M}
        provider: local
        local: {ready_timeout_s: 5}
        acme: {region: eu-1, instance_type: gpu.large}
        """,
    )
    local = load_config(path, env={})
    assert local.provider == "local"
    switched = load_config(path, env={"AIAAS_PROVIDER": "acme"})
    section = switched.provider_settings("acme", installed_providers()["acme"].settings_model())
    assert section.model_dump() == {"region": "eu-1", "instance_type": "gpu.large"}


def test_a_provider_section_is_validated_by_its_own_model_with_the_dotted_key(
    acme: Path,
) -> None:
    path = _config(
        acme, "model: {entrypoint: m:M}\nacme: {region: eu-1, instance_type: gpu.huge}\n"
    )
    with pytest.raises(ConfigError, match=r"aiaas\.yaml: acme\.instance_type: Input should be"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match=r"AIAAS_ACME__REGION \(overrides .*\): acme\.region"):
        load_config(path, env={"AIAAS_ACME__REGION": "Nowhere", "AIAAS_PROVIDER": "acme"})


def test_the_selected_providers_required_settings_are_reported_missing(acme: Path) -> None:
    path = _config(acme, "model: {entrypoint: m:M}\nprovider: acme\n")
    with pytest.raises(ConfigError, match=r"acme\.region: Field required"):
        load_config(path, env={})


def test_a_section_of_a_provider_that_is_not_installed_names_the_installed_ones(
    acme: Path,
) -> None:
    path = _config(acme, "model: {entrypoint: m:M}\nnimbus: {workspace: w}\n")
    with pytest.raises(
        ConfigError, match=r"nimbus: unknown key .*installed providers: acme, azureml, local"
    ):
        load_config(path, env={})
    path = _config(acme, "model: {entrypoint: m:M}\nprovider: nimbus\n")
    with pytest.raises(ConfigError, match=r"provider: unknown provider 'nimbus'; installed: acme"):
        load_config(path, env={})


def test_a_neutral_setting_the_provider_cannot_honour_is_refused_by_key_and_provider(
    acme: Path,
) -> None:
    path = _config(
        acme,
        """
        model: {entrypoint: m:M}
        provider: acme
        acme: {region: eu-1}
        deploy: {rollout: {strategy: linear}}
        """,
    )
    with pytest.raises(
        ConfigError, match=r"deploy\.rollout\.strategy: not supported by provider 'acme': acme"
    ):
        load_config(path, env={})
    # The same neutral section, switched to local: local steps a linear rollout itself.
    assert load_config(path, env={"AIAAS_PROVIDER": "local"}).deploy.rollout.strategy == "linear"
    ok = load_config(path, env={"AIAAS_DEPLOY__ROLLOUT__STRATEGY": "canary"})
    assert ok.deploy.rollout.strategy == "canary" and ok.deploy.rollout.canary_percent == 10


def test_local_refuses_scaling_and_instances_it_cannot_run(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        """
        model: {entrypoint: m:M}
        deploy:
          instance_count: 2
          scaling: {min_instances: 1, max_instances: 4, target_concurrency: 8}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert "deploy.instance_count: not supported by provider 'local'" in message
    assert "deploy.scaling: not supported by provider 'local'" in message


def test_scaling_bounds_are_checked(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "model: {entrypoint: m:M}\ndeploy: {scaling: {min_instances: 3, max_instances: 2}}\n",
    )
    with pytest.raises(ConfigError, match=r"deploy\.scaling: .*max_instances \(2\) is below"):
        load_config(path, env={})


def test_the_packaged_config_carries_only_the_packaged_providers_section(acme: Path) -> None:
    from functions.packaging import function_config_json

    path = _config(
        acme,
        "model: {entrypoint: m:M}\nprovider: acme\nacme: {region: eu-1}\n"
        "local: {ready_timeout_s: 5}\n",
    )
    import json

    packaged = json.loads(function_config_json(load_config(path, env={})))
    assert packaged["acme"] == {"region": "eu-1"} and "local" not in packaged


def test_a_provider_without_a_light_view_is_given_its_validated_section_in_a_function(
    acme: Path,
) -> None:
    """A spec without ``invoke_settings`` still works in a function: its section is validated
    by its model at cold start (pydantic then loads), and its invoke path is built from the
    whole config, as before light views existed."""
    from aiaas.packaged import function_config

    packaged = acme / "aiaas.json"
    packaged.write_text(
        '{"model": {"entrypoint": "m:M"}, "provider": "acme", "acme": {"region": "eu-1"}}'
    )
    read = function_config(packaged, env={})
    assert read.project is not None and read.settings.region == "eu-1"
    assert installed_providers()["acme"].price(read.settings).value == 1.5


def test_a_function_package_carries_the_providers_invoke_path_as_it_imports_it(
    acme: Path,
) -> None:
    """Nothing is listed by hand: the spec names its invoker, and what that module imports
    (lazily too) ships; the control plane, named only by the spec, does not."""
    from functions.packaging import invoke_path_modules

    modules = invoke_path_modules("acme")
    own = [m for m in modules if m.split(".")[0] == "acme_cloud"]
    assert own == ["acme_cloud", "acme_cloud.invoke", "acme_cloud.signing"]
    assert {"aiaas.plugins", "aiaas.pricing"} <= set(modules)  # what the spec imports


@pytest.mark.parametrize(
    ("entry_points", "module", "expected"),
    [
        ("broken = broken_cloud:SPEC", "raise RuntimeError('no SDK')", r"'broken' .*cannot be "
         r"loaded: RuntimeError: no SDK"),
        ("server = broken_cloud:SPEC", "SPEC = None", r"'server' .*one of aiaas\.yaml's own keys"),
        ("bad-name = broken_cloud:SPEC", "SPEC = None", r"'bad-name' .*matches"),
        ("odd = broken_cloud:SPEC", "SPEC = 42", r"'odd' .*is not the ProviderSpec"),
        ("local = broken_cloud:SPEC", "from adapters.local import SPEC",
         r"'local' is installed twice"),
    ],
)  # fmt: skip
def test_a_broken_provider_package_is_named_not_a_traceback(
    tmp_path: Path, entry_points: str, module: str, expected: str
) -> None:
    site = tmp_path / "site"
    (site / "broken_cloud").mkdir(parents=True)
    (site / "broken_cloud" / "__init__.py").write_text(module + "\n")
    dist = site / "broken_cloud-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-cloud\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[aiaas.providers]\n{entry_points}\n")
    sys.path.insert(0, str(site))
    installed_providers.cache_clear()
    try:
        with pytest.raises(ConfigError, match=expected) as caught:
            installed_providers()
        if "twice" not in expected:
            assert "broken-cloud" in str(caught.value)  # the distribution is named
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("broken_cloud", None)
        installed_providers.cache_clear()


@pytest.mark.parametrize("memory", ["lots", "0", "١٢٨", ""])
def test_a_bad_function_memory_variable_is_named(memory: str) -> None:
    from functions.bootstrap import FunctionEnvironment

    with pytest.raises(ConfigError, match="AWS_LAMBDA_FUNCTION_MEMORY_SIZE="):
        FunctionEnvironment.read({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory})
    assert FunctionEnvironment.read({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}).memory_mb == 1769


def test_a_value_set_by_a_variable_deeper_or_around_the_key_names_the_variable(
    tmp_path: Path,
) -> None:
    path = _config(tmp_path, "model: {entrypoint: m:M}\n")
    with pytest.raises(
        ConfigError,
        match=r"AIAAS_DEPLOY__SCALING__MAX_INSTANCES \(overrides .*\): deploy\.scaling: not "
        r"supported by provider 'local'",
    ):
        load_config(path, env={"AIAAS_DEPLOY__SCALING__MAX_INSTANCES": "3"})
    with pytest.raises(
        ConfigError, match=r"AIAAS_SERVER__MAX_QUEUE_SIZE__X \(overrides .*\): server\.max_queue"
    ):
        load_config(path, env={"AIAAS_SERVER__MAX_QUEUE_SIZE__X": "1"})
