variable "name_prefix" {
  description = "Prefix of every resource name and Name tag."
  type        = string
  default     = "kdp"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# ---- network -------------------------------------------------------------------------------

variable "vpc_id" {
  description = "The VPC all of kdp runs in. Its CIDR is the only source allowed to scrape metrics."
  type        = string
}

variable "gatherer_subnet_ids" {
  description = "Gatherer name => private subnet. Exactly three, each in a different availability zone (checked), with a route to the internet (NAT) for Kalshi."
  type        = map(string)

  validation {
    condition     = length(var.gatherer_subnet_ids) == 3
    error_message = "Give exactly three gatherers, e.g. { a = subnet-1, b = subnet-2, c = subnet-3 }."
  }
}

variable "dedup_subnet_id" {
  description = "Private subnet of the deduplicator host (it needs the internet for Kalshi REST metadata)."
  type        = string
}

variable "db_subnet_ids" {
  description = "Private subnets for RDS production, in at least two availability zones (an RDS requirement)."
  type        = list(string)

  validation {
    condition     = length(var.db_subnet_ids) >= 2
    error_message = "RDS needs subnets in at least two availability zones."
  }
}

variable "ssh_cidr_blocks" {
  description = "CIDRs allowed to SSH (22) to the gatherer and dedup hosts. Empty (the default): no SSH rule; use SSM Session Manager."
  type        = list(string)
  default     = []
}

variable "ssh_key_name" {
  description = "EC2 key pair for SSH, or null for none."
  type        = string
  default     = null
}

variable "production_reader_cidr_blocks" {
  description = "CIDRs allowed to reach production PostgreSQL (5432) besides the dedup, e.g. researchers' subnets (role kdp_reader). Empty: dedup only."
  type        = list(string)
  default     = []
}

# ---- instances -----------------------------------------------------------------------------

variable "ami_id" {
  description = "AMI for the gatherer and dedup hosts (Debian 12 or Ubuntu 24.04, x86_64: the units and tune-host.sh assume Debian's layout)."
  type        = string
}

variable "gatherer_instance_type" {
  description = "Gatherer host type. The example configs assume 16 vCPUs (shards on 2-5, PostgreSQL on 6-7 and 14-15)."
  type        = string
  default     = "c7i.4xlarge"
}

variable "gatherer_root_volume_gb" {
  description = "Root volume of each gatherer host, GiB."
  type        = number
  default     = 30
}

variable "gatherer_data_volume_gb" {
  description = "gp3 volume for the gatherer's local PostgreSQL, GiB. Gatherer tables are kept until the dedup has committed them; size for the longest dedup outage to ride out."
  type        = number
  default     = 500
}

variable "gatherer_data_volume_iops" {
  description = "Provisioned IOPS of the gatherer data volume (gp3: 3000 included, up to 16000)."
  type        = number
  default     = 6000
}

variable "gatherer_data_volume_throughput" {
  description = "Provisioned throughput of the gatherer data volume, MiB/s (gp3: 125 included, up to 1000)."
  type        = number
  default     = 400
}

variable "dedup_instance_type" {
  description = "Deduplicator host type."
  type        = string
  default     = "c7i.2xlarge"
}

variable "dedup_root_volume_gb" {
  description = "Root volume of the dedup host, GiB (it keeps no data: cursors live in production)."
  type        = number
  default     = 30
}

# ---- production (RDS) ----------------------------------------------------------------------

variable "production_engine_version" {
  description = "RDS PostgreSQL major (or major.minor) version; kdp needs 15 or newer."
  type        = string
  default     = "16"
}

variable "production_instance_class" {
  description = "RDS instance class of production."
  type        = string
  default     = "db.r7g.xlarge"
}

variable "production_storage_gb" {
  description = "Initial gp3 storage of production, GiB."
  type        = number
  default     = 1000
}

variable "production_max_storage_gb" {
  description = "Storage autoscaling ceiling of production, GiB."
  type        = number
  default     = 8000
}

variable "production_multi_az" {
  description = "Run production Multi-AZ (a synchronous standby in another AZ)."
  type        = bool
  default     = true
}

variable "production_backup_retention_days" {
  description = "Automated backup (and point-in-time restore) retention of production, days."
  type        = number
  default     = 14
}

variable "production_deletion_protection" {
  description = "Refuse to delete the production database."
  type        = bool
  default     = true
}
