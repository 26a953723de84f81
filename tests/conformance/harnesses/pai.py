"""The ``pai`` provider under the conformance suite, against the emulated Alibaba Cloud.

:class:`emulators.alibaba.AlibabaEmulator` stands in for EAS's control plane (every call
ACS3-verified) and gateway, and OSS (V4-verified); each service version runs the bundle
through the container entrypoint with EAS's layout. What the provider wrote is counted at
the emulators (every EAS write, and every OSS object), and which versions still run is read
from the emulator's services, not from the provider. Throttling is the gateway answering 429
(EAS's ``rpc.rate_limit``).

A function's invoke path is configured with one service's endpoint and token
(``AIAAS_PAI_ENDPOINT``, ``AIAAS_PAI_TOKEN``), known once the service exists; the suite's
invoker serves every deployment name, so it takes each service's token from DescribeService
as the function's configuration would have it (:class:`_TokenOfService`), with the emulator's
gateway as the endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Generator, Hashable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from adapters.base import Invoker, Provider
from adapters.pai import names
from adapters.pai.invoke import PaiInvoker
from adapters.pai.provider import PaiProvider, version_of_config
from adapters.pai.settings import PaiSection
from conformance.harness import Harness, register
from emulators.alibaba import PREDICT_PREFIX, AlibabaEmulator

IMAGE = "registry-vpc.cn-hangzhou.aliyuncs.com/aiaas/aiaas-server:1.0"
CPU_TYPE = "ecs.c6.large"  # the emulated container runs the CPU build here


def pai_yaml(emulator: AlibabaEmulator, prefix: str) -> str:
    """A ``pai:`` section for the emulator (a CPU instance type), polling fast, with EAS's
    queue (2 running + 2 queued per instance) within the server's queue of 4."""
    s = emulator.settings()
    return (
        "pai:\n"
        f"  region: {s['region']}\n"
        f"  endpoint: '{s['endpoint']}'\n"
        f"  protocol: {s['protocol']}\n"
        f"  oss_endpoint: '{s['oss_endpoint']}'\n"
        f"  oss_bucket: {s['oss_bucket']}\n"
        f"  image: {IMAGE}\n  instance_type: {CPU_TYPE}\n  prefix: {prefix}\n"
        "  rpc:\n    max_queue_size: 2\n    worker_threads: 2\n"
        "  poll_interval_s: 0.05\n  deploy_timeout_s: 120\n"
    )


class _TokenOfService(httpx.Auth):
    """``Authorization: <token>`` of the service a prediction goes to (read from
    DescribeService through the emulator); a token of no service where there is none."""

    def __init__(self, emulator: AlibabaEmulator) -> None:
        self.emulator = emulator

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        path = request.url.path
        if path.startswith(PREDICT_PREFIX):
            service = path[len(PREDICT_PREFIX) :].split("/", 1)[0]
            request.headers["Authorization"] = token_of(self.emulator, service) or "no-service"
        yield request


def token_of(emulator: AlibabaEmulator, service: str) -> str | None:
    """The service's AccessToken (DescribeService), or None when there is no such service."""
    body = _described(emulator, service)
    return None if body is None else str(body.access_token or "") or None


def _described(emulator: AlibabaEmulator, service: str) -> Any:
    """DescribeService's body, or None when EAS answers ``InvalidService.NotFound``; any other
    failure (another refusal, a bug) is raised."""
    from alibaba_emulated import eas_client, sdk_error_code

    try:
        return eas_client(emulator).describe_service(emulator.region, service).body
    except Exception as err:
        if sdk_error_code(err) == "InvalidService.NotFound":
            return None
        raise


class _SuiteInvoker(PaiInvoker):
    """:class:`PaiInvoker` whose token is each service's own."""

    emulator: AlibabaEmulator

    def auth(self) -> httpx.Auth:
        return _TokenOfService(self.emulator)


@register
class PaiHarness(Harness):
    """``provider: pai`` against the emulated EAS and OSS."""

    name = "pai"
    alibaba: AlibabaEmulator

    def start(self) -> None:
        for variable in list(os.environ):  # nothing of this machine's Alibaba Cloud
            if variable.startswith("ALIBABA_CLOUD_"):
                self._saved_env.setdefault(variable, os.environ.pop(variable))
        home = self.workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.setenv("HOME", str(home))
        self.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        self.alibaba = AlibabaEmulator(self.workdir / "alibaba")
        self.alibaba.start()
        for key, value in self.alibaba.env().items():
            self.setenv(key, value)

    def config_yaml(self) -> str:
        return (
            "provider: pai\n"
            + pai_yaml(self.alibaba, "conformance")
            + "server:\n  max_queue_size: 4\n  queue_wait_ms: 0\n"
        )

    def make_invoker(self) -> Invoker:
        invoker = _SuiteInvoker.for_control_plane(
            self._settings(),
            endpoint=self.alibaba.url,
            token="per-service",
            credentials=lambda: _credentials(self.alibaba),
        )
        assert isinstance(invoker, _SuiteInvoker)
        invoker.emulator = self.alibaba
        self._opened.append(invoker)
        return invoker

    def _objects(self) -> tuple[tuple[str, int], ...]:
        found = self.alibaba.oss.objects(self.alibaba.bucket, "")
        return tuple(sorted((key, len(data)) for key, data in found.items()))

    def writes(self) -> Hashable:
        return tuple(self.alibaba.writes()), self._objects()

    def running_versions(self, name: str) -> set[str]:
        service = names.service_name(name, self._settings())
        body = _described(self.alibaba, service)
        if body is None or not body.running_instance:
            return set()
        config: Any = json.loads(body.service_config or "{}")
        version = version_of_config(config) if isinstance(config, dict) else None
        return {version} if version else set()

    @contextlib.contextmanager
    def throttled(self, name: str) -> Iterator[None]:
        service = names.service_name(name, self._settings())
        self.alibaba.fault(service, 429)
        try:
            yield
        finally:
            self.alibaba.clear_faults()

    def foreign(self, name: str, bundle: Path) -> AbstractContextManager[None]:
        # Another project in the region: another prefix, so another project label and
        # another service name (the hash covers the prefix).
        return self.another_projects_deployment(name, bundle)

    def _settings(self) -> PaiSection:
        return self.config.provider_settings("pai", PaiSection)

    def clients_closed(self, provider: Provider) -> bool:
        assert isinstance(provider, PaiProvider)
        return not provider.clients_open

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if hasattr(self, "alibaba"):
                self.alibaba.stop()


def _credentials(emulator: AlibabaEmulator) -> Any:
    from adapters.auth import AlibabaCredentials

    return AlibabaCredentials(emulator.access_key_id, emulator.access_key_secret)
