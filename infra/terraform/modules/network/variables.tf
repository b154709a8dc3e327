variable "name_prefix" {
  type = string
}

variable "vpc_cidr" {
  type = string
}

variable "az_count" {
  type = number
}

variable "create_nat_gateway" {
  type = bool
}

variable "ssh_cidr_blocks" {
  type = list(string)
}

variable "eks_cluster_name" {
  description = "Tags subnets for the EKS cluster's load balancers when set."
  type        = string
  default     = null
}
