locals {
  tags = merge({ Project = "kdp" }, var.tags)

  # Ports. 9464 is the gatherer's metrics_addr port (its default, 127.0.0.1:9464, in
  # engine/src/telemetry/http.rs; the example configs listen on 0.0.0.0:9464). 9465 is the
  # dedup's, as planned in deploy/config/dedup.toml (the dedup is not built yet).
  postgres_port         = 5432
  gatherer_metrics_port = 9464
  dedup_metrics_port    = 9465
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_subnet" "gatherer" {
  for_each = var.gatherer_subnet_ids
  id       = each.value
}

# ---- security groups -----------------------------------------------------------------------
#
# Terraform removes the allow-all egress rule AWS adds to a new group, so each group has
# exactly the rules below.

resource "aws_security_group" "gatherer" {
  name        = "${var.name_prefix}-gatherer"
  description = "kdp gatherers: PostgreSQL from the dedup only, metrics from the VPC only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name_prefix}-gatherer" })
}

resource "aws_security_group" "dedup" {
  name        = "${var.name_prefix}-dedup"
  description = "kdp deduplicator: metrics from the VPC only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name_prefix}-dedup" })
}

resource "aws_security_group" "production" {
  name        = "${var.name_prefix}-production"
  description = "kdp production PostgreSQL: from the dedup (and listed reader CIDRs) only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name_prefix}-production" })
}

# Gatherer databases: the dedup is their only remote client.
resource "aws_vpc_security_group_ingress_rule" "gatherer_postgres_from_dedup" {
  security_group_id            = aws_security_group.gatherer.id
  description                  = "gatherer PostgreSQL, from the dedup only"
  ip_protocol                  = "tcp"
  from_port                    = local.postgres_port
  to_port                      = local.postgres_port
  referenced_security_group_id = aws_security_group.dedup.id
}

