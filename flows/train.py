"""The training flow: fine-tune an encoder on FRet run folders, then evaluate base vs tuned.

Runs on its own (`gecko-factory train`), as a subflow at the end of the FRet flow, or as the
`train` deployment on a GPU work pool that the FRet flow triggers with `run_deployment`.

The named parameters are the ones deployments and the FRet flow's `train_params` have always
passed; `options` takes any other TrainConfig field by name (the objective, the dev set, model
selection: gecko_factory/train/config.py), so a new option needs no new parameter here.
"""

from __future__ import annotations

from prefect import flow

from tasks.train_tasks import base_model_of, eval_task, report_task, resolved, train_task


@flow(name="train", log_prints=False)
def train_flow(
    run_dirs: list[str],
    out_dir: str = "models/latest",
    base_model: str | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    dims: list[int] | None = None,
    max_steps: int | None = None,
    warmup_steps: int | None = None,
    pairing: str = "llm",
    evaluate_scifact: bool = True,
    scifact_zip: str | None = None,
    options: dict | None = None,
) -> dict:
    config = {"base_model": base_model, "out_dir": resolved(out_dir), "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "dims": dims, "max_steps": max_steps,
              "pairing": pairing,
              **({"warmup_steps": warmup_steps} if warmup_steps is not None else {}),
              **(options or {})}
    result = train_task([resolved(d) for d in run_dirs], config)
    # None, or {"beat_base": False, ...}: the export is then the base's weights (WARNING logged)
    out = {"train": result, "selection": result["selection"]}
    if evaluate_scifact:
        base = eval_task(base_model_of(config), scifact_zip, config["dims"])
        tuned = eval_task(result["out_dir"], scifact_zip, config["dims"])
        if base and tuned:
            out["eval"] = {"base": base, "tuned": tuned, "table": report_task(base, tuned, result["out_dir"])}
    return out
