"""Fill dft-cluster.yaml with what infra/terraform created: region and zones, the instance profiles'
ARNs, the VPC's public subnets and the Ray security group, the cluster name the head is allowed to
manage, and the runs bucket as DFT_BUCKET in the head's `ray start` environment (the cluster presets
in jobs/configs/ take their s3:// paths from it; job drivers run on the head and inherit it).

    python cluster/aws/render.py --tf-dir infra/terraform -o /tmp/dft-cluster.yaml
    python cluster/aws/render.py --outputs-json outputs.json -o /tmp/dft-cluster.yaml

Nodes go into the public subnets (the head must be reachable over SSH by `ray up`; the security group
only admits SSH from terraform's ssh_cidr_blocks and keeps Ray's ports inside the group).
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "dft-cluster.yaml"


def terraform_outputs(tf_dir: str) -> dict:
    out = subprocess.run(
        ["terraform", f"-chdir={tf_dir}", "output", "-json"], check=True, capture_output=True, text=True
    ).stdout
    return {k: v["value"] for k, v in json.loads(out).items()}


def render(config: dict, outputs: dict) -> dict:
    """A copy of ``config`` with the terraform ``outputs`` (name -> value) applied."""
    cfg = copy.deepcopy(config)
    get = lambda k: outputs.get(k)  # noqa: E731 - outputs may be null when a part is switched off
    if get("region"):
        cfg["provider"]["region"] = get("region")
        zones = get("availability_zones") or []
        if zones:
            cfg["provider"]["availability_zone"] = ",".join(zones)
        else:
            cfg["provider"].pop("availability_zone", None)
    if get("ray_cluster_name"):
        cfg["cluster_name"] = get("ray_cluster_name")
    if get("bucket_name"):
        export = f"export DFT_BUCKET={shlex.quote(get('bucket_name'))};"
        cfg["head_start_ray_commands"] = [
            f"{export} {c}" if "ray start" in c else c for c in cfg["head_start_ray_commands"]]
    head_type = cfg["head_node_type"]
    for name, node_type in cfg["available_node_types"].items():
        nc = node_type["node_config"]
        arn = get("ray_head_instance_profile_arn" if name == head_type else "ray_worker_instance_profile_arn")
        if arn:
            nc["IamInstanceProfile"] = {"Arn": arn}
        if get("public_subnet_ids"):
            nc["SubnetIds"] = list(get("public_subnet_ids"))
        if get("ray_security_group_id"):
            nc["SecurityGroupIds"] = [get("ray_security_group_id")]
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render dft-cluster.yaml with terraform outputs.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tf-dir", help="Terraform root to read `terraform output -json` from.")
    src.add_argument("--outputs-json", help="A saved `terraform output -json`.")
    p.add_argument("--template", default=str(TEMPLATE))
    p.add_argument("-o", "--output", required=True, help="Where to write the rendered config.")
    args = p.parse_args(argv)

    if args.tf_dir:
        outputs = terraform_outputs(args.tf_dir)
    else:
        outputs = {k: (v["value"] if isinstance(v, dict) and "value" in v else v)
                   for k, v in json.loads(Path(args.outputs_json).read_text()).items()}
    config = yaml.safe_load(Path(args.template).read_text())
    header = f"# Rendered from {args.template} with terraform outputs; edit the template, not this file.\n"
    Path(args.output).write_text(header + yaml.safe_dump(render(config, outputs), sort_keys=False))
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
