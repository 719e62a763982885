"""The tracked SciFact run folder (experiments/scifact): its committed shards are hours of LLM work
that `make experiment-data` must find done on a fresh clone, so what decides "done" is checked
here against the code as it is now.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.fret import fret_config
from gecko_factory.llm.settings import LLMSettings, client_settings
from gecko_factory.manifest import shard_states
from gecko_factory.plan import RunPlan, plan_run
from gecko_factory.scifact import DEFAULT_SCIFACT_ZIP

RUN = Path(__file__).resolve().parents[1] / "experiments" / "scifact"


@pytest.fixture(scope="module")
def plan() -> RunPlan:
    return RunPlan.load(RUN)


def test_the_code_still_makes_the_recorded_recipe(plan):
    """A change to a prompt, a default or a model name changes the recipe's hash, and every shard
    committed here would silently be judged again (hours). If that is the intent, say so: the
    folder is then re-planned with --force and its shards regenerated, in the same change."""
    options = plan.config.run_options()
    now = fret_config(options, client_settings(LLMSettings(_env_file=None, base_url=None)))
    assert now.output_hash() == plan.config_hash, (
        "the current code makes another recipe than experiments/scifact was planned with: compare "
        f"{json.dumps(now.model_dump(mode='json'), sort_keys=True)} with its plan.json")


def test_the_recipe_is_the_experiments(plan):
    config = plan.config
    assert config.corpus.path == "scifact"  # the abstracts only, from the default zip
    assert (config.limit, config.candidates, config.shard_size) == (1000, 5, 16)
    assert config.license == "cc-by-nc-2.0"  # SciFact's licence, which the rows' texts carry
    assert plan.seed_count == 1000


def test_every_committed_shard_is_done(plan):
    """A marker whose file is missing, changed or for other seeds would make the shard pending:
    a commit of a half-written or hand-edited shard shows here, not hours into a resume."""
    committed = sorted(RUN.glob("shards/part-*.done.json"))
    states = {s.shard: s for s in shard_states(RUN, plan)}
    for marker in committed:
        shard = int(marker.name.split("-")[1].split(".")[0])
        assert states[shard].state == "done", f"{marker.name}: committed but not done"
        assert states[shard].marker.rows > 0


@pytest.mark.skipif(not DEFAULT_SCIFACT_ZIP.exists(), reason="needs ../shared/data/scifact.zip")
def test_planning_again_gives_the_same_shards(plan, tmp_path):
    """A fresh clone re-plans the folder: the seeded shuffle of the same corpus must give every
    shard the seeds its marker was committed for."""
    again = plan_run(plan.config, tmp_path)
    assert again.corpus_hash == plan.corpus_hash
    assert again.config_hash == plan.config_hash
    assert again.shards == plan.shards
