"""The emulated PAI-EAS and OSS (emulators/alibaba.py, emulators/oss.py, emulators/acs3.py)
through the real SDK clients: alibabacloud-eas20210701 7.0.0 and alibabacloud-oss-v2 1.4.1.

One emulator for the module; one service whose containers run aiaas's entrypoint (two
container starts in all: the create and a rollback)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alibaba_emulated import (
    MOUNT_PATH,
    alibaba,
    create_service,
    eas_client,
    error_code,
    oss_client,
    service_config,
    upload,
)

from aiaas.bundle import BuiltBundle
from emulators.acs3 import verify_acs3
from emulators.alibaba import AlibabaEmulator

__all__ = ["alibaba"]  # the fixture, imported for pytest

SERVICE = "aiaas_probe"
PREDICT = {"inputs": [{"value": 2.0}]}


@dataclass(frozen=True)
class Live:
    """The module's running service."""

    endpoint: str
    token: str
    oss_path: str


def predict(live: Live, token: str | None, body: Any = PREDICT) -> httpx.Response:
    headers = {} if token is None else {"Authorization": token}
    return httpx.post(live.endpoint, json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def live(alibaba: AlibabaEmulator, probe_bundle: BuiltBundle) -> Live:
    oss_path = upload(alibaba, probe_bundle.path, "aiaas/probe/sha256-1")
    created = create_service(
        alibaba, service_config(SERVICE, oss_path), labels={"aiaas:project": "probe"}
    )
    assert created.status == "Creating"
    assert alibaba.wait(SERVICE) == "Running", alibaba.container_output(SERVICE)
    described = eas_client(alibaba).describe_service(alibaba.region, SERVICE).body
    return Live(described.internet_endpoint, described.access_token, oss_path)


# -- signatures ---------------------------------------------------------------------------------
def test_eas_verifies_acs3_and_refuses_a_wrong_secret(alibaba: AlibabaEmulator) -> None:
    from alibabacloud_eas20210701 import models

    assert os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] == "true"
    assert Path(os.environ["HOME"]).is_relative_to(alibaba.workdir.parent)  # isolated
    assert alibaba.settings()["endpoint"] == alibaba.endpoint  # host:port, no scheme
    specs = eas_client(alibaba).describe_machine_spec(models.DescribeMachineSpecRequest()).body
    assert "ecs.c6.large" in [m.instance_type for m in specs.instance_metas]
    call = alibaba.calls()[-1]
    assert (call.action, call.method, call.status) == ("DescribeMachineSpec", "GET", 200)
    wrong = eas_client(alibaba, secret="not-the-secret")
    assert error_code(lambda: wrong.describe_service(alibaba.region, SERVICE)) == (
        "SignatureDoesNotMatch"
    )
    assert alibaba.calls()[-1].code == "SignatureDoesNotMatch"
    assert alibaba.calls()[-1].status == 400


def test_error_code_reads_only_the_sdks_errors(alibaba: AlibabaEmulator) -> None:
    from alibabacloud_eas20210701 import models

    client = eas_client(alibaba)
    request = models.DescribeMachineSpecRequest()
    assert error_code(lambda: client.describe_machine_spec(request)) is None
    with pytest.raises(ZeroDivisionError):  # a bug in a test is not a cloud's refusal
        error_code(lambda: 1 / 0)


def test_acs3_verifier_refuses_unsigned_and_stale_requests() -> None:
    headers = {"Authorization": "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,Signature=x"}
    assert verify_acs3("GET", "/", "", headers, b"", {"AK": "SK"}) == "InvalidTimeStamp.Expired"
    assert verify_acs3("GET", "/", "", {}, b"", {"AK": "SK"}) == "MissingAuthorization"


