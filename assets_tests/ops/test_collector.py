"""Python's cyclic collector is paused around the code location's load and restored."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from school_equity.collector import collector_paused

PROJECT_DIR = Path(__file__).resolve().parents[2]


def test_pause_restores_the_collector_whatever_happens_in_the_block():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # the caller's own pause is kept
    finally:
        gc.enable()


_LOAD = """
import gc, json, sys
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
if sys.argv[1] == "location":
    import school_equity.definitions as d
    defs = d.defs
else:  # the same definitions, built with the collector on throughout
    import school_equity.location as loc
    defs = loc.build_definitions()
during_load = list(collections)
repo = defs.get_repository_def()
print(json.dumps({"collections": during_load, "enabled_after": gc.isenabled(), "tracked": len(gc.get_objects()),
                  "assets": len(repo.asset_graph.get_all_asset_keys())}))
"""


def _load(how: str) -> dict:
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _LOAD, how], cwd=PROJECT_DIR, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_code_location_loads_with_the_collector_paused_and_leaves_it_on():
    paused, unpaused = _load("location"), _load("collector on")
    assert paused["assets"] == unpaused["assets"] > 20
    assert paused["enabled_after"] is True
    # built with the collector on, the load triggers hundreds of collections, each
    # walking what the load built so far; paused, only the ones once it is back on
    # (the first allocations after the pause find the young generation over its
    # threshold): at most one of each generation
    assert len(unpaused["collections"]) > 100
    assert len(paused["collections"]) <= 3, paused["collections"]
    assert paused["tracked"] > 100_000  # what each collection of the oldest generation walks
