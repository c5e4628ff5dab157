# The survey topic with its settings in code, so a recreated topic (offsets going
# backwards, which the sensor reports) is a reviewed change, not an accident.
resource "kafka_topic" "survey_submissions" {
  name               = var.survey_topic_name
  partitions         = var.survey_topic_partitions
  replication_factor = var.survey_topic_replication_factor

  config = {
    "cleanup.policy"      = "delete"
    "retention.ms"        = tostring(var.survey_topic_retention_ms)
    "min.insync.replicas" = tostring(min(2, var.survey_topic_replication_factor))
    "compression.type"    = "zstd"
  }

  lifecycle {
    # Reducing partitions is impossible in Kafka and recreating would reset offsets.
    prevent_destroy = true
  }
}
