"""The README's first command, `school-equity demo`, end to end on a small stream: its own
broker, the lake, DuckDB and dbt, in a fresh interpreter as a user runs it.

The demo stops its broker once the stream is drained: the topic lives in the broker's
memory (~0.6 GiB for 1M events) and the marts and the summary read only the lake and
the warehouse. The check below runs inside the demo, just before the marts build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_DRIVER = r"""
import json, os, socket, sys
import school_equity.pipeline as pipeline
from school_equity.cli import main

seen = {}
real = pipeline.build_unpartitioned_gold


def watched(defs, instance):
    host, port = os.environ["SCHOOL_EQUITY_KAFKA"].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), 1).close()
        seen["broker_accepts_connections"] = True
    except OSError:
        seen["broker_accepts_connections"] = False
    seen["batches_before_marts"] = len(pipeline.batch_keys(instance))
    return real(defs, instance)


pipeline.build_unpartitioned_gold = watched
rc = main(["demo", "--events", sys.argv[1]])
print("DRIVER " + json.dumps({"rc": rc, **seen}))
"""


def test_demo_runs_headless_and_releases_its_broker_before_the_marts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHOOL_EQUITY_")}
    env["SCHOOL_EQUITY_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", _DRIVER, "2500"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("DRIVER "))[7:])
    assert result["rc"] == 0
    assert result["batches_before_marts"] >= 1
    assert result["broker_accepts_connections"] is False
    # the summary: every layer has rows, and the run logs went to the demo's run.log
    assert "produced 2500 events" in out.stdout
    assert "-- equity:" in out.stdout
    demo_home = Path(env["SCHOOL_EQUITY_HOME"]) / "demo"
    assert (demo_home / "run.log").stat().st_size > 0
    assert list((demo_home / "lake").glob("silver/*/_delta_log/*.json"))
