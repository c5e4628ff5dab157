"""Public batch sources (CDC/ATSDR SVI, NYC School Survey results, NYC DOE school
locations): Bronze landing and typed Silver Delta tables, partitioned by vintage.

What location.py takes from here: ``SOURCE_ASSETS``, ``SOURCE_CHECKS``,
``SOURCE_SENSORS``, ``SOURCE_JOBS`` and the ``public_sources`` resource
(``public_sources_resource(settings)``), beside the shared ``lake`` resource.
The headless demo calls ``add_shipped_vintages`` then ``materialize_shipped_vintages``.
"""

from __future__ import annotations

import dagster as dg

from school_equity.sources.assets import (
    BRONZE_ASSETS,
    BRONZE_KEYS,
    PARTITIONS,
    SILVER_ASSETS,
    SILVER_KEYS,
    SOURCE_CHECKS,
    SourceFileConfig,
)
from school_equity.sources.assets import SOURCE_JOBS as _JOBS_BY_SOURCE
from school_equity.sources.catalog import LOCATIONS, SOURCES, SURVEY_RESULTS, SVI
from school_equity.sources.resources import PublicSourcesResource, public_sources_resource
from school_equity.sources.sensors import source_landing_sensor

# dependency order: locations are flagged against the newest SVI vintage
SOURCE_ORDER = (SVI.name, SURVEY_RESULTS.name, LOCATIONS.name)

SOURCE_ASSETS = [a for name in SOURCE_ORDER for a in (BRONZE_ASSETS[name], SILVER_ASSETS[name])]
SOURCE_SENSORS = [source_landing_sensor]
SOURCE_JOBS = [_JOBS_BY_SOURCE[name] for name in SOURCE_ORDER]
SOURCE_RESOURCE_KEY = "public_sources"


def checks_for(source: str) -> list[dg.AssetChecksDefinition]:
    """The checks of one source's Bronze and Silver assets."""
    keys = {BRONZE_KEYS[source], SILVER_KEYS[source]}
    return [c for c in SOURCE_CHECKS if any(k.asset_key in keys for k in c.check_keys)]


def shipped_vintages() -> dict[str, list[str]]:
    """Vintages whose sample files ship in the package, per source (in dependency order)."""
    return {name: sorted(SOURCES[name].shipped) for name in SOURCE_ORDER}


def add_shipped_vintages(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    """Add the shipped vintages' partitions to ``instance`` (idempotent). Returns
    {partitions set name: keys added or already there}."""
    out = {}
    for source, keys in shipped_vintages().items():
        name = PARTITIONS[source].name
        missing = [k for k in keys if not instance.has_dynamic_partition(name, k)]
        if missing:
            instance.add_dynamic_partitions(name, missing)
        out[name] = keys
    return out


def materialize_shipped_vintages(instance: dg.DagsterInstance, resources: dict) -> dict[str, int]:
    """Land and build every shipped vintage in process, in dependency order (for the
    headless demo). ``resources`` needs ``lake`` and may carry ``public_sources``.
    Returns {silver table/vintage: row count}; raises if a run or a blocking check fails."""
    from school_equity.pipeline import run_log_config

    add_shipped_vintages(instance)
    resources = {SOURCE_RESOURCE_KEY: PublicSourcesResource(), **resources}
    rows = {}
    for source, keys in shipped_vintages().items():
        for key in keys:
            result = dg.materialize(
                [BRONZE_ASSETS[source], SILVER_ASSETS[source], *checks_for(source)],
                partition_key=key,
                instance=instance,
                resources=resources,
                run_config=run_log_config(),
            )
            failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
            if not result.success or failed:
                raise RuntimeError(f"{source} {key}: run failed or checks failed: {failed}")
            mat = result.asset_materializations_for_node(SILVER_ASSETS[source].op.name)[-1]
            rows[f"{SILVER_KEYS[source].to_user_string()}/{key}"] = mat.metadata["dagster/row_count"].value
    return rows


__all__ = [
    "BRONZE_KEYS",
    "PublicSourcesResource",
    "SILVER_KEYS",
    "SOURCE_ASSETS",
    "SOURCE_CHECKS",
    "SOURCE_JOBS",
    "SOURCE_RESOURCE_KEY",
    "SOURCE_SENSORS",
    "SourceFileConfig",
    "add_shipped_vintages",
    "checks_for",
    "materialize_shipped_vintages",
    "public_sources_resource",
    "shipped_vintages",
]
