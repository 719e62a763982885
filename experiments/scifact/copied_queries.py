"""How much of a FRet run's queries its writer copied from the seed paragraph (no LLM call, no
training; seconds): `python experiments/scifact/copied_queries.py [RUN_DIR]`.

For each row, gecko_factory.train.data.copied_share: the longest run of the query's words found
verbatim in its seed paragraph (title and text), as a share of the query's words. Reported over
all rows and by task type, with the rows `--max-query-copy 0.8` leaves out (queries of 5 words or
more: shorter ones are keywords). A copied query is solved by surface overlap: it teaches the
student nothing it does not already know.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from gecko_factory.train.data import MIN_COPY_WORDS, copied_share, words_of


def main(run_dir: Path) -> None:
    rows = pl.scan_parquet(str(run_dir / "shards" / "part-*.parquet")).select(
        "task_type", "seed_id", "query").collect()
    corpus = pl.read_parquet(run_dir / "corpus.parquet", columns=["id", "title", "text"])
    seed = {i: f"{t or ''} {x}" for i, t, x in corpus.iter_rows()}
    frame = rows.with_columns(
        pl.Series("share", [copied_share(q, seed[s])
                            for s, q in zip(rows["seed_id"], rows["query"])]),
        pl.Series("words", [len(words_of(q)) for q in rows["query"]]))
    dropped = (pl.col("share") >= 0.8) & (pl.col("words") >= MIN_COPY_WORDS)
    print(f"{len(frame)} rows of {run_dir}")
    for limit in (0.5, 0.8, 1.0):
        print(f"  query copies >= {limit:.0%} of its words: {(frame['share'] >= limit).mean():.3f}")
    print(f"  left out by --max-query-copy 0.8: {frame.select(dropped.mean()).item():.3f}")
    print(frame.group_by("task_type").agg(
        pl.len().alias("rows"), pl.col("words").median().alias("median words"),
        (pl.col("share") >= 0.8).mean().round(3).alias("copies >= 80 %"),
        dropped.mean().round(3).alias("left out")).sort("copies >= 80 %"))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
