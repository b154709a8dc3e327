output "cluster_name" {
  value = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  value = aws_eks_cluster.this.endpoint
}

output "gpu_node_group" {
  value = aws_eks_node_group.gpu.node_group_name
}

output "ray_pods_role_arn" {
  value = aws_iam_role.ray_pods.arn
}
