# Two instance profiles for the Ray cluster launcher (cluster/aws/dft-cluster.yaml):
#   worker: the runs bucket, nothing else;
#   head:   the runs bucket, plus what Ray's autoscaler needs to launch and end worker instances of
#           this cluster (and pass the worker role to them, and no other role).

data "aws_partition" "current" {}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "worker" {
  name               = "${var.name_prefix}-ray-worker"
  description        = "Ray workers of ${var.name_prefix}: runs bucket only"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "worker_bucket" {
  role       = aws_iam_role.worker.name
  policy_arn = var.bucket_policy_arn
}

resource "aws_iam_instance_profile" "worker" {
  name = "${var.name_prefix}-ray-worker"
  role = aws_iam_role.worker.name
}

resource "aws_iam_role" "head" {
  name               = "${var.name_prefix}-ray-head"
  description        = "Ray head of ${var.name_prefix}: runs bucket and the autoscaler's EC2 actions"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "head_bucket" {
  role       = aws_iam_role.head.name
  policy_arn = var.bucket_policy_arn
}

resource "aws_iam_instance_profile" "head" {
  name = "${var.name_prefix}-ray-head"
  role = aws_iam_role.head.name
}

data "aws_iam_policy_document" "autoscaler" {
  #checkov:skip=CKV_AWS_111:RunInstances touches instances, volumes, ENIs, images and subnets not known in advance; tagging (at launch or by cluster tag) and stop/terminate (by cluster tag) are scoped.
  #checkov:skip=CKV_AWS_356:Same: the Describe actions and RunInstances have no narrower resource.
  statement {
    sid = "Describe"
    actions = [
      "ec2:DescribeInstances",
      "ec2:DescribeInstanceStatus",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeImages",
      "ec2:DescribeSubnets",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeKeyPairs",
      "ec2:DescribeLaunchTemplates",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:DescribeAvailabilityZones",
      "ec2:DescribeSpotPriceHistory",
      "ec2:DescribeVpcs",
      "ec2:DescribeTags",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "LaunchWorkers"
    actions   = ["ec2:RunInstances"]
    resources = ["*"]
  }

  # Tags decide what ManageOwnWorkers may end, so tagging is scoped too: tags given with the launch
  # itself (RunInstances' TagSpecifications: ray-cluster-name and Ray's node tags)...
  statement {
    sid       = "TagAtLaunch"
    actions   = ["ec2:CreateTags"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }

  # ...and later tag updates (Ray's node status) only on instances already of this cluster. Without
  # this scoping the head could tag any instance ray-cluster-name=<this> and then terminate it.
  statement {
    sid       = "RetagOwnWorkers"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:${data.aws_partition.current.partition}:ec2:*:*:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/ray-cluster-name"
      values   = [var.ray_cluster_name]
    }
  }

  # Only instances of this Ray cluster can be stopped, started or terminated by its head.
  statement {
    sid       = "ManageOwnWorkers"
    actions   = ["ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"]
    resources = ["arn:${data.aws_partition.current.partition}:ec2:*:*:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/ray-cluster-name"
      values   = [var.ray_cluster_name]
    }
  }

  statement {
    sid       = "PassWorkerRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.worker.arn]
  }

  statement {
    sid       = "ReadWorkerProfile"
    actions   = ["iam:GetInstanceProfile"]
    resources = [aws_iam_instance_profile.worker.arn]
  }

  # Node configs name their AMI as resolve:ssm:/aws/service/deeplearning/...; EC2 resolves it with
  # the caller's permissions.
  statement {
    sid       = "ResolvePublicAmiParameters"
    actions   = ["ssm:GetParameters", "ssm:GetParameter"]
    resources = ["arn:${data.aws_partition.current.partition}:ssm:*::parameter/aws/service/*"]
  }

  # The first spot request of an account creates EC2's spot service-linked role.
  statement {
    sid       = "SpotServiceLinkedRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${data.aws_partition.current.partition}:iam::*:role/aws-service-role/spot.amazonaws.com/*"]
    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["spot.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "head_autoscaler" {
  name   = "ray-autoscaler"
  role   = aws_iam_role.head.id
  policy = data.aws_iam_policy_document.autoscaler.json
}
