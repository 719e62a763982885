"""The experiment's arithmetic by hand: which recipe the dev set chooses, the report's cells, and
when a saved arm is reused."""

from __future__ import annotations

import pytest

from gecko_factory.experiment import ArmResult, best_arm, report


def _arm(arm: str, seed: int, dev: float | None, ndcg: float, fraction: float = 1.0,
         out_dir: str = "m") -> ArmResult:
    return ArmResult(arm=arm, seed=seed, train_fraction=fraction, options={"seed": seed},
                     data="d1", out_dir=out_dir, n_train=100, steps=10, dev_base=0.60, dev_selected=dev,
                     beat_base=None if dev is None else dev > 0.60,
                     test={384: {"ndcg_at_10": ndcg, "recall_at_100": 0.9}, 128: {"ndcg_at_10": ndcg - 0.1,
                                                                                  "recall_at_100": 0.8}})


def test_the_dev_set_chooses_the_recipe_never_the_test_split():
    results = [_arm("llm", 0, 0.62, 0.70), _arm("llm", 1, 0.64, 0.70),  # dev mean 0.63
               _arm("distill", 0, 0.65, 0.60), _arm("distill", 1, 0.63, 0.60),  # dev mean 0.64
               _arm("llm", 0, 0.99, 0.99, fraction=0.5)]  # a curve point never chooses
    assert best_arm(results) == "distill"
    with pytest.raises(ValueError, match="dev"):
        best_arm([_arm("llm", 0, None, 0.7)])


def test_report_gives_mean_and_half_range_over_seeds_per_recipe():
    base = {384: {"ndcg_at_10": 0.6451, "recall_at_100": 0.925}, 128: {"ndcg_at_10": 0.6, "recall_at_100": 0.9}}
    table = report(base, [_arm("llm", 0, 0.62, 0.66), _arm("llm", 1, 0.64, 0.70),
                          _arm("llm", 0, 0.61, 0.65, fraction=0.25)], [384, 128])
    lines = table.splitlines()
    assert lines[0].startswith("| recipe | seeds | nDCG@10 384 d | nDCG@10 128 d | "
                               "Δ nDCG@10 384 d (paired SE) | Recall@100 384 d")
    assert lines[2].startswith("| base (all-MiniLM-L6-v2, no training) | – | 0.6451 | 0.6000 | – "
                               "| 0.9250")
    llm = lines[3].split(" | ")
    assert llm[1:4] == ["0,1", "0.6800 ± 0.0200", "0.5800 ± 0.0200"]
    assert llm[4] == "+0.0349"  # no per-query scores in these results: no SE
    assert llm[6] == "0.6000 → 0.6300 ± 0.0100" and llm[7] == "2 of 2" and llm[8] == "– |"
    assert "0.25 of the data" in lines[4] and "| 0 | 0.6500 |" in lines[4]
    with_se = [_arm("llm", 0, 0.62, 0.66), _arm("llm", 1, 0.64, 0.70)]
    with_se[0].test_gain_se, with_se[1].test_gain_se = {384: 0.010}, {384: 0.012}
    with_se[0].dev_best_trained, with_se[0].dev_best_trained_se = 0.59, 0.004  # base exported
    with_se[1].dev_best_trained, with_se[1].dev_best_trained_se = 0.64, 0.006
    cells = report(base, with_se, [384, 128]).splitlines()[3].split(" | ")
    assert cells[4] == "+0.0349 (SE 0.0110)" and cells[8] == "+0.0150 (0.0050) |"


def test_a_saved_arm_is_reused_only_with_the_same_options_and_data(tmp_path):
    done = _arm("llm", 0, 0.62, 0.7, out_dir=str(tmp_path))
    done.save(tmp_path)
    assert ArmResult.load(tmp_path, {"seed": 0}, "d1") == done
    assert ArmResult.load(tmp_path, {"seed": 0, "epochs": 5}, "d1") is None  # another budget
    assert ArmResult.load(tmp_path, {"seed": 0}, "d2") is None  # the run grew since: train again
    assert ArmResult.load(tmp_path / "none", {"seed": 0}, "d1") is None


def test_the_data_digest_follows_the_committed_shards(tmp_path, wiki_sample):
    from gecko_factory.experiment import run_data
    from gecko_factory.testing.fake_run import fill_run, make_run, write_corpus

    paragraphs = [{"id": f"p{i}", **p} for i, p in enumerate(wiki_sample[:40])]
    corpus = write_corpus(tmp_path / "corpus.jsonl", paragraphs)
    make_run(tmp_path / "run", corpus, shards=[0], limit=32, shard_size=16)
    partial, missing = run_data(tmp_path / "run")
    assert missing == [1]
    fill_run(tmp_path / "run", [1])
    whole, missing = run_data(tmp_path / "run")
    assert missing == [] and whole != partial
    assert run_data(tmp_path / "run") == (whole, [])  # a digest of content: stable


def test_recipes_are_checked_by_name():
    from gecko_factory.experiment import ARMS, check_arms

    assert check_arms(None) == list(ARMS) and check_arms(["distill"]) == ["distill"]
    with pytest.raises(ValueError, match="unknown recipes \\['nope'\\]"):
        check_arms(["llm", "nope"])
