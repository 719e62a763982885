"""The experiment flow end to end on a tiny encoder: every arm trained and scored on a SciFact-
shaped zip, the curve on the recipe the dev set chose, the report written, and a rerun that
trains nothing again."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest

from gecko_factory.testing.fake_run import make_run, write_corpus
from gecko_factory.testing.labelled_set import make_beir

pytestmark = [pytest.mark.model, pytest.mark.timeout(900)]


def _scifact_zip(path, paragraphs: list[dict]) -> str:
    """SciFact's CSV layout (corpus_train.csv, claims_validation.csv) over `paragraphs`."""
    def table(rows: list[dict]) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    docs = [{"doc_id": str(100 + i), "title": p["title"], "abstract": repr([p["text"]])}
            for i, p in enumerate(paragraphs)]
    claims = [{"id": str(i), "claim": " ".join(p["text"].split()[:8]), "cited_doc_ids": f"[{100 + i}]"}
              for i, p in enumerate(paragraphs[:8])]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("corpus_train.csv", table(docs))
        z.writestr("claims_validation.csv", table(claims))
    return str(path)


def test_experiment_trains_every_arm_reports_and_resumes(tmp_path, wiki_sample, prefect_harness, tiny_model,
                                                        monkeypatch):
    from flows.experiment import experiment_flow

    monkeypatch.chdir(tmp_path)  # the results, committed with a repository, name their folders from it

    paragraphs = [{"id": f"p{i}", **p} for i, p in enumerate(wiki_sample[:40])]
    corpus = write_corpus(tmp_path / "corpus.jsonl", paragraphs)
    make_run(tmp_path / "run", corpus, limit=32, shard_size=16)
    kwargs = dict(run_dir=str(tmp_path / "run"), out_root=str(tmp_path / "exp"), seeds=[0],
                  arms=["llm", "seed_random"], fractions=[0.5], dims=[32, 16],
                  scifact_zip=_scifact_zip(tmp_path / "scifact.zip", wiki_sample[:40]),
                  train={"base_model": tiny_model, "batch_size": 4, "max_steps": 2,
                         "dev": str(make_beir(tmp_path / "dev")), "eval_every": 1, "val_fraction": 0.1})
    summary = experiment_flow(**kwargs)
    results = summary["results"]
    assert [(r["arm"], r["train_fraction"]) for r in results] == [
        ("llm", 1.0), ("seed_random", 1.0), (summary["chosen_by_dev"], 0.5)]
    assert results[2]["n_train"] < results[0]["n_train"]  # half the training seeds
    assert all(r["dev_base"] is not None and set(r["test"]) == {32, 16} for r in results)
    assert all(set(r["test_gain_se"]) == {32, 16} for r in results)  # paired with the base's run
    assert results[0]["out_dir"] == "exp/llm-seed0"
    card = (tmp_path / "exp" / "llm-seed0" / "README.md").read_text()
    assert "BEIR SciFact test" in card and "dev" in card  # both figures in the model card
    report = (tmp_path / "exp" / "report.md").read_text()
    assert report == summary["table"] and len(report.splitlines()) == 2 + 1 + 3
    assert json.loads((tmp_path / "exp" / "results.json").read_text())["chosen_by_dev"] == summary["chosen_by_dev"]

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "exp").glob("*/experiment_result.json")}
    assert len(stamps) == 3
    again = experiment_flow(**kwargs)  # resumes: every arm is done
    assert again["table"] == summary["table"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_run_with_shards_not_done_is_refused_unless_allowed(tmp_path, wiki_sample, prefect_harness):
    """A table from part of the data would pass for the whole data set's."""
    from flows.experiment import experiment_flow

    paragraphs = [{"id": f"p{i}", **p} for i, p in enumerate(wiki_sample[:40])]
    corpus = write_corpus(tmp_path / "corpus.jsonl", paragraphs)
    make_run(tmp_path / "run", corpus, shards=[0], limit=32, shard_size=16)
    with pytest.raises(ValueError, match=r"shards \[1\] \(1\) are not done.*gecko-factory resume"):
        experiment_flow(run_dir=str(tmp_path / "run"), out_root=str(tmp_path / "exp"))
    assert not (tmp_path / "exp").exists()  # refused before anything was trained or written


def test_a_partial_run_trains_on_its_done_shards_and_says_so(tmp_path, wiki_sample, prefect_harness,
                                                             tiny_model):
    """allow_partial: the done shards only, and a table that cannot pass for the whole data's."""
    from flows.experiment import experiment_flow

    paragraphs = [{"id": f"p{i}", **p} for i, p in enumerate(wiki_sample[:40])]
    corpus = write_corpus(tmp_path / "corpus.jsonl", paragraphs)
    make_run(tmp_path / "run", corpus, shards=[0], limit=32, shard_size=16)
    summary = experiment_flow(
        run_dir=str(tmp_path / "run"), out_root=str(tmp_path / "exp"), seeds=[0], arms=["llm"],
        fractions=[], dims=[32], allow_partial=True,
        scifact_zip=_scifact_zip(tmp_path / "scifact.zip", wiki_sample[:40]),
        train={"base_model": tiny_model, "batch_size": 4, "max_steps": 1,
               "dev": str(make_beir(tmp_path / "dev")), "eval_every": 1, "val_fraction": 0.1})
    assert summary["shards_not_done"] == [1]
    assert summary["table"].startswith("**Partial data**: 1 shard of")
    assert (tmp_path / "exp" / "report.md").read_text() == summary["table"]
    (result,) = summary["results"]
    assert 0 < result["n_train"] <= 16  # shard 0's seeds, less the held-out ones
