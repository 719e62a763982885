"""Model selection that cannot silently lose: score the model in training on held-out data every
`eval_every` steps, keep its best state, export that.

Two measures. The validation loss: the training objective on the FRet examples held out by seed
(data.is_validation). And, when a dev set is given, nDCG@10 at the full dimension on labelled
queries: the SciFact *train* claims (`scifact`), or a BEIR folder or zip's `dev_split` qrels;
never a test split, which stays for the final report. The model is scored with the prompts it
will be saved with (evaluate.prompt_formats), so the figure is what `gecko-factory eval` gives.

The base model is scored first (step 0) and is a candidate like any step. On dev, a step replaces
the best so far only when its gain, paired query by query, exceeds `select_margin` standard errors
of that gain (one by default: the one-standard-error rule of CART and ESL 7.10). A strict "any
gain" let noise through: in the pilot of issue 14 a step won on 809 dev claims by +0.0009 with a
paired SE of 0.0060 (118 claims better, 103 worse) and was below the base on test at every
dim. The validation loss, a mean over a few batches, stays strict. The export is therefore never
below the base on the selection measure, and when nothing beats the base the export *is* the base
(its weights, reloaded from the base folder, and its own saved prompts, with which step 0 was
scored: train.py) and the result says so (`Selection.beat_base = False`, a WARNING, the card).

The best weights go to best.pt (atomic) right after the checkpoint that names them. Two files
cannot be replaced in one rename, so a crash between the two leaves best.pt older than the
checkpoint's record; then the checkpoint's own weights are that best, and a resume rewrites
best.pt from them (`Selector.resumed`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from pydantic import BaseModel

from gecko_factory.evaluate import (RetrievalDataset, evaluate, load_beir, load_scifact,
                                    paired_gain, prompt_formats)
from gecko_factory.files import atomic_file
from gecko_factory.train.model import DualEncoder

log = logging.getLogger(__name__)

BEST_FILE = "best.pt"


class Selection(BaseModel):
    """What the export is, against the base. `beat_base` is measured on the dev set when there is
    one (the acceptance is on dev), else on the selection measure."""

    metric: Literal["last", "val_loss", "dev"]
    dev: str | None = None  # the dev set and its split, e.g. "scifact [train]"
    selected_step: int
    base: float | None  # the selection measure at step 0 (None for `last` without a dev set)
    selected: float | None
    dev_base: float | None = None  # nDCG@10 on dev, base vs the exported weights
    dev_selected: float | None = None
    dev_gain_se: float | None = None  # the paired standard error of dev_selected - dev_base
    dev_queries: int | None = None
    margin_se: float = 0.0  # a step had to beat the best so far by this many paired SEs on dev
    beat_base: bool
    # The best trained step on dev whether or not it was exported: what training reached, which
    # the export (the base's weights when nothing beat it) does not show.
    best_trained_step: int | None = None
    dev_best_trained: float | None = None
    dev_best_trained_se: float | None = None  # paired SE of its gain over the base

    def margin_text(self) -> str:
        return f" by more than {self.margin_se:g} paired SE" if self.margin_se else ""


def load_dev(spec: str, split: str = "train") -> RetrievalDataset:
    """`scifact` (../shared/data/scifact.zip), `scifact:PATH`, or a BEIR folder or zip."""
    if split == "test":
        raise ValueError("a test split is for the final report, never for model selection")
    if spec == "scifact" or spec.startswith("scifact:"):
        if split != "train":
            raise ValueError(f"SciFact's labelled non-test queries are its train claims, not {split!r}")
        return load_scifact(spec.partition(":")[2] or None, "train")
    return load_beir(spec, split)


class DevScore(NamedTuple):
    mean: float  # nDCG@10 on the dev set
    per_query: list[float]  # each query's, in the same order at every step


def dev_ndcg(model: DualEncoder, dataset: RetrievalDataset, prompts: dict[str, str],
             device: torch.device) -> DevScore:
    """nDCG@10 at the full dimension, with the prompts the model will be saved with."""
    query_prefix, document_format = prompt_formats(prompts)
    report = evaluate(model, dataset, dims=[model.hidden_size], query_prefix=query_prefix,
                      document_format=document_format, device=str(device))
    model.train()  # evaluate leaves the encoder in eval mode
    return DevScore(report.scores[0].ndcg_at_10, report.scores[0].ndcg_per_query)


class Selector:
    """Keeps history["best"] = {"step", "value"} and best.pt in step with each other. The dev
    scores per query are history["dev_per_query"][step] (train.py records them)."""

    def __init__(self, metric: Literal["val_loss", "dev"], out_dir: Path, base_path: str,
                 history: dict, margin_se: float = 0.0):
        self.metric, self.path, self.base_path = metric, out_dir / BEST_FILE, base_path
        self.history, self.margin_se = history, margin_se

    def observe(self, step: int, value: float) -> bool:
        """Record `value` at `step`; True when it is a new best (see the module's rule)."""
        best = self.history.get("best")
        if best is not None and best["step"] == step:
            return False  # already seen (a resumed run re-enters the step it stopped at)
        if best is None:
            better = True
        elif self.metric == "val_loss":
            better = value < best["value"]
        else:
            better = self._beats_on_dev(step, value, best)
        if better:
            self.history["best"] = {"step": step, "value": value}
        return better

    def _beats_on_dev(self, step: int, value: float, best: dict) -> bool:
        per_query = self.history.get("dev_per_query", {})
        new, old = per_query.get(step), per_query.get(best["step"])
        if not new or not old or len(new) != len(old):
            return value > best["value"]  # a checkpoint from before per-query scores
        gain, se = paired_gain(new, old)
        better = gain > 0 and gain > self.margin_se * se
        log.info("step %d: dev nDCG@10 %+.4f against step %d, paired SE %.4f over %d queries "
                 "(a new best needs more than %g SE): %s", step, gain, best["step"], se, len(new),
                 self.margin_se, f"step {step} is the new best" if better
                 else f"step {best['step']} stays the best")
        return better

    def save_best(self, model: DualEncoder, step: int) -> None:
        if step == 0:
            return  # the base: its folder has its weights
        with atomic_file(self.path) as fh:
            torch.save({"step": step, "model": model.state_dict()}, fh)

    def resumed(self, model: DualEncoder, step: int) -> None:
        """After loading the checkpoint of `step`: make best.pt agree with its record."""
        best = self.history.get("best")
        if best is None or best["step"] == 0:
            return
        if self._saved_step() != best["step"]:
            if best["step"] != step:
                raise RuntimeError(f"{self.path} does not hold step {best['step']}'s weights, "
                                   "which the checkpoint names as the best")
            self.save_best(model, step)

    def restore(self, model: DualEncoder) -> int:
        """Load the best state into `model` (the base's weights when step 0); returns its step."""
        step = self.history["best"]["step"]
        if step == 0:
            base = DualEncoder.from_pretrained(self.base_path, model.max_seq_len)
            model.load_state_dict(base.state_dict())
        else:
            model.load_state_dict(torch.load(self.path, map_location="cpu")["model"])
        return step

    def _saved_step(self) -> int | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu")["step"]


def summarize(metric: Literal["last", "val_loss", "dev"], history: dict, dev: str | None,
              final_step: int, margin_se: float = 0.0) -> Selection:
    """The selection's record from the evaluations in `history` (lists of (step, value))."""
    chosen = history["best"]["step"] if metric != "last" else final_step
    by_step = {"val_loss": dict(history["val"]), "dev": dict(history["dev"])}
    dev_scores = by_step["dev"]
    measure = by_step.get(metric, {})
    if dev_scores and 0 in dev_scores and chosen in dev_scores:
        beat = dev_scores[chosen] > dev_scores[0]
    elif metric == "val_loss":
        beat = measure[chosen] < measure[0]
    else:
        beat = False  # `last` with nothing to compare against cannot claim it beat the base
    per_query = history.get("dev_per_query", {})

    def se_over_base(step: int | None) -> float | None:
        if step is None or not per_query.get(0) or not per_query.get(step):
            return None
        return paired_gain(per_query[step], per_query[0])[1]

    trained = {s: v for s, v in dev_scores.items() if s > 0}
    best_trained = max(trained, key=lambda s: (trained[s], -s)) if trained else None
    return Selection(metric=metric, dev=dev, selected_step=chosen, base=measure.get(0),
                     selected=measure.get(chosen), dev_base=dev_scores.get(0),
                     dev_selected=dev_scores.get(chosen), dev_gain_se=se_over_base(chosen),
                     dev_queries=len(per_query[0]) if per_query.get(0) else None,
                     margin_se=margin_se if metric == "dev" else 0.0, beat_base=beat,
                     best_trained_step=best_trained, dev_best_trained=trained.get(best_trained),
                     dev_best_trained_se=se_over_base(best_trained))
