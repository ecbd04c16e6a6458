# kdp on AWS: three gatherer hosts in three availability zones (each with its own PostgreSQL on
# a gp3 volume), one deduplicator host, and the production PostgreSQL on RDS.
#
# A plain module: no provider block (the caller configures the AWS provider and region), no
# remote state, no provisioning. Installing PostgreSQL, kdp, the systemd units and the host
# tuning on the instances follows deploy/RUNBOOK.md.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}
