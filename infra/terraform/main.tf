# dft's cloud resources. Each part can be switched off; the smallest useful apply is the runs bucket
# alone (create_network = create_ray_iam = create_eks = false), which is what tests/infra applies
# against a local S3 emulator.

module "storage" {
  source = "./modules/storage"

  bucket_name                        = var.bucket_name
  bucket_prefix                      = "${var.name_prefix}-runs-"
  force_destroy                      = var.bucket_force_destroy
  kms_key_arn                        = var.kms_key_arn
  lifecycle_rules                    = var.s3_lifecycle_rules
  noncurrent_version_expiration_days = var.noncurrent_version_expiration_days
  abort_incomplete_multipart_days    = var.abort_incomplete_multipart_days
  scratch_expiration_days            = var.scratch_expiration_days
}

# One managed policy shared by launcher instance roles and EKS pod roles.
resource "aws_iam_policy" "runs_bucket" {
  count       = var.create_ray_iam || var.create_eks ? 1 : 0
  name        = "${var.name_prefix}-runs-bucket-access"
  description = "Read/write access to the dft runs bucket ${module.storage.bucket_name} only"
  policy      = module.storage.access_policy_json
}

module "network" {
  count  = var.create_network ? 1 : 0
  source = "./modules/network"

  name_prefix        = var.name_prefix
  vpc_cidr           = var.vpc_cidr
  az_count           = var.az_count
  create_nat_gateway = var.create_nat_gateway
  ssh_cidr_blocks    = var.ssh_cidr_blocks
  eks_cluster_name   = var.create_eks ? "${var.name_prefix}-eks" : null
}

module "ray_iam" {
  count  = var.create_ray_iam ? 1 : 0
  source = "./modules/ray_iam"

  name_prefix       = var.name_prefix
  ray_cluster_name  = var.ray_cluster_name
  bucket_policy_arn = aws_iam_policy.runs_bucket[0].arn
}

module "eks" {
  count  = var.create_eks ? 1 : 0
  source = "./modules/eks"

  name_prefix         = var.name_prefix
  cluster_version     = var.eks_version
  subnet_ids          = module.network[0].private_subnet_ids
  public_access_cidrs = var.eks_public_access_cidrs
  bucket_policy_arn   = aws_iam_policy.runs_bucket[0].arn
  namespace           = var.k8s_namespace
  service_account     = var.k8s_service_account
  cpu_instance_types  = var.cpu_instance_types
  cpu_min_size        = var.cpu_min_size
  cpu_max_size        = var.cpu_max_size
  gpu_instance_types  = var.gpu_instance_types
  gpu_capacity_type   = var.gpu_capacity_type
  gpu_ami_type        = var.gpu_ami_type
  gpu_min_size        = var.gpu_min_size
  gpu_desired_size    = var.gpu_desired_size
  gpu_max_size        = var.gpu_max_size
  gpu_disk_size_gb    = var.gpu_disk_size_gb
}
