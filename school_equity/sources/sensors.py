"""``source_landing_sensor``: a file dropped into the landing folder becomes a vintage
partition and a run that lands it (the yearly CSV drop, done as a sensor)."""

import json
import time
from collections import defaultdict

import dagster as dg

from school_equity.sources.assets import JOB_NAMES, PARTITIONS, SOURCE_JOBS, bronze_op_name
from school_equity.sources.catalog import SOURCES
from school_equity.sources.landing import scan_landing
from school_equity.sources.resources import PublicSourcesResource

CURSOR_VERSION = 1


def _load_cursor(cursor: str | None) -> dict[str, dict]:
    if not cursor:
        return {}
    state = json.loads(cursor)
    return state.get("files", {}) if state.get("v") == CURSOR_VERSION else {}


@dg.sensor(
    name="source_landing_sensor",
    jobs=list(SOURCE_JOBS.values()),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches the landing folder (public_sources.landing_dir) for svi_<year>_*.csv, "
        "school_survey_<year>_*.csv and school_locations_<yyyy>_<yy>*.csv. A new or changed file "
        "adds its vintage partition and requests one run of its source's job with run_key "
        "<source>:<vintage>:<sha256>; the cursor remembers (mtime, size, sha256) per file so "
        "a file is taken once."
    ),
)
def source_landing_sensor(context: dg.SensorEvaluationContext, public_sources: PublicSourcesResource):
    if not public_sources.landing_dir:
        return dg.SkipReason("public_sources.landing_dir is not configured")
    seen = _load_cursor(context.cursor)
    scan = scan_landing(
        public_sources.landing_dir, seen, settle_seconds=public_sources.landing_settle_seconds, now=time.time()
    )
    cursor = json.dumps({"v": CURSOR_VERSION, "files": scan.seen}, sort_keys=True)

    new_keys: dict[str, set[str]] = defaultdict(set)
    run_requests = []
    for f in scan.new_files:
        spec = SOURCES[f.source]
        if not context.instance.has_dynamic_partition(spec.partitions_name, f.vintage):
            new_keys[f.source].add(f.vintage)
        run_requests.append(
            dg.RunRequest(
                run_key=f.run_key,
                job_name=JOB_NAMES[f.source],
                partition_key=f.vintage,
                run_config={
                    "ops": {bronze_op_name(f.source): {"config": {"source_uri": f.path, "expected_sha256": f.sha256}}}
                },
                tags={"school_equity/landing_file": f.name, "school_equity/source_sha256": f.sha256},
            )
        )
        context.log.info(f"{f.name}: {f.source} vintage {f.vintage} (sha256 {f.sha256[:16]})")

    if not run_requests:
        waiting = f"; waiting for {scan.settling} to settle" if scan.settling else ""
        ignored = f"; ignored {len(scan.ignored)} file(s) matching no source" if scan.ignored else ""
        return dg.SensorResult(skip_reason=f"no new source files{waiting}{ignored}", cursor=cursor)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[
            PARTITIONS[source].build_add_request(sorted(keys)) for source, keys in sorted(new_keys.items())
        ],
        cursor=cursor,
    )
