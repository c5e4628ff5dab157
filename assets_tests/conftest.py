"""Shared fixtures: a real Kafka-compatible broker (Tansu) on a free loopback port,
a temporary lake and warehouse, and settings pointing at them."""

from __future__ import annotations

import os
import uuid

import pytest

from school_equity.kafka.broker import start_broker, stop_pid

# fakesnow's server function must be captured before any test imports its module.
try:
    from . import fakesnow_server  # noqa: F401
except ImportError:  # pragma: no cover - fakesnow is in the lock; tests that need it skip
    pass


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One broker for the session; tests isolate themselves with their own topic names."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    b, proc = start_broker(log_path=str(log))
    try:
        yield b
    finally:
        stop_pid(b.pid)
        proc.wait(timeout=10)


@pytest.fixture
def topic_name() -> str:
    return f"survey_submissions_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def stream_env(tmp_path, broker, topic_name, monkeypatch):
    """Environment variables that point settings at this test's broker, topic, lake and warehouse."""
    env = {
        "SCHOOL_EQUITY_ENV": "local",
        "SCHOOL_EQUITY_HOME": str(tmp_path / "home"),
        "SCHOOL_EQUITY_LAKE": str(tmp_path / "lake"),
        "SCHOOL_EQUITY_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "SCHOOL_EQUITY_KAFKA": broker.bootstrap,
        "SCHOOL_EQUITY_TOPIC": topic_name,
        "SCHOOL_EQUITY_CONSUMER_GROUP": f"school_equity.bronze.{topic_name}",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    os.makedirs(env["SCHOOL_EQUITY_LAKE"], exist_ok=True)
    return env
