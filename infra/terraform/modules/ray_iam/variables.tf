variable "name_prefix" {
  type = string
}

variable "ray_cluster_name" {
  description = "Ray's cluster_name; instances it launches carry the tag ray-cluster-name=<this>."
  type        = string
}

variable "bucket_policy_arn" {
  description = "Managed policy with access to the runs bucket."
  type        = string
}
