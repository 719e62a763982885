"""One model for a run's options (gecko_factory/options.py): the CLI's options are its fields, the
config is made from it and gives it back, `resume` reruns with it, and the program lists the same
commands however it is started. No LLM and no Prefect run here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gecko_factory.config import FretConfig
from gecko_factory.corpus import Paragraph
from gecko_factory.llm.client import LLMRequestRejected
from gecko_factory.options import RunOptions
from gecko_factory.plan import plan_run
from gecko_factory.synthesize import SynthesisResult, synthesize_one

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = {"synthesize_v1": "s@1", "judge_v1": "j@1"}


def _commands(help_text: str) -> list[str]:
    """The command names of a typer `--help` page, in order."""
    lines = help_text.split("Commands")[1].splitlines()
    return [line.strip("│ ").split()[0] for line in lines[1:]
            if line.startswith("│ ") and not line.startswith("│  ")]


def test_module_and_console_script_list_the_same_commands():
    env = {"COLUMNS": "120", "PATH": "/usr/bin:/bin", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    as_module = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
    script = subprocess.run([str(Path(sys.executable).with_name("gecko-factory")), "--help"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert as_module.returncode == 0 and script.returncode == 0, as_module.stderr + script.stderr
    commands = _commands(script.stdout)
    assert commands == ["run", "status", "resume", "train", "eval", "experiment", "inspect", "export", "refresh", "versions",
                        "audit"]
    assert _commands(as_module.stdout) == commands


def test_run_takes_every_option_of_the_model():
    from flows.cli import app

    run = typer.main.get_command(app).commands["run"]
    flags = {opt for p in run.params for opt in [*p.opts, *p.secondary_opts]}
    for name in RunOptions.model_fields:
        if name not in ("cache", "task_runner"):  # spelt as the CLI always spelt them
            assert "--" + name.replace("_", "-") in flags, name
    assert {"--no-cache", "--refresh-cache", "--task-runner", "--dask-address", "--no-negative-guard",
            "--out", "--force"} <= flags
    help_of = {p.name: p.help for p in run.params}
    assert help_of["candidates"] == RunOptions.model_fields["candidates"].description


@pytest.mark.parametrize("args, expected", [
    ([], RunOptions()),
    (["--no-cache", "--task-runner", "dask", "--no-negative-guard", "--candidates", "5",
      "--encoder", "all-MiniLM-L6-v2:int8"],
     RunOptions(cache="off", task_runner="dask", negative_guard=False, candidates=5,
                encoder="all-MiniLM-L6-v2:int8")),
    (["--refresh-cache", "--task-runner", "dask", "--dask-address", "tcp://h:1", "--fusion", "rrf",
      "--synth-temperature", "0.2", "--judge-mode", "auto"],
     RunOptions(cache="refresh", task_runner="tcp://h:1", fusion="rrf", synth_temperature=0.2,
                judge_mode="auto")),
])
def test_the_cli_makes_the_options(args, expected, monkeypatch):
    import flows.fret
    from flows.cli import app

    seen = {}
    monkeypatch.setattr(flows.fret, "fret_flow", lambda **kw: seen.update(kw) or {})
    monkeypatch.setattr("flows.cli.quiet_prefect", lambda: None)
    monkeypatch.setattr("flows.cli._print_summary", lambda *a: None)
    CliRunner().invoke(app, ["run", "--out", "nowhere", *args])
    assert seen["options"] == expected and seen["force"] is False


def test_a_bad_option_is_a_usage_error_before_any_work(tmp_path):
    from flows.cli import app

    for args, flag in ((["--fusion", "nope"], "--fusion"), (["--candidates", "1"], "--candidates"),
                       (["--judge-mode", "both"], "--judge-mode"), (["--task-runner", "ray"], "--task-runner"),
                       (["--encoder", "all-MiniLM-L6-v3"], "--encoder"),
                       (["--encoder", "all-MiniLM-L6-v2:int4"], "--encoder")):
        result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "out"), *args])
        assert result.exit_code == 2 and flag in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_config_from_options_and_back(tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("a\n")
    for options in (RunOptions(), RunOptions(corpus=str(tmp_path), limit=3, seed_ids_file=str(seeds),
                                             candidates=4, shard_size=2, negative="random", seed=7,
                                             fusion="wrrf:ql=1,rc=0.5", negative_guard=False,
                                             synth_temperature=0.1, judge_mode="one_pass",
                                             encoder="all-MiniLM-L6-v2:int8")):
        config = FretConfig.from_options(options, "writer", "judge", PROMPTS)
        back = config.run_options()
        assert FretConfig.from_options(back, "writer", "judge", PROMPTS) == config
        assert back.corpus == config.corpus.path and back.seed_ids_file == config.seed_ids_file
    # the defaults are the model's: FretConfig() is the recipe of `gecko-factory run` as it is
    assert FretConfig.from_options(RunOptions(), "", None, {}).output_hash() == FretConfig().output_hash()
    with pytest.raises(ValueError, match="auto"):
        FretConfig.from_options(RunOptions(judge_mode="auto"), "writer", None, PROMPTS)


def test_synth_temperature_reaches_the_recipe_and_the_synthesis_request():
    """The acceptance of issue 13: an option added to the model reaches the CLI (above), the
    config and its hash (so a changed value is a new recipe), and the stage that reads it."""
    cold = FretConfig.from_options(RunOptions(synth_temperature=0.1), "m", None, PROMPTS)
    assert cold.synth_temperature == 0.1
    assert cold.output_hash() != FretConfig.from_options(RunOptions(), "m", None, PROMPTS).output_hash()

    class Client:
        temperatures: list[float] = []

        async def chat(self, messages, *, temperature, **kwargs):
            self.temperatures.append(temperature)
            raise LLMRequestRejected("refused: enough to see the request")

    client, result = Client(), SynthesisResult()
    paragraph = Paragraph(id="p1", title="", text="A paragraph long enough to be a seed for a query.")
    assert asyncio.run(synthesize_one(client, paragraph, cold, result)) is None  # type: ignore[arg-type]
    assert client.temperatures == [0.1]


def test_the_encoder_is_an_option_of_the_recipe():
    """`--encoder all-MiniLM-L6-v2:int8` reaches the config the index and mining read, and is a
    new recipe (int8 finds other neighbours); the default leaves the hash as it was."""
    int8 = FretConfig.from_options(RunOptions(encoder="all-MiniLM-L6-v2:int8"), "m", None, PROMPTS)
    default = FretConfig.from_options(RunOptions(), "m", None, PROMPTS)
    assert int8.encoder == "all-MiniLM-L6-v2:int8" and default.encoder == FretConfig().encoder
    assert int8.output_hash() != default.output_hash()
    assert int8.run_options().encoder == "all-MiniLM-L6-v2:int8"  # what `resume` reruns with


def test_resume_reruns_with_the_recorded_options(tmp_path, monkeypatch):
    import flows.cli
    from flows.cli import app

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph number {i} says something long enough to keep." for i in range(6)))
    asked = RunOptions(corpus=str(corpus), limit=4, candidates=3, shard_size=2, negative="random",
                       seed=5, fusion="rrf", negative_guard=False, synth_temperature=0.3,
                       judge_mode="one_pass", budget_usd=1.0, task_runner="dask")
    plan_run(FretConfig.from_options(asked, "m", None, PROMPTS), tmp_path / "run")
    seen = {}
    monkeypatch.setattr(flows.cli, "run", lambda options, out, force: seen.update(options=options, force=force))
    result = CliRunner().invoke(app, ["resume", str(tmp_path / "run"), "--no-cache", "--max-tokens", "99"])
    assert result.exit_code == 0, result.output
    # what shapes the output comes from the run folder; how the rest is done from the command
    assert seen["options"] == asked.model_copy(update={
        "corpus": str(corpus.resolve()), "fusion": "rrf", "cache": "off", "max_tokens": 99,
        "budget_usd": None, "task_runner": "threads"})
    assert seen["force"] is False
    assert json.loads((tmp_path / "run" / "plan.json").read_text())["config"]["synth_temperature"] == 0.3
