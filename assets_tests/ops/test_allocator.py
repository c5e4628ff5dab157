"""The package tells polars' allocator (jemalloc) to return freed pages without the lazy
stage that leaves them counted in a process's memory (school_equity/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]

# the package first, as every entry point imports it (the CLI, the code location);
# then an allocation by polars, so that jemalloc has read its configuration
_PROBE = """
import os, school_equity, polars as pl
pl.DataFrame({"a": range(100_000)}).with_columns(b=pl.col("a").cast(pl.String)).sort("b")
print(os.environ["_RJEM_MALLOC_CONF"])
"""


def _probe(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    return subprocess.run([sys.executable, "-c", _PROBE], cwd=PROJECT_DIR, env={**clean, **env},
                          capture_output=True, text=True, timeout=120, check=True)


def test_the_package_sets_the_allocator_before_polars_reads_it():
    out = _probe()
    conf = out.stdout.strip().split(",")
    # polars' defaults first, the project's option last (jemalloc takes the last of each)
    assert conf[-1] == "muzzy_decay_ms:0" and "muzzy_decay_ms:1000" in conf[:-1]
    assert "<jemalloc>" not in out.stderr  # jemalloc reports an option it does not know there


def test_a_setting_of_the_user_is_kept():
    out = _probe(_RJEM_MALLOC_CONF="muzzy_decay_ms:250")
    conf = out.stdout.strip().split(",")
    assert conf[-1] == "muzzy_decay_ms:250" and "muzzy_decay_ms:0" not in conf
    assert "<jemalloc>" not in out.stderr
