"""Send the simulated survey stream (`events.SurveyStream`) to a Kafka topic.

`produce(...)` creates the topic if it is missing, sends every record with its key
(submission_id) and headers, and returns a `ProduceReport`: the stream's ground truth
plus timing. As fast as possible by default; `rate_per_s` paces it for benchmarks and
for running beside `dagster dev`; `max_seconds` or a `stop_event` end it early and
cleanly (records already generated are still sent, so the report stays exact).

Kafka record timestamps are left to the client (CreateTime = send time): the simulated
event times lie in the survey window, and back-dated record timestamps would make a
real broker's time-based retention delete the data at once.

CLI glue: `add_producer_arguments(parser)` + `run_from_args(args)`, or
`python -m school_equity.kafka.producer --help`.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date

from school_equity.kafka.events import PRODUCER_ID, GeneratorConfig, StreamReport, SurveyStream

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 3

# Throughput settings: big batches and a short linger amortise the client's per-request
# work; acks=all with idempotence (kafka-python's default) keeps per-partition order
# through retries, which "newer wins by Kafka position" downstream relies on.
DEFAULT_PRODUCER_CONFIGS: dict = {
    "acks": "all",
    "linger_ms": 20,
    "batch_size": 256 * 1024,
    "max_request_size": 4 * 1024 * 1024,
    "client_id": "school_equity-producer",
    "metrics_enabled": False,
    # zstd record batches are ~4x smaller for about 3% of the consumer's time. It matters
    # most on the embedded broker, which keeps the topic in memory: for 200k events Tansu
    # held 125 MiB uncompressed, 38 MiB with zstd (lz4 50, gzip 40), while a kafka-python
    # consumer read 93k records/s uncompressed, 90k zstd (lz4 90k, gzip 84k). Needs the
    # `zstandard` package (pinned) on producers and consumers alike.
    "compression_type": "zstd",
}


@dataclass
class ProduceReport:
    bootstrap: str
    topic: str
    partitions: int
    topic_created: bool
    requested_events: int
    stream: StreamReport
    elapsed_s: float
    stopped_early: bool
    stop_reason: str | None = None

    @property
    def events(self) -> int:
        return self.stream.events

    @property
    def events_per_s(self) -> float:
        return self.stream.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "bootstrap": self.bootstrap, "topic": self.topic, "partitions": self.partitions,
            "topic_created": self.topic_created, "requested_events": self.requested_events,
            "elapsed_s": round(self.elapsed_s, 3), "events_per_s": round(self.events_per_s, 1),
            "stopped_early": self.stopped_early, "stop_reason": self.stop_reason, **self.stream.to_dict(),
        }


def ensure_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS, *,
                 timeout_s: float = 15.0) -> tuple[int, bool]:
    """Create `topic` with `partitions` partitions unless it exists. Returns (partition count, created).

    An existing topic is left as it is, whatever its partition count: changing it would
    move keys between partitions and break per-submission ordering.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="school_equity-admin",
                             request_timeout_ms=int(timeout_s * 1000), bootstrap_timeout_ms=int(timeout_s * 1000))
    try:
        created = False
        if topic not in admin.list_topics():
            try:
                # replication_factor -1: the broker's default (1 on the embedded broker, 3 on a cluster)
                admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": -1}},
                                    wait_for_metadata=True)
                created = True
            except TopicAlreadyExistsError:  # another producer won the race
                pass
        admin.wait_for_topics([topic], timeout_ms=int(timeout_s * 1000))
        (meta,) = admin.describe_topics([topic])
        return len(meta["partitions"]), created
    finally:
        admin.close()


