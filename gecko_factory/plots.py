"""Pictures of a finished run: judge-score distributions and per-shard figures, as PNG files.

Entry point: `render_plots(run_dir) -> list[Plot]`, called whenever the card is made
(gecko_factory.card.run_card). It reads what the run wrote — the shards' rows and stats.json —
and writes `<run>/plots/*.png` atomically (gecko_factory.files), so a reader never sees half an
image. `plots_markdown` puts them in a markdown card: as files next to it (a README in the run
folder) or inline as data: URIs (a Prefect markdown artifact, which has no files beside it).

matplotlib's object API (a `Figure`, saved with the Agg renderer) and never pyplot: pyplot keeps
global figure state, which a flow's worker threads must not share.
"""

from __future__ import annotations

import base64
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from gecko_factory.files import atomic_write_bytes
from gecko_factory.manifest import read_shard_summaries

PLOTS_DIR = "plots"
# Rows read for the score histograms: enough for their shape, bounded for a run of millions.
MAX_ROWS = 200_000
DPI = 100
POSITIVE, NEGATIVE = "#1f77b4", "#d62728"
SKIP_COLOURS = ("#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")  # not the two above


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: scores, shards
    title: str
    path: Path


@dataclass
class Scores:
    """Judge scores of each row's positive and hard negative (None: not scored, e.g. QL when RC-only)."""

    rows: int = 0
    truncated: bool = False
    positive: dict[str, list[float]] | None = None
    negative: dict[str, list[float]] | None = None


SCORE_FIELDS = (("ql", "QL = log p(query | passage)"), ("rc", "RC = log p(Yes | query, passage)"),
                ("fused_score", "fused score (ranks fused)"))


