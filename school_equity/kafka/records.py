"""Kafka record sets (the bytes a Fetch response holds for one partition) decoded into
columns. No network, no Dagster.

kafka-python turns each record into Python objects (a ``DefaultRecord``, then a
``ConsumerRecord``, bytes for its key and value, a list of header tuples): 7-11 us a
record, most of a landing's time. The format needs none of that to land records as
Arrow columns. Here a record set is decoded batch by batch (v2 "magic 2" batches:
header, CRC, decompression with kafka-python's codecs), the records' byte layout is
found with one short Python step per record (a record starts with its length), and
every field is then read for all the records at once with numpy: offsets and
timestamps from the varint deltas, keys, values and headers as Arrow binary views
over the decompressed batches, which Arrow copies into plain binary arrays: ~2 us a
record in all, decompression included.

Same results as kafka-python's consumer (``assets_tests/kafka/test_records.py``
compares them): control batches (transaction markers) are skipped, a null key or
value is null, a record's timestamp is its batch's max timestamp for log-append time,
and a batch that fails its CRC, or whose bytes do not add up to its records, raises
``CorruptRecordError`` naming the partition and offset. Older formats (magic 0 and 1)
are decoded by kafka-python itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from kafka import codec
from kafka.errors import CorruptRecordError
from kafka.record import MemoryRecords
from kafka.record.util import calc_crc32c

# v2 batch header: baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes,
# lastOffsetDelta, firstTimestamp, maxTimestamp, producerId, producerEpoch,
# baseSequence, recordCount
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_LOG_OVERHEAD = 12  # baseOffset + batchLength: batchLength counts the bytes after them
_CRC_FROM = 21  # the CRC covers attributes to the end of the batch
_CODECS = {1: codec.gzip_decode, 2: codec.snappy_decode, 3: codec.lz4_decode, 4: codec.zstd_decode}
_CONTROL = 0x20
_LOG_APPEND_TIME = 0x08
_PAD = 16  # zero bytes after the records, so a varint read near the end stays in bounds

HEADER_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))


@dataclass(frozen=True)
class RecordColumns:
    """Records of one partition, in offset order, as columns."""

    partition: int
    offset: np.ndarray  # int64
    timestamp: pa.Array  # int64, ms since the epoch (null: message format 0 has none)
    timestamp_type: pa.Array  # int8: 0 create time, 1 log-append time (null: format 0)
    key: pa.Array  # binary
    value: pa.Array  # binary
    headers: pa.Array  # list<struct<key: string, value: binary>>

    def __len__(self) -> int:
        return len(self.offset)


@dataclass(frozen=True)
class DecodedSet:
    columns: RecordColumns
    # the offset after the last complete batch (the next fetch's offset), None if the
    # set held no complete batch
    next_offset: int | None


def decode_record_set(data: bytes | memoryview, partition: int, lo: int, hi: int, *,
                      check_crcs: bool = True) -> DecodedSet:
    """The records of ``data`` (one partition's record set) with offsets in ``[lo, hi)``.

    A set can end with a partial batch (the broker cuts at its size limit): it is left
    for the next fetch."""
    data = memoryview(data).cast("B")
    pos, legacy = 0, False
    segments: list[bytes | memoryview] = []
    counts, bases, first_ts, max_ts, ts_types = [], [], [], [], []
    next_offset = None
    while pos + _BATCH_HEADER.size <= len(data):
        h = _BATCH_HEADER.unpack_from(data, pos)
        base, size, magic, crc, attrs, last_delta, count = h[0], _LOG_OVERHEAD + h[1], h[3], h[4], h[5], h[6], h[12]
        if size > len(data) - pos:
            break  # partial batch
        if magic != 2:
            legacy = True
            break
        if check_crcs and calc_crc32c(data[pos + _CRC_FROM:pos + size]) != crc:
            raise CorruptRecordError(f"partition {partition}: record batch at offset {base} failed its CRC check")
        next_offset = base + last_delta + 1
        if not attrs & _CONTROL and count > 0 and next_offset > lo and base < hi:
            body = data[pos + _BATCH_HEADER.size:pos + size]
            codec_id = attrs & 0x07
            if codec_id:
                if codec_id not in _CODECS:
                    raise CorruptRecordError(f"partition {partition}: record batch at offset {base} "
                                             f"has unknown compression codec {codec_id}")
                body = _CODECS[codec_id](body.tobytes())
            segments.append(body)  # joined once in _decode_v2: no copy here
            counts.append(count)
            bases.append(base)
            first_ts.append(h[7])
            max_ts.append(h[8])
            ts_types.append(1 if attrs & _LOG_APPEND_TIME else 0)
        pos += size
    if legacy:
        return _decode_legacy(data, partition, lo, hi, check_crcs)
    if not segments:
        return DecodedSet(_empty(partition), next_offset)
    cols = _decode_v2(segments, np.array(counts, np.int64), np.array(bases, np.int64), np.array(first_ts, np.int64),
                      np.array(max_ts, np.int64), np.array(ts_types, np.int8), partition, lo, hi)
    return DecodedSet(cols, next_offset)


def _empty(partition: int) -> RecordColumns:
    return RecordColumns(partition, np.empty(0, np.int64), pa.array([], pa.int64()), pa.array([], pa.int8()),
                         pa.array([], pa.binary()), pa.array([], pa.binary()), pa.array([], HEADER_TYPE))


def _record_bounds(buf: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (after its length) and length of each of the ``n`` records laid end to end
    in ``buf``: the one sequential step, a record's position depends on the one before."""
    starts, lengths = [], []
    add_start, add_length = starts.append, lengths.append
    pos = 0
    for _ in range(n):
        b = buf[pos]
        pos += 1
        v = b & 0x7F
        shift = 7
        while b & 0x80:
            b = buf[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
        v = (v >> 1) ^ -(v & 1)
        add_start(pos)
        add_length(v)
        pos += v
    return np.array(starts, np.int64), np.array(lengths, np.int64)


_K = np.arange(12, dtype=np.int64)
_SHIFTS = (7 * _K[:10]).astype(np.uint64)


def _varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The zigzag varints starting at ``pos``, and the positions after them. One- and
    two-byte varints (every length and delta of a usual record) are read directly, any
    longer one (up to ten bytes) byte by byte for the records that have one."""
    b0 = buf[pos].astype(np.int64)
    one = b0 < 0x80
    if one.all():
        return (b0 >> 1) ^ -(b0 & 1), pos + 1
    b1 = buf[pos + 1].astype(np.int64)
    v = np.where(one, b0, (b0 & 0x7F) | ((b1 & 0x7F) << 7))
    after = pos + np.where(one, 1, 2)
    longer = np.flatnonzero(~one & (b1 >= 0x80))
    if len(longer):
        p = pos[longer]
        w = buf[np.minimum(p[:, None] + _K[:10], len(buf) - 1)]
        ends = w < 0x80
        if not ends.any(axis=1).all():
            raise ValueError("a varint longer than ten bytes")
        nbytes = ends.argmax(axis=1) + 1
        parts = (w & 0x7F).astype(np.uint64) << _SHIFTS
        parts[_K[None, :10] >= nbytes[:, None]] = 0
        u = parts.sum(axis=1, dtype=np.uint64)
        v = v.astype(np.uint64)
        v[longer] = u
        after[longer] = p + nbytes
        return (v >> np.uint64(1)).astype(np.int64) ^ -(v & np.uint64(1)).astype(np.int64), after
    return (v >> 1) ^ -(v & 1), after


def _list_offsets(counts: np.ndarray) -> np.ndarray:
    """Where each record's entries start in the flat entries, and their end."""
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


_INLINE = 12  # a binary view holds values of up to 12 bytes itself


def _binary(buf: np.ndarray, pos: np.ndarray, length: np.ndarray, type_: pa.DataType = pa.binary()) -> pa.Array:
    """An Arrow binary (or string) array of the byte ranges ``[pos, pos + length)`` of
    ``buf``; a negative length is null.

    Built as a binary *view* array over ``buf`` (16 bytes a value: its length, and its
    first bytes and position, or the whole value when short), which Arrow then copies
    into a plain binary array value by value: the per-byte work is Arrow's memcpy."""
    n = len(pos)
    valid = length >= 0
    size = np.where(valid, length, 0)
    views = np.zeros((n, 16), np.uint8)
    views[:, 0:4] = size.astype("<i4").view(np.uint8).reshape(n, 4)
    # the 12 bytes from each position, gathered as items of a 12-byte type laid over the
    # buffer at every byte (the buffer ends with _PAD zero bytes: every item is inside it)
    windows = np.ndarray((len(buf) - _INLINE + 1,), np.dtype(("V", _INLINE)), buffer=buf, strides=(1,))
    views[:, 4:16] = windows[pos].view(np.uint8).reshape(n, _INLINE)
    short = np.flatnonzero(size < _INLINE)
    if len(short):  # a value held inline is padded with zeros
        views[short, 4:16] *= _K[None, :_INLINE] < size[short, None]
    long_ = size > _INLINE
    views[long_, 8:12] = 0  # buffer 0
    views[long_, 12:16] = pos[long_].astype("<i4").view(np.uint8).reshape(-1, 4)
    nulls = n - int(valid.sum())
    validity = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    view = pa.Array.from_buffers(pa.binary_view(), n, [validity, pa.py_buffer(views), pa.py_buffer(buf)],
                                 null_count=nulls)
    return view.cast(type_)


def _decode_v2(segments: list[bytes | memoryview], counts: np.ndarray, bases: np.ndarray, first_ts: np.ndarray,
               max_ts: np.ndarray, ts_types: np.ndarray, partition: int, lo: int, hi: int) -> RecordColumns:
    raw = b"".join([*segments, bytes(_PAD)])
    total = int(counts.sum())
    try:
        starts, lengths = _record_bounds(raw, total)
    except IndexError:
        raise CorruptRecordError(f"partition {partition}: records of the batches at offsets "
                                 f"{int(bases[0])}..{int(bases[-1])} run past their batch") from None
    buf = np.frombuffer(raw, np.uint8)
    batch_of = np.repeat(np.arange(len(counts)), counts)
    # a batch's records end exactly where the batch does
    seg_ends = np.cumsum([len(s) for s in segments])
    last = np.cumsum(counts) - 1
    bad = (starts[last] + lengths[last] != seg_ends) | (lengths[last] < 0)
    if bad.any():
        raise CorruptRecordError(f"partition {partition}: record batch at offset {int(bases[bad.argmax()])}: "
                                 f"its records do not fill it exactly")
    try:
        p = starts + 1  # attributes (int8, unused)
        ts_delta, p = _varints(buf, p)
        offset_delta, p = _varints(buf, p)
        key_len, p = _varints(buf, p)
        key_pos = p
        p = p + np.maximum(key_len, 0)
        value_len, p = _varints(buf, p)
        value_pos = p
        p = p + np.maximum(value_len, 0)
        header_count, p = _varints(buf, p)
        if (header_count < 0).any():
            raise ValueError("a negative number of headers")
        header_offsets = _list_offsets(header_count)
        n_headers = int(header_offsets[-1])
        hk_pos, hk_len = np.empty(n_headers, np.int64), np.empty(n_headers, np.int64)
        hv_pos, hv_len = np.empty(n_headers, np.int64), np.empty(n_headers, np.int64)
        for j in range(int(header_count.max()) if total else 0):
            rec = np.flatnonzero(header_count > j)
            at = header_offsets[rec] + j
            kl, q = _varints(buf, p[rec])
            if (kl < 0).any():
                raise ValueError("a header key of negative size")
            hk_pos[at], hk_len[at] = q, kl
            q = q + kl
            vl, q = _varints(buf, q)
            hv_pos[at], hv_len[at] = q, vl
            p[rec] = q + np.maximum(vl, 0)
    except (ValueError, IndexError) as e:  # IndexError: a length that points past the records
        raise CorruptRecordError(f"partition {partition}: record batches at offsets "
                                 f"{int(bases[0])}..{int(bases[-1])}: {e}") from None
    wrong = p != starts + lengths
    if wrong.any():
        i = int(wrong.argmax())
        raise CorruptRecordError(
            f"partition {partition}: record at offset {int(bases[batch_of[i]] + offset_delta[i])}: "
            f"its fields take {int(p[i] - starts[i])} bytes, its length says {int(lengths[i])}")
    offset = bases[batch_of] + offset_delta
    timestamp = np.where(ts_types[batch_of] == 1, max_ts[batch_of], first_ts[batch_of] + ts_delta)
    keep = (offset >= lo) & (offset < hi)
    if not keep.all():
        entry_keep = np.repeat(keep, header_count)
        offset, timestamp, batch_of = offset[keep], timestamp[keep], batch_of[keep]
        key_pos, key_len, value_pos, value_len = key_pos[keep], key_len[keep], value_pos[keep], value_len[keep]
        header_count = header_count[keep]
        hk_pos, hk_len, hv_pos, hv_len = hk_pos[entry_keep], hk_len[entry_keep], hv_pos[entry_keep], hv_len[entry_keep]
        header_offsets = _list_offsets(header_count)
    try:
        header_keys = _binary(buf, hk_pos, hk_len, pa.string())
    except pa.ArrowInvalid:
        raise CorruptRecordError(f"partition {partition}: a header key of a record at offsets "
                                 f"{int(offset[0])}..{int(offset[-1])} is not UTF-8") from None
    entries = pa.StructArray.from_arrays([header_keys, _binary(buf, hv_pos, hv_len)],
                                         fields=list(HEADER_TYPE.value_type))
    headers = pa.ListArray.from_arrays(pa.array(header_offsets, pa.int32()), entries, type=HEADER_TYPE)
    return RecordColumns(partition, offset, pa.array(timestamp), pa.array(ts_types[batch_of]),
                         _binary(buf, key_pos, key_len),
                         _binary(buf, value_pos, value_len), headers)


def _decode_legacy(data: memoryview, partition: int, lo: int, hi: int, check_crcs: bool) -> DecodedSet:
    """Message formats 0 and 1 (brokers before Kafka 0.11, or topics kept in them), with
    kafka-python's own reader: rare, and not worth a second decoder."""
    records = MemoryRecords(data.tobytes())
    rows = []
    next_offset = None
    while (batch := records.next_batch()) is not None:
        if check_crcs and not batch.validate_crc():
            raise CorruptRecordError(f"partition {partition}: record batch at offset {batch.base_offset} "
                                     f"failed its CRC check")
        if getattr(batch, "is_control_batch", False):
            next_offset = batch.next_offset
            continue
        for r in batch:
            if check_crcs and not r.validate_crc():
                raise CorruptRecordError(f"partition {partition}: record at offset {r.offset} failed its CRC check")
            next_offset = r.offset + 1
            if lo <= r.offset < hi:
                rows.append(r)
        if batch.magic == 2:
            next_offset = batch.next_offset
    if not rows:
        return DecodedSet(_empty(partition), next_offset)
    return DecodedSet(RecordColumns(
        partition,
        np.array([r.offset for r in rows], np.int64),
        pa.array([r.timestamp for r in rows], pa.int64()),
        pa.array([r.timestamp_type for r in rows], pa.int8()),
        pa.array([r.key for r in rows], pa.binary()),
        pa.array([r.value for r in rows], pa.binary()),
        pa.array([list(r.headers or ()) for r in rows], HEADER_TYPE),
    ), next_offset)
