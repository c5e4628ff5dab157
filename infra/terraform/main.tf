locals {
  name = "${var.name_prefix}-${var.environment}"

  # MSK IAM resources share the cluster ARN's account/name/uuid.
  msk_topic_arn = "${replace(var.msk_cluster_arn, ":cluster/", ":topic/")}/${var.survey_topic_name}"
  msk_group_arn = "${replace(var.msk_cluster_arn, ":cluster/", ":group/")}/school_equity.*"

  # Non-secret settings of code servers and runs: set them on the Dagster+ agent's
  # task (dagster_cloud.yaml lists the names it forwards). Secrets are not here.
  runtime_environment = {
    SCHOOL_EQUITY_ENV            = var.environment
    SCHOOL_EQUITY_LAKE           = "s3://${aws_s3_bucket.lake.bucket}/lake"
    SCHOOL_EQUITY_KAFKA          = join(",", var.kafka_bootstrap_servers)
    SCHOOL_EQUITY_TOPIC          = var.survey_topic_name
    SCHOOL_EQUITY_CONSUMER_GROUP = "school_equity.bronze"
    AWS_REGION                   = var.aws_region
    SNOWFLAKE_ACCOUNT            = var.snowflake_account
    SNOWFLAKE_USER               = var.snowflake_user
    SNOWFLAKE_ROLE               = var.snowflake_role
    SNOWFLAKE_WAREHOUSE          = var.snowflake_warehouse
    SNOWFLAKE_DATABASE           = var.snowflake_database
    SNOWFLAKE_SCHEMA             = var.snowflake_schema
  }
}

# ---- lake: Bronze Parquet + Silver Delta ---------------------------------------

resource "aws_s3_bucket" "lake" {
  bucket = var.lake_bucket_name
}

resource "aws_s3_bucket_public_access_block" "lake" {
  bucket                  = aws_s3_bucket.lake.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# Versioning is a safety net under Delta's own time travel: a bad VACUUM or an
# overwritten Bronze file can still be recovered for a while.
resource "aws_s3_bucket_versioning" "lake" {
  bucket = aws_s3_bucket.lake.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    id     = "bronze-to-infrequent-access"
    status = "Enabled"
    filter {
      prefix = "lake/bronze/"
    }
    transition {
      days          = var.bronze_ia_after_days
      storage_class = "STANDARD_IA"
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiry_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

# ---- image repository for the user-code image (docker/Dockerfile, target user_code)

resource "aws_ecr_repository" "user_code" {
  name                 = "${local.name}-user-code"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
}

resource "aws_ecr_lifecycle_policy" "user_code" {
  repository = aws_ecr_repository.user_code.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the last 50 images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 50
      }
      action = { type = "expire" }
    }]
  })
}

# ---- ECS: where the Dagster+ Hybrid agent starts code servers and runs ----------
# The agent itself is installed with Dagster's CloudFormation template or module
# into this cluster; it is not declared here.

resource "aws_ecs_cluster" "dagster" {
  name = local.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "dagster" {
  name              = "/ecs/${local.name}"
  retention_in_days = var.log_retention_days
}

# Secret containers only: values are put with the AWS CLI or console, never by
# Terraform (they would land in state). dagster_cloud.yaml's `secrets_tags` makes
# the ECS agent inject every secret tagged `school-equity` as an environment
# variable named after the secret, so the name is the variable name the code
# reads. One environment per AWS account (or region), as the names are fixed.
resource "aws_secretsmanager_secret" "runtime" {
  for_each    = toset(var.runtime_secret_names)
  name        = each.value
  description = "school_equity ${var.environment}: ${each.value}"
  tags = {
    school-equity = "true"
  }
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Task role: what code servers and runs may touch.
resource "aws_iam_role" "task" {
  name               = "${local.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "LakeList"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.lake.arn]
  }

  statement {
    sid       = "LakeObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.lake.arn}/*"]
  }

  statement {
    sid       = "KafkaConnect"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = [var.msk_cluster_arn]
  }

  statement {
    sid = "KafkaTopic"
    actions = [
      "kafka-cluster:DescribeTopic",
      "kafka-cluster:ReadData",
      "kafka-cluster:WriteData",
    ]
    resources = [local.msk_topic_arn]
  }

  # The Bronze asset commits consumer-group offsets after each landed batch.
  statement {
    sid       = "KafkaGroup"
    actions   = ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
    resources = [local.msk_group_arn]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "${local.name}-task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# Execution role: what ECS itself needs to start the task (pull, logs, secrets).
resource "aws_iam_role" "execution" {
  name               = "${local.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution_managed" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for secret in aws_secretsmanager_secret.runtime : secret.arn]
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "${local.name}-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}
