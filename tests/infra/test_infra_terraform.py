"""infra/terraform: formatted, valid, plannable against an emulator, and the runs bucket really
applies and destroys (against the moto server of tests/conftest.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from infra_helpers import INSTANCE_TYPES, TF_ROOT, emulator_vars, preset_demands

BUCKET_ONLY = dict(create_network=False, create_ray_iam=False, create_eks=False, bucket_force_destroy=True)


def test_fmt_clean():
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH (CI machines have it)")
    res = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", str(TF_ROOT)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"terraform fmt would change:\n{res.stdout}"


def test_validate(terraform):
    res = terraform.run("validate", "-json", "-no-color")
    report = json.loads(res.stdout)
    assert report["valid"] is True, report
    assert report["error_count"] == 0 and report["warning_count"] == 0, report["diagnostics"]


@pytest.mark.s3
def test_plan_everything_shapes_the_gpu_spot_pool(terraform, s3_server, tmp_path):
    """A plan of every part (VPC, launcher IAM, EKS) against the emulator, read back as JSON."""
    plan = tmp_path / "plan.bin"
    terraform.run("plan", "-no-color", "-refresh=false", f"-out={plan}",
                  *emulator_vars(s3_server, create_network=True, create_ray_iam=True, create_eks=True))
    doc = json.loads(terraform.run("show", "-json", str(plan)).stdout)
    changes = {rc["address"]: rc["change"]["after"] for rc in doc["resource_changes"]}

    gpu = changes["module.eks[0].aws_eks_node_group.gpu"]
    assert gpu["capacity_type"] == "SPOT"
    assert "NVIDIA" in gpu["ami_type"]
    assert gpu["taint"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    assert gpu["labels"]["dft.io/pool"] == "gpu"
    assert gpu["scaling_config"][0]["min_size"] == 0
    # One GPU per node: room for the presets' 8 fine-tuning workers (and generation actors) at once.
    assert gpu["scaling_config"][0]["max_size"] >= max(d.count * d.bundle["GPU"] for d in preset_demands())
    assert all(INSTANCE_TYPES[t][:2] == (8, 1) for t in gpu["instance_types"]), gpu["instance_types"]
    cpu = changes["module.eks[0].aws_eks_node_group.cpu"]
    assert cpu["capacity_type"] == "ON_DEMAND" and not cpu.get("taint")

    # Ray pods reach S3 through Pod Identity on the service account the KubeRay manifests use.
    assoc = changes["module.eks[0].aws_eks_pod_identity_association.ray"]
    assert (assoc["namespace"], assoc["service_account"]) == ("dft", "dft-ray")

    # Private subnets route out through NAT; S3 rides the free gateway endpoint.
    assert changes["module.network[0].aws_vpc_endpoint.s3"]["vpc_endpoint_type"] == "Gateway"
    assert len([a for a in changes if a.startswith("module.network[0].aws_subnet.private")]) >= 2
    # No SSH from anywhere unless asked for.
    assert not [a for a in changes if "ray_ssh" in a]

    bucket = "module.storage."
    for part in ("aws_s3_bucket_versioning.runs", "aws_s3_bucket_public_access_block.runs",
                 "aws_s3_bucket_server_side_encryption_configuration.runs", "aws_s3_bucket_lifecycle_configuration.runs[0]"):
        assert bucket + part in changes, part


@pytest.mark.s3
@pytest.mark.slow
def test_eks_needs_the_network(terraform, s3_server):
    res = terraform.run("plan", "-no-color", "-refresh=false",
                        *emulator_vars(s3_server, create_network=False, create_eks=True), check=False)
    assert res.returncode != 0
    assert "create_eks = true needs create_network = true" in res.stderr


@pytest.mark.s3
def test_apply_and_destroy_runs_bucket(terraform, s3_server):
    """The bucket part for real against the S3 emulator: versioned, encrypted, private, TLS-only; gone after destroy."""
    import boto3
    from botocore.exceptions import ClientError

    args = ["-auto-approve", "-no-color", *emulator_vars(s3_server, s3_lifecycle_rules=False, **BUCKET_ONLY)]
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    try:
        terraform.run("apply", *args)
        out = terraform.outputs()
        name = out["bucket_name"]
        assert name.startswith("dft-runs-")
        assert out["runs_uri"] == f"s3://{name}/runs"
        assert out.get("ray_worker_instance_profile_arn") is None and out.get("eks_cluster_name") is None

        s3.head_bucket(Bucket=name)
        assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
        rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        assert all(block[k] for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
        policy = json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])
        deny = [st for st in policy["Statement"] if st["Effect"] == "Deny"]
        assert deny and deny[0]["Condition"]["Bool"]["aws:SecureTransport"] == "false"

        # The emulator evaluates bucket policies: plain HTTP is refused, as it would be on AWS.
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket=name, Key="runs/r/checkpoints/c/state.json", Body=b"1")
        assert refused.value.response["Error"]["Code"] in ("403", "AccessDenied")
    finally:
        terraform.run("destroy", *args)

    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert e.value.response["Error"]["Code"] in ("404", "NoSuchBucket")
    # State lived in the temporary copy, never in the repository.
    assert (terraform.workdir / "terraform.tfstate").exists()
    assert not list(TF_ROOT.rglob("*.tfstate")) and not (TF_ROOT / ".terraform").exists()


@pytest.mark.s3
@pytest.mark.slow
def test_apply_bucket_lifecycle_and_launcher_iam(terraform, s3_server):
    """Lifecycle rules and the Ray launcher's roles, applied for real. Slow: the provider polls the
    lifecycle configuration back for one to two minutes."""
    import boto3

    args = ["-auto-approve", "-no-color",
            *emulator_vars(s3_server, **{**BUCKET_ONLY, "create_ray_iam": True, "name_prefix": "dftiam"})]
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    iam = boto3.client("iam", endpoint_url=s3_server, region_name="us-east-1")
    try:
        terraform.run("apply", *args)
        out = terraform.outputs()
        name = out["bucket_name"]
        rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]}
        assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 2
        assert rules["expire-replaced-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 7

        bucket_arn = f"arn:aws:s3:::{name}"
        worker = iam.get_instance_profile(InstanceProfileName="dftiam-ray-worker")["InstanceProfile"]
        assert out["ray_worker_instance_profile_arn"] == worker["Arn"]
        role = worker["Roles"][0]["RoleName"]
        attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        assert [p["PolicyName"] for p in attached] == ["dftiam-runs-bucket-access"]
        assert not iam.list_role_policies(RoleName=role)["PolicyNames"], "workers get the bucket policy only"
        pol = iam.get_policy(PolicyArn=attached[0]["PolicyArn"])["Policy"]
        doc = iam.get_policy_version(PolicyArn=pol["Arn"], VersionId=pol["DefaultVersionId"])["PolicyVersion"]["Document"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        resources = {
            r for st in doc["Statement"] for r in ([st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"])
        }
        assert resources == {bucket_arn, f"{bucket_arn}/*"}
        assert not any("*" == a or a.endswith(":*") for st in doc["Statement"] for a in st["Action"])

        head_inline = iam.get_role_policy(RoleName="dftiam-ray-head", PolicyName="ray-autoscaler")["PolicyDocument"]
        head_inline = json.loads(head_inline) if isinstance(head_inline, str) else head_inline
        passrole = [st for st in head_inline["Statement"] if st["Action"] in ("iam:PassRole", ["iam:PassRole"])]
        assert passrole and passrole[0]["Resource"] == iam.get_role(RoleName=role)["Role"]["Arn"]
        # Tagging is scoped like terminating: at launch, or on instances already of this cluster.
        own = {"ec2:ResourceTag/ray-cluster-name": out["ray_cluster_name"]}
        for st in head_inline["Statement"]:
            acts = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
            if "ec2:CreateTags" in acts or "ec2:TerminateInstances" in acts:
                cond = st.get("Condition", {}).get("StringEquals")
                assert cond == own or (acts == ["ec2:CreateTags"] and cond == {"ec2:CreateAction": "RunInstances"}), st
    finally:
        terraform.run("destroy", *args)
    assert not iam.list_instance_profiles()["InstanceProfiles"] or all(
        not p["InstanceProfileName"].startswith("dftiam-") for p in iam.list_instance_profiles()["InstanceProfiles"])



def _statements(hcl: str, data_source: str) -> list[str]:
    """The text of each ``statement { ... }`` block of an aws_iam_policy_document in ``hcl``."""
    body = hcl[hcl.index(f'data "aws_iam_policy_document" "{data_source}"'):]
    out, i = [], 0
    while (i := body.find("  statement {", i)) != -1:
        depth, start = 0, body.index("{", i)
        for j in range(start, len(body)):
            depth += {"{": 1, "}": -1}.get(body[j], 0)
            if depth == 0:
                break
        out.append(body[i:j + 1])
        i = j
    return out


def test_head_tags_only_at_launch_or_its_own_instances():
    """The head may end only instances tagged ray-cluster-name=<its cluster>; if it could tag any
    instance it could tag one and end it. (Applied and read back in the slow launcher-IAM test.)"""
    statements = _statements((TF_ROOT / "modules" / "ray_iam" / "main.tf").read_text(), "autoscaler")
    tagging = [st for st in statements if '"ec2:CreateTags"' in st]
    assert tagging
    for st in tagging:
        assert re.search(r'actions\s*=\s*\["ec2:CreateTags"\]', st), "tag statements grant nothing else"
        launch = 'variable = "ec2:CreateAction"' in st and 'values   = ["RunInstances"]' in st
        own = 'variable = "ec2:ResourceTag/ray-cluster-name"' in st and "[var.ray_cluster_name]" in st
        assert launch or own, st
    ending = [st for st in statements if '"ec2:TerminateInstances"' in st]
    assert ending and all('variable = "ec2:ResourceTag/ray-cluster-name"' in st for st in ending)
