"""The run's plots (gecko_factory/plots.py): real PNGs from a real run folder, linked from the card.

The folder is made here (plan, committed shards with known scores, manifest), so the figures the
plots draw can be checked against the rows."""

from __future__ import annotations

import base64
import json

import pytest

from gecko_factory.card import run_card
from gecko_factory.config import FretConfig
from gecko_factory.corpus import CorpusSpec
from gecko_factory.manifest import write_manifest
from gecko_factory.plan import plan_run
from gecko_factory.plots import PLOTS_DIR, inline_images, read_scores, render_plots, scores_png
from gecko_factory.schemas import FretRow, ShardStats
from gecko_factory.shards import commit_shard, hash_ids, shard_config_hash

PNG = b"\x89PNG\r\n\x1a\n"


def _row(seed: str, others: list[str], i: int, ql: bool) -> FretRow:
    """The seed is the positive (QL -i, RC -0.1); the second other paragraph the negative."""
    cands = [{"id": c, "retrieval_rank": r, "similarity": 1 - 0.1 * r, "ql": -float(i + 10 * r) if ql else None,
              "rc": -0.1 * r, "fused_score": 2.0 / r, "fused_rank": r} for r, c in enumerate([seed, *others], 1)]
    return FretRow.from_dict({
        "example_id": f"ex{seed}", "seed_id": seed, "task_type": "qa", "task": "t", "query": f"q{i}",
        "positive_id": seed, "positive_title": "", "positive_text": "p", "negative_id": others[1],
        "negative_title": "", "negative_text": "n", "relabelled": i == 0, "candidates": cands,
        "judge_mode": "one_pass", "fusion": "rrf", "llm_model": "m", "judge_model": "m", "prompt_version": "v"})


def _make_run(tmp_path, wiki_sample, ql: bool):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:10]))
    run = tmp_path / "run"
    plan = plan_run(FretConfig(corpus=CorpusSpec(path=str(corpus)), shard_size=4), run)
    ids = [i for shard in plan.shards for i in shard]
    for shard in (0, 1):
        seeds = plan.shards[shard]
        rows = [_row(s, [x for x in ids if x != s][:2], i, ql) for i, s in enumerate(seeds[:-1])]
        stats = ShardStats(seeds=len(seeds), skipped={"invalid_llm_output": 1}, relabelled=1)
        commit_shard(run, shard, rows, hash_ids(seeds), shard_config_hash(plan.config_hash, "one_pass"), stats)
    write_manifest(run, {})
    return run


@pytest.fixture
def run_dir(tmp_path, wiki_sample):
    return _make_run(tmp_path, wiki_sample, ql=True)


@pytest.fixture
def rc_only_run(tmp_path, wiki_sample):
    return _make_run(tmp_path, wiki_sample, ql=False)


def test_rc_only_rows_have_no_ql_and_still_plot(rc_only_run):
    scores = read_scores(sorted((rc_only_run / "shards").glob("part-*.parquet")))
    assert scores.rows == 6 and scores.positive["ql"] == scores.negative["ql"] == []
    assert scores.positive["rc"] == [-0.1] * 6
    assert scores_png(scores).startswith(PNG)  # the QL panel says "not scored"


def test_scores_are_the_positives_and_negatives_of_each_row(run_dir):
    scores = read_scores(sorted((run_dir / "shards").glob("part-*.parquet")))
    assert scores.rows == 6 and not scores.truncated
    assert scores.positive["rc"] == [-0.1] * 6 and scores.negative["rc"] == pytest.approx([-0.3] * 6)
    assert scores.positive["fused_score"] == [2.0] * 6
    # the seed's QL is -i - 10, the negative's -i - 30
    assert scores.positive["ql"] == [-10.0, -11.0, -12.0] * 2
    assert scores.negative["ql"] == [-30.0, -31.0, -32.0] * 2
    assert read_scores(sorted((run_dir / "shards").glob("part-*.parquet")), max_rows=4).truncated


def test_plots_are_pngs_in_the_run_folder_linked_from_the_card(run_dir):
    from matplotlib.image import imread

    plots = render_plots(run_dir)
    assert [p.name for p in plots] == ["scores", "shards"]
    for p in plots:
        data = p.path.read_bytes()
        assert p.path.parent == run_dir / PLOTS_DIR and data.startswith(PNG)
        assert imread(p.path).shape[:2] == (320, 1000)  # 10 x 3.2 in at 100 dpi
        assert 5_000 < len(data) < 150_000
    assert not list((run_dir / PLOTS_DIR).glob("*.tmp"))
    # the same rows make the same bytes (no timestamp or version in the PNG)
    before = {p.name: p.path.read_bytes() for p in plots}
    assert scores_png(read_scores(sorted((run_dir / "shards").glob("part-*.parquet")))) == before["scores"]

    _, card = run_card(run_dir)  # renders them again, into the same files
    assert "![Judge scores of positives vs hard negatives](plots/scores.png)" in card
    assert card.index("## Plots") < card.index("## Sample examples")
    inline = inline_images(card, run_dir)
    assert "plots/scores.png" not in inline
    encoded = inline.split("](data:image/png;base64,")[1].split(")")[0]
    assert base64.b64decode(encoded) == before["scores"]


def test_no_committed_shard_no_plots(tmp_path, wiki_sample):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:4]))
    run = tmp_path / "run"
    plan_run(FretConfig(corpus=CorpusSpec(path=str(corpus)), shard_size=4), run)
    write_manifest(run, {})
    assert render_plots(run) == [] and "## Plots" not in run_card(run)[1]
