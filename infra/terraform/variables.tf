variable "aws_region" {
  description = "Region for the lake bucket, the ECS cluster and MSK."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "Deployment environment; matches SCHOOL_EQUITY_ENV (branch or prod)."
  type        = string
  default     = "prod"

  validation {
    condition     = contains(["branch", "prod"], var.environment)
    error_message = "environment must be branch or prod (local runs need no infrastructure)."
  }
}

variable "name_prefix" {
  description = "Prefix for every resource name."
  type        = string
  default     = "school-equity"
}

# ---- lake -------------------------------------------------------------------

variable "lake_bucket_name" {
  description = "Globally unique S3 bucket name for Bronze Parquet and Silver Delta tables."
  type        = string
}

variable "bronze_ia_after_days" {
  description = "Days before Bronze Parquet moves to STANDARD_IA. Bronze is read again only for re-materialization and backfills."
  type        = number
  default     = 90
}

variable "noncurrent_version_expiry_days" {
  description = "Days to keep overwritten or deleted object versions (Delta log checkpoints, vacuumed files)."
  type        = number
  default     = 30
}

# ---- Kafka (an existing MSK cluster) ------------------------------------------

variable "kafka_bootstrap_servers" {
  description = "Bootstrap brokers of the existing MSK (or any Kafka) cluster, host:port."
  type        = list(string)
}

variable "kafka_tls_enabled" {
  description = "Use TLS to the brokers (MSK: true)."
  type        = bool
  default     = true
}

variable "kafka_sasl_mechanism" {
  description = "SASL mechanism for the Kafka provider (MSK IAM: aws-iam)."
  type        = string
  default     = "aws-iam"
}

variable "survey_topic_name" {
  description = "Topic of survey submission events (SCHOOL_EQUITY_TOPIC)."
  type        = string
  default     = "survey_submissions"
}

variable "survey_topic_partitions" {
  description = "Partitions of the survey topic. Keys are submission ids, so every version of one submission stays on one partition."
  type        = number
  default     = 6
}

variable "survey_topic_replication_factor" {
  description = "Replication factor of the survey topic."
  type        = number
  default     = 3
}

variable "survey_topic_retention_ms" {
  description = "Topic retention. Bronze keeps every record; retention only has to outlast the longest ingestion outage."
  type        = number
  default     = 1209600000 # 14 days
}

# ---- compute (Dagster+ Hybrid ECS agent) --------------------------------------

variable "log_retention_days" {
  description = "CloudWatch retention for code server and run logs."
  type        = number
  default     = 30
}

# ---- Snowflake (Gold) ---------------------------------------------------------
# Names only. The warehouse, database and role are managed in Snowflake (or with
# the Snowflake provider in a separate state); the password lives in Secrets
# Manager and is never a Terraform variable.

variable "snowflake_account" {
  description = "Snowflake account identifier (SNOWFLAKE_ACCOUNT)."
  type        = string
}

variable "snowflake_user" {
  description = "Service user dbt connects as (SNOWFLAKE_USER)."
  type        = string
  default     = "SCHOOL_EQUITY_DBT"
}

variable "snowflake_role" {
  description = "Role dbt uses (SNOWFLAKE_ROLE)."
  type        = string
  default     = "TRANSFORMER"
}

variable "snowflake_warehouse" {
  description = "Virtual warehouse dbt runs on (SNOWFLAKE_WAREHOUSE)."
  type        = string
  default     = "TRANSFORMING"
}

variable "snowflake_database" {
  description = "Database of the Gold models (SNOWFLAKE_DATABASE)."
  type        = string
  default     = "SCHOOL_EQUITY"
}

variable "snowflake_schema" {
  description = "Schema of the Gold models (SNOWFLAKE_SCHEMA)."
  type        = string
  default     = "GOLD"
}

variable "msk_cluster_arn" {
  description = "ARN of the MSK cluster, for the IAM policy of the Bronze consumer and the producer."
  type        = string
}

variable "runtime_secret_names" {
  description = "Secrets Manager secrets (names = environment variable names) injected into code servers and runs."
  type        = list(string)
  default     = ["SNOWFLAKE_PASSWORD"]
}
