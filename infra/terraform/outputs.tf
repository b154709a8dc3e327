output "region" {
  value = var.region
}

output "bucket_name" {
  description = "The runs bucket."
  value       = module.storage.bucket_name
}

output "runs_uri" {
  description = "Put this in run.uri (with a run name after it): s3://BUCKET/runs"
  value       = "s3://${module.storage.bucket_name}/runs"
}

output "ray_head_instance_profile_arn" {
  value = var.create_ray_iam ? module.ray_iam[0].head_instance_profile_arn : null
}

output "ray_worker_instance_profile_arn" {
  description = "Instance profile of Ray worker nodes (runs bucket access only)."
  value       = var.create_ray_iam ? module.ray_iam[0].worker_instance_profile_arn : null
}

output "vpc_id" {
  value = var.create_network ? module.network[0].vpc_id : null
}

output "public_subnet_ids" {
  value = var.create_network ? module.network[0].public_subnet_ids : []
}

output "private_subnet_ids" {
  value = var.create_network ? module.network[0].private_subnet_ids : []
}

output "ray_security_group_id" {
  value = var.create_network ? module.network[0].ray_security_group_id : null
}

output "eks_cluster_name" {
  value = var.create_eks ? module.eks[0].cluster_name : null
}

output "eks_kubeconfig_command" {
  value = var.create_eks ? "aws eks update-kubeconfig --region ${var.region} --name ${module.eks[0].cluster_name}" : null
}

output "availability_zones" {
  value = var.create_network ? module.network[0].availability_zones : []
}

output "ray_cluster_name" {
  description = "cluster_name the head's autoscaler permissions are scoped to."
  value       = var.ray_cluster_name
}