def test_oss_verifies_v4_and_refuses_a_wrong_secret(alibaba: AlibabaEmulator) -> None:
    import alibabacloud_oss_v2 as oss

    client = oss_client(alibaba)
    client.put_object(oss.PutObjectRequest(bucket=alibaba.bucket, key="t/a b.txt", body=b"hi"))
    head = client.head_object(oss.HeadObjectRequest(bucket=alibaba.bucket, key="t/a b.txt"))
    assert head.content_length == 2
    got = client.get_object(oss.GetObjectRequest(bucket=alibaba.bucket, key="t/a b.txt"))
    assert got.body.read() == b"hi"
    assert not client.is_object_exist(alibaba.bucket, "t/none")
    listed = client.list_objects_v2(oss.ListObjectsV2Request(bucket=alibaba.bucket, prefix="t/"))
    assert [o.key for o in listed.contents] == ["t/a b.txt"]
    wrong = oss_client(alibaba, secret="not-the-secret")
    put = oss.PutObjectRequest(bucket=alibaba.bucket, key="t/x", body=b"x")
    with pytest.raises(oss.exceptions.OperationError, match="SignatureDoesNotMatch"):
        wrong.put_object(put)
    assert alibaba.oss.calls()[-1].status == 403
    assert alibaba.oss.get(alibaba.bucket, "t/x") is None


def test_oss_multipart_upload_round_trips(alibaba: AlibabaEmulator, tmp_path: Path) -> None:
    import alibabacloud_oss_v2 as oss

    data = os.urandom(350_000)
    (tmp_path / "big.bin").write_bytes(data)
    uploader = oss.Uploader(oss_client(alibaba), part_size=100 * 1024, parallel_num=1)
    request = oss.PutObjectRequest(bucket=alibaba.bucket, key="m/big.bin")
    uploader.upload_file(request, filepath=str(tmp_path / "big.bin"))
    assert alibaba.oss.get(alibaba.bucket, "m/big.bin") == data
    queries = [c.query for c in alibaba.oss.calls() if c.key == "m/big.bin"]
    assert sum("partNumber=" in q for q in queries) == 4
    assert all(c.error is None for c in alibaba.oss.calls() if c.key == "m/big.bin")


# -- a service ----------------------------------------------------------------------------------
def test_a_service_runs_and_predicts_with_its_token(alibaba: AlibabaEmulator, live: Live) -> None:
    answer = predict(live, live.token)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["value"] == 4.0
    assert predict(live, None).status_code == 401
    assert predict(live, "wrong-token").status_code == 401
    env = alibaba.container_environment(SERVICE)
    model_dir = Path(env["AIAAS_MODEL_DIR"])
    assert model_dir.parts[-1] == MOUNT_PATH.strip("/")
    bundle = next(model_dir.iterdir())
    assert not bundle.stat().st_mode & stat.S_IWUSR  # mounted read-only
    assert env["AIAAS_HOST"] == "127.0.0.1" and env["AIAAS_PORT"] != "8080"
    assert [c.status for c in alibaba.predict_calls()[-3:]] == [200, 401, 401]


def test_list_filters_on_labels_and_logs_come_back(alibaba: AlibabaEmulator, live: Live) -> None:
    from alibabacloud_eas20210701 import models

    client = eas_client(alibaba)
    mine = client.list_services(models.ListServicesRequest(label={"aiaas:project": "probe"}))
    assert [s.service_name for s in mine.body.services] == [SERVICE]
    other = client.list_services(models.ListServicesRequest(label={"aiaas:project": "other"}))
    assert other.body.services == []
    logs = client.describe_service_log(
        alibaba.region, SERVICE, models.DescribeServiceLogRequest(page_size=500)
    )
    assert logs.body.total_count > 0
    described = client.describe_service(alibaba.region, SERVICE).body
    assert described.labels[0].label_key == "aiaas:project"
    assert error_code(lambda: client.describe_service(alibaba.region, "nope")) == (
        "InvalidService.NotFound"
    )


def test_faults_answer_450_and_429(alibaba: AlibabaEmulator, live: Live) -> None:
    alibaba.fault(SERVICE, 450, times=1)
    alibaba.fault(SERVICE + "_other", 503)
    assert predict(live, live.token).status_code == 450
    alibaba.fault(SERVICE, 429, times=1)
    assert predict(live, live.token).status_code == 429
    assert predict(live, live.token).status_code == 200
    alibaba.clear_faults()


