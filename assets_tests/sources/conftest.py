"""Fixtures for the public batch sources: a loopback HTTP server that serves the
shipped files (and fails on purpose), a temporary lake and landing folder, and
Definitions wired to them."""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from school_equity.lake import Lake
from school_equity.resources import LakeResource
from school_equity.settings import SAMPLE_DIR
from school_equity.sources import (
    SOURCE_ASSETS,
    SOURCE_CHECKS,
    SOURCE_JOBS,
    SOURCE_SENSORS,
    PublicSourcesResource,
)

SVI_FILE = SAMPLE_DIR / "svi_2022_new_york_tracts.csv"
SURVEY_FILE = SAMPLE_DIR / "school_survey_2019_student_public_data_file.csv"
LOCATIONS_FILE = SAMPLE_DIR / "school_locations_2017_18.csv"


class _Handler(BaseHTTPRequestHandler):
    """/<shipped file name>: the file; /error/...: HTTP 500; /truncated/<name>: announces
    the whole file, sends half, closes the connection."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        name = parts[-1]
        path = SAMPLE_DIR / name
        if parts[0] == "error":
            body = b"upstream exploded"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if parts[0] == "truncated":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


@pytest.fixture(scope="session")
def http_base() -> Iterator[str]:
    """Base URL of a server on 127.0.0.1 and a free port (a thread of this process)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _default_signals() -> None:
    # background processes here start with SIGINT/SIGTERM ignored; the server must obey terminate()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server in its own process on a free loopback port (in a thread of this
    process it deadlocks with delta-rs, whose calls hold the GIL while they wait on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_default_signals,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_lake_root(moto_endpoint, monkeypatch) -> str:
    """A fresh bucket on the moto server, with the AWS variables the Lake reads."""
    import boto3

    env = {
        "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = f"lake-{os.getpid()}-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/school_equity"


@dataclass
class SourcesEnv:
    lake: Lake
    landing: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance

    def run(self, job: str, vintage: str, source_uri: str | None = None, raise_on_error: bool = True):
        """Run a source's job for one vintage (adds the partition first, as the sensor would)."""
        partitions = self.defs.resolve_job_def(job).partitions_def
        if not self.instance.has_dynamic_partition(partitions.name, vintage):
            self.instance.add_dynamic_partitions(partitions.name, [vintage])
        run_config = {}
        if source_uri:
            op = next(n for n in self.defs.resolve_job_def(job).graph.node_dict if n.startswith("bronze__"))
            run_config = {"ops": {op: {"config": {"source_uri": source_uri}}}}
        return self.defs.resolve_job_def(job).execute_in_process(
            partition_key=vintage, instance=self.instance, run_config=run_config, raise_on_error=raise_on_error
        )


def build_defs(
    lake_root: str, landing: str, settle_seconds: float = 0.0, download_urls: dict[str, str] | None = None
) -> dg.Definitions:
    return dg.Definitions(
        assets=SOURCE_ASSETS,
        asset_checks=SOURCE_CHECKS,
        jobs=SOURCE_JOBS,
        sensors=SOURCE_SENSORS,
        resources={
            "lake": LakeResource(root=lake_root),
            "public_sources": PublicSourcesResource(
                landing_dir=landing, landing_settle_seconds=settle_seconds, download_urls=download_urls or {}
            ),
        },
    )


def make_env(tmp: Path, instance: dg.DagsterInstance) -> SourcesEnv:
    lake_root, landing = tmp / "lake", tmp / "landing"
    lake_root.mkdir()
    landing.mkdir()
    return SourcesEnv(Lake(str(lake_root)), landing, build_defs(str(lake_root), str(landing)), instance)


@pytest.fixture
def sources_env(tmp_path) -> Iterator[SourcesEnv]:
    with dg.instance_for_test() as instance:
        yield make_env(tmp_path, instance)


def rewrite_csv(src: Path, dst: Path, edit, encoding: str = "utf-8") -> Path:
    """Copy a CSV through the csv module, ``edit(header, row) -> row`` per record (quoting kept standard)."""
    with open(src, newline="", encoding=encoding) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in body:
        writer.writerow(edit(header, list(row)))
    dst.write_text(out.getvalue(), encoding=encoding)
    return dst
