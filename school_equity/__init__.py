"""school_equity: NYC School Survey equity analytics as Dagster software-defined assets.

One process-wide setting is made here, before any module of the package imports
polars: how polars' allocator (jemalloc) returns freed memory.
"""

import os

# polars configures jemalloc when it is first imported, appending this variable to its
# own defaults (dirty_decay_ms:500,muzzy_decay_ms:1000). Freed pages are purged in two
# stages: after ~0.5 s they are handed back lazily (MADV_FREE), which leaves them counted
# in the process's resident memory until the kernel is short of memory, and only ~1 s
# later returned for good. With no lazy stage they are returned at the first one: the
# Silver step over the demo's five batches peaked at 780 MiB instead of 827 in the same
# time (ad hoc, three interleaved runs of each). Set before polars is imported; child
# processes (run workers) inherit it; a value the user set is kept.
os.environ.setdefault("_RJEM_MALLOC_CONF", "muzzy_decay_ms:0")