def test_autoscaler_refuses_max_not_above_min(alibaba: AlibabaEmulator, live: Live) -> None:
    from alibabacloud_eas20210701 import models

    client = eas_client(alibaba)
    strategy = models.CreateServiceAutoScalerRequestScaleStrategies(metric_name="qps", threshold=10)

    def create(low: int, high: int) -> Any:
        request = models.CreateServiceAutoScalerRequest(
            min=low, max=high, scale_strategies=[strategy]
        )
        return client.create_service_auto_scaler(alibaba.region, SERVICE, request)

    def update(low: int, high: int) -> Any:
        request = models.UpdateServiceAutoScalerRequest(min=low, max=high)
        return client.update_service_auto_scaler(alibaba.region, SERVICE, request)

    assert error_code(lambda: create(2, 2)) == "InvalidParameter"
    assert error_code(lambda: create(1, 4)) is None
    assert error_code(lambda: update(3, 2)) == "InvalidParameter"
    assert error_code(lambda: update(0, 3)) is None
    scaler = client.describe_service_auto_scaler(alibaba.region, SERVICE).body
    assert (scaler.min_replica, scaler.max_replica) == (0, 3)
    assert scaler.scale_strategies[0].metric_name == "qps"


def test_a_service_without_an_autoscaler_refuses_its_delete(alibaba: AlibabaEmulator) -> None:
    from alibabacloud_eas20210701 import models

    client = eas_client(alibaba)
    alibaba.fail_next_version("scripted: no container needed here")
    create_service(alibaba, service_config("aiaas_scaler", "oss://aiaas-bundles/none/"))
    strategy = models.CreateServiceAutoScalerRequestScaleStrategies(metric_name="qps", threshold=5)
    scaler = models.CreateServiceAutoScalerRequest(min=1, max=2, scale_strategies=[strategy])

    def delete() -> str | None:
        return error_code(lambda: client.delete_service_auto_scaler(alibaba.region, "aiaas_scaler"))

    assert delete() == "InvalidAutoscaler.NotFound"
    assert alibaba.calls()[-1].status == 404
    client.create_service_auto_scaler(alibaba.region, "aiaas_scaler", scaler)
    assert delete() is None
    assert delete() == "InvalidAutoscaler.NotFound"
    client.delete_service(alibaba.region, "aiaas_scaler")


def test_create_refuses_an_instance_count_below_one(alibaba: AlibabaEmulator) -> None:
    def create(name: str, instance: object) -> str | None:
        config = service_config(name, "oss://aiaas-bundles/none/")
        config["metadata"]["instance"] = instance
        return error_code(lambda: create_service(alibaba, config))

    from Tea.exceptions import TeaException  # type: ignore[import-untyped]  # no py.typed

    assert create("aiaas_zero", 0) == "InvalidParameter"
    assert create("aiaas_minus", -1) == "InvalidParameter"
    with pytest.raises(TeaException, match=r"metadata\.instance must be a positive integer"):
        create_service(
            alibaba,
            service_config(
                "aiaas_text", "oss://b/x/", metadata={"name": "aiaas_text", "instance": "2"}
            ),
        )
    assert alibaba.service_status("aiaas_zero") is None
    # cpu and memory with neither a resource group nor an instance type: EAS's public
    # resources take that (ROS's and Terraform's own examples), so the emulator does too
    public = service_config("aiaas_public", "oss://aiaas-bundles/none/")
    del public["cloud"]
    alibaba.fail_next_version("scripted: no container needed here")
    assert error_code(lambda: create_service(alibaba, public)) is None
    eas_client(alibaba).delete_service(alibaba.region, "aiaas_public")


def test_a_page_size_that_is_not_a_number_is_a_400(alibaba: AlibabaEmulator) -> None:
    from alibabacloud_eas20210701 import models

    client = eas_client(alibaba)
    listed = models.ListServicesRequest(page_size="ten")  # the SDK sends it as it is
    assert error_code(lambda: client.list_services(listed)) == "InvalidParameter"
    assert (alibaba.calls()[-1].query["PageSize"], alibaba.calls()[-1].status) == ("ten", 400)
    alibaba.fail_next_version("scripted: no container needed here")
    create_service(alibaba, service_config("aiaas_paged", "oss://aiaas-bundles/none/"))
    logs = models.DescribeServiceLogRequest(page_size=10, page_num="last")
    assert error_code(lambda: client.describe_service_log(alibaba.region, "aiaas_paged", logs)) == (
        "InvalidParameter"
    )
    client.delete_service(alibaba.region, "aiaas_paged")


