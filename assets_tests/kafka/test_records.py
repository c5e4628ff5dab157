"""The columnar record-set decoder (school_equity.kafka.records) against kafka-python's
own reader, on record sets built with kafka-python's batch builders: every field of
every record equal, whatever the codec, nulls, headers, timestamp type, offsets window;
control batches skipped; a partial last batch left for the next fetch; corruption
named with its partition and offset."""

from __future__ import annotations

import random
import struct

import pytest
from kafka.errors import CorruptRecordError
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.util import calc_crc32c

from school_equity.kafka.records import decode_record_set

NONE, GZIP, ZSTD = 0, 1, 4


def _batch(base: int, records: list[tuple], codec: int = NONE, *, control: bool = False,
           log_append_time: int | None = None) -> bytes:
    """One v2 batch at ``base``; records are (timestamp, key, value, headers)."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 24)
    for i, (ts, key, value, headers) in enumerate(records):
        b.append(i, timestamp=ts, key=key, value=value, headers=headers)
    buf = bytearray(b.build())
    struct.pack_into(">q", buf, 0, base)
    attrs = struct.unpack_from(">h", buf, 21)[0]
    if control:
        attrs |= 0x20
    if log_append_time is not None:  # the broker sets it, and the max timestamp
        attrs |= 0x08
        struct.pack_into(">q", buf, 35, log_append_time)
    struct.pack_into(">h", buf, 21, attrs)
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    return bytes(buf)


def _legacy(base: int, records: list[tuple], magic: int) -> bytes:
    b = LegacyRecordBatchBuilder(magic=magic, compression_type=NONE, batch_size=1 << 24)
    for i, (ts, key, value, _headers) in enumerate(records):
        b.append(base + i, timestamp=ts if magic else None, key=key, value=value)
    return bytes(b.build())


def _kafka_python(data: bytes, lo: int, hi: int) -> list[tuple]:
    """What kafka-python's consumer returns: records of non-control batches."""
    out, records = [], MemoryRecords(data)
    while (batch := records.next_batch()) is not None:
        if getattr(batch, "is_control_batch", False):
            continue
        for r in batch:
            if lo <= r.offset < hi:
                out.append((r.offset, r.timestamp, r.timestamp_type, r.key, r.value,
                            [{"key": k, "value": v} for k, v in (r.headers or [])]))
    return out


def _ours(data: bytes, lo: int, hi: int, partition: int = 3):
    d = decode_record_set(data, partition, lo, hi)
    c = d.columns
    assert c.partition == partition
    rows = list(zip(c.offset.tolist(), c.timestamp.to_pylist(), c.timestamp_type.to_pylist(), c.key.to_pylist(),
                    c.value.to_pylist(), c.headers.to_pylist(), strict=True))
    return rows, d.next_offset


def _records(rng: random.Random, n: int) -> list[tuple]:
    out = []
    for _ in range(n):
        key = None if rng.random() < 0.2 else bytes(rng.randrange(256) for _ in range(rng.choice([0, 5, 12, 13, 40])))
        value = None if rng.random() < 0.1 else bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 11, 12, 300, 5000])))
        headers = [(rng.choice(["schema_version", "producer", "é-ü", ""]),
                    None if rng.random() < 0.2 else bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 20]))))
                   for _ in range(rng.choice([0, 0, 1, 2, 3]))]
        # timestamps far apart need long varints for their deltas
        out.append((rng.choice([1_700_000_000_000, 1_700_000_000_000 + rng.randrange(1 << 40)]), key, value, headers))
    return out


@pytest.mark.parametrize("codec", [NONE, GZIP, ZSTD])
def test_every_field_equals_kafka_pythons_reading(codec):
    rng = random.Random(codec)
    data = b"".join([
        _batch(0, _records(rng, 300), codec),
        _batch(300, [(1, b"txn", b"marker", [])], control=True),  # a transaction marker: skipped
        _batch(301, _records(rng, 1), codec),
        _batch(302, _records(rng, 250), codec, log_append_time=1_800_000_000_000),
        _batch(700, _records(rng, 40), codec),  # a gap in the offsets (compaction)
    ])
    for lo, hi in [(0, 10**9), (0, 1), (150, 320), (301, 302), (320, 745), (740, 741)]:
        ours, next_offset = _ours(data, lo, hi)
        assert ours == _kafka_python(data, lo, hi), (lo, hi)
        assert next_offset == 740
    ours, _ = _ours(data, 0, 10**9)
    assert len(ours) == 591 and [r[2] for r in ours[301:551]] == [1] * 250
    assert {r[1] for r in ours[301:551]} == {1_800_000_000_000}


def test_a_partial_last_batch_is_left_for_the_next_fetch():
    rng = random.Random(1)
    first, second = _batch(10, _records(rng, 20)), _batch(30, _records(rng, 20))
    ours, next_offset = _ours(first + second[:-7], 0, 100)
    assert [r[0] for r in ours] == list(range(10, 30)) and next_offset == 30
    ours, next_offset = _ours(second[:50], 0, 100)
    assert ours == [] and next_offset is None
    ours, next_offset = _ours(b"", 0, 100)
    assert ours == [] and next_offset is None


@pytest.mark.parametrize("magic", [0, 1])
def test_older_message_formats_are_read_by_kafka_python(magic):
    records = _records(random.Random(magic), 30)
    records = [(ts, key, value, []) for ts, key, value, _ in records]
    data = _legacy(5, records, magic)
    ours, next_offset = _ours(data, 0, 100)
    assert ours == _kafka_python(data, 0, 100)
    assert [r[0] for r in ours] == list(range(5, 35)) and next_offset == 35


def test_corruption_is_named_with_its_partition_and_offset():
    good = _batch(42, _records(random.Random(2), 10))
    flipped = bytearray(good)
    flipped[100] ^= 0xFF
    with pytest.raises(CorruptRecordError, match="partition 3: record batch at offset 42 failed its CRC check"):
        decode_record_set(bytes(flipped), 3, 0, 100)
    # a record whose length disagrees with its fields (CRC not checked, as a consumer may be configured)
    b = DefaultRecordBatchBuilder(magic=2, compression_type=NONE, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    b.append(0, timestamp=1, key=b"k", value=b"v", headers=[])
    b.append(1, timestamp=1, key=b"k", value=b"vv", headers=[])
    buf = bytearray(b.build())
    struct.pack_into(">q", buf, 0, 42)
    assert buf[61] == 2 * 8  # the first record's length (zigzag 8): make it say 9
    buf[61] = 2 * 9
    with pytest.raises(CorruptRecordError, match="partition 3: record batch at offset 42"):
        decode_record_set(bytes(buf), 3, 0, 100, check_crcs=False)


def test_a_length_pointing_past_the_records_is_named():
    b = DefaultRecordBatchBuilder(magic=2, compression_type=NONE, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    b.append(0, timestamp=1, key=b"k", value=b"v", headers=[])
    buf = bytearray(b.build())
    struct.pack_into(">q", buf, 0, 7)
    # record: length, attributes, timestamp delta, offset delta, key length (zigzag 1 = 2)
    assert buf[61 + 4] == 2
    buf[61 + 4] = 0x7E  # key length 63: past the record and the batch
    with pytest.raises(CorruptRecordError, match="partition 3: record batches at offsets 7..7"):
        decode_record_set(bytes(buf), 3, 0, 100, check_crcs=False)