def produce(
    bootstrap: str,
    topic: str,
    n_events: int,
    *,
    seed: int | None = None,
    config: GeneratorConfig | None = None,
    rate_per_s: float | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    max_seconds: float | None = None,
    stop_event: threading.Event | None = None,
    create_topic: bool = True,
    producer_configs: dict | None = None,
    progress: Callable[[dict], None] | None = None,
    progress_every: int = 100_000,
    max_unacked: int = 20_000,
) -> ProduceReport:
    """Send `n_events` simulated survey records to `topic` and wait until all are acknowledged.

    seed overrides config.seed (default config: `GeneratorConfig()`, seed 42).
    rate_per_s: steady pace (records per second); None sends as fast as possible.
    max_seconds / stop_event: end early; the records already generated are still sent.
    max_unacked bounds the records in flight: kafka-python's accumulator has no memory cap.
    20,000 is ~40 full request batches, enough to keep the broker busy: 300k records took
    the same time as with 200,000 (24.9 s), and the producing process kept 80 MiB less
    afterwards (the headless demo produces in the process that then runs the pipeline).
    Raises RuntimeError if any record could not be delivered.
    """
    from kafka import KafkaProducer

    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    cfg = config or GeneratorConfig()
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    created = ensure_topic(bootstrap, topic, partitions)[1] if create_topic else False

    stream = SurveyStream(n_events, cfg)
    kafka = KafkaProducer(bootstrap_servers=bootstrap, **{**DEFAULT_PRODUCER_CONFIGS, **(producer_configs or {})})
    unacked: collections.deque = collections.deque()
    stop_reason: str | None = None
    started = time.monotonic()
    deadline = started + max_seconds if max_seconds is not None else None
    sent = 0
    try:
        n_partitions = len(kafka.partitions_for(topic))
        for rec in stream:
            if stop_reason is None:
                if stop_event is not None and stop_event.is_set():
                    stop_reason = "stop requested"
                elif deadline is not None and time.monotonic() >= deadline:
                    stop_reason = f"max_seconds={max_seconds} reached"
                if stop_reason is not None:
                    stream.stop()  # the loop goes on only to send what is already generated
            if rate_per_s is not None and stop_reason is None:
                ahead = started + sent / rate_per_s - time.monotonic()
                if ahead > 0.002:
                    time.sleep(ahead)
            unacked.append(kafka.send(topic, key=rec.key, value=rec.value, headers=rec.headers))
            sent += 1
            if len(unacked) > max_unacked:
                for _ in range(max_unacked // 10):
                    unacked.popleft().get(timeout=120)  # raises the delivery error, if any
            if progress is not None and sent % progress_every == 0:
                progress(_progress(sent, n_events, started))
        kafka.flush(timeout=120)
        failed = [f for f in unacked if f.failed()]
        if failed or any(not f.is_done for f in unacked):
            first = failed[0].exception if failed else "not acknowledged in time"
            raise RuntimeError(f"{len(failed)} of {sent} records not delivered to {topic}: {first}")
    finally:
        kafka.close(timeout=10)
    elapsed = time.monotonic() - started
    report = ProduceReport(bootstrap, topic, n_partitions, created, n_events, stream.report, elapsed,
                           stopped_early=stop_reason is not None, stop_reason=stop_reason)
    if progress is not None:
        progress(_progress(sent, n_events, started, done=True))
    return report


def _progress(sent: int, total: int, started: float, done: bool = False) -> dict:
    elapsed = time.monotonic() - started
    return {"sent": sent, "total": total, "elapsed_s": round(elapsed, 2),
            "events_per_s": round(sent / elapsed, 1) if elapsed > 0 else 0.0, "done": done}


# -- command line ---------------------------------------------------------------------------

def add_producer_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The producer's options; bootstrap and topic default to the environment's settings."""
    d = GeneratorConfig()
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: SCHOOL_EQUITY_KAFKA / settings)")
    parser.add_argument("--topic", help="topic (default: SCHOOL_EQUITY_TOPIC / settings)")
    parser.add_argument("-n", "--events", type=int, default=100_000, help="records to send (default 100000)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--rate", type=float, default=None, help="records per second (default: as fast as possible)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS, help="when creating the topic")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--survey-year", type=int, default=d.survey_year)
    parser.add_argument("--window-start", type=date.fromisoformat, default=None,
                        help="first day of the survey window, YYYY-MM-DD (default: first Monday of March)")
    parser.add_argument("--window-days", type=int, default=d.window_days)
    parser.add_argument("--v2-after", type=float, default=d.v2_after_fraction,
                        help="fraction of the stream after which schema version 2 starts (default 0.5; >1: never)")
    parser.add_argument("--malformed-rate", type=float, default=d.malformed_rate)
    parser.add_argument("--duplicate-rate", type=float, default=d.duplicate_rate)
    parser.add_argument("--correction-rate", type=float, default=d.correction_rate)
    parser.add_argument("--late-rate", type=float, default=d.late_rate)
    parser.add_argument("--out-of-order-rate", type=float, default=d.out_of_order_rate)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def config_from_args(args: argparse.Namespace) -> GeneratorConfig:
    return GeneratorConfig(
        seed=args.seed, survey_year=args.survey_year, window_start=args.window_start, window_days=args.window_days,
        v2_after_fraction=None if args.v2_after is None or args.v2_after > 1 else args.v2_after,
        malformed_rate=args.malformed_rate, duplicate_rate=args.duplicate_rate,
        correction_rate=args.correction_rate, late_rate=args.late_rate, out_of_order_rate=args.out_of_order_rate,
    )


def run_from_args(args: argparse.Namespace, *, stop_event: threading.Event | None = None) -> ProduceReport:
    """Run the producer from parsed arguments; SIGINT/SIGTERM stop it cleanly (flush, then report)."""
    from school_equity.settings import load_settings

    settings = load_settings() if not (args.bootstrap and args.topic) else None
    bootstrap = args.bootstrap or settings.kafka_bootstrap
    topic = args.topic or settings.topic
    stop = stop_event or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        def show(p: dict) -> None:
            print(f"[{PRODUCER_ID}] {p['sent']:,}/{p['total']:,} records, {p['elapsed_s']}s, "
                  f"{p['events_per_s']:,.0f}/s", file=sys.stderr, flush=True)

        report = produce(bootstrap, topic, args.events, config=config_from_args(args), rate_per_s=args.rate,
                         partitions=args.partitions, max_seconds=args.max_seconds, stop_event=stop, progress=show,
                         progress_every=max(1000, min(100_000, int(args.rate or 100_000) * 10)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return report


def format_report(report: ProduceReport) -> str:
    s = report.stream
    malformed = ", ".join(f"{k} {v}" for k, v in sorted(s.malformed.items())) or "none"
    versions = ", ".join(f"v{k} {v:,}" for k, v in sorted(s.schema_versions.items()))
    lines = [
        f"produced {s.events:,} records to {report.topic} ({report.partitions} partitions) at {report.bootstrap} "
        f"in {report.elapsed_s:.1f}s ({report.events_per_s:,.0f}/s)"
        + (f", stopped early: {report.stop_reason}" if report.stopped_early else ""),
        f"  valid distinct submissions {s.valid_submissions:,} "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(s.valid_by_respondent_type.items()))})",
        f"  duplicates {s.duplicates:,}, corrections {s.corrections:,}, late {s.late:,}, "
        f"out of order {s.out_of_order:,}",
        f"  malformed {s.malformed_total:,}: {malformed}",
        f"  schema versions: {versions}; final-versions hash {s.final_versions_hash:016x}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = add_producer_arguments(argparse.ArgumentParser(
        prog="python -m school_equity.kafka.producer", description="Send simulated NYC School Survey submissions"))
    run_from_args(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
