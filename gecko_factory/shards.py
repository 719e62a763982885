"""Shards: the run folder's plan, and the atomic commit of each shard with its marker.

Layout of a run folder:
    plan.json               config (no secrets), corpus hash, seed ids of every shard
    corpus.parquet          the normalised corpus (PARAGRAPH_SCHEMA)
    corpus.arrow            its lookup copy for shards (gecko_factory/corpus_store.py)
    shards/part-00007.parquet       FRET_SCHEMA rows of shard 7
    shards/part-00007.done.json     its marker: rows, hashes of inputs/config/file, stats
    manifest.json           the run's summary, rewritten at the end of every run
A shard is committed as datatrove does: write `.tmp`, fsync, rename, fsync the folder, then write
the marker (itself atomically). A shard counts as done only if its marker matches the current
inputs and config AND the file on disk has the size and hash the marker recorded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from gecko_factory.files import atomic_file, atomic_write_json
from gecko_factory.hashing import sha256_file, sha256_hex
from gecko_factory.schemas import FRET_SCHEMA_VERSION, FretRow, ShardStats, fret_table


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}"


def shard_file(run_dir: Path, shard: int) -> Path:
    return run_dir / "shards" / f"{shard_name(shard)}.parquet"


def marker_file(run_dir: Path, shard: int) -> Path:
    return run_dir / "shards" / f"{shard_name(shard)}.done.json"


def failed_file(run_dir: Path, shard: int) -> Path:
    return run_dir / "shards" / f"{shard_name(shard)}.failed.json"


def record_failure(run_dir: Path, shard: int, exc: BaseException) -> None:
    """What `gecko-factory status` shows for a failed shard; removed when the shard commits."""
    import datetime as dt

    path = failed_file(run_dir, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"shard": shard, "error": type(exc).__name__, "message": str(exc)[:2000],
                             "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def hash_ids(ids: list[str]) -> str:
    return sha256_hex("\n".join(ids))


@dataclass
class ShardMarker:
    shard: int
    rows: int
    input_hash: str  # hash of the seed ids of the shard
    config_hash: str
    schema_version: str
    file_sha256: str
    file_bytes: int
    stats: ShardStats = field(default_factory=ShardStats)  # skips by reason, LLM usage, seconds

    @classmethod
    def read(cls, path: Path) -> "ShardMarker | None":
        try:
            data = json.loads(path.read_text())
            return cls(**{**data, "stats": ShardStats.from_dict(data.get("stats") or {})})
        except (OSError, ValueError, TypeError, AttributeError):
            return None  # missing or unreadable marker: the shard is simply not done


def commit_shard(run_dir: Path, shard: int, rows: Sequence[FretRow], input_hash: str,
                 config_hash: str, stats: ShardStats) -> ShardMarker:
    """Write the shard's rows and then its marker; either both land or the shard is pending."""
    final = shard_file(run_dir, shard)
    final.parent.mkdir(parents=True, exist_ok=True)
    table = fret_table(rows)
    with atomic_file(final) as fh:  # part-00007.parquet.tmp, then the rename
        pq.write_table(table, fh, compression="zstd")
    marker = ShardMarker(shard, table.num_rows, input_hash, config_hash, FRET_SCHEMA_VERSION,
                         sha256_file(final), final.stat().st_size, stats)
    atomic_write_json(marker_file(run_dir, shard), asdict(marker))
    failed_file(run_dir, shard).unlink(missing_ok=True)
    return marker


def shard_config_hash(plan_config_hash: str, judge_mode: str) -> str:
    """The config hash a shard's marker carries: the plan's config and the judge mode the shard
    was actually judged with. The plan holds the mode asked for, but a server without prompt
    log-probs is judged RC-only; without this a later run with log-probs would reuse those
    shards as if they were two-prompt ones."""
    return sha256_hex(plan_config_hash, f"judge_mode={judge_mode}")


def done_marker(run_dir: Path, shard: int, input_hash: str,
                config_hash: str | frozenset[str]) -> ShardMarker | None:
    """The shard's marker if the shard is really done for these inputs and this config (or any
    of a set of configs: `status` accepts a shard judged in any mode)."""
    accepted = {config_hash} if isinstance(config_hash, str) else config_hash
    marker = ShardMarker.read(marker_file(run_dir, shard))
    if marker is None or marker.config_hash not in accepted or (
        marker.input_hash, marker.schema_version) != (input_hash, FRET_SCHEMA_VERSION):
        return None
    path = shard_file(run_dir, shard)
    if not path.exists() or path.stat().st_size != marker.file_bytes or sha256_file(path) != marker.file_sha256:
        return None  # the file changed or vanished after commit: redo it
    return marker
