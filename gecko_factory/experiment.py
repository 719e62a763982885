"""Issue 14's experiment as data: the recipes (arms) trained on one FRet run, each arm's result,
the choice of the best recipe (on the dev set, never on test) and the report table.

flows/experiment.py trains and evaluates; everything here is plain data and arithmetic, so the
table and the choice are tested by hand.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from pydantic import BaseModel

from gecko_factory.files import atomic_write_text
from gecko_factory.hashing import sha256_hex

# The recipes, as TrainConfig fields over the shared options. Gecko's paper compares its LLM
# pairs with the (seed, random) ablation; distillation of the judge's scores over all N judged
# candidates is what gains where contrastive fine-tuning of a strong retriever loses (Tamber et
# al. 2025; GPL), alone or added to Gecko's loss.
ARMS: dict[str, dict] = {
    "llm": {"pairing": "llm"},
    "seed_random": {"pairing": "seed_random"},
    "distill": {"pairing": "llm", "contrastive_weight": 0.0, "distill_weight": 1.0},
    "llm+distill": {"pairing": "llm", "distill_weight": 1.0},
}
ARM_TITLES = {
    "base": "base (all-MiniLM-L6-v2, no training)",
    "llm": "(b) Gecko contrastive on the LLM's (p1, pN)",
    "seed_random": "(c) Gecko's ablation: seed positive, random negative",
    "distill": "(d) distillation of the judge's QL scores over all N candidates",
    "llm+distill": "(e) (b) + (d): contrastive and distillation",
}
RESULT_FILE = "experiment_result.json"


def check_arms(arms: list[str] | None) -> list[str]:
    """The recipes asked for (all when none is named); an unknown name is a ValueError."""
    unknown = sorted(set(arms or []) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown recipes {unknown}; known: {', '.join(ARMS)}")
    return list(arms or ARMS)


def run_data(run_dir: str | Path) -> tuple[str, list[int]]:
    """(a digest of what the run has committed, the shards not done yet). The digest covers every
    done shard's file hash, so an arm trained before the run grew is trained again, never reported
    as the larger data's result."""
    from gecko_factory.manifest import shard_states

    states = shard_states(Path(run_dir))
    digest = sha256_hex(*(f"{s.shard}:{s.marker.file_sha256}" for s in states if s.marker))
    return digest, [s.shard for s in states if s.state != "done"]


class ArmResult(BaseModel):
    arm: str
    seed: int
    train_fraction: float = 1.0
    options: dict  # the TrainConfig fields this arm trained with
    data: str = ""  # run_data's digest of the FRet data it trained on
    out_dir: str  # as paths.shown_path names it: a committed result names no one's home
    n_train: int
    steps: int
    dev_base: float | None = None  # nDCG@10 on the dev set: base, and the exported step
    dev_selected: float | None = None
    beat_base: bool | None = None
    dev_best_trained: float | None = None  # the best trained step's dev nDCG@10, exported or not
    dev_best_trained_se: float | None = None  # the paired SE of its gain over the base
    test: dict[int, dict[str, float]]  # dim -> {"ndcg_at_10", "recall_at_100"} on the test split
    test_gain_se: dict[int, float] = {}  # dim -> paired SE of the nDCG@10 gain over the base

    def save(self, folder: str | Path) -> None:
        """Into the arm's folder, given here: `out_dir` is only how the record names it."""
        atomic_write_text(Path(folder) / RESULT_FILE, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, out_dir: str | Path, options: dict, data: str) -> "ArmResult | None":
        """The arm's saved result, if it was trained with exactly these options on exactly this
        data (resume)."""
        path = Path(out_dir) / RESULT_FILE
        if not path.exists():
            return None
        result = cls.model_validate_json(path.read_text())
        return result if (result.options, result.data) == (options, data) else None


