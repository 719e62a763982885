"""The scheduled refresh: a data-set root of versions, extended by the paragraphs that are new.

plan-refresh (no LLM) → the FRet flow on the new and changed paragraphs only, as a subflow, over
an index of the whole current corpus → commit-version (version.json lists reused and new shards)
→ optionally training on the new version. A refresh with nothing new makes no LLM call and no
version. This is what the `fret-refresh` deployment runs on its cron schedule.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from gecko_factory.config import absolute_corpus
from gecko_factory.llm.settings import client_settings
from gecko_factory.lock import run_lock
from gecko_factory.options import RunOptions
from flows.fret import fret_config, fret_flow, trigger_training
from tasks.refresh_tasks import commit_version_task, plan_refresh_task


@flow(name="fret-refresh", flow_run_name="refresh-{root}")
def refresh_flow(
    root: str = "datasets/sample",
    options: RunOptions = RunOptions(),
    train_after: bool = False,
    train_params: dict | None = None,
) -> dict:
    """`options` as for fret_flow, except that `limit` caps the new seeds of one refresh (the
    rest stay new for the next one) and the seeds are the new and changed paragraphs."""
    logger = get_run_logger()
    if options.seed_ids_file:
        raise ValueError("a refresh picks its own seeds (the new and changed paragraphs): "
                         "no seed_ids_file")
    options = options.model_copy(update={"corpus": absolute_corpus(options.corpus)})
    # the models as the flow will see them (the embedded server's names included)
    settings = client_settings()
    if options.judge_mode == "auto":  # resolved once: the reuse hash and the run must agree
        from flows.audit import auto_judge_mode

        chosen = auto_judge_mode(options.candidates, options.fusion, beir=options.audit_beir)["mode"]
        options = options.model_copy(update={"judge_mode": chosen})
    # The recipe's hash decides whether earlier versions can be reused (same as fret_flow's plan).
    config = fret_config(options, settings)
    Path(root).mkdir(parents=True, exist_ok=True)
    with run_lock(Path(root)):  # one refresh at a time per data set
        plan = plan_refresh_task(str(Path(root).resolve()), config.model_dump(mode="json"))
        if not plan["changed"]:
            logger.info("no new or changed paragraphs since %s: no LLM call, no new version",
                        plan["previous"])
            return {"version": plan["previous"], "new_version": False, "llm_calls": 0}
        manifest = None
        if plan["new_seeds"]:
            manifest = fret_flow(run_dir=plan["run_dir"], options=options.model_copy(
                update={"seed_ids_file": plan["seed_ids_file"]}))
            if manifest.get("stopped"):
                # Not committed: the next refresh resumes this version's shards from their markers.
                return {"version": None, "new_version": False, "stopped": manifest["stopped"]}
        record = commit_version_task(plan["plan"], options.corpus, config.output_hash(), manifest)
    record["new_version"] = True
    if train_after:
        record["training"] = trigger_training(plan["run_dir"], train_params or {})
    return record
