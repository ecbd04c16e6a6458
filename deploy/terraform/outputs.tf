output "gatherer_private_ips" {
  description = "Gatherer name => private IP: the dedup's [[gatherers]] database_url hosts and Prometheus's kdp-gatherer targets (port 9464)."
  value       = { for name, i in aws_instance.gatherer : name => i.private_ip }
}

output "gatherer_instance_ids" {
  description = "Gatherer name => EC2 instance id."
  value       = { for name, i in aws_instance.gatherer : name => i.id }
}

output "gatherer_availability_zones" {
  description = "Gatherer name => availability zone."
  value       = { for name, i in aws_instance.gatherer : name => i.availability_zone }
}

output "gatherer_pgdata_volume_ids" {
  description = "Gatherer name => EBS volume id of its PostgreSQL data volume."
  value       = { for name, v in aws_ebs_volume.gatherer_pgdata : name => v.id }
}

output "dedup_private_ip" {
  description = "Private IP of the dedup host (Prometheus target, port 9465)."
  value       = aws_instance.dedup.private_ip
}

output "dedup_instance_id" {
  description = "EC2 instance id of the dedup host."
  value       = aws_instance.dedup.id
}

output "production_address" {
  description = "Host name of production PostgreSQL (the dedup's production_database_url)."
  value       = aws_db_instance.production.address
}

output "production_port" {
  description = "Port of production PostgreSQL."
  value       = aws_db_instance.production.port
}

output "production_master_user_secret_arn" {
  description = "Secrets Manager ARN of the RDS master (kdp_admin) password, for creating the kdp roles."
  value       = aws_db_instance.production.master_user_secret[0].secret_arn
}

output "security_group_ids" {
  description = "Security group ids by role."
  value = {
    gatherer   = aws_security_group.gatherer.id
    dedup      = aws_security_group.dedup.id
    production = aws_security_group.production.id
  }
}

output "metrics_ports" {
  description = "Metrics ports, reachable from the VPC CIDR only."
  value = {
    gatherer = local.gatherer_metrics_port
    dedup    = local.dedup_metrics_port
  }
}
