"""The Bronze headers column is built from flat key/value columns and list offsets
(school_equity.bronze.landing.headers_array); it must equal the plain per-record
conversion for any mix of records with no, empty, null-valued or several headers."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from school_equity.bronze.landing import _HEADER_TYPE, headers_array

_header = st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=8)))


def _record(offset: int, headers) -> ConsumerRecord:
    return ConsumerRecord("t", 0, 0, offset, 0, 0, b"k", b"v", headers, None, 1, 1, -1)


@given(st.lists(st.one_of(st.none(), st.lists(_header, max_size=4)), max_size=30))
def test_headers_array_equals_the_per_record_conversion(headers_per_record):
    msgs = [_record(i, h) for i, h in enumerate(headers_per_record)]
    expected = pa.array([[(k, v) for k, v in (m.headers or ())] for m in msgs], _HEADER_TYPE)
    got = headers_array(msgs)
    assert got.type == _HEADER_TYPE
    assert got.to_pylist() == expected.to_pylist()
    assert got.to_pylist() == [[{"key": k, "value": v} for k, v in (h or ())] for h in headers_per_record]
