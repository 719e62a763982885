"""What a finished run looks like to a person: the shard table and the markdown data-set card.

Pure functions of what the run wrote (manifest.json, stats.json and the shard Parquet files), so
the Prefect artifacts, `inspect` and a test all see the same figures. No Prefect here: tasks/
publishes the results as artifacts.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from gecko_factory.manifest import Manifest, ShardSummary, read_manifest, read_shard_summaries
from gecko_factory.schemas import FretRow
from gecko_factory.shards import shard_name

SAMPLES = 3
TEXT_CHARS = 240  # texts in the card are cut: it is a preview, the Parquet files hold the rest
# Keys whose values are never shown, at any depth. The manifest already holds no secret (it is
# built from LLMSettings.public_dict); this guards against a future field that would.
SECRET_KEYS = {"api_key", "openai_api_key", "key", "secret", "password", "authorization", "token"}


@dataclass
class ScoreSummary:
    n: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[float | None]) -> "ScoreSummary":
        xs = [v for v in values if v is not None]  # QL is null under RC-only judging
        if not xs:
            return cls(0, None, None, None, None)
        return cls(len(xs), statistics.fmean(xs), statistics.median(xs), min(xs), max(xs))


@dataclass
class DatasetSample:
    """What the card needs from the rows: counts, judge scores, and the first few examples."""

    task_types: Counter = field(default_factory=Counter)
    rows: int = 0
    relabelled: int = 0
    positive_ql: list = field(default_factory=list)
    positive_rc: list = field(default_factory=list)
    negative_ql: list = field(default_factory=list)
    negative_rc: list = field(default_factory=list)
    positive_retrieval_rank: list = field(default_factory=list)
    examples: list[FretRow] = field(default_factory=list)


def read_rows(shard_files: list[Path]) -> DatasetSample:
    """One pass over the shards' rows; the sample examples are the first rows of the first shard."""
    out = DatasetSample()
    for path in shard_files:
        for row in map(FretRow.from_dict, pq.read_table(path).to_pylist()):
            out.rows += 1
            out.task_types[row.task_type] += 1
            out.relabelled += row.relabelled
            pos, neg = row.candidate(row.positive_id), row.candidate(row.negative_id)
            out.positive_ql.append(pos.ql)
            out.positive_rc.append(pos.rc)
            out.negative_ql.append(neg.ql)
            out.negative_rc.append(neg.rc)
            out.positive_retrieval_rank.append(pos.retrieval_rank)
            if len(out.examples) < SAMPLES:
                out.examples.append(row)
    return out


def shard_table(manifest: Manifest, per_shard: list[ShardSummary]) -> list[dict]:
    """One row per planned shard: the committed ones with their figures, the others by state.

    Figures are those recorded when the shard was committed (a reused shard shows the run that
    made it)."""
    done = {s.shard: s for s in per_shard}
    failed = {int(k): v for k, v in manifest.failed_shards.items()}
    rows = []
    for shard in range(manifest.shards.total):
        s = done.get(shard)
        if s is None:
            rows.append({"shard": shard_name(shard), "state": "failed" if shard in failed else "pending",
                         "rows": None, "skipped": None, "skip_reasons": None, "relabelled": None,
                         "llm_calls": None, "prompt_tokens": None, "completion_tokens": None,
                         "cache_hits": None, "seconds": None, "error": failed.get(shard, "")})
            continue
        usage, skipped = s.usage, s.skipped
        rows.append({
            "shard": shard_name(shard), "state": "done", "rows": s.rows,
            "skipped": sum(skipped.values()),
            "skip_reasons": ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "none",
            "relabelled": s.relabelled,
            "llm_calls": usage.get("calls", 0),
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "cache_hits": usage.get("cache_hits", 0),
            "seconds": s.seconds,
            "error": "",
        })
    return rows


def percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def without_secrets(obj):
    if isinstance(obj, dict):
        return {k: without_secrets(v) for k, v in obj.items() if k.lower() not in SECRET_KEYS}
    if isinstance(obj, list):
        return [without_secrets(v) for v in obj]
    return obj


