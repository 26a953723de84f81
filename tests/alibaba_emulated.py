"""The emulated Alibaba Cloud that PAI-EAS tests share: one :class:`AlibabaEmulator` per test
module (EAS's control plane and gateway, OSS), its variables set in this process, real
clients pointed at it (alibabacloud-eas20210701 through tea-openapi, alibabacloud-oss-v2).

Network safety (``../shared/notes/azure-pai-2026-12.md`` §6): alibabacloud-credentials reads
its variables when it is imported, reads ``~/.aliyun`` and ``~/.alibabacloud``, and with no
access key in the environment contacts the ECS metadata address (100.100.100.200).
:func:`emulated_alibaba` therefore removes every ``ALIBABA_CLOUD_*`` variable of this machine,
sets ``ALIBABA_CLOUD_ECS_METADATA_DISABLED=true``, the emulator's access key and an isolated
``HOME`` before anything imports an Alibaba Cloud package (the helpers here import them
lazily, and the clients are given the key explicitly as well).

Test modules import what they use: ``from alibaba_emulated import alibaba, ...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.alibaba import AlibabaEmulator

MOUNT_PATH = "/models"
IMAGE = "registry-vpc.cn-hangzhou.aliyuncs.com/aiaas/aiaas:latest"


@contextlib.contextmanager
def emulated_alibaba(workdir: Path, **options: Any) -> Iterator[AlibabaEmulator]:
    """An :class:`AlibabaEmulator` started in ``workdir`` (``options``: the emulator's) with no
    Alibaba Cloud variable of this machine left, ECS metadata off, an isolated ``HOME`` and
    the emulator's :meth:`~AlibabaEmulator.env` set in this process until it stops."""
    workdir = Path(workdir)
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("ALIBABA_CLOUD_"):
                mp.delenv(name)
        mp.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        mp.setenv("HOME", str(home))
        emulator = AlibabaEmulator(workdir / "cloud", **options)
        emulator.start()
        try:
            for key, value in emulator.env().items():
                mp.setenv(key, value)
            yield emulator
        finally:
            emulator.stop()


@pytest.fixture(scope="module")
def alibaba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlibabaEmulator]:
    """The module's emulated Alibaba Cloud, its variables set."""
    with emulated_alibaba(tmp_path_factory.mktemp("alibaba")) as emulator:
        yield emulator


# -- real clients -------------------------------------------------------------------------------
def eas_client(emulator: AlibabaEmulator, secret: str | None = None) -> Any:
    """alibabacloud-eas20210701's ``Client`` on the emulator (``host:port``, http), with the
    emulator's access key (``secret``: another secret)."""
    from alibabacloud_eas20210701.client import Client
    from alibabacloud_tea_openapi import models as open_api

    config = open_api.Config(
        access_key_id=emulator.access_key_id,
        access_key_secret=secret or emulator.access_key_secret,
        region_id=emulator.region,
        endpoint=emulator.endpoint,
        protocol="http",
        read_timeout=10000,
        connect_timeout=2000,
    )
    return Client(config)


def oss_client(emulator: AlibabaEmulator, secret: str | None = None) -> Any:
    """alibabacloud-oss-v2's ``Client`` on the emulated OSS (path style, no retries)."""
    import alibabacloud_oss_v2 as oss

    config = oss.config.load_default()
    config.credentials_provider = oss.credentials.StaticCredentialsProvider(
        emulator.access_key_id, secret or emulator.access_key_secret
    )
    config.region = emulator.region
    config.endpoint = emulator.oss_endpoint
    config.use_path_style = True
    config.retry_max_attempts = 1
    return oss.Client(config)


def upload(emulator: AlibabaEmulator, file: Path, prefix: str) -> str:
    """Put ``file`` under ``prefix/`` in the emulator's bucket; the ``oss://`` folder."""
    import alibabacloud_oss_v2 as oss

    prefix = prefix.strip("/")
    request = oss.PutObjectRequest(
        bucket=emulator.bucket, key=f"{prefix}/{file.name}", body=file.read_bytes()
    )
    oss_client(emulator).put_object(request)
    return f"oss://{emulator.bucket}/{prefix}/"


def service_config(name: str, oss_path: str, **overrides: Any) -> dict[str, Any]:
    """A PAI-EAS service config for aiaas's image: the bundle's OSS folder mounted read-only
    at :data:`MOUNT_PATH`, ``AIAAS_MODEL_DIR`` pointing there, the entrypoint on 8080
    (``overrides``: top-level keys replaced)."""
    config: dict[str, Any] = {
        "metadata": {
            "name": name,
            "instance": 1,
            "cpu": 2,
            "memory": 4000,
            "rpc": {"keepalive": 30000, "max_queue_size": 64},
        },
        "cloud": {"computing": {"instances": [{"type": "ecs.c6.large"}]}},
        "containers": [
            {
                "image": IMAGE,
                "port": 8080,
                "script": "python -m aiaas.runtime.container serve",
                "env": [{"name": "AIAAS_MODEL_DIR", "value": MOUNT_PATH}],
            }
        ],
        "storage": [{"oss": {"path": oss_path, "readOnly": True}, "mount_path": MOUNT_PATH}],
    }
    config.update(overrides)
    return config


def create_service(
    emulator: AlibabaEmulator, config: dict[str, Any], labels: dict[str, str] | None = None
) -> Any:
    """CreateService through the SDK (the body is the config's JSON); the response body."""
    from alibabacloud_eas20210701 import models

    request = models.CreateServiceRequest(body=json.dumps(config), labels=labels)
    return eas_client(emulator).create_service(request).body


def error_code(call: Callable[[], Any]) -> str | None:
    """The code of the Alibaba Cloud SDK error ``call`` raises (None when it succeeds): Tea's
    ``TeaException`` (what alibabacloud-eas20210701 raises, through tea-openapi and darabonba:
    ``ClientException``, ``ServerException``, ``ThrottlingException``, and
    ``UnretryableException`` for a connection that failed, by its type's name), or
    alibabacloud-oss-v2's ``ServiceError`` / ``OperationError`` (the service error inside).
    Anything else propagates: a bug in a test is not a cloud's refusal."""
    try:
        call()
    except Exception as err:
        code = sdk_error_code(err)
        if code is None:
            raise
        return code
    return None


def sdk_error_code(err: BaseException) -> str | None:
    """``err``'s code when it is one of the Alibaba Cloud SDKs' errors (see
    :func:`error_code`), else None."""
    from Tea.exceptions import TeaException  # type: ignore[import-untyped]  # no py.typed

    if isinstance(err, TeaException):
        return str(err.code or type(err).__name__)
    if "alibabacloud_oss_v2" in sys.modules:  # an OSS error comes from an imported SDK
        from alibabacloud_oss_v2.exceptions import OperationError, ServiceError

        if isinstance(err, OperationError):
            inner = err.unwrap()
            return str(getattr(inner, "code", None) or type(inner).__name__)
        if isinstance(err, ServiceError):
            return str(err.code or type(err).__name__)
    return None
