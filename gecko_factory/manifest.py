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

from gecko_factory import __version__
from gecko_factory.llm.budget import cost_usd
from gecko_factory.plan import RunPlan
from gecko_factory.judge import JudgeMode
from gecko_factory.shards import (ShardMarker, atomic_write_json, done_marker, failed_file, hash_ids,
                                    shard_config_hash, shard_file)

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


def build_manifest(run_dir: Path, extra: dict | None = None) -> tuple[dict, list[dict]]:
    """(manifest, per-shard stats) of the run folder as it is on disk now."""
    plan = RunPlan.load(run_dir)
    skipped: Counter = Counter()
    usage: Counter = Counter()
    done, pending, per_shard = [], [], []
    examples = relabelled = pending_seeds = 0
    judge_modes: set[str] = set()
    for state in shard_states(run_dir, plan):
        shard, marker = state.shard, state.marker
        if marker is None:  # failed or pending: not (yet) part of the data set
            pending.append(shard)
            pending_seeds += state.seeds
            continue
        done.append(shard)
        examples += marker.rows
        skipped.update(marker.stats.get("skipped", {}))
        usage.update(marker.stats.get("usage", {}))
        relabelled += marker.stats.get("relabelled", 0)
        judge_modes.add(marker.stats.get("judge_mode", "?"))
        per_shard.append({"shard": shard, "file": shard_file(run_dir, shard).name, "rows": marker.rows,
                          **{k: marker.stats.get(k) for k in ("skipped", "relabelled", "usage", "seconds")}})
    seeds = plan.seed_count
    manifest = {
        "gecko_factory_version": __version__,
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": plan.config.model_dump(mode="json"),
        "config_hash": plan.config_hash,
        "corpus": {"hash": plan.corpus_hash, "paragraphs": plan.corpus_count,
                   "skipped": plan.corpus_skipped, "errors": plan.corpus_errors[:20]},
        "judge_mode": sorted(judge_modes),
        "shards": {"total": len(plan.shards), "done": len(done), "pending": pending},
        "counts": {
            "seeds": seeds,
            "examples": examples,
            "skipped": dict(sorted(skipped.items())),
            "pending_seeds": pending_seeds,
            "relabelled": relabelled,
            "relabel_rate": round(relabelled / examples, 4) if examples else None,
        },
        # seeds = written + skipped (by reason) + pending, per run as per shard.
        "accounting_ok": seeds == examples + sum(skipped.values()) + pending_seeds,
        "llm_usage": {k: usage.get(k, 0) for k in USAGE_KEYS},
        **(extra or {}),
    }
    prices = (extra or {}).get("llm", {}).get("usd_per_1m_tokens")
    if prices:
        manifest["cost_usd"] = round(cost_usd(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0),
                                              tuple(prices)), 6)
    return manifest, per_shard


def write_manifest(run_dir: Path, extra: dict | None = None) -> dict:
    manifest, per_shard = build_manifest(run_dir, extra)
    atomic_write_json(run_dir / "stats.json", {"shards": per_shard})
    atomic_write_json(run_dir / "manifest.json", manifest)
    return manifest
