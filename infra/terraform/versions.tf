terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    # Topics are not an AWS API resource, even on MSK: this provider talks the
    # Kafka admin protocol to the brokers.
    kafka = {
      source  = "Mongey/kafka"
      version = "~> 0.8"
    }
  }

  # State lives in a bucket created out of band (chicken and egg); pass the
  # settings with `terraform init -backend-config=...`.
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = {
      project     = "school_equity"
      environment = var.environment
      managed_by  = "terraform"
    }
  }
}

provider "kafka" {
  bootstrap_servers = var.kafka_bootstrap_servers
  tls_enabled       = var.kafka_tls_enabled
  # MSK with IAM auth; credentials come from the standard AWS chain.
  sasl_mechanism  = var.kafka_sasl_mechanism
  sasl_aws_region = var.aws_region
}
