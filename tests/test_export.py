"""`gecko-factory export`: the rows of a real run folder (and a version) as JSONL, BEIR and
sentence-transformers columns; the last trains a SentenceTransformer as it is, and the BEIR one
is scored by `gecko-factory eval --beir`."""

from __future__ import annotations

import json
import zipfile

import polars as pl
import pytest
from typer.testing import CliRunner

from gecko_factory.evaluate import load_beir
from gecko_factory.export import export
from gecko_factory.testing.fake_run import make_run, make_version, write_corpus
from gecko_factory.versions import version_shards


@pytest.fixture
def corpus(tmp_path, wiki_sample):
    return write_corpus(tmp_path / "c.jsonl", [{"id": f"p{i:02d}", **p} for i, p in enumerate(wiki_sample[:24])])


@pytest.fixture
def run(tmp_path, corpus):
    run = tmp_path / "run"
    make_run(run, corpus, shard_size=8)  # 3 shards of 8 seeds, 7 examples each
    return run


def rows_of(run) -> pl.DataFrame:
    return pl.read_parquet(sorted((run / "shards").glob("part-*.parquet"))).sort("example_id")


def test_jsonl_is_the_rows(run, tmp_path):
    report = export(run, "jsonl", tmp_path / "out")
    lines = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert report.rows == len(lines) == 21
    assert sorted(lines, key=lambda r: r["example_id"]) == rows_of(run).to_dicts()


def test_beir_has_a_query_per_example_and_its_positive(run, tmp_path):
    report = export(run, "beir", tmp_path / "beir")
    data = load_beir(tmp_path / "beir", split="train")
    rows = rows_of(run)
    assert report.files == {"queries.jsonl": 21, "qrels/train.tsv": 21, "corpus.jsonl": 24}
    assert data.queries == dict(zip(rows["example_id"], rows["query"]))
    assert data.qrels == {e: {p} for e, p in zip(rows["example_id"], rows["positive_id"])}
    assert set(data.corpus) == {f"p{i:02d}" for i in range(24)}  # the run's corpus, all of it
    pos = rows.row(0, named=True)
    assert data.corpus[pos["positive_id"]] == (pos["positive_title"], pos["positive_text"])
    meta = json.loads((tmp_path / "beir" / "queries.jsonl").read_text().splitlines()[0])["metadata"]
    assert set(meta) == {"task", "task_type", "seed_id"}


def test_a_version_exports_its_own_rows(tmp_path, wiki_sample):
    root, path = tmp_path / "dataset", tmp_path / "c.jsonl"
    paragraphs = [{"id": f"p{i:02d}", **p} for i, p in enumerate(wiki_sample[:12])]
    make_version(root, write_corpus(path, paragraphs[:8]), shard_size=4)
    v2 = make_version(root, write_corpus(path, paragraphs[1:]), shard_size=4)  # p00 deleted
    version = root / "versions" / "v0002"
    live = pl.concat([pl.read_parquet(p).filter(~pl.col("example_id").is_in(sorted(ex)))
                      for p, ex in version_shards(version)])
    report = export(version, "jsonl", tmp_path / "out")
    ids = [json.loads(x)["example_id"] for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert report.rows == v2["examples"] == live.height and sorted(ids) == sorted(live["example_id"])


def test_cli_refuses_what_it_cannot_do(run, tmp_path):
    from flows.cli import app

    bad = CliRunner().invoke(app, ["export", str(run), "--format", "csv", "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "sentence-transformers" in bad.output
    missing = CliRunner().invoke(app, ["export", str(tmp_path), "--format", "jsonl", "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "version.json" in missing.output
    ok = CliRunner().invoke(app, ["export", str(run), "-f", "jsonl", "--out", str(tmp_path / "o")])
    assert ok.exit_code == 0 and "21 examples" in ok.output


@pytest.mark.model
def test_sentence_transformers_trains_on_the_export_as_is(run, tmp_path):
    datasets = pytest.importorskip("datasets")
    st = pytest.importorskip("sentence_transformers")
    import torch
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    from gecko_factory.embed import DEFAULT_ENCODER, resolve_encoder_path
    from gecko_factory.train.data import load_triples
    from gecko_factory.train.model import format_query

    out = tmp_path / "st"
    report = export(run, "sentence-transformers", out, val_fraction=0.25)
    data = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert set(data) == {"train", "validation"} and report.rows == 21
    assert data["train"].column_names == ["anchor", "positive", "negative"]
    # the texts our trainer trains on, split as it splits them
    ours = load_triples([run], split="train", val_fraction=0.25)
    assert list(data["train"]["anchor"]) == ours.queries and list(data["train"]["positive"]) == ours.positives
    assert list(data["train"]["negative"]) == ours.negatives
    row = rows_of(run).row(0, named=True)  # the query side carries its task, Gecko's way
    anchors = list(data["train"]["anchor"]) + list(data["validation"]["anchor"])
    assert f"task: {row['task']} | query: {row['query']}" == format_query(row["task"], row["query"]) in anchors

    model = st.SentenceTransformer(str(resolve_encoder_path(DEFAULT_ENCODER)), device="cpu")
    model.max_seq_length = 64  # a few steps on 2 CPU cores; the texts are what counts here
    before = [p.detach().clone() for p in model.parameters()]
    args = st.SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=3, per_device_train_batch_size=4,
        learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        eval_strategy="steps", eval_steps=3, seed=0)
    trainer = st.SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
        loss=MultipleNegativesRankingLoss(model))
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    assert len(losses) == 3 and evals
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.model
def test_eval_scores_any_beir_folder_or_zip(run, tmp_path):
    from flows.cli import app

    export(run, "beir", tmp_path / "beir")
    zipped = tmp_path / "mine.zip"
    with zipfile.ZipFile(zipped, "w") as z:  # as BEIR's downloads are: under one folder
        for f in (tmp_path / "beir").rglob("*"):
            if f.is_file():
                z.write(f, "mine/" + f.relative_to(tmp_path / "beir").as_posix())
    for source in (tmp_path / "beir", zipped):
        result = CliRunner().invoke(app, ["eval", "all-MiniLM-L6-v2", "--beir", str(source),
                                          "--split", "train"])
        assert result.exit_code == 0, result.output
        assert "21 queries, 24 docs" in result.output and "nDCG@10" in result.output
    no_split = CliRunner().invoke(app, ["eval", "all-MiniLM-L6-v2", "--beir", str(tmp_path / "beir")])
    assert no_split.exit_code == 1 and "qrels/test.tsv" in no_split.output
