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
from kafka import errors as Errors
from kafka.protocol.consumer import FetchRequest
from kafka.structs import OffsetAndMetadata

from school_equity.kafka.offsets import LogOffsets, OffsetRange
from school_equity.kafka.records import RecordColumns, decode_record_set


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


FETCH_PARTITION_BYTES = 2 * 1024 * 1024  # a fetch's bytes a partition: ~35k survey records zstd-compressed


def _fetch(consumer: KafkaConsumer, node_id: int, request: FetchRequest):
    """Send one Fetch request to ``node_id`` through the consumer's connections (its IO
    thread) and wait for the response."""
    manager = consumer._manager  # kafka-python is pinned exactly; see iter_range_columns

    async def send():
        return await manager.send(request, node_id=node_id, request_timeout_ms=consumer.config["request_timeout_ms"])

    return manager.run(send)


def fetch_request(consumer: KafkaConsumer, topic: str, positions: dict[int, int], partition_bytes: int) -> FetchRequest:
    """A full Fetch (no fetch session, read-uncommitted) of ``topic``'s partitions from
    their ``positions``, up to ``partition_bytes`` a partition."""
    return FetchRequest(
        max_wait_ms=consumer.config["fetch_max_wait_ms"], min_bytes=1,
        max_bytes=max(consumer.config["fetch_max_bytes"], partition_bytes * len(positions)),
        isolation_level=0, session_id=0, session_epoch=-1,
        topics=[FetchRequest.FetchTopic(topic=topic, partitions=[
            FetchRequest.FetchTopic.FetchPartition(
                partition=p, current_leader_epoch=-1, fetch_offset=offset, last_fetched_epoch=-1,
                log_start_offset=-1, partition_max_bytes=partition_bytes)
            for p, offset in positions.items()])],
        forgotten_topics_data=[], rack_id="", min_version=4, max_version=12,
    )


def iter_range_columns(consumer: KafkaConsumer, topic: str, ranges: list[OffsetRange], *,
                       stall_timeout_s: float = 20.0,
                       partition_bytes: int | None = None) -> Iterator[tuple[OffsetRange, RecordColumns]]:
    """Yield ``(range, columns)`` chunks of every range (at most one per partition), in
    offset order within each, and nothing outside the ranges, reading all partitions at
    once: one Fetch request a leader serves every partition it leads.

    The consumer's connections and metadata are used, not its fetcher: Fetch responses
    are decoded by ``school_equity.kafka.records`` straight into columns, where the
    fetcher makes Python objects of every record (~7-11 us a record against ~2). The
    request is kafka-python's own ``FetchRequest`` (a full fetch, no fetch session;
    read-uncommitted, as the consumer reads by default), sent through its IO thread
    (``KafkaConsumer._manager``, internal: kafka-python is pinned exactly). The
    consumer's assignment and positions are left untouched.

    Raises when a range cannot be completed (the log ends before it, e.g. the topic was
    recreated, or its start was deleted): a short batch would silently lose records.
    """
    nonempty = [r for r in ranges if r.size > 0]
    todo = {r.partition: r for r in nonempty}
    if len(todo) != len(nonempty):
        raise ValueError(f"{topic}: more than one range per partition in {ranges}")
    if not todo:
        return
    partition_bytes = partition_bytes or FETCH_PARTITION_BYTES
    cluster = consumer._manager.cluster
    check_crcs = bool(consumer.config.get("check_crcs", True))
    position = {p: r.start for p, r in todo.items()}
    high_watermark: dict[int, int] = {}
    last_error = ""
    last_progress = time.monotonic()
    if any(cluster.leader_for_partition(TopicPartition(topic, p)) is None for p in todo):
        topic_partitions(consumer, topic)  # fetches the topic's metadata if it is not known yet
    while open_parts := sorted(p for p in todo if position[p] < todo[p].end):
        by_leader: dict[int, list[int]] = {}
        for p in open_parts:
            leader = cluster.leader_for_partition(TopicPartition(topic, p))
            if leader is None or leader < 0:
                cluster.request_update()
            else:
                by_leader.setdefault(leader, []).append(p)
        progressed = False
        for leader, parts in by_leader.items():
            request = fetch_request(consumer, topic, {p: position[p] for p in parts}, partition_bytes)
            try:
                response = _fetch(consumer, leader, request)
            except Errors.KafkaConnectionError as e:
                last_error = f"{type(e).__name__}: {e}"
                cluster.request_update()  # the leader may have moved; retried until the stall timeout
                continue
            for answer in response.responses:
                for data in answer.partitions:
                    p = data.partition_index
                    if p not in todo:
                        continue
                    error = Errors.for_code(data.error_code)
                    if error is Errors.OffsetOutOfRangeError:
                        r = todo[p]
                        raise RuntimeError(
                            f"{topic}[{p}]: range [{r.start}, {r.end}) cannot be read at offset {position[p]} "
                            f"(the broker says it is out of range); the log no longer holds this range")
                    if error is not Errors.NoError:
                        if issubclass(error, Errors.InvalidMetadataError) or error.retriable:
                            last_error = f"{error.__name__} for partition {p}"
                            cluster.request_update()
                            continue
                        raise error(f"{topic}[{p}]: fetch at offset {position[p]}")
                    if data.high_watermark >= 0:
                        high_watermark[p] = data.high_watermark
                    if not data.records:
                        continue
                    decoded = decode_record_set(data.records, p, position[p], todo[p].end, check_crcs=check_crcs)
                    if len(decoded.columns):
                        yield todo[p], decoded.columns
                    if decoded.next_offset is not None and decoded.next_offset > position[p]:
                        position[p] = min(decoded.next_offset, todo[p].end)
                        progressed = True
        if progressed:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_timeout_s:
            p = open_parts[0]  # no position moved since the loop computed it
            r = todo[p]
            raise RuntimeError(
                f"{topic}[{p}]: range [{r.start}, {r.end}) stalled at offset {position[p]} "
                f"(log high watermark {high_watermark.get(p)}); "
                + (f"the broker did not serve it (last error: {last_error})" if last_error
                   else "the log no longer holds this range")
            )
        elif not by_leader:
            time.sleep(0.05)  # waiting for metadata


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
