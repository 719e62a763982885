"""The experiment flow (issue 14): every recipe of gecko_factory.experiment.ARMS trained on one
FRet run at the same budget for each training seed, evaluated on SciFact test; then the recipe
with the best dev nDCG@10 (never test) at a quarter and a half of the data.

Each arm's model folder keeps its result (experiment_result.json, written after its evaluation):
a rerun skips the arms already done with the same options on the same data, so an interrupted
experiment resumes. A run with shards not done is refused unless `allow_partial`: its table would
pass for the whole data set's.
The report (report.md, results.json in `out_root`, and a Prefect artifact) is rewritten at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.train import train_flow
from gecko_factory.evaluate import EvalReport, gain_se
from gecko_factory.experiment import (ARMS, ArmResult, best_arm, check_arms, report, run_data,
                                      scores_by_dim)
from gecko_factory.files import atomic_write_text
from gecko_factory.paths import shown_path
from tasks.train_tasks import base_model_of, eval_task, report_task, resolved

# The budget every arm gets unless the caller says otherwise (the README's runs): 3 epochs of
# batch 16, and model selection on SciFact's train claims after each epoch. A dev pass encodes the
# 5,183 abstracts at 256 tokens, ~6 minutes on 2 CPU cores: once an epoch keeps the passes at 3
# an arm (plus the base's, computed once: gecko_factory/embedding_cache.py) at every share of data.
# A checkpoint every 10 steps (~3 minutes of a CPU arm, ~1 s to write): an arm is ~45 minutes
# here and a session can end without warning; the train task resumes from it, exactly.
DEFAULT_TRAIN = {"epochs": 3, "batch_size": 16, "warmup_steps": 3, "dev": "scifact",
                 "evals_per_epoch": 1, "checkpoint_every": 10}


def _scifact_test(model: str, scifact_zip: str | None, dims: list[int]) -> dict:
    report_ = eval_task(model, scifact_zip, dims)
    if report_ is None:
        raise RuntimeError("SciFact is not here: the experiment reports on its test split")
    return report_


def _test_gain_ses(base: dict, test: dict, dims: list[int]) -> dict[int, float]:
    """Per dim, the paired SE of the test nDCG@10 gain over the base (same queries)."""
    base_, test_ = EvalReport.model_validate(base), EvalReport.model_validate(test)
    ses = {d: gain_se(base_, test_, d) for d in dims}
    return {d: se for d, se in ses.items() if se is not None}


def _arm(run_dir: str, data: str, out_root: Path, arm: str, seed: int, fraction: float,
         train: dict, scifact_zip: str | None, dims: list[int], base: dict) -> ArmResult:
    options = {**train, **ARMS[arm], "seed": seed, "dims": dims,
               **({"train_fraction": fraction} if fraction != 1.0 else {})}
    out_dir = out_root / (f"{arm}-seed{seed}" + ("" if fraction == 1.0 else f"-frac{fraction:g}"))
    done = ArmResult.load(out_dir, options, data)
    if done is not None:
        get_run_logger().info("%s: done before, reused", out_dir)
        return done
    result = train_flow(run_dirs=[run_dir], out_dir=str(out_dir), evaluate_scifact=False,
                        options=options)
    test = _scifact_test(str(out_dir), scifact_zip, dims)
    report_task(base, test, str(out_dir))  # the test figures in the model card, beside dev's
    t, sel = result["train"], result["selection"] or {}
    arm_result = ArmResult(arm=arm, seed=seed, train_fraction=fraction, options=options,
                           data=data, out_dir=shown_path(out_dir), n_train=t["n_train"], steps=t["steps"],
                           dev_base=sel.get("dev_base"), dev_selected=sel.get("dev_selected"),
                           beat_base=sel.get("beat_base"),
                           dev_best_trained=sel.get("dev_best_trained"),
                           dev_best_trained_se=sel.get("dev_best_trained_se"),
                           test=scores_by_dim(test),
                           test_gain_se=_test_gain_ses(base, test, dims))
    arm_result.save(out_dir)
    return arm_result


@flow(name="experiment", flow_run_name="experiment-{out_root}")
def experiment_flow(run_dir: str, out_root: str = "models/experiment", seeds: list[int] = [0, 1],  # noqa: B006
                    arms: list[str] | None = None, fractions: list[float] = [0.25, 0.5],  # noqa: B006
                    train: dict | None = None, dims: list[int] = [384, 256, 128],  # noqa: B006
                    scifact_zip: str | None = None, allow_partial: bool = False) -> dict:
    arms = check_arms(arms)
    run_dir = resolved(run_dir)
    data, missing = run_data(run_dir)
    if missing and not allow_partial:  # a table from part of the data would pass for the whole
        raise ValueError(f"{run_dir}: shards {missing[:10]}{' …' if len(missing) > 10 else ''} "
                         f"({len(missing)}) are not done; finish the run (`gecko-factory resume "
                         f"{run_dir}`) or allow a partial one")
    if missing:
        get_run_logger().warning("%s: %d shards are not done; training on the rest (allow_partial)",
                                 run_dir, len(missing))
    defaults = dict(DEFAULT_TRAIN)
    if "eval_every" in (train or {}):  # a cadence in steps, asked for, replaces the per-epoch one
        defaults.pop("evals_per_epoch")
    train = {**defaults, **(train or {})}
    root = Path(resolved(out_root))
    base = _scifact_test(base_model_of({"out_dir": str(root), **train}), scifact_zip, dims)
    results = [_arm(run_dir, data, root, arm, seed, 1.0, train, scifact_zip, dims, base)
               for arm in arms for seed in seeds]
    chosen = best_arm(results) if fractions else None
    results += [_arm(run_dir, data, root, chosen, seed, fraction, train, scifact_zip, dims, base)
                for fraction in fractions for seed in seeds]
    table = report(scores_by_dim(base), results, dims)
    if missing:
        count = f"1 shard of {run_dir} was" if len(missing) == 1 else f"{len(missing)} shards of {run_dir} were"
        table = f"**Partial data**: {count} not done when these models trained.\n\n" + table
    summary = {"base": scores_by_dim(base), "chosen_by_dev": chosen, "train": train,
               "data": data, "shards_not_done": missing,
               "results": [r.model_dump() for r in results], "table": table}
    atomic_write_text(root / "results.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(root / "report.md", table)
    create_markdown_artifact(key="experiment", markdown=table,
                             description="SciFact test: the recipes against the base")
    return summary
