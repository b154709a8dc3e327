locals {
  # Non-empty endpoints mean an AWS emulator (moto in tests): no real credentials, no account
  # lookup, no instance metadata, path-style bucket addressing.
  emulated = length(var.aws_endpoints) > 0
}

provider "aws" {
  region = var.region

  skip_credentials_validation = local.emulated
  skip_metadata_api_check     = local.emulated
  skip_requesting_account_id  = local.emulated
  s3_use_path_style           = local.emulated

  dynamic "endpoints" {
    for_each = local.emulated ? [var.aws_endpoints] : []
    content {
      s3  = lookup(endpoints.value, "s3", null)
      iam = lookup(endpoints.value, "iam", null)
      sts = lookup(endpoints.value, "sts", null)
      ec2 = lookup(endpoints.value, "ec2", null)
      eks = lookup(endpoints.value, "eks", null)
      ssm = lookup(endpoints.value, "ssm", null)
    }
  }

  default_tags {
    tags = merge({ Project = "dft", ManagedBy = "terraform", DftPrefix = var.name_prefix }, var.tags)
  }
}
