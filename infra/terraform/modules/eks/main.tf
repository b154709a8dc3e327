# EKS for KubeRay: a small on-demand CPU node group (KubeRay operator, Ray heads, system pods) and a
# GPU node group (spot by default), tainted so only pods that tolerate it (Ray GPU workers) land there.
# A managed spot group is an EC2 Auto Scaling group with the capacity-optimized allocation strategy
# and Capacity Rebalancing over every listed instance type and subnet (zone).
# Ray pods reach the runs bucket through EKS Pod Identity (no node-wide S3 access, no OIDC/TLS provider).

data "aws_partition" "current" {}

locals {
  cluster_name = "${var.name_prefix}-eks"
  policy_base  = "arn:${data.aws_partition.current.partition}:iam::aws:policy"
}

resource "aws_iam_role" "cluster" {
  name = "${var.name_prefix}-eks-cluster"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = ["sts:AssumeRole", "sts:TagSession"]
      Principal = { Service = "eks.amazonaws.com" }
    }]
  })
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "${local.policy_base}/AmazonEKSClusterPolicy"
}

resource "aws_kms_key" "eks_secrets" {
  #checkov:skip=CKV2_AWS_64:The default key policy (the account's IAM decides) is what EKS envelope encryption needs.
  description             = "Envelope encryption of Kubernetes secrets in ${local.cluster_name}"
  enable_key_rotation     = true
  deletion_window_in_days = 7
}

resource "aws_eks_cluster" "this" {
  #checkov:skip=CKV_AWS_39:kubectl and helm run from outside the VPC; access is limited by public_access_cidrs and IAM.
  #checkov:skip=CKV_AWS_38:Set eks_public_access_cidrs to your addresses; the default is open so a first apply works anywhere.
  name     = local.cluster_name
  version  = var.cluster_version
  role_arn = aws_iam_role.cluster.arn

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = true
    public_access_cidrs     = var.public_access_cidrs
  }

  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = aws_kms_key.eks_secrets.arn
    }
  }

  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  depends_on = [aws_iam_role_policy_attachment.cluster]
}

resource "aws_iam_role" "node" {
  name = "${var.name_prefix}-eks-node"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "ec2.amazonaws.com" }
    }]
  })
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
  ])
  role       = aws_iam_role.node.name
  policy_arn = "${local.policy_base}/${each.value}"
}

resource "aws_eks_node_group" "cpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "cpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  capacity_type   = "ON_DEMAND"
  ami_type        = "AL2023_x86_64_STANDARD"
  instance_types  = var.cpu_instance_types
  disk_size       = 100

  scaling_config {
    min_size     = var.cpu_min_size
    desired_size = var.cpu_min_size
    max_size     = var.cpu_max_size
  }

  labels = { "dft.io/pool" = "cpu" }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "gpu-${lower(var.gpu_capacity_type)}"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  capacity_type   = var.gpu_capacity_type
  ami_type        = var.gpu_ami_type
  instance_types  = var.gpu_instance_types
  disk_size       = var.gpu_disk_size_gb

  scaling_config {
    min_size     = var.gpu_min_size
    desired_size = var.gpu_desired_size
    max_size     = var.gpu_max_size
  }

  # cluster/kuberay/raycluster.yaml selects these labels and tolerates this taint.
  labels = {
    "dft.io/pool"            = "gpu"
    "nvidia.com/gpu.present" = "true"
  }

  taint {
    key    = "nvidia.com/gpu"
    value  = "true"
    effect = "NO_SCHEDULE"
  }

  update_config {
    max_unavailable = 1
  }

  lifecycle {
    # The cluster autoscaler owns the node count once the group exists.
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

resource "aws_eks_addon" "this" {
  for_each     = toset(["vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent"])
  cluster_name = aws_eks_cluster.this.name
  addon_name   = each.value

  # coredns needs nodes to become healthy.
  depends_on = [aws_eks_node_group.cpu]
}

# Ray pods (service account <namespace>/<service_account>) get the runs-bucket policy, nothing else.
resource "aws_iam_role" "ray_pods" {
  name = "${var.name_prefix}-eks-ray-pods"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = ["sts:AssumeRole", "sts:TagSession"]
      Principal = { Service = "pods.eks.amazonaws.com" }
    }]
  })
}

resource "aws_iam_role_policy_attachment" "ray_pods_bucket" {
  role       = aws_iam_role.ray_pods.name
  policy_arn = var.bucket_policy_arn
}

resource "aws_eks_pod_identity_association" "ray" {
  cluster_name    = aws_eks_cluster.this.name
  namespace       = var.namespace
  service_account = var.service_account
  role_arn        = aws_iam_role.ray_pods.arn

  depends_on = [aws_eks_addon.this]
}
