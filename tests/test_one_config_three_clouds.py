"""One ``aiaas.yaml``, three clouds: the iris example, with its ``sagemaker``, ``azureml`` and
``pai`` sections side by side, deployed to each emulated cloud in turn by changing only
``AIAAS_PROVIDER``; the three answers to the bundle's example request are the same.

The emulators' endpoints are set once, by this module's fixture, as the variables
``aiaas emulate aws|azure|alibaba`` print (the AWS SDK's endpoint variables, the emulated
ARM/Blob/identity, the EAS and OSS URLs): the file itself holds only what a user writes for
the real clouds. Everything runs through the real clients (boto3, azure-ai-ml, the Alibaba
Cloud SDKs) and each cloud's own invoke path (SigV4, an Entra token, the EAS service token),
with the real model server behind each emulated endpoint. The file is read from the README's
"One config, three clouds" section, so the two cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from alibaba_emulated import emulated_alibaba
from azure_emulated import emulated_azure
from sagemaker_emulated import emulated_aws_in_env

import aiaas
from aiaas.bundle import BuiltBundle, build_bundle
from emulators.alibaba import AlibabaEmulator
from emulators.aws import AwsEmulator
from emulators.azure import AzureEmulator
from emulators.cli import AZURE_WORKSPACE_KEYS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CLOUDS = ("sagemaker", "azureml", "pai")
FAST_POLLING = {f"AIAAS_{cloud.upper()}__POLL_INTERVAL_S": "0.05" for cloud in CLOUDS}
"""The one thing a test changes beside the endpoints: how often deploy polls (emulated
clouds settle in a fraction of a second), as variables: the file stays the README's."""


def readme_yaml() -> str:
    """The ``aiaas.yaml`` the README's "One config, three clouds" section shows."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## One config, three clouds") :]
    return section[section.index("```yaml\n") + len("```yaml\n") : section.index("```\n")]


@pytest.fixture(scope="module")
def clouds(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AwsEmulator, AzureEmulator, AlibabaEmulator]]:
    """The three emulated clouds serving the README file's bucket and workspace names, each
    one's variables set once in this process (and deploy polling fast)."""
    config = yaml.safe_load(readme_yaml())
    work = tmp_path_factory.mktemp("three-clouds")
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        for name, value in FAST_POLLING.items():
            mp.setenv(name, value)
        aws, _ = stack.enter_context(emulated_aws_in_env(work / "aws"))
        with contextlib.closing(aws.client("s3")) as s3:
            s3.create_bucket(Bucket=config["sagemaker"]["bucket"])
        workspace = {k: config["azureml"][k] for k in AZURE_WORKSPACE_KEYS}
        azure = stack.enter_context(emulated_azure(work / "azure", **workspace))
        pai = config["pai"]
        alibaba = stack.enter_context(
            emulated_alibaba(work / "alibaba", region=pai["region"], bucket=pai["oss_bucket"])
        )
        yield aws, azure, alibaba


@pytest.fixture(scope="module")
def project(
    clouds: tuple[AwsEmulator, AzureEmulator, AlibabaEmulator],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, BuiltBundle]:
    """The iris example with the README's file, and its bundle, built once."""
    root = tmp_path_factory.mktemp("iris") / "iris"
    shutil.copytree(EXAMPLES / "iris", root)
    (root / "aiaas.yaml").write_text(readme_yaml())
    return root, build_bundle(root)  # where `aiaas invoke` finds its example


def test_one_config_deploys_to_three_clouds_with_the_same_answer(
    clouds: tuple[AwsEmulator, AzureEmulator, AlibabaEmulator],
    project: tuple[Path, BuiltBundle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws, azure, alibaba = clouds
    root, bundle = project
    text = (root / "aiaas.yaml").read_text()
    answers: dict[str, object] = {}
    for cloud in CLOUDS:
        monkeypatch.setenv("AIAAS_PROVIDER", cloud)  # the only thing that changes
        deployment = aiaas.deploy(root, bundle=bundle.path)
        assert deployment.provider == cloud
        assert deployment.version == bundle.manifest.version
        answer = aiaas.invoke(root)  # the bundle's example request, through the cloud's path
        assert answer.version == bundle.manifest.version
        answers[cloud] = json.loads(answer.body)
    assert (root / "aiaas.yaml").read_text() == text  # nothing was written into the file

    # Each answer came from that cloud's own endpoint, not from one another's.
    assert any(c.status == 200 for c in aws.runtime_calls)
    assert any(c.status == 200 for c in azure.scoring_calls())
    assert any(c.status == 200 for c in alibaba.predict_calls())
    first = answers["sagemaker"]
    assert isinstance(first, dict) and first["outputs"][0]["label"] == "setosa", first
    assert answers["azureml"] == first and answers["pai"] == first

    for cloud in CLOUDS:
        monkeypatch.setenv("AIAAS_PROVIDER", cloud)
        assert aiaas.delete(root) is True