def read_scores(shard_files: list[Path], max_rows: int = MAX_ROWS) -> Scores:
    out = Scores(positive={k: [] for k, _ in SCORE_FIELDS}, negative={k: [] for k, _ in SCORE_FIELDS})
    for path in shard_files:
        for row in pq.read_table(path, columns=["positive_id", "negative_id", "candidates"]).to_pylist():
            if out.rows >= max_rows:
                out.truncated = True
                return out
            out.rows += 1
            by_id = {c["id"]: c for c in row["candidates"]}
            for side, pid in ((out.positive, row["positive_id"]), (out.negative, row["negative_id"])):
                for key, _ in SCORE_FIELDS:
                    if (v := by_id[pid].get(key)) is not None:
                        side[key].append(float(v))
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # no "Software" tag: the same data makes the same bytes whatever matplotlib wrote them
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def scores_png(scores: Scores) -> bytes:
    """Overlaid histograms, one panel per score, positives against hard negatives on shared bins."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.2), layout="constrained")
    n = f"first {scores.rows:,} rows" if scores.truncated else f"{scores.rows:,} rows"
    fig.suptitle(f"Judge scores: positives vs hard negatives ({n})", fontsize=11)
    for ax, (key, label) in zip(fig.subplots(1, len(SCORE_FIELDS)), SCORE_FIELDS):
        pos, neg = scores.positive[key], scores.negative[key]
        ax.set_xlabel(label, fontsize=9)
        ax.tick_params(labelsize=8)
        if not pos and not neg:
            ax.text(0.5, 0.5, "not scored\n(RC-only judge?)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="grey")
            ax.set_yticks([])
            continue
        lo, hi = min(pos + neg), max(pos + neg)
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
        ax.hist(pos, bins=bins, alpha=0.6, color=POSITIVE, label=f"positive (n={len(pos):,})")
        ax.hist(neg, bins=bins, alpha=0.6, color=NEGATIVE, label=f"hard negative (n={len(neg):,})")
        ax.set_ylabel("rows", fontsize=9)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    return _png(fig)


def shards_png(shards: list[tuple[int, int, int, dict[str, int]]]) -> bytes:
    """Per committed shard (index, rows, relabelled, skips by reason): relabel rate, stacked skips."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.2), layout="constrained")
    fig.suptitle(f"Per shard ({len(shards):,} committed)", fontsize=11)
    rate_ax, skip_ax = fig.subplots(1, 2, sharex=True)  # shard numbers line up, bars or not
    xs = [s[0] for s in shards]
    rate_ax.bar(xs, [100.0 * s[2] / s[1] if s[1] else 0.0 for s in shards], color=POSITIVE)
    if not any(s[2] for s in shards):
        rate_ax.text(0.5, 0.5, "no relabels", ha="center", va="center", transform=rate_ax.transAxes,
                     fontsize=9, color="grey")
    rate_ax.set_title(f"relabelled: {sum(s[2] for s in shards):,} of {sum(s[1] for s in shards):,} rows",
                      fontsize=9)
    rate_ax.set_xlabel("shard", fontsize=9)
    rate_ax.set_ylabel("relabel rate (%)", fontsize=9)
    rate_ax.set_ylim(0, max([100.0 * s[2] / s[1] for s in shards if s[1]] + [10.0]) * 1.1)
    reasons = sorted({r for s in shards for r in s[3]})
    bottom = [0] * len(shards)
    for i, reason in enumerate(reasons):
        heights = [s[3].get(reason, 0) for s in shards]
        skip_ax.bar(xs, heights, bottom=bottom, label=reason, color=SKIP_COLOURS[i % len(SKIP_COLOURS)])
        bottom = [b + h for b, h in zip(bottom, heights)]
    skip_ax.set_title(f"skipped: {sum(bottom):,} seeds", fontsize=9)
    if not reasons:
        skip_ax.text(0.5, 0.5, "no skips", ha="center", va="center", transform=skip_ax.transAxes,
                     fontsize=9, color="grey")
    else:
        skip_ax.legend(fontsize=7)
    skip_ax.set_xlabel("shard", fontsize=9)
    skip_ax.set_ylabel("seeds skipped", fontsize=9)
    skip_ax.yaxis.get_major_locator().set_params(integer=True)
    for ax in (rate_ax, skip_ax):
        ax.tick_params(labelsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def render_plots(run_dir: Path) -> list[Plot]:
    """Write the run's plots under `<run>/plots/` and return them (none before a shard commits)."""
    run_dir = Path(run_dir)
    summaries = sorted(read_shard_summaries(run_dir), key=lambda s: s.shard)
    if not summaries:
        return []
    out_dir = run_dir / PLOTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    scores = read_scores([run_dir / "shards" / s.file for s in summaries])
    if scores.rows:
        plots.append(_write(out_dir, "scores", "Judge scores of positives vs hard negatives", scores_png(scores)))
    per_shard = [(s.shard, s.rows, s.relabelled, dict(Counter(s.skipped))) for s in summaries]
    plots.append(_write(out_dir, "shards", "Relabel rate and skips per shard", shards_png(per_shard)))
    return plots


def _write(out_dir: Path, name: str, title: str, data: bytes) -> Plot:
    path = out_dir / f"{name}.png"
    atomic_write_bytes(path, data)
    return Plot(name, title, path)


def plots_markdown(plots: list[Plot], relative_to: Path) -> list[str]:
    """A "## Plots" section linking the images by path relative to `relative_to`, the folder the
    card is saved in (the run folder's README.md; the Hugging Face Hub shows them from there)."""
    if not plots:
        return []
    lines = ["## Plots", ""]
    for p in plots:
        lines += [f"![{p.title}]({p.path.relative_to(relative_to).as_posix()})", ""]
    return lines


# An image the card links under plots/: ![title](plots/name.png)
_PLOT_LINK = re.compile(r"!\[([^\]]*)\]\((" + PLOTS_DIR + r"/[\w.-]+\.png)\)")


def inline_images(markdown: str, base: Path) -> str:
    """The card with its plot links replaced by base64 data: URIs, for a place with no files
    beside the card: the Prefect UI renders a markdown artifact's data: images (checked by
    tests/flows/test_ui_browser.py)."""
    def inline(m: re.Match) -> str:
        path = base / m.group(2)
        if not path.is_file():
            return m.group(0)
        return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"

    return _PLOT_LINK.sub(inline, markdown)