def _cell(text: object, limit: int = TEXT_CHARS) -> str:
    """A markdown table cell: one line, no pipes, cut to `limit` characters."""
    s = " ".join(str(text).split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def dataset_card(manifest: Manifest, sample: DatasetSample, title: str, plots: list[str] = ()) -> str:
    """`plots`: markdown lines of the plots section (gecko_factory.plots.plots_markdown), shown
    after the judge-score table they picture."""
    c, u = manifest.counts, manifest.llm_usage
    skipped = ", ".join(f"{k}: {v}" for k, v in c.skipped.items()) or "none"
    lines = [
        f"# FRet data set: {_cell(title, 120)}",
        "",
        "| figure | value |", "|---|---|",
        f"| examples | {c.examples} of {c.seeds} seeds |",
        f"| relabel rate (positive ≠ seed) | {percent(c.relabel_rate)} ({c.relabelled} of {c.examples}) |",
        f"| skipped | {skipped} |",
        f"| hard negatives from beyond the N judged (unjudged, guard-safe) | {c.unjudged_negatives} of {c.examples} |",
        f"| pending seeds (shards not done) | {c.pending_seeds} |",
        f"| shards | {manifest.shards.done} of {manifest.shards.total} done |",
        f"| judge | {', '.join(manifest.judge_mode) or 'n/a'} |",
        f"| LLM calls | {u['calls']} ({u['prompt_tokens']} prompt + {u['completion_tokens']} completion "
        f"tokens, {u.get('cache_hits', 0)} answers from cache) |",
        f"| accounting (seeds = examples + skipped + pending) | {'ok' if manifest.accounting_ok else 'BROKEN'} |",
        "",
        "## Task types",
        "",
        "| task type | examples | share |", "|---|---:|---:|",
    ]
    for task_type, n in sorted(sample.task_types.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {_cell(task_type)} | {n} | {percent(n / sample.rows)} |")
    lines += [
        "",
        "## Judge scores",
        "",
        "QL: log p(query | passage), summed over the query's tokens; RC: log p(\"Yes\" | query, passage).",
        "",
        "| score | n | mean | median | min | max |", "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in (("positive QL", sample.positive_ql), ("positive RC", sample.positive_rc),
                         ("hard negative QL", sample.negative_ql), ("hard negative RC", sample.negative_rc),
                         ("positive's retrieval rank", sample.positive_retrieval_rank)):
        s = ScoreSummary.of(values)
        lines.append(f"| {name} | {s.n} | {_num(s.mean)} | {_num(s.median)} | {_num(s.min)} | {_num(s.max)} |")
    lines += ["", *plots, f"## Sample examples ({len(sample.examples)})", ""]
    for i, ex in enumerate(sample.examples, 1):
        lines += [
            f"**{i}. {_cell(ex.task_type)}** — {_cell(ex.task)}", "",
            "| field | value |", "|---|---|",
            f"| query | {_cell(ex.query)} |",
            f"| positive `{ex.positive_id}` | {_cell(ex.positive_text)} |",
            f"| hard negative `{ex.negative_id}` | {_cell(ex.negative_text)} |",
            f"| relabelled | {'yes' if ex.relabelled else 'no'} |",
            "",
        ]
    lines += audit_section(manifest)
    public = without_secrets({"config": manifest.config, "llm": manifest.llm,
                              "config_hash": manifest.config_hash})
    lines += ["## Config (no secrets)", "", "```json", json.dumps(public, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def audit_section(manifest: Manifest) -> list[str]:
    """The judge audit of this run's judge (same LLM, form, prompt, N), when one was made."""
    from gecko_factory.audit.registry import audit_for_run

    found = audit_for_run(manifest.model_dump(mode="json"))
    if found is None:
        return ["## Judge audit", "", "No audit of this judge yet: `gecko-factory audit` measures how "
                "often its choices match human labels (README, \"Auditing the judge\").", ""]
    return ["## Judge audit", "", found[1], ""]


def run_card(run_dir: Path) -> tuple[list[dict], str]:
    """(shard table rows, markdown card) of a run folder whose manifest has been written. The
    plots are rendered into `<run>/plots/` first and the card links them by path relative to the
    run folder (a README.md there); `plots.inline_images` makes that a card for the Prefect UI."""
    from gecko_factory.plots import plots_markdown, render_plots

    manifest, per_shard = read_manifest(run_dir), read_shard_summaries(run_dir)
    files = [run_dir / "shards" / s.file for s in sorted(per_shard, key=lambda s: s.shard)]
    plots = plots_markdown(render_plots(run_dir), run_dir)
    return shard_table(manifest, per_shard), dataset_card(manifest, read_rows(files), run_dir.name, plots)