def scores_by_dim(eval_report: dict) -> dict[int, dict[str, float]]:
    """gecko_factory.evaluate's report as {dim: {"ndcg_at_10", "recall_at_100"}}."""
    return {s["dim"]: {"ndcg_at_10": s["ndcg_at_10"], "recall_at_100": s["recall_at_100"]}
            for s in eval_report["scores"]}


def best_arm(results: list[ArmResult]) -> str:
    """The recipe with the best mean dev nDCG@10 of its exported models (full data). The test
    split never chooses: it is for the report only."""
    by_arm: dict[str, list[float]] = {}
    for r in results:
        if r.train_fraction == 1.0 and r.dev_selected is not None:
            by_arm.setdefault(r.arm, []).append(r.dev_selected)
    if not by_arm:
        raise ValueError("no arm has a dev score: train with a dev set (--dev) to choose a recipe")
    return max(by_arm, key=lambda arm: (statistics.fmean(by_arm[arm]), arm))


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {(max(values) - min(values)) / 2:.4f}"


def _gain_cell(rs: list[ArmResult], base: float, dim: int) -> str:
    """The test nDCG@10 gain over the base at `dim`, mean over seeds, with the paired SE (mean
    over seeds) when every run has one: a gain inside one or two SEs is not a gain."""
    gain = statistics.fmean(r.test[dim]["ndcg_at_10"] for r in rs) - base
    ses = [r.test_gain_se.get(dim) for r in rs]
    return f"{gain:+.4f}" + ("" if None in ses else f" (SE {statistics.fmean(ses):.4f})")


def report(base_test: dict[int, dict[str, float]], results: list[ArmResult], dims: list[int]) -> str:
    """The README table: test nDCG@10 per dim and Recall@100 at the full dim, mean ± half the
    range over training seeds, the gain over the base at the full dim with its paired SE, the
    dev figures that selected each export and what the best trained step reached on dev (the
    export is the base when nothing beat it), and the data curve."""
    full = max(dims)
    head = (["recipe", "seeds"] + [f"nDCG@10 {d} d" for d in dims]
            + [f"Δ nDCG@10 {full} d (paired SE)", f"Recall@100 {full} d",
               "dev nDCG@10 base → exported", "beat base on dev",
               "dev Δ of the best trained step (paired SE)"])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines.append("| " + " | ".join([ARM_TITLES["base"], "–"]
                                   + [f"{base_test[d]['ndcg_at_10']:.4f}" for d in dims]
                                   + ["–", f"{base_test[full]['recall_at_100']:.4f}"]
                                   + ["–"] * 3) + " |")
    groups: dict[tuple[str, float], list[ArmResult]] = {}
    for r in results:
        groups.setdefault((r.arm, r.train_fraction), []).append(r)
    for (arm, fraction), rs in groups.items():
        title = ARM_TITLES.get(arm, arm) + ("" if fraction == 1.0 else f", {fraction:g} of the data")
        devs = [r for r in rs if r.dev_base is not None and r.dev_selected is not None]
        dev = (f"{statistics.fmean(r.dev_base for r in devs):.4f} → "
               f"{_cell([r.dev_selected for r in devs])}") if devs else "–"
        beat = f"{sum(bool(r.beat_base) for r in rs)} of {len(rs)}" if devs else "–"
        trained = [r for r in devs if r.dev_best_trained is not None]
        reached = "–"
        if trained:
            reached = f"{statistics.fmean(r.dev_best_trained - r.dev_base for r in trained):+.4f}"
            if all(r.dev_best_trained_se is not None for r in trained):
                reached += f" ({statistics.fmean(r.dev_best_trained_se for r in trained):.4f})"
        lines.append("| " + " | ".join(
            [title, ",".join(str(r.seed) for r in rs)]
            + [_cell([r.test[d]["ndcg_at_10"] for r in rs]) for d in dims]
            + [_gain_cell(rs, base_test[full]["ndcg_at_10"], full),
               _cell([r.test[full]["recall_at_100"] for r in rs]), dev, beat, reached]) + " |")
    return "\n".join(lines) + "\n"
