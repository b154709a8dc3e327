variable "name_prefix" {
  type = string
}

variable "cluster_version" {
  type = string
}

variable "subnet_ids" {
  description = "Private subnets: node groups and the control plane's network interfaces."
  type        = list(string)
}

variable "public_access_cidrs" {
  type = list(string)
}

variable "bucket_policy_arn" {
  description = "Managed policy with access to the runs bucket, given to the Ray pods' service account."
  type        = string
}

variable "namespace" {
  type = string
}

variable "service_account" {
  type = string
}

variable "cpu_instance_types" {
  type = list(string)
}

variable "cpu_min_size" {
  type = number
}

variable "cpu_max_size" {
  type = number
}

variable "gpu_instance_types" {
  type = list(string)
}

variable "gpu_capacity_type" {
  type = string
}

variable "gpu_ami_type" {
  type = string
}

variable "gpu_min_size" {
  type = number
}

variable "gpu_desired_size" {
  type = number
}

variable "gpu_max_size" {
  type = number
}

variable "gpu_disk_size_gb" {
  type = number
}
