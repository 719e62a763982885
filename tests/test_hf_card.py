"""A run folder and a data-set version are Hugging Face data sets: `datasets.load_dataset(path)`
reads their README.md and gives exactly their FRet rows, with the features of FRET_SCHEMA."""

from __future__ import annotations

import os

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from gecko_factory.hf_card import README, features_yaml, size_category, write_readme
from gecko_factory.schemas import FRET_SCHEMA
from gecko_factory.shards import record_failure
from gecko_factory.testing.fake_run import make_run, make_version, write_corpus
from gecko_factory.versions import version_shards

datasets = pytest.importorskip("datasets")


def load(path, tmp_path):
    return datasets.load_dataset(str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def header(folder) -> dict:
    text = (folder / README).read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def paragraphs(wiki_sample) -> list[dict]:
    return [{"id": f"p{i:02d}", **p} for i, p in enumerate(wiki_sample[:14])]


def test_features_are_what_datasets_derives_from_the_schema():
    assert features_yaml() == datasets.Features.from_arrow_schema(FRET_SCHEMA)._to_yaml_list()


def test_size_categories_are_the_hubs():
    assert [size_category(n) for n in (0, 999, 1000, 9_999, 10_000, 2_500_000, 10**13)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "1M<n<10M", "n>1T"]


def test_run_folder_loads_as_its_committed_rows(tmp_path, paragraphs):
    corpus = write_corpus(tmp_path / "c.jsonl", paragraphs)
    run = tmp_path / "run"
    # shard 2 is never committed (a failure), shard 3 has a file but no marker (a crash between
    # the two): neither is part of the data set, and corpus.parquet never was
    make_run(run, corpus, shards=[0, 1, 3], shard_size=4, license="cc-by-sa-4.0")
    record_failure(run, 2, RuntimeError("boom"))
    (run / "shards" / "part-00003.done.json").unlink()
    (run / "shards" / "part-00002.parquet.tmp").write_bytes(b"half a file")
    write_readme(run)

    meta = header(run)
    assert meta["license"] == "cc-by-sa-4.0"
    assert meta["task_categories"] == ["sentence-similarity", "text-retrieval"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"][0]["data_files"] == [
        {"split": "train", "path": ["shards/part-00000.parquet", "shards/part-00001.parquet"]}]
    assert "# FRet data set: run" in (run / README).read_text()  # the body is card.py's card

    rows = load(run, tmp_path)
    expected = pl.read_parquet([run / "shards" / f"part-0000{i}.parquet" for i in (0, 1)])
    assert rows.num_rows == expected.height == 6 == meta["dataset_info"]["splits"][0]["num_examples"]
    assert rows.features == datasets.Features.from_arrow_schema(FRET_SCHEMA)
    assert rows.to_list() == expected.to_dicts()


def test_versions_load_with_reused_shards_and_dropped_rows(tmp_path, paragraphs):
    root, path = tmp_path / "dataset", tmp_path / "c.jsonl"
    v1 = make_version(root, write_corpus(path, paragraphs[:10]), shard_size=4, license="mit")
    v1_dir = root / "versions" / "v0001"
    assert load(v1_dir, tmp_path).num_rows == v1["examples"] == 7  # 3 shards, one skip in each

    # v2: p01 deleted -> its example, and those naming it as positive or negative, are left out
    # of v1's shards; p10..p13 are new
    v2 = make_version(root, write_corpus(path, [p for p in paragraphs if p["id"] != "p01"]),
                      shard_size=4, license="mit")
    v2_dir = root / "versions" / "v0002"
    assert v2["dropped_examples"] > 0 and v2["reused_examples"] > 0 and v2["new_examples"] > 0
    live = pl.concat([pl.read_parquet(p).filter(~pl.col("example_id").is_in(sorted(ex)))
                      for p, ex in version_shards(v2_dir)])
    rows = load(v2_dir, tmp_path)
    assert rows.num_rows == v2["examples"] == live.height
    assert sorted(rows["example_id"]) == sorted(live["example_id"])
    assert "p01" not in set(rows["seed_id"]) | set(rows["positive_id"]) | set(rows["negative_id"])

    meta = header(v2_dir)
    assert meta["license"] == "mit"
    files = meta["configs"][0]["data_files"][0]["path"]
    reused = [f for f in files if f.startswith("reused/")]
    assert reused and all((v2_dir / f).exists() for f in files)
    # a reused shard with nothing left out is a hard link to v1's file, not a copy
    whole = [(p, ex) for p, ex in version_shards(v2_dir) if not ex and "v0001" in str(p)]
    for src, _ in whole:
        assert os.path.samefile(src, v2_dir / "reused" / f"v0001-{src.name}")
    # one with rows left out is a filtered file of the same schema, or none when no row is left
    # (datasets fails on a Parquet file of no rows)
    cut = [(p, ex) for p, ex in version_shards(v2_dir) if ex]
    assert any(f"reused/v0001-{src.name}" in files for src, _ in cut)
    for src, ex in cut:
        target = v2_dir / "reused" / f"v0001-{src.name}"
        if not target.exists():
            assert set(pq.read_table(src)["example_id"].to_pylist()) <= ex
            continue
        table = pq.read_table(target)
        assert table.schema.equals(FRET_SCHEMA) and not set(table["example_id"].to_pylist()) & ex
    assert "version v0002" in (v2_dir / README).read_text()
