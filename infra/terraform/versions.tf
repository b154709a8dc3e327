terraform {
  required_version = ">= 1.9"

  required_providers {
    # The only provider: everything Kubernetes-side (KubeRay, RayCluster, RayJob) is plain YAML
    # under cluster/kuberay/, applied with kubectl.
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 6.0"
    }
  }
}