def test_the_gateway_forwards_every_method_to_the_service(live: Live) -> None:
    headers = {"Authorization": live.token}
    with httpx.Client(timeout=30) as client:
        # EAS forwards the method; the service answers one it does not serve with 405
        patched = client.patch(live.endpoint, json=PREDICT, headers=headers)
        assert patched.status_code == 405, patched.text
        assert "POST" in patched.headers["allow"]
        assert client.get(live.endpoint, headers=headers).status_code == 200  # its root: live
        assert client.options(live.endpoint).status_code == 401  # the token first
        head = client.head(live.endpoint, headers=headers)
        assert (head.status_code, head.content) == (200, b"")


def test_update_merge_replace_failed_version_and_rollback(
    alibaba: AlibabaEmulator, live: Live
) -> None:
    from alibabacloud_eas20210701 import models

    client = eas_client(alibaba)

    def update(config: dict[str, Any], kind: str | None) -> Any:
        request = models.UpdateServiceRequest(body=json.dumps(config), update_type=kind)
        return client.update_service(alibaba.region, SERVICE, request)

    def config_of(version: int) -> dict[str, Any]:
        versions = client.list_service_versions(
            alibaba.region, SERVICE, models.ListServiceVersionsRequest()
        ).body.versions
        return dict(json.loads(next(v for v in versions if v.image_id == version).service_config))

    # merge (the default) keeps what the update leaves out: a scripted failed version
    alibaba.fail_next_version("scripted: image pull failed", reason="ImagePullFailed")
    update({"metadata": {"instance": 2}}, None)
    assert alibaba.wait(SERVICE) == "Failed"
    assert config_of(2)["storage"] == config_of(1)["storage"]
    assert predict(live, live.token).status_code == 200  # version 1 still serves
    # replace drops what is left out; this version fails on its own (no mount, wrong port)
    replaced = service_config(SERVICE, live.oss_path)
    del replaced["storage"]
    replaced["containers"][0]["port"] = 9000
    update(replaced, "replace")
    assert alibaba.wait(SERVICE) == "Failed"
    assert "storage" not in config_of(3)
    described = client.describe_service(alibaba.region, SERVICE).body
    assert (described.current_version, described.latest_version) == (3, 3)
    assert "port" in described.message
    events = client.describe_service_event(
        alibaba.region, SERVICE, models.DescribeServiceEventRequest()
    ).body.events
    assert [e.reason for e in events if e.type == "Warning"] == [
        "ImagePullFailed",
        "ContainerStartFailed",
    ]

    # rollback only goes back
    def switch(version: int) -> str | None:
        request = models.UpdateServiceVersionRequest(version=version)
        return error_code(lambda: client.update_service_version(alibaba.region, SERVICE, request))

    assert switch(3) == "InvalidParameter"
    assert switch(4) == "InvalidParameter"
    assert switch(1) is None
    assert alibaba.wait(SERVICE) == "Running", alibaba.container_output(SERVICE)
    described = client.describe_service(alibaba.region, SERVICE).body
    assert (described.current_version, described.latest_version) == (1, 3)
    assert predict(live, live.token).json()["outputs"][0]["value"] == 4.0
    assert alibaba.predict_calls()[-1].version == 1
    writes = [w.split(" ")[0] for w in alibaba.writes()]
    assert writes.count("UpdateService") == 2 and writes.count("UpdateServiceVersion") == 1


def test_create_refusals_and_delete(alibaba: AlibabaEmulator, live: Live) -> None:
    client = eas_client(alibaba)
    bad_type = service_config(
        "aiaas_bad", live.oss_path, cloud={"computing": {"instances": [{"type": "ecs.nope"}]}}
    )
    assert error_code(lambda: create_service(alibaba, bad_type)) == "InvalidParameter"
    assert error_code(lambda: create_service(alibaba, service_config("Bad-Name", "x"))) == (
        "InvalidParameter"
    )
    assert error_code(lambda: create_service(alibaba, service_config(SERVICE, live.oss_path))) == (
        "InvalidService.AlreadyExists"
    )
    alibaba.refuse_next("DescribeService", 503, "ServiceUnavailable", "try later")
    assert error_code(lambda: client.describe_service(alibaba.region, SERVICE)) == (
        "ServiceUnavailable"
    )
    client.delete_service(alibaba.region, SERVICE)
    assert alibaba.service_status(SERVICE) is None
    assert predict(live, live.token).status_code == 404
    assert error_code(lambda: client.delete_service(alibaba.region, SERVICE)) == (
        "InvalidService.NotFound"
    )
