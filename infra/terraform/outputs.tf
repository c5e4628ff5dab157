output "lake_uri" {
  description = "SCHOOL_EQUITY_LAKE for branch/prod."
  value       = "s3://${aws_s3_bucket.lake.bucket}/lake"
}

output "user_code_repository_url" {
  description = "Where CI pushes the user_code image (dagster_cloud.yaml build.registry)."
  value       = aws_ecr_repository.user_code.repository_url
}

output "ecs_cluster_name" {
  description = "Cluster for the Dagster+ ECS agent."
  value       = aws_ecs_cluster.dagster.name
}

output "task_role_arn" {
  description = "Task role for code servers and runs (container_context.ecs.task_role_arn)."
  value       = aws_iam_role.task.arn
}

output "execution_role_arn" {
  description = "Execution role (container_context.ecs.execution_role_arn)."
  value       = aws_iam_role.execution.arn
}

output "log_group_name" {
  description = "CloudWatch log group of code servers and runs."
  value       = aws_cloudwatch_log_group.dagster.name
}

output "survey_topic" {
  description = "SCHOOL_EQUITY_TOPIC."
  value       = kafka_topic.survey_submissions.name
}

output "runtime_environment" {
  description = "Non-secret environment of code servers and runs, for the agent's task definition."
  value       = local.runtime_environment
}
