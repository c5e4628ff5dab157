"""release_arrow_memory gives the pages of freed Arrow buffers back to the OS (the
steps that allocate most call it; see school_equity.lake)."""

from __future__ import annotations

import numpy as np
import psutil
import pyarrow as pa

from school_equity.lake import release_arrow_memory


def test_freed_arrow_pages_go_back_to_the_os():
    proc = psutil.Process()
    release_arrow_memory()
    # Many mid-sized buffers, like a batch's columns: the allocator keeps their pages.
    arrays = [pa.array(np.arange(i, i + 50_000)).cast(pa.string()) for i in range(300)]
    held = pa.total_allocated_bytes()
    assert held > 100 * 2**20
    del arrays
    assert pa.total_allocated_bytes() < held // 100
    before = proc.memory_info().rss
    release_arrow_memory()
    after = proc.memory_info().rss
    # At least half of what the buffers held leaves the process once released.
    assert before - after > held // 2, (before >> 20, after >> 20, held >> 20)
