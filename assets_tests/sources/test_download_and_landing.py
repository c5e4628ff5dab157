"""Download against a real HTTP server on loopback, source resolution, the landing-folder
scan and the Bronze landing rules (no Dagster)."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest

from assets_tests.sources.conftest import LOCATIONS_FILE, SURVEY_FILE, SVI_FILE
from school_equity.lake import Lake
from school_equity.sources import storage
from school_equity.sources.catalog import LOCATIONS, SURVEY_RESULTS, SVI, classify_landing_file
from school_equity.sources.download import DownloadError, download
from school_equity.sources.ingest import SourceNotFoundError, fetched, land_vintage, resolve_source
from school_equity.sources.landing import scan_landing
from school_equity.sources.parsing import SourceFormatError


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- download ---------------------------------------------------------------


def test_download_streams_the_whole_file(http_base, tmp_path):
    got = download(f"{http_base}/{SVI_FILE.name}", tmp_path)
    assert got.size == SVI_FILE.stat().st_size and got.sha256 == sha(SVI_FILE)
    assert got.path.read_bytes() == SVI_FILE.read_bytes()


def test_http_500_is_a_clear_error_and_leaves_nothing(http_base, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 500"):
        download(f"{http_base}/error/{SVI_FILE.name}", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_truncated_body_is_a_clear_error_and_leaves_nothing(http_base, tmp_path):
    with pytest.raises(DownloadError, match=rf"truncated.*of {SVI_FILE.stat().st_size}"):
        download(f"{http_base}/truncated/{SVI_FILE.name}", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="GET http://127.0.0.1:9/"):
        download("http://127.0.0.1:9/x.csv", tmp_path, timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_fetched_download_is_removed_afterwards(http_base, tmp_path):
    with fetched(f"{http_base}/{SURVEY_FILE.name}", str(tmp_path)) as local:
        assert local.path.exists() and local.sha256 == sha(SURVEY_FILE)
    assert list(tmp_path.iterdir()) == []


# --- resolution ---------------------------------------------------------------


def test_resolution_order(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    assert resolve_source(SVI, "2022").origin == "shipped"
    dropped = shutil.copy(SVI_FILE, landing / "svi_2022_fixed.csv")
    assert resolve_source(SVI, "2022", landing_dir=str(landing)).uri == str(dropped)
    urls = {"svi/2022": "http://example.invalid/NewYork.csv"}
    assert resolve_source(SVI, "2022", landing_dir=str(landing), download_urls=urls).origin == "download_url"
    assert resolve_source(SVI, "2022", source_uri="/x.csv", download_urls=urls).uri == "/x.csv"
    with pytest.raises(SourceNotFoundError, match="svi vintage 2031: no source file"):
        resolve_source(SVI, "2031", landing_dir=str(landing))
    with pytest.raises(ValueError, match="expected a year"):
        resolve_source(SVI, "latest")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("svi_2022_new_york_tracts.csv", ("svi", "2022")),
        ("SVI_2024_NewYork.csv", ("svi", "2024")),
        ("school_survey_2019_student_public_data_file.csv", ("school_survey_results", "2019")),
        ("school_locations_2017_18.csv", ("school_locations", "2018")),
        ("school_locations_2019_20_v2.csv", ("school_locations", "2020")),
        ("school_locations_2017_19.csv", None),  # not a school year
        ("svi_2022.csv", None),  # the pattern wants svi_<year>_*.csv
        ("svi_2022_tracts.xlsx", None),
        ("notes.txt", None),
    ],
)
def test_landing_file_names(name, expected):
    got = classify_landing_file(name)
    assert (None if got is None else (got[0].name, got[1])) == expected


# --- landing scan ---------------------------------------------------------------


def test_scan_takes_a_file_once_and_again_only_when_its_bytes_change(tmp_path):
    landing = tmp_path
    f = shutil.copy(SURVEY_FILE, landing / "school_survey_2020_copy.csv")
    (landing / "readme.txt").write_text("not a source")
    (landing / ".svi_2023_partial.csv").write_text("hidden while copying")
    now = time.time()
    first = scan_landing(str(landing), {}, settle_seconds=0, now=now)
    assert [(x.source, x.vintage, x.sha256) for x in first.new_files] == [
        ("school_survey_results", "2020", sha(SURVEY_FILE))
    ]
    assert first.new_files[0].run_key == f"school_survey_results:2020:{sha(SURVEY_FILE)}"
    assert first.ignored == ["readme.txt"]

    assert scan_landing(str(landing), first.seen, settle_seconds=0, now=now).new_files == []
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes
    touched = scan_landing(str(landing), first.seen, settle_seconds=0, now=time.time() + 5)
    assert touched.new_files == [] and touched.seen != first.seen

    with open(f, "a", encoding="utf-8") as out:
        out.write("99X999,A NEW SCHOOL,50,50,N/A,3,3,3,N/A,3,3\n")
    changed = scan_landing(str(landing), touched.seen, settle_seconds=0, now=time.time() + 5)
    assert len(changed.new_files) == 1 and changed.new_files[0].sha256 != sha(SURVEY_FILE)


def test_scan_waits_for_a_file_still_being_written(tmp_path):
    shutil.copy(SVI_FILE, tmp_path / "svi_2024_copy.csv")
    now = time.time()
    waiting = scan_landing(str(tmp_path), {}, settle_seconds=30, now=now)
    assert waiting.new_files == [] and waiting.settling == ["svi_2024_copy.csv"]
    later = scan_landing(str(tmp_path), waiting.seen, settle_seconds=30, now=now + 31)
    assert [x.vintage for x in later.new_files] == ["2024"]


def test_scan_of_a_missing_folder_is_empty(tmp_path):
    assert scan_landing(str(tmp_path / "nope"), {}, settle_seconds=0, now=time.time()).new_files == []


# --- Bronze landing ---------------------------------------------------------------


def test_land_is_idempotent_and_keeps_history(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with fetched(str(LOCATIONS_FILE), str(tmp_path)) as local:
        first = land_vintage(lake, LOCATIONS, "2018", local, now=t0)
        again = land_vintage(lake, LOCATIONS, "2018", local, now=t0 + timedelta(days=1))
    assert first.written and not again.written and again.path == first.path
    assert again.ingested_at == t0  # the original landing, not the re-run
    bronze = storage.read_bronze(lake, first.path)
    assert bronze.height == 1823 and bronze["ATS SYSTEM CODE"][0] == "01M015      "
    assert bronze["_source_sha256"].unique().to_list() == [sha(LOCATIONS_FILE)]
    assert bronze["_row_number"].to_list() == list(range(1, 1824))

    corrected = tmp_path / "school_locations_2017_18_fixed.csv"
    corrected.write_bytes(LOCATIONS_FILE.read_bytes().replace(b"P.S. 015 Roberto Clemente", b"P.S. 15 Roberto Clemente"))
    with fetched(str(corrected), str(tmp_path)) as local:
        third = land_vintage(lake, LOCATIONS, "2018", local, now=t0 + timedelta(days=2))
    assert third.written and third.replaced_sha256_prefix == sha(LOCATIONS_FILE)[:16]
    files = storage.bronze_files(lake, LOCATIONS, "2018")
    assert [f.path for f in files] == [first.path, third.path]  # history kept, newest last
    assert storage.latest_bronze_file(lake, LOCATIONS, "2018").path == third.path


def test_unexpected_hash_lands_nothing(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with fetched(str(SVI_FILE), str(tmp_path)) as local, pytest.raises(ValueError, match="changed after"):
        land_vintage(lake, SVI, "2022", local, expected_sha256="0" * 64)
    assert lake.list("bronze") == []


@pytest.mark.parametrize("content", [b'a,b\n"1,2\n', b"a,b\n1,2,3\n", b""], ids=["open-quote", "ragged", "empty"])
def test_not_a_csv_lands_nothing(tmp_path, content):
    lake = Lake(str(tmp_path / "lake"))
    bad = tmp_path / "school_survey_2019_bad.csv"
    bad.write_bytes(content)
    with fetched(str(bad), str(tmp_path)) as local, pytest.raises(SourceFormatError, match="not a readable CSV"):
        land_vintage(lake, SURVEY_RESULTS, "2019", local)
    assert lake.list("bronze") == []