resource "aws_vpc_security_group_ingress_rule" "gatherer_metrics_from_vpc" {
  security_group_id = aws_security_group.gatherer.id
  description       = "gatherer /metrics and /health, from the VPC only"
  ip_protocol       = "tcp"
  from_port         = local.gatherer_metrics_port
  to_port           = local.gatherer_metrics_port
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

resource "aws_vpc_security_group_ingress_rule" "dedup_metrics_from_vpc" {
  security_group_id = aws_security_group.dedup.id
  description       = "dedup /metrics and /health, from the VPC only"
  ip_protocol       = "tcp"
  from_port         = local.dedup_metrics_port
  to_port           = local.dedup_metrics_port
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

resource "aws_vpc_security_group_ingress_rule" "production_postgres_from_dedup" {
  security_group_id            = aws_security_group.production.id
  description                  = "production PostgreSQL, from the dedup"
  ip_protocol                  = "tcp"
  from_port                    = local.postgres_port
  to_port                      = local.postgres_port
  referenced_security_group_id = aws_security_group.dedup.id
}

resource "aws_vpc_security_group_ingress_rule" "production_postgres_from_readers" {
  for_each = toset(var.production_reader_cidr_blocks)

  security_group_id = aws_security_group.production.id
  description       = "production PostgreSQL, readers (role kdp_reader)"
  ip_protocol       = "tcp"
  from_port         = local.postgres_port
  to_port           = local.postgres_port
  cidr_ipv4         = each.value
}

# SSH is optional: no rule unless ssh_cidr_blocks is set.
resource "aws_vpc_security_group_ingress_rule" "gatherer_ssh" {
  for_each = toset(var.ssh_cidr_blocks)

  security_group_id = aws_security_group.gatherer.id
  description       = "SSH"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "dedup_ssh" {
  for_each = toset(var.ssh_cidr_blocks)

  security_group_id = aws_security_group.dedup.id
  description       = "SSH"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

# Egress: Kalshi's WebSocket and REST hosts sit behind a CDN whose addresses change, so the
# gatherers may open any outbound connection; likewise the dedup (gatherer databases,
# production, Kalshi REST for market metadata). Production has no egress rule.
resource "aws_vpc_security_group_egress_rule" "gatherer_all" {
  security_group_id = aws_security_group.gatherer.id
  description       = "outbound: Kalshi, package mirrors, time"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "dedup_all" {
  security_group_id = aws_security_group.dedup.id
  description       = "outbound: gatherer databases, production, Kalshi REST"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# ---- gatherer hosts ------------------------------------------------------------------------

resource "aws_instance" "gatherer" {
  for_each = var.gatherer_subnet_ids

  ami                    = var.ami_id
  instance_type          = var.gatherer_instance_type
  subnet_id              = each.value
  vpc_security_group_ids = [aws_security_group.gatherer.id]
  key_name               = var.ssh_key_name
  ebs_optimized          = true
  monitoring             = true

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.gatherer_root_volume_gb
    encrypted   = true
  }

  tags = merge(local.tags, {
    Name     = "${var.name_prefix}-gatherer-${each.key}"
    Role     = "gatherer"
    Gatherer = each.key
  })

  lifecycle {
    # The point of three gatherers is three failure domains.
    precondition {
      condition     = length(distinct([for s in data.aws_subnet.gatherer : s.availability_zone])) == 3
      error_message = "The three gatherer subnets must be in three different availability zones."
    }
    precondition {
      condition     = data.aws_subnet.gatherer[each.key].vpc_id == var.vpc_id
      error_message = "Every gatherer subnet must be in vpc_id."
    }
  }
}

# The gatherer's PostgreSQL data directory (mount it at /var/lib/postgresql). A separate
# volume, so an instance can be replaced and the buffered rows moved to the new one.
resource "aws_ebs_volume" "gatherer_pgdata" {
  for_each = var.gatherer_subnet_ids

  availability_zone = aws_instance.gatherer[each.key].availability_zone
  type              = "gp3"
  size              = var.gatherer_data_volume_gb
  iops              = var.gatherer_data_volume_iops
  throughput        = var.gatherer_data_volume_throughput
  encrypted         = true

  tags = merge(local.tags, {
    Name     = "${var.name_prefix}-gatherer-${each.key}-pgdata"
    Role     = "gatherer-pgdata"
    Gatherer = each.key
  })
}

resource "aws_volume_attachment" "gatherer_pgdata" {
  for_each = var.gatherer_subnet_ids

  # Shows as an NVMe device (e.g. /dev/nvme1n1) on Nitro instances; find it by volume id.
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.gatherer_pgdata[each.key].id
  instance_id = aws_instance.gatherer[each.key].id
}

# ---- dedup host ----------------------------------------------------------------------------

resource "aws_instance" "dedup" {
  ami                    = var.ami_id
  instance_type          = var.dedup_instance_type
  subnet_id              = var.dedup_subnet_id
  vpc_security_group_ids = [aws_security_group.dedup.id]
  key_name               = var.ssh_key_name
  ebs_optimized          = true
  monitoring             = true

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.dedup_root_volume_gb
    encrypted   = true
  }

  tags = merge(local.tags, {
    Name = "${var.name_prefix}-dedup"
    Role = "dedup"
  })
}

# ---- production PostgreSQL (RDS) -----------------------------------------------------------

resource "aws_db_subnet_group" "production" {
  name       = "${var.name_prefix}-production"
  subnet_ids = var.db_subnet_ids
  tags       = merge(local.tags, { Name = "${var.name_prefix}-production" })
}

resource "aws_db_instance" "production" {
  identifier     = "${var.name_prefix}-production"
  engine         = "postgres"
  engine_version = var.production_engine_version
  instance_class = var.production_instance_class

  storage_type          = "gp3"
  allocated_storage     = var.production_storage_gb
  max_allocated_storage = var.production_max_storage_gb
  storage_encrypted     = true

  db_name  = "kdp"
  username = "kdp_admin"
  # The master password is generated and kept in Secrets Manager by RDS, never in this
  # state. kdp itself uses the least-privilege roles of deploy/RUNBOOK.md, not this one.
  manage_master_user_password = true

  multi_az               = var.production_multi_az
  db_subnet_group_name   = aws_db_subnet_group.production.name
  vpc_security_group_ids = [aws_security_group.production.id]
  publicly_accessible    = false

  backup_retention_period = var.production_backup_retention_days
  backup_window           = "05:00-06:00"
  # Thursday 08:00-09:00 UTC lies inside Kalshi's weekly trading pause (Thursday 03:00-05:00
  # US Eastern) whether or not daylight saving time is in effect.
  maintenance_window         = "thu:08:00-thu:09:00"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  deletion_protection       = var.production_deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name_prefix}-production-final"
  copy_tags_to_snapshot     = true

  performance_insights_enabled = true

  tags = merge(local.tags, { Name = "${var.name_prefix}-production", Role = "production" })
}
