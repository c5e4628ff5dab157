"""The survey topic as an external asset, so the stream's source shows in the graph."""


import dagster as dg

from school_equity.kafka.client import BrokerUnavailable, TopicMissing, read_log_offsets
from school_equity.resources.kafka import KafkaResource

TOPIC_KEY = dg.AssetKey(["kafka", "survey_submissions"])
CHECK_TOPIC_READABLE = "topic_readable"

survey_topic = dg.AssetSpec(
    key=TOPIC_KEY,
    description=(
        "Kafka topic of NYC School Survey submission events (JSON, key = submission_id; schema versions 1 and 2). "
        "Grain: one record per submission attempt; resends and corrections share the submission_id. "
        "Produced outside Dagster; the survey batch sensor reads its offsets and cuts batch partitions."
    ),
    group_name="kafka",
    kinds={"kafka"},
    owners=["team:data-eng"],
    metadata={"kafka/topic_env": "SCHOOL_EQUITY_TOPIC", "dagster/table_name": "survey_submissions"},
)


@dg.asset_check(asset=TOPIC_KEY, name=CHECK_TOPIC_READABLE, description="The broker answers and the topic exists with readable offsets.")
def topic_readable(kafka: KafkaResource) -> dg.AssetCheckResult:
    consumer = None
    try:
        consumer = kafka.consumer(with_group=False)
        log = read_log_offsets(consumer, kafka.topic)
    except (BrokerUnavailable, TopicMissing) as e:
        return dg.AssetCheckResult(passed=False, description=str(e))
    finally:
        if consumer is not None:
            consumer.close(autocommit=False)
    return dg.AssetCheckResult(
        passed=True,
        metadata={
            "partitions": len(log.end),
            "records_retained": sum(log.end[p] - log.start.get(p, 0) for p in log.end),
            "end_offsets": dg.MetadataValue.json({str(p): o for p, o in log.end.items()}),
        },
    )
