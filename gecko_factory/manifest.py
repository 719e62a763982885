"""The run's manifest: a summary rebuilt from the plan and the shard markers alone.

Built from files, not from memory, so `gecko-factory inspect` and a resumed run see exactly what
a finished run saw. Holds the config without secrets (the LLM settings' public part only).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from typing import get_args
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from gecko_factory import __version__
from gecko_factory.llm.budget import cost_usd
from gecko_factory.plan import RunPlan
from gecko_factory.judge import JudgeMode
from gecko_factory.files import atomic_write_json
from gecko_factory.shards import ShardMarker, done_marker, failed_file, hash_ids, shard_config_hash, shard_file

USAGE_KEYS = ("calls", "prompt_tokens", "completion_tokens", "retries", "failed_calls", "cache_hits")


@dataclass
class ShardState:
    shard: int
    state: str  # done | failed | pending
    seeds: int
    marker: ShardMarker | None = None  # set when done
    error: str | None = None

    @property
    def rows(self) -> int | None:
        return self.marker.rows if self.marker else None


def shard_states(run_dir: Path, plan: RunPlan | None = None) -> list[ShardState]:
    """Every planned shard as done (marker matches), failed (last attempt raised) or pending."""
    plan = plan or RunPlan.load(run_dir)
    # done in whichever judge mode it was judged (the run itself asks for the mode it will use)
    configs = frozenset(shard_config_hash(plan.config_hash, m) for m in get_args(JudgeMode))
    states = []
    for shard, seeds in enumerate(plan.shards):
        marker = done_marker(run_dir, shard, hash_ids(seeds), configs)
        if marker is not None:
            states.append(ShardState(shard, "done", len(seeds), marker))
            continue
        try:
            failure = json.loads(failed_file(run_dir, shard).read_text())
        except (OSError, ValueError):
            states.append(ShardState(shard, "pending", len(seeds)))
            continue
        states.append(ShardState(shard, "failed", len(seeds),
                                 error=f"{failure.get('error')}: {failure.get('message')} ({failure.get('at')})"))
    return states


class CorpusSummary(BaseModel):
    hash: str
    paragraphs: int
    skipped: dict[str, int] = {}
    errors: list[str] = []  # the first few reasons, for a person to read


class ShardCounts(BaseModel):
    total: int
    done: int
    pending: list[int] = []  # failed or not yet run


class Counts(BaseModel):
    seeds: int
    examples: int
    skipped: dict[str, int] = {}
    pending_seeds: int = 0
    relabelled: int = 0
    relabel_rate: float | None = None  # None: no example yet
    unjudged_negatives: int = 0  # examples whose hard negative came from beyond the judged N


class ShardSummary(BaseModel):
    """One committed shard in stats.json: its file and what its marker recorded."""

    shard: int
    file: str
    rows: int
    skipped: dict[str, int] = {}
    relabelled: int = 0
    unjudged_negatives: int = 0  # rows whose hard negative came from the negative pool
    usage: dict[str, int] = {}
    seconds: float = 0.0


class Manifest(BaseModel):
    """manifest.json: the run as it is on disk, plus what the flow adds about the last run."""

    model_config = ConfigDict(extra="forbid")

    gecko_factory_version: str
    written_at: str
    config: dict  # FretConfig as JSON (it holds no secret)
    config_hash: str
    corpus: CorpusSummary
    judge_mode: list[str]  # the modes the done shards were judged in
    shards: ShardCounts
    counts: Counts
    accounting_ok: bool  # seeds = written + skipped (by reason) + pending
    llm_usage: dict[str, int]
    cost_usd: float | None = None  # when the endpoint has prices
    # Added by the flow that wrote it (RunExtras): absent when rebuilt from the files alone.
    llm: dict | None = None  # LLMSettings.public_dict(): no key
    index: dict | None = None
    judge_mode_used: str | None = None
    wall_seconds: float | None = None
    failed_shards: dict[str, str] = {}
    stopped: str | None = None
    training: dict | None = None


def build_manifest(run_dir: Path, extra: dict | None = None) -> tuple[Manifest, list[ShardSummary]]:
    """(manifest, per-shard stats) of the run folder as it is on disk now; `extra`: the
    flow-level fields of `Manifest` (llm, index, judge_mode_used, ...)."""
    plan = RunPlan.load(run_dir)
    skipped: Counter = Counter()
    usage: Counter = Counter()
    done, pending, per_shard = [], [], []
    examples = relabelled = pending_seeds = unjudged = 0
    judge_modes: set[str] = set()
    for state in shard_states(run_dir, plan):
        shard, marker = state.shard, state.marker
        if marker is None:  # failed or pending: not (yet) part of the data set
            pending.append(shard)
            pending_seeds += state.seeds
            continue
        stats = marker.stats
        done.append(shard)
        examples += marker.rows
        skipped.update(stats.skipped)
        usage.update(stats.usage)
        relabelled += stats.relabelled
        unjudged += stats.unjudged_negatives
        judge_modes.add(stats.judge_mode)
        per_shard.append(ShardSummary(shard=shard, file=shard_file(run_dir, shard).name, rows=marker.rows,
                                      skipped=stats.skipped, relabelled=stats.relabelled,
                                      unjudged_negatives=stats.unjudged_negatives,
                                      usage=stats.usage, seconds=stats.seconds))
    seeds = plan.seed_count
    extra = extra or {}
    prices = (extra.get("llm") or {}).get("usd_per_1m_tokens")
    manifest = Manifest(
        gecko_factory_version=__version__,
        written_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        config=plan.config.model_dump(mode="json"),
        config_hash=plan.config_hash,
        corpus=CorpusSummary(hash=plan.corpus_hash, paragraphs=plan.corpus_count,
                             skipped=plan.corpus_skipped, errors=plan.corpus_errors[:20]),
        judge_mode=sorted(judge_modes),
        shards=ShardCounts(total=len(plan.shards), done=len(done), pending=pending),
        counts=Counts(seeds=seeds, examples=examples, skipped=dict(sorted(skipped.items())),
                      pending_seeds=pending_seeds, relabelled=relabelled,
                      relabel_rate=round(relabelled / examples, 4) if examples else None,
                      unjudged_negatives=unjudged),
        accounting_ok=seeds == examples + sum(skipped.values()) + pending_seeds,
        llm_usage={k: usage.get(k, 0) for k in USAGE_KEYS},
        cost_usd=round(cost_usd(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0),
                                tuple(prices)), 6) if prices else None,
        **extra,
    )
    return manifest, per_shard


def write_manifest(run_dir: Path, extra: dict | None = None) -> dict:
    """Write stats.json and manifest.json; the manifest as JSON (what a flow returns)."""
    manifest, per_shard = build_manifest(run_dir, extra)
    atomic_write_json(run_dir / "stats.json", {"shards": [s.model_dump() for s in per_shard]})
    atomic_write_json(run_dir / "manifest.json", manifest.model_dump(mode="json"))
    return manifest.model_dump(mode="json")


def read_manifest(run_dir: Path) -> Manifest:
    return Manifest.model_validate_json((run_dir / "manifest.json").read_text())


def current_manifest(run_dir: Path) -> Manifest:
    """The manifest of the folder as it is now (shards done since, or deleted, count), with what
    the last flow run recorded about itself (LLM, index, wall time...) when it wrote one."""
    rebuilt, _ = build_manifest(run_dir)
    saved = run_dir / "manifest.json"
    if not saved.exists():
        return rebuilt
    return Manifest.model_validate({**read_manifest(run_dir).model_dump(),
                                    **rebuilt.model_dump(exclude_unset=True)})


def read_shard_summaries(run_dir: Path) -> list[ShardSummary]:
    data = json.loads((run_dir / "stats.json").read_text())
    return [ShardSummary.model_validate(s) for s in data["shards"]]
