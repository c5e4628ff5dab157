"""Fixtures for tests that drive `dagster dev` through GraphQL (see harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from assets_tests.dagster_dev.harness import DagsterDev, start_dagster_dev


@pytest.fixture
def dagster_dev_factory(tmp_path: Path) -> Iterator[Callable[..., DagsterDev]]:
    """Start `dagster dev` for a module with a fresh DAGSTER_HOME under tmp_path:

        dev = dagster_dev_factory("school_equity.definitions", env={...})

    Keyword arguments go to `harness.start_dagster_dev`. Every instance started is
    stopped at teardown (process group SIGINT, then SIGKILL by PID), and its log tail
    is printed, which pytest shows when the test failed.
    """
    started: list[DagsterDev] = []

    def start(module: str, **kwargs) -> DagsterDev:
        kwargs.setdefault("home", tmp_path / f"dagster_home_{len(started)}")
        dev = start_dagster_dev(module, **kwargs)
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.stop()
        print(f"--- dagster dev log ({dev.log_path}) ---\n{dev.log_tail(80)}")
