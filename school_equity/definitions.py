"""The code location's module (``dagster dev -m school_equity.definitions``): ``defs``, every
asset, check, sensor and job of school_equity, built by ``school_equity.location``.

The libraries and the definitions load with Python's cyclic collector paused: the load
builds hundreds of thousands of long-lived objects, and about a fifth of it went to
collections walking them (``school_equity.collector``)."""

from school_equity.collector import collector_paused

with collector_paused():
    from school_equity.location import GOLD_MARTS_JOB, build_definitions, freshness_for

    defs = build_definitions()

__all__ = ["GOLD_MARTS_JOB", "build_definitions", "defs", "freshness_for"]
