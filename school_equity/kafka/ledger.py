"""The batch ledger: batch manifests in the lake, and the sensor's cursor that caches
them. No Dagster imports.

The lake is the source of truth for what each batch means. The sensor's cursor
only caches the latest position; when it is missing (new Dagster instance, wiped
storage) the position is rebuilt from the manifests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from school_equity.bronze.landing import MANIFEST_PREFIX, manifest_path
from school_equity.kafka.offsets import BatchManifest, Gap, OffsetRange
from school_equity.kafka.partitions import batch_id, batch_seq
from school_equity.lake import Lake

RESET_PREFIX = f"{MANIFEST_PREFIX}/_resets"


def reset_path(after_seq: int) -> str:
    return f"{RESET_PREFIX}/after-{after_seq:09d}.json"


@dataclass
class StreamCursor:
    seq: int = -1  # last batch cut; -1 = none yet
    next_offsets: dict[int, int] = field(default_factory=dict)
    last_batch_at: float | None = None
    lag_history: list[int] = field(default_factory=list)
    topic: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        d["next_offsets"] = {str(k): v for k, v in self.next_offsets.items()}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> StreamCursor | None:
        if not text:
            return None
        d = json.loads(text)
        return cls(
            seq=int(d["seq"]),
            next_offsets={int(k): int(v) for k, v in d["next_offsets"].items()},
            last_batch_at=d.get("last_batch_at"),
            lag_history=list(d.get("lag_history", [])),
            topic=d.get("topic", ""),
        )


def list_batch_ids(lake: Lake) -> list[str]:
    out = []
    for path in lake.list(MANIFEST_PREFIX):
        name = path.rsplit("/", 1)[-1]
        if name.endswith(".json") and name.startswith("b") and "/_resets/" not in path:
            out.append(name[:-5])
    return sorted(out)


def load_manifest(lake: Lake, bid: str) -> BatchManifest:
    return BatchManifest.from_json(lake.read_bytes(manifest_path(bid)).decode())


def rebuild_cursor(lake: Lake, topic: str) -> StreamCursor:
    """Position after the last batch, from the manifests alone."""
    ids = list_batch_ids(lake)
    cursor = StreamCursor(topic=topic)
    if not ids:
        return cursor
    resets = [int(p.rsplit("-", 1)[-1][:-5]) for p in lake.list(RESET_PREFIX) if p.endswith(".json")]
    last_reset = max(resets) if resets else -1
    next_offsets: dict[int, int] = {}
    last = None
    for bid in ids:
        m = load_manifest(lake, bid)
        if m.seq <= last_reset:
            last = m
            continue
        next_offsets = m.next_offsets(next_offsets)
        last = m
    cursor.seq = last.seq
    cursor.next_offsets = next_offsets
    cursor.last_batch_at = datetime.fromisoformat(last.created_at).timestamp()
    return cursor


def new_manifest(seq: int, topic: str, ranges: list[OffsetRange], gaps: list[Gap], now: float) -> BatchManifest:
    return BatchManifest(
        batch_id=batch_id(seq),
        seq=seq,
        topic=topic,
        created_at=datetime.fromtimestamp(now, UTC).isoformat(),
        ranges=tuple(sorted(ranges)),
        gaps=tuple(g for g in gaps if any(r.partition == g.partition for r in ranges)),
    )


def write_manifest(lake: Lake, manifest: BatchManifest) -> None:
    """Write once. A manifest already there is the batch's definition: never replaced."""
    path = manifest_path(manifest.batch_id)
    if lake.exists(path):
        existing = BatchManifest.from_json(lake.read_bytes(path).decode())
        if existing.ranges != manifest.ranges:
            raise RuntimeError(f"batch {manifest.batch_id} already exists with other ranges; refusing to redefine it")
        return
    lake.write_bytes_atomic(path, manifest.to_json().encode())


def request_reset(lake: Lake, topic: str, reason: str) -> str:
    """Operator action after the topic was recreated: the next batch starts at the start
    of the new log. Batches already landed stay as they are."""
    cursor = rebuild_cursor(lake, topic)
    path = reset_path(cursor.seq)
    lake.write_bytes_atomic(path, json.dumps({"after_seq": cursor.seq, "reason": reason,
                                              "at": datetime.now(UTC).isoformat()}).encode())
    return path


def reset_requested(lake: Lake, seq: int) -> bool:
    return lake.exists(reset_path(seq))


__all__ = ["StreamCursor", "batch_seq", "list_batch_ids", "load_manifest", "new_manifest", "rebuild_cursor",
           "request_reset", "reset_requested", "write_manifest"]
