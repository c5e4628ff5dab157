"""The landing folder: which dropped files are new vintages. No Dagster.

A file is identified by its name and content hash. The cursor remembers, per
name, the (mtime, size, sha256) last seen, so a tick hashes only files that are
new or changed; a file that is rewritten with the same bytes is not taken again,
one rewritten with other bytes is (a publisher's correction), under a new run key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from school_equity.sources.catalog import SourceSpec, classify_landing_file
from school_equity.sources.download import sha256_file


@dataclass(frozen=True)
class LandingFile:
    source: str
    vintage: str
    path: str
    sha256: str
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def run_key(self) -> str:
        # the content, not the name, identifies the work: the same bytes under
        # another name are the same run
        return f"{self.source}:{self.vintage}:{self.sha256}"


@dataclass
class LandingScan:
    new_files: list[LandingFile] = field(default_factory=list)
    seen: dict[str, dict] = field(default_factory=dict)  # the next cursor
    ignored: list[str] = field(default_factory=list)  # names that belong to no source
    settling: list[str] = field(default_factory=list)  # too recently modified, next tick


def _candidates(landing_dir: str) -> list[os.DirEntry]:
    try:
        entries = list(os.scandir(landing_dir))
    except FileNotFoundError:
        return []
    return sorted(
        (e for e in entries if e.is_file() and not e.name.startswith(".")),
        key=lambda e: e.name,
    )


def scan_landing(landing_dir: str, seen: dict[str, dict], *, settle_seconds: float, now: float) -> LandingScan:
    """Files that are new or changed since ``seen`` (the previous cursor)."""
    scan = LandingScan()
    for entry in _candidates(landing_dir):
        match = classify_landing_file(entry.name)
        if match is None:
            scan.ignored.append(entry.name)
            continue
        spec, vintage = match
        stat = entry.stat()
        previous = seen.get(entry.name)
        if previous and previous["mtime_ns"] == stat.st_mtime_ns and previous["size"] == stat.st_size:
            scan.seen[entry.name] = previous
            continue
        if now - stat.st_mtime_ns / 1e9 < settle_seconds:
            scan.settling.append(entry.name)
            if previous:
                scan.seen[entry.name] = previous
            continue
        sha256, size = sha256_file(entry.path)
        scan.seen[entry.name] = {"mtime_ns": stat.st_mtime_ns, "size": size, "sha256": sha256}
        if previous and previous.get("sha256") == sha256:
            continue  # touched, same bytes
        scan.new_files.append(LandingFile(spec.name, vintage, entry.path, sha256, size, stat.st_mtime_ns))
    return scan


def find_landing_file(landing_dir: str, spec: SourceSpec, vintage: str) -> Path | None:
    """The most recently modified landing file for a source's vintage, if any."""
    matches = [
        e for e in _candidates(landing_dir) if spec.vintage_from_filename(e.name) == vintage
    ]
    if not matches:
        return None
    return Path(max(matches, key=lambda e: (e.stat().st_mtime_ns, e.name)).path)
