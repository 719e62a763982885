"""Prefect tasks around training and evaluation. Paths in, small dicts out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from gecko_factory.evaluate import DatasetUnavailable, EvalReport, compare_markdown, evaluate, load_scifact
from gecko_factory.train.card import add_eval_to_model_card, selection_lines
from gecko_factory.train.train import TrainConfig, train


# The library's loggers whose INFO records are a task's progress: the training loss every
# `log_every` steps, each evaluation and the selection (train.py, select.py), each corpus encoding.
PROGRESS_LOGGERS = ("gecko_factory.train", "gecko_factory.evaluate",
                    "gecko_factory.embedding_cache")


class _ToRunLogger(logging.Handler):
    def __init__(self, run_logger: logging.LoggerAdapter):
        super().__init__(logging.INFO)
        self.run_logger = run_logger

    def emit(self, record: logging.LogRecord) -> None:
        self.run_logger.log(record.levelno, "%s", record.getMessage(), exc_info=record.exc_info)


@contextlib.contextmanager
def progress_to_run_logs(names: tuple[str, ...] = PROGRESS_LOGGERS) -> Iterator[None]:
    """The library logs with `logging` alone (it never imports prefect), and Python shows a
    library's records from WARNING up: an hour of training showed nothing on the console or in
    the Prefect UI. Inside the task, its INFO records go to the task run's logger instead, which
    reaches both (and workers' runs too, with no setting to make). Not propagated meanwhile: a
    warning would otherwise print twice, once through the root logger."""
    handler = _ToRunLogger(get_run_logger())
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, (level, propagate) in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


@task(name="train-encoder", cache_policy=NO_CACHE, tags=["train", "gpu"])
def train_task(run_dirs: list[str], config: dict, resume: bool = True) -> dict:
    """Resumes from the folder's checkpoint when there is one (a retried task continues)."""
    with progress_to_run_logs():
        result = train(TrainConfig.model_validate(config), run_dirs, resume=resume)
    get_run_logger().info("trained %d steps on %d examples in %.0fs (%.1f examples/s)",
                          result.steps, result.n_train, result.seconds, result.examples_per_second)
    create_table_artifact(
        key="train-loss", description="training and validation loss by step",
        table=[{"step": s, "train_loss": round(v, 5)} for s, v in result.train_loss],
    )
    if result.selection is not None:
        lines = selection_lines(result)
        create_markdown_artifact(key="train-selection", markdown="\n".join(lines),
                                 description="model selection: base vs the exported step")
        # NOT BETTER THAN THE BASE: train.py's WARNING, which progress_to_run_logs brings here
    return result.model_dump()


@task(name="evaluate-encoder", cache_policy=NO_CACHE, tags=["eval"])
def eval_task(model: str, scifact_zip: str | None, dims: list[int] | None) -> dict | None:
    """SciFact test nDCG@10 / Recall@100; None (with a warning) when the data is not here."""
    try:
        dataset = load_scifact(scifact_zip)
    except DatasetUnavailable as exc:
        get_run_logger().warning("evaluation skipped: %s", exc)
        return None
    with progress_to_run_logs():
        return evaluate(model, dataset, dims=dims).model_dump()


@task(name="report-eval", cache_policy=NO_CACHE, tags=["eval"])
def report_task(base: dict, tuned: dict, out_dir: str | None = None) -> str:
    """The comparison as an artifact and, when `out_dir` is the tuned model, in its model card."""
    table = compare_markdown(EvalReport.model_validate(base), EvalReport.model_validate(tuned))
    if out_dir:
        add_eval_to_model_card(out_dir, "BEIR SciFact test (300 queries), base vs this model:\n\n" + table)
    create_markdown_artifact(key="eval-scifact", markdown=table,
                             description="BEIR SciFact test: base model vs fine-tuned")
    return table


def base_model_of(config: dict) -> str:
    from gecko_factory.train.train import base_model_path

    return base_model_path(TrainConfig.model_validate(config))


def resolved(path: str) -> str:
    return str(Path(path).resolve())
