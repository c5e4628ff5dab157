"""Thin kafka-python helpers: read the log's offsets, read a fixed range, commit.

No Dagster imports. Everything here works the same on real Kafka and on Tansu;
where Tansu differs (its ListOffsets answer can stop at the start of the last
record batch), the general approach below is right for both.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from school_equity.kafka.offsets import LogOffsets, OffsetRange


class BrokerUnavailable(RuntimeError):
    pass


class TopicMissing(RuntimeError):
    pass


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for hp in bootstrap.split(","):
        host, _, port = hp.strip().rpartition(":")
        out.append((host.strip("[]") or "127.0.0.1", int(port)))
    return out


def probe(bootstrap: str, timeout_s: float = 0.5) -> None:
    """Fail fast (well under a second) when no bootstrap server accepts a connection,
    instead of letting the client retry for its full bootstrap timeout."""
    errors = []
    for host, port in _hosts(bootstrap):
        try:
            socket.create_connection((host, port), timeout_s).close()
            return
        except OSError as e:
            errors.append(f"{host}:{port}: {e}")
    raise BrokerUnavailable(f"no Kafka broker answers at {bootstrap} ({'; '.join(errors)})")


def make_consumer(bootstrap: str, group_id: str | None = None, **overrides) -> KafkaConsumer:
    probe(bootstrap)
    config = dict(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="none",
        bootstrap_timeout_ms=2_000,
        request_timeout_ms=10_000,
        # The Bronze reader pulls big chunks; the small tick reads don't mind.
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        max_poll_records=20_000,
        fetch_max_wait_ms=100,
    )
    config.update(overrides)
    try:
        return KafkaConsumer(**config)
    except Exception as e:  # kafka-python raises several types for "cannot bootstrap"
        raise BrokerUnavailable(f"cannot bootstrap from {bootstrap}: {e}") from e


def topic_partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise TopicMissing(f"topic {topic!r} does not exist on the broker")
    return [TopicPartition(topic, p) for p in sorted(parts)]


def read_log_offsets(consumer: KafkaConsumer, topic: str, timeout_s: float = 0.8) -> LogOffsets:
    """First retained offset and end offset of each partition.

    The end offset is max(ListOffsets answer, fetch high watermark): a fetch at the
    last offset ListOffsets reports returns at once with the partition's high
    watermark, which some brokers (Tansu) report more accurately. Records the fetch
    returns are discarded: this reads offsets, it does not consume.
    """
    tps = topic_partitions(consumer, topic)
    try:
        listed_end = consumer.end_offsets(tps)
        first = consumer.beginning_offsets(tps)
    except Exception as e:
        raise BrokerUnavailable(f"cannot list offsets of {topic!r}: {e}") from e
    end = {tp.partition: int(listed_end[tp]) for tp in tps}
    probe_tps = [tp for tp in tps if listed_end[tp] > first[tp]]
    if probe_tps:
        consumer.assign(probe_tps)
        for tp in probe_tps:
            consumer.seek(tp, listed_end[tp] - 1)
        seen: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(seen) < len(probe_tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=50, max_records=1, update_offsets=False)
            for tp in probe_tps:
                hw = consumer.highwater(tp)
                if hw is not None:
                    seen.add(tp.partition)
                    end[tp.partition] = max(end[tp.partition], int(hw))
        consumer.assign([])
    return LogOffsets(start={tp.partition: int(first[tp]) for tp in tps}, end=end)


def iter_ranges(consumer: KafkaConsumer, topic: str, ranges: list[OffsetRange], *,
                stall_timeout_s: float = 20.0, chunk: int = 10_000) -> Iterator[tuple[OffsetRange, list]]:
    """Yield ``(range, records)`` chunks of every range (at most one per partition) and
    nothing past each range's end, reading all partitions at once: one fetch request then
    serves every partition, where reading them one after the other pays a round trip and
    a cold fetch pipeline per partition. A partition is paused once its range is read.

    ``chunk``: records per yielded chunk. Each record is a few Python objects until the
    caller converts its chunk, and Python's allocator keeps the arenas they fragmented:
    landing 250k records with 50,000-record chunks peaked 401 MiB above the process and
    kept 260 MiB afterwards; with 10,000, 147 and 73 MiB, in the same time (4.9 vs 4.1 s).

    Raises when a range cannot be completed (the log ends before it, e.g. the topic was
    recreated): a short batch would silently lose records.
    """
    nonempty = [r for r in ranges if r.size > 0]
    todo = {r.partition: r for r in nonempty}
    if len(todo) != len(nonempty):
        raise ValueError(f"{topic}: more than one range per partition in {ranges}")
    if not todo:
        return
    tps = {p: TopicPartition(topic, p) for p in todo}
    consumer.assign(list(tps.values()))
    for p, r in todo.items():
        consumer.seek(tps[p], r.start)
    position = {p: r.start for p, r in todo.items()}
    bufs: dict[int, list] = {p: [] for p in todo}
    open_parts = set(todo)
    last_progress = time.monotonic()

    def close(p: int) -> None:
        open_parts.discard(p)
        consumer.pause(tps[p])

    try:
        while open_parts:
            polled = consumer.poll(timeout_ms=200, max_records=min(chunk, 20_000))
            progressed = False
            for tp, msgs in polled.items():
                p = tp.partition
                if p not in open_parts or not msgs:
                    continue
                end, buf = todo[p].end, bufs[p]
                for m in msgs:
                    if m.offset >= end:
                        break
                    if m.offset >= position[p]:
                        buf.append(m)
                position[p] = max(position[p], min(msgs[-1].offset + 1, end))
                progressed = True
                if len(buf) >= chunk:
                    yield todo[p], buf
                    bufs[p] = []
                if position[p] >= end:
                    close(p)
            if not progressed:
                # offsets can legitimately be skipped (transaction markers, compaction):
                # trust the consumer's position when it moved past them
                for p in sorted(open_parts):
                    pos = consumer.position(tps[p])
                    if pos is not None and pos > position[p]:
                        position[p] = min(pos, todo[p].end)
                        progressed = True
                        if position[p] >= todo[p].end:
                            close(p)
            if progressed:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout_s:
                p = min(open_parts)
                hw = consumer.highwater(tps[p])
                r = todo[p]
                raise RuntimeError(
                    f"{topic}[{p}]: range [{r.start}, {r.end}) stalled at offset {position[p]} "
                    f"(log high watermark {hw}); the log no longer holds this range"
                )
    finally:
        consumer.resume(*tps.values())
    for p, buf in bufs.items():
        if buf:
            yield todo[p], buf


def commit_if_ahead(consumer: KafkaConsumer, topic: str, ends: dict[int, int], note: str = "") -> dict[int, int]:
    """Commit the group's offsets to ``ends`` where that moves them forward.

    Batches can finish out of order; committing an older batch's end after a newer
    one would move the group backwards and make lag look worse than it is. The
    committed offset is for lag visibility in standard Kafka tools, not the source
    of truth (the batch manifests in the lake are)."""
    to_commit = {}
    for p, end in ends.items():
        tp = TopicPartition(topic, p)
        current = consumer.committed(tp)
        if current is None or current < end:
            to_commit[tp] = OffsetAndMetadata(end, note, -1)
    if to_commit:
        consumer.commit(to_commit)
    return {tp.partition: om.offset for tp, om in to_commit.items()}


def committed_offsets(consumer: KafkaConsumer, topic: str, partitions: list[int]) -> dict[int, int | None]:
    return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
