variable "bucket_name" {
  description = "Bucket name; null gives a unique name from bucket_prefix."
  type        = string
  default     = null
}

variable "bucket_prefix" {
  description = "Prefix of a generated bucket name."
  type        = string
}

variable "force_destroy" {
  type    = bool
  default = false
}

variable "kms_key_arn" {
  type    = string
  default = null
}

variable "noncurrent_version_expiration_days" {
  type = number
}

variable "abort_incomplete_multipart_days" {
  type = number
}

variable "scratch_expiration_days" {
  type = number
}

variable "lifecycle_rules" {
  type    = bool
  default = true
}
