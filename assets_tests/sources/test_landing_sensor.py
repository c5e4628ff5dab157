"""source_landing_sensor on a real instance: a dropped file becomes a partition and a
run, the run lands that very file, and the cursor takes each file once."""

from __future__ import annotations

import hashlib
import shutil

import dagster as dg
import pytest

from assets_tests.sources.conftest import SURVEY_FILE, SVI_FILE, build_defs, make_env
from school_equity.sources import storage
from school_equity.sources.catalog import SURVEY_RESULTS, SVI


def tick(env, cursor):
    """One evaluation, with its partition requests applied as the daemon would."""
    sensor = env.defs.resolve_sensor_def("source_landing_sensor")
    # instance_ref: without it the context has no partitions loader, and a run request for
    # a partition added in the same tick cannot be validated
    # and, as the daemon, only the resources the sensor asks for, within the context's scope
    resources = {k: v for k, v in env.defs.resources.items() if k in sensor.required_resource_keys}
    with dg.build_sensor_context(
        instance=env.instance, instance_ref=env.instance.get_ref(), cursor=cursor,
        repository_def=env.defs.get_repository_def(), resources=resources,
    ) as context:
        data = sensor.evaluate_tick(context)
    for req in data.dynamic_partitions_requests or []:
        env.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return data


def execute(env, request: dg.RunRequest):
    result = env.defs.resolve_job_def(request.job_name).execute_in_process(
        partition_key=request.partition_key, run_config=request.run_config, tags=request.tags, instance=env.instance
    )
    assert result.success
    return result


@pytest.fixture
def env(tmp_path):
    with dg.instance_for_test() as instance:
        yield make_env(tmp_path, instance)


def test_dropped_files_become_partitions_and_runs(env):
    svi_drop = shutil.copy(SVI_FILE, env.landing / "svi_2024_new_york_tracts.csv")
    survey_drop = shutil.copy(SURVEY_FILE, env.landing / "school_survey_2019_student_public_data_file.csv")
    (env.landing / "minutes.docx").write_bytes(b"not ours")

    data = tick(env, None)
    svi_sha = hashlib.sha256(SVI_FILE.read_bytes()).hexdigest()
    survey_sha = hashlib.sha256(SURVEY_FILE.read_bytes()).hexdigest()
    assert sorted(r.run_key for r in data.run_requests) == sorted(
        [f"svi:2024:{svi_sha}", f"school_survey_results:2019:{survey_sha}"]
    )
    assert env.instance.get_dynamic_partitions(SVI.partitions_name) == ["2024"]
    assert env.instance.get_dynamic_partitions(SURVEY_RESULTS.partitions_name) == ["2019"]

    # re-evaluating from the same cursor asks for the same runs (Dagster dedups by run key)
    assert sorted(r.run_key for r in tick(env, None).run_requests) == sorted(r.run_key for r in data.run_requests)

    for request in data.run_requests:
        result = execute(env, request)
        bronze = next(m for m in result.get_asset_materialization_events() if m.asset_key.path[0] == "bronze")
        assert bronze.materialization.metadata["source_uri"].value in (str(svi_drop), str(survey_drop))
    assert storage.read_silver(env.lake, SVI)["svi_year"].unique().to_list() == [2024]
    assert storage.read_silver(env.lake, SURVEY_RESULTS).height == 1829

    quiet = tick(env, data.cursor)
    assert quiet.run_requests == [] and "no new source files" in quiet.skip_message
    assert "ignored 1 file" in quiet.skip_message


def test_changed_file_is_a_new_run_and_touched_file_is_not(env):
    drop = shutil.copy(SURVEY_FILE, env.landing / "school_survey_2019_student_public_data_file.csv")
    first = tick(env, None)
    execute(env, first.run_requests[0])

    drop.touch()  # same bytes, new mtime
    assert tick(env, first.cursor).run_requests == []

    with open(drop, "a", encoding="utf-8") as f:
        f.write("99M999,A SCHOOL ADDED IN A CORRECTION,50,60,N/A,3.00,3.10,3.20,N/A,3.30,3.40\n")
    second = tick(env, first.cursor)
    assert len(second.run_requests) == 1
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    execute(env, second.run_requests[0])
    assert storage.read_silver(env.lake, SURVEY_RESULTS).height == 1830
    assert len(storage.bronze_files(env.lake, SURVEY_RESULTS, "2019")) == 2  # the first file kept as history


def test_file_still_being_copied_waits(tmp_path):
    with dg.instance_for_test() as instance:
        env = make_env(tmp_path, instance)
        env.defs = build_defs(str(tmp_path / "lake"), str(env.landing), settle_seconds=3600)
        shutil.copy(SVI_FILE, env.landing / "svi_2024_new_york_tracts.csv")
        data = tick(env, None)
        assert data.run_requests == [] and "waiting for ['svi_2024_new_york_tracts.csv']" in data.skip_message
        assert env.instance.get_dynamic_partitions(SVI.partitions_name) == []


def test_no_landing_folder_configured(tmp_path):
    with dg.instance_for_test() as instance:
        env = make_env(tmp_path, instance)
        env.defs = build_defs(str(tmp_path / "lake"), "")
        assert "landing_dir is not configured" in tick(env, None).skip_message
