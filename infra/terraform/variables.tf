variable "region" {
  description = "AWS region for every resource."
  type        = string
  default     = "us-west-2"
}

variable "name_prefix" {
  description = "Prefix of every resource name. cluster/aws/dft-cluster.yaml assumes the default 'dft' (instance profiles dft-ray-head / dft-ray-worker); cluster/aws/render.py fills in another."
  type        = string
  default     = "dft"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name_prefix))
    error_message = "name_prefix must be 2-21 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

variable "aws_endpoints" {
  description = "Service endpoint overrides (keys: s3, iam, sts, ec2, eks, ssm) for an AWS emulator in tests. Leave empty for real AWS."
  type        = map(string)
  default     = {}
}

# --- what to create -----------------------------------------------------------------------------

variable "create_network" {
  description = "Create the VPC (public/private subnets, NAT, S3 gateway endpoint) and the Ray security group."
  type        = bool
  default     = true
}

variable "create_ray_iam" {
  description = "Create the IAM roles and instance profiles of the Ray cluster launcher's head and workers."
  type        = bool
  default     = true
}

variable "create_eks" {
  description = "Create an EKS cluster with a CPU node group and a GPU spot node group (for KubeRay). Needs create_network."
  type        = bool
  default     = false

  validation {
    condition     = !var.create_eks || var.create_network
    error_message = "create_eks = true needs create_network = true (the node groups go into its private subnets)."
  }
}

# --- storage ------------------------------------------------------------------------------------

variable "bucket_name" {
  description = "Name of the runs bucket. Null: a unique name starting with '<name_prefix>-runs-'."
  type        = string
  default     = null
}

variable "bucket_force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects (runs, checkpoints). Keep false in production."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "KMS key for bucket encryption (SSE-KMS). Null: SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "noncurrent_version_expiration_days" {
  description = "Days before a replaced or deleted object version (old checkpoints Ray Train rotated out) is removed."
  type        = number
  default     = 7
}

variable "abort_incomplete_multipart_days" {
  description = "Days before an unfinished multipart upload (a checkpoint cut short by a spot preemption) is aborted."
  type        = number
  default     = 2
}

variable "s3_lifecycle_rules" {
  description = "Manage the bucket's lifecycle rules. Only tests turn this off: against an emulator the provider polls the rules back for one to two minutes."
  type        = bool
  default     = true
}

variable "scratch_expiration_days" {
  description = "Days before objects under the bucket's scratch/ prefix expire."
  type        = number
  default     = 14
}

# --- network ------------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC."
  type        = string
  default     = "10.42.0.0/16"
}

variable "az_count" {
  description = "Availability zones to spread subnets over (more zones: more spot capacity pools)."
  type        = number
  default     = 3
}

variable "create_nat_gateway" {
  description = "One NAT gateway for the private subnets (pip installs, image pulls). S3 traffic bypasses it through the gateway endpoint."
  type        = bool
  default     = true
}

variable "ssh_cidr_blocks" {
  description = "CIDRs allowed to SSH to Ray nodes (the machine running `ray up`). Empty: no SSH from outside."
  type        = list(string)
  default     = []
}

# --- Ray cluster launcher -----------------------------------------------------------------------

variable "ray_cluster_name" {
  description = "cluster_name in cluster/aws/dft-cluster.yaml: the head may only stop/terminate instances tagged with it."
  type        = string
  default     = "dft"
}

# --- EKS ----------------------------------------------------------------------------------------

variable "eks_version" {
  description = "Kubernetes version of the EKS cluster."
  type        = string
  default     = "1.33"
}

variable "eks_public_access_cidrs" {
  description = "CIDRs allowed to reach the EKS API endpoint."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "cpu_instance_types" {
  description = "Instance types of the CPU node group (KubeRay operator, Ray heads)."
  type        = list(string)
  default     = ["m6i.2xlarge"]
}

variable "cpu_min_size" {
  type    = number
  default = 1
}

variable "cpu_max_size" {
  type    = number
  default = 3
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group; several types widen the spot pools. Keep them one shape (8 vCPU, 32 GiB, 1 GPU): cluster/kuberay/raycluster.yaml sizes a worker pod to it, and the cluster autoscaler assumes every type of a group alike."
  type        = list(string)
  default     = ["g5.2xlarge", "g6.2xlarge"]
}

variable "gpu_capacity_type" {
  description = "SPOT or ON_DEMAND for the GPU node group."
  type        = string
  default     = "SPOT"

  validation {
    condition     = contains(["SPOT", "ON_DEMAND"], var.gpu_capacity_type)
    error_message = "gpu_capacity_type must be SPOT or ON_DEMAND."
  }
}

variable "gpu_ami_type" {
  description = "EKS AMI type with NVIDIA drivers."
  type        = string
  default     = "AL2023_x86_64_NVIDIA"
}

variable "gpu_min_size" {
  type    = number
  default = 0
}

variable "gpu_desired_size" {
  description = "Initial GPU nodes; later changes come from the cluster autoscaler (ignored by terraform)."
  type        = number
  default     = 0
}

variable "gpu_max_size" {
  description = "Most GPU nodes (one GPU each): the presets' fine-tuning needs 8 at once (train.num_workers), as does their generation pool; raycluster.yaml's maxReplicas matches."
  type        = number
  default     = 8
}

variable "gpu_disk_size_gb" {
  description = "Root volume of GPU nodes (container images, model cache)."
  type        = number
  default     = 200
}

variable "k8s_namespace" {
  description = "Namespace of the RayCluster/RayJob pods (cluster/kuberay/*.yaml)."
  type        = string
  default     = "dft"
}

variable "k8s_service_account" {
  description = "Service account of the Ray pods; EKS Pod Identity gives it the runs-bucket policy."
  type        = string
  default     = "dft-ray"
}
