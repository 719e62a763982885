"""The FRet flow hands its output to the training flow (as a subflow when no deployment exists),
and `gecko-factory train` takes every TrainConfig field as an option and hands them to the flow."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from gecko_factory.options import RunOptions
from gecko_factory.train.config import TrainConfig


def test_fret_then_training_subflow(tmp_path, small_corpus, prefect_harness, llm_env, tiny_model):
    from flows.fret import fret_flow

    model = tiny_model
    out = tmp_path / "model"
    m = fret_flow(run_dir=str(tmp_path / "run"),
                  options=RunOptions(corpus=small_corpus, limit=24, candidates=4, shard_size=12),
                  train_after=True,
                  train_params={"base_model": model, "out_dir": str(out), "batch_size": 4,
                                "max_steps": 3, "evaluate_scifact": False,
                                "options": {"distill_weight": 0.5, "teacher_score": "rc",
                                            "select": "val_loss", "val_fraction": 0.2,
                                            "eval_every": 1}})
    training = m["training"]
    assert training["mode"] == "subflow"
    assert training["result"]["train"]["steps"] == 3
    selection = training["result"]["selection"]
    assert selection["metric"] == "val_loss" and selection["base"] is not None
    assert training["result"]["train"]["teacher_counts"]["used"] > 0
    saved = json.loads((out / "config_sentence_transformers.json").read_text())
    assert saved["prompts"]["query"].startswith("task: ")
    assert (out / "README.md").exists() and (out / "modules.json").exists()


def test_train_takes_every_option_of_the_model():
    from flows.cli import app

    command = typer.main.get_command(app).commands["train"]
    flags = {opt for p in command.params for opt in [*p.opts, *p.secondary_opts]}
    for name in TrainConfig.model_fields:
        if name not in ("out_dir", "dims"):  # spelt --out and --dims 384,256 as they always were
            assert "--" + name.replace("_", "-") in flags, name
    assert {"--out", "--dims", "--eval", "--no-eval", "--no-same-tower-negatives"} <= flags
    help_of = {p.name: p.help for p in command.params}
    assert help_of["distill_weight"] == TrainConfig.model_fields["distill_weight"].description


@pytest.fixture
def run_folder(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "plan.json").write_text("{}")  # what require_run looks for
    return tmp_path / "run"


def test_train_hands_the_options_it_was_given_to_the_flow(run_folder, monkeypatch):
    import flows.train
    from flows.cli import app

    calls = []

    def fake_flow(**kwargs):
        calls.append(kwargs)
        return {"train": {"steps": 1, "n_train": 8, "seconds": 1.0, "examples_per_second": 8.0,
                          "out_dir": kwargs["out_dir"],
                          "selection": {"metric": "val_loss", "base": 0.9, "selected": 0.9,
                                        "selected_step": 0, "beat_base": False}}}

    monkeypatch.setattr(flows.train, "train_flow", fake_flow)
    out = CliRunner().invoke(app, ["train", str(run_folder), "--out", "m", "--epochs", "3",
                                   "--dims", "32,16", "--distill-weight", "0.5", "--teacher-score",
                                   "rc", "--no-same-tower-negatives", "--select", "val_loss",
                                   "--no-eval"])
    assert out.exit_code == 0, out.output
    (kwargs,) = calls
    assert kwargs["out_dir"] == "m" and kwargs["evaluate_scifact"] is False
    assert kwargs["options"] == {"epochs": 3, "dims": [32, 16], "distill_weight": 0.5,
                                 "teacher_score": "rc", "same_tower_negatives": False,
                                 "select": "val_loss"}
    assert "NOT BETTER THAN THE BASE" in out.output


@pytest.mark.parametrize("args, flag", [(["--select", "dev"], None),
                                        (["--teacher-score", "bm25"], "--teacher-score"),
                                        (["--contrastive-weight", "0"], None),
                                        (["--dev-split", "test"], None)])
def test_train_refuses_bad_options_before_anything_runs(run_folder, monkeypatch, args, flag):
    import flows.train
    from flows.cli import app

    monkeypatch.setattr(flows.train, "train_flow", lambda **kw: pytest.fail("the flow ran"))
    out = CliRunner().invoke(app, ["train", str(run_folder), *args])
    assert out.exit_code == 2, out.output  # a usage error
    if flag:
        assert flag in out.output


@pytest.mark.model
def test_training_progress_reaches_the_run_logs(tiny_fret_run, tiny_model, prefect_harness,
                                                tmp_path):
    """The library logs with `logging` alone, and Python shows a library's INFO records nowhere:
    a training run's steps and evaluations must reach the Prefect run's logs (the UI's log tab
    and, through the run logger, the console)."""
    import logging

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.train import train_flow

    # lr 0: the weights stay the base's, so no step beats it and the run says so
    state = train_flow(run_dirs=[str(tiny_fret_run)], out_dir=str(tmp_path / "model"),
                       base_model=tiny_model, batch_size=8, max_steps=2, evaluate_scifact=False,
                       lr=0.0,
                       options={"log_every": 1, "eval_every": 1, "max_seq_len": 32,
                                "dims": [32, 16], "val_fraction": 0.2, "select": "val_loss"},
                       return_state=True)
    assert state.is_completed()
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    messages = [log.message for log in logs]
    assert any(m.startswith("step 1/2: loss") for m in messages), messages
    assert any(m.startswith("step 2: validation loss") for m in messages), messages
    warnings = [log for log in logs if "NOT BETTER THAN THE BASE" in log.message]
    assert len(warnings) == 1 and warnings[0].level == logging.WARNING, messages  # said once
    # Outside the task the library's loggers are as they were: nothing is left attached.
    train_logger = logging.getLogger("gecko_factory.train")
    assert train_logger.level == logging.NOTSET and train_logger.propagate
    assert not train_logger.handlers
