"""Finding 4: an output schema with field aliases loads and is served by its aliases, as
the manifest publishes it and output checking validates it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from conftest import ServerProcess, build_probe_variant

StartServer = Callable[..., ServerProcess]


def _infer_body(values: list[float]) -> dict[str, object]:
    return {
        "inputs": [{"name": "value", "shape": [len(values)], "datatype": "FP32", "data": values}]
    }


class TestAliases:
    """Finding 4: an output schema with field aliases loads and is served by alias."""

    def test_a_field_alias_is_served_and_checked_by_its_alias(
        self, start_server: StartServer, tmp_path: Path
    ) -> None:
        bundle = build_probe_variant(
            tmp_path,
            "    salt: str\n",
            '    salt: str = Field(alias="class")\n    model_config = {"populate_by_name": True}\n',
        )
        server = start_server(bundle.path)  # before the fix: did not load (.class: required)
        r = httpx.post(server.url + "/invocations", json={"inputs": [{"value": 2}]})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0] == {"value": 4.0, "batch_size": 1, "class": "1"}
        r = httpx.post(server.url + "/v2/models/probe/infer", json=_infer_body([2]))
        assert r.status_code == 200, r.text
        names = [t["name"] for t in r.json()["outputs"]]
        assert names == ["value", "batch_size", "class"]
