# A VPC with one public and one private subnet per zone. Ray launcher heads sit in public subnets
# (reached over SSH by `ray up`); EKS nodes in private ones. S3 goes through a free gateway endpoint,
# so checkpoint traffic never pays NAT charges.

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Zones are picked once at creation; subnets keep theirs when the list changes.
  state = "available"
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, min(var.az_count, length(data.aws_availability_zones.available.names)))
  eks_tags = var.eks_cluster_name == null ? {} : {
    "kubernetes.io/cluster/${var.eks_cluster_name}" = "shared"
  }
}

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:Flow logs cost per GB of traffic (checkpoints, datasets); enable them where policy requires.
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = "${var.name_prefix}-vpc" }
}

# The VPC's default security group admits nothing: every resource names its own group.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.this.id
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name_prefix}-igw" }
}

resource "aws_subnet" "public" {
  #checkov:skip=CKV_AWS_130:The launcher's head must be reachable by `ray up` over SSH; the security group admits only ssh_cidr_blocks.
  count                   = length(local.azs)
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = true
  tags = merge(local.eks_tags, {
    Name                     = "${var.name_prefix}-public-${local.azs[count.index]}"
    "kubernetes.io/role/elb" = "1"
  })
}

resource "aws_subnet" "private" {
  count             = length(local.azs)
  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index + 8)
  tags = merge(local.eks_tags, {
    Name                              = "${var.name_prefix}-private-${local.azs[count.index]}"
    "kubernetes.io/role/internal-elb" = "1"
  })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
  tags = { Name = "${var.name_prefix}-public" }
}

resource "aws_route_table_association" "public" {
  count          = length(aws_subnet.public)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  count  = var.create_nat_gateway ? 1 : 0
  domain = "vpc"
  tags   = { Name = "${var.name_prefix}-nat" }
}

# One NAT gateway (not one per zone): a zone outage costs private egress, not data, and halves the
# fixed cost. Per-zone NAT is a small change if that trade ever flips.
resource "aws_nat_gateway" "this" {
  count         = var.create_nat_gateway ? 1 : 0
  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id
  tags          = { Name = "${var.name_prefix}-nat" }

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  dynamic "route" {
    for_each = var.create_nat_gateway ? [1] : []
    content {
      cidr_block     = "0.0.0.0/0"
      nat_gateway_id = aws_nat_gateway.this[0].id
    }
  }
  tags = { Name = "${var.name_prefix}-private" }
}

resource "aws_route_table_association" "private" {
  count          = length(aws_subnet.private)
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

data "aws_region" "current" {}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.public.id, aws_route_table.private.id]
  tags              = { Name = "${var.name_prefix}-s3" }
}

# Ray nodes of the cluster launcher: Ray's ports (GCS, object manager, workers, dashboard) stay
# inside the group; from outside only SSH, and only from ssh_cidr_blocks. The dashboard is reached
# through `ray dashboard` (an SSH tunnel), never opened to the internet.
resource "aws_security_group" "ray" {
  #checkov:skip=CKV2_AWS_5:Attached by Ray's cluster launcher (SecurityGroupIds in the rendered dft-cluster.yaml), outside terraform.
  name        = "${var.name_prefix}-ray-nodes"
  description = "Ray cluster launcher nodes of ${var.name_prefix}"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name_prefix}-ray-nodes" }
}

resource "aws_vpc_security_group_ingress_rule" "ray_internal" {
  security_group_id            = aws_security_group.ray.id
  description                  = "All traffic between Ray nodes"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.ray.id
}

resource "aws_vpc_security_group_ingress_rule" "ray_ssh" {
  for_each          = toset(var.ssh_cidr_blocks)
  security_group_id = aws_security_group.ray.id
  description       = "SSH for ray up / ray attach"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "ray_all" {
  security_group_id = aws_security_group.ray.id
  description       = "Package installs, S3, the PyTorch index"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}
