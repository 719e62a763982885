"""FRet run folders -> (query, positive, negative) text triples -> shuffled batches.

Shards are scanned lazily with polars (only the text columns are read, and `candidates` only when
a distillation teacher is asked for), and the train/validation split is a hash of `seed_id`, so
every query generated from one paragraph lands on the same side, whatever the shard layout or the
number of runs. With a teacher, each example also carries its judged candidates' texts (from the
corpus.parquet of the run folder that wrote its shard: the text the judge read) and their
teacher logits; a candidate without text or score is left out and counted, never silently.
`max_query_copy` leaves out examples whose query copies its seed paragraph (counted too).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from gecko_factory.hashing import stable_fraction
from gecko_factory.train.config import Pairing, TeacherScore
from gecko_factory.train.model import GECKO_FORMAT, TextFormat
from gecko_factory.versions import VERSION_FILE, version_shards

Split = Literal["train", "validation"]

_LLM_COLUMNS = [
    "example_id", "seed_id", "task", "query",
    "positive_title", "positive_text", "negative_title", "negative_text",
]


@dataclass
class Triples:
    """Model-ready strings, already in the training's input format (Gecko's by default); row i
    is one example."""

    queries: list[str]
    positives: list[str]
    negatives: list[str]
    # With a teacher: per example, its usable candidates' texts and teacher logits (same order).
    candidates: list[list[str]] | None = None
    teacher: list[list[float]] | None = None
    # candidates read, used, and left out by reason (text_missing, score_missing), and the
    # queries left without a target; what a run lost is counted, never silent
    teacher_counts: Counter = field(default_factory=Counter)
    left_out: Counter = field(default_factory=Counter)  # examples dropped, by reason

    def __len__(self) -> int:
        return len(self.queries)

    def take(self, index: Sequence[int]) -> "Triples":
        pick = (lambda xs: None if xs is None else [xs[i] for i in index])
        return Triples(pick(self.queries), pick(self.positives), pick(self.negatives),
                       pick(self.candidates), pick(self.teacher))

    def passages(self) -> tuple[list[str], list[list[int]]]:
        """The passages one forward embeds, positives then negatives (rows 0..2B-1, as the
        contrastive loss reads them), then every candidate text not among them yet; and for
        each example the rows of its candidates. A text is embedded once per batch."""
        texts = self.positives + self.negatives
        if self.candidates is None:
            return texts, []
        row_of: dict[str, int] = {}
        for i, text in enumerate(texts):
            row_of.setdefault(text, i)
        index = []
        for cands in self.candidates:
            for text in cands:
                if text not in row_of:
                    row_of[text] = len(texts)
                    texts.append(text)
            index.append([row_of[text] for text in cands])
        return texts, index


def shard_files(run_dir: str | Path) -> list[Path]:
    """Finished shards only: a writer's `*.tmp` file is not data yet. A data-set version
    (`version.json`) is made of the shards it lists, its own and earlier versions'."""
    if Path(run_dir, VERSION_FILE).exists():
        return [path for path, _ in version_shards(Path(run_dir))]
    files = sorted(Path(run_dir, "shards").glob("part-*.parquet"))
    return [f for f in files if ".tmp" not in f.name]


def is_validation(seed_id: str, val_fraction: float) -> bool:
    """Deterministic across processes and machines (unlike Python's salted `hash`)."""
    return stable_fraction(seed_id) < val_fraction


def in_split(seed_id: str, split: Split, val_fraction: float, train_fraction: float = 1.0) -> bool:
    """Validation: the seeds below `val_fraction`. Training: the first `train_fraction` of the
    rest, on the same hash rescaled, so ¼ of the seeds is inside ½ and the validation split
    never moves."""
    if is_validation(seed_id, val_fraction):
        return split == "validation"
    u = stable_fraction(seed_id)  # in [val_fraction, 1) here
    return split == "train" and u - val_fraction < train_fraction * (1 - val_fraction)


def scan_run(run_dir: str | Path, columns: Sequence[str] = _LLM_COLUMNS) -> pl.LazyFrame:
    """The rows' `columns`, plus `shard` (the file each row came from) when asked for."""
    paths = "shard" if "shard" in columns else None
    if Path(run_dir, VERSION_FILE).exists():
        # A version: each listed shard minus its excluded examples (their seed, positive or
        # negative left the corpus). Per shard, since a redone seed keeps its example id.
        parts = [pl.scan_parquet(str(path), include_file_paths=paths).select(columns)
                 .filter(~pl.col("example_id").is_in(sorted(excluded)))
                 for path, excluded in version_shards(Path(run_dir))]
        if parts:
            return pl.concat(parts)
    files = shard_files(run_dir)
    if not files:
        raise FileNotFoundError(f"no finished shards in {Path(run_dir, 'shards')}")
    return pl.scan_parquet([str(f) for f in files], include_file_paths=paths).select(columns)


def load_triples(
    run_dirs: Sequence[str | Path],
    split: Split = "train",
    val_fraction: float = 0.02,
    pairing: Pairing = "llm",
    seed: int = 0,
    teacher: TeacherScore | None = None,
    train_fraction: float = 1.0,
    fmt: TextFormat = GECKO_FORMAT,
    max_query_copy: float | None = None,
) -> Triples:
    """All examples of `split` from every run, in a fixed order (run, then example_id); with
    `teacher`, each with its judged candidates (`teacher_logits` says how they are scored);
    `train_fraction`: that share of the training seeds (`in_split`); texts written in `fmt`;
    `max_query_copy`: see `copied_share`."""
    out = Triples([], [], [])
    columns = _LLM_COLUMNS + (["positive_id", "negative_id", "candidates", "shard"]
                              if teacher else ["positive_id", "negative_id"]
                              if max_query_copy is not None else [])
    if teacher:
        out.candidates, out.teacher = [], []
    for run_index, run_dir in enumerate(run_dirs):
        frame = scan_run(run_dir, columns).sort("example_id").collect()
        keep = [in_split(s, split, val_fraction, train_fraction) for s in frame["seed_id"].to_list()]
        frame = frame.filter(pl.Series(keep, dtype=pl.Boolean))
        if max_query_copy is not None:
            frame = _drop_copied_queries(frame, Path(run_dir), max_query_copy, out.left_out)
        out.queries += [fmt.query(t, q) for t, q in zip(frame["task"], frame["query"])]
        if pairing == "llm":
            out.positives += _documents(frame["positive_title"], frame["positive_text"], fmt)
            out.negatives += _documents(frame["negative_title"], frame["negative_text"], fmt)
        elif pairing == "seed_random":
            pos, neg = _seed_random_pairs(Path(run_dir), frame["seed_id"].to_list(),
                                          seed, run_index, fmt)
            out.positives += pos
            out.negatives += neg
        else:
            raise ValueError(f"unknown pairing {pairing!r}; expected 'llm' or 'seed_random'")
        if teacher:
            _add_candidates(out, frame, teacher, fmt)
    return out


# Queries this short are keywords, which appear in their paragraph by nature: never "copies".
MIN_COPY_WORDS = 5


def words_of(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped: what `copied_share` compares."""
    return re.findall(r"\w+", text.lower())


def copied_share(query: str, passage: str) -> float:
    """The longest run of the query's words found verbatim, in order, in the passage, as a share
    of the query's words (case and punctuation ignored). A writer that lifts a sentence out of the
    seed (16 % of the SciFact run's queries entirely, 35 % for >= 80 % of their words) makes an
    example that surface overlap solves: it teaches lexical matching, unlike a real query."""
    q, p = words_of(query), words_of(passage)
    if not q or not p:
        return 0.0
    match = SequenceMatcher(None, q, p, autojunk=False).find_longest_match(0, len(q), 0, len(p))
    return match.size / len(q)


def _drop_copied_queries(frame: pl.DataFrame, run_dir: Path, limit: float, counts: Counter
                         ) -> pl.DataFrame:
    """Rows whose query (>= MIN_COPY_WORDS words) copies >= `limit` of its words from its seed
    paragraph, left out and counted. The seed's text is the row's own positive or negative when
    it is one of them (85 % of rows), else the run's corpus."""
    rows = frame.select("seed_id", "query", "positive_id", "positive_title", "positive_text",
                        "negative_id", "negative_title", "negative_text").to_dicts()
    elsewhere = {r["seed_id"] for r in rows if r["seed_id"] not in (r["positive_id"],
                                                                     r["negative_id"])}
    corpus = {i: f"{t or ''} {x}" for i, t, x in _corpus_rows(run_dir, elsewhere)}
    keep = []
    for r in rows:
        side = "positive" if r["seed_id"] == r["positive_id"] else "negative"
        seed = (f"{r[side + '_title'] or ''} {r[side + '_text']}"
                if r["seed_id"] == r[side + "_id"] else corpus.get(r["seed_id"]))
        if seed is None:
            counts["seed_text_missing"] += 1  # kept: nothing to compare with
        copied = (seed is not None and len(words_of(r["query"])) >= MIN_COPY_WORDS
                  and copied_share(r["query"], seed) >= limit)
        if copied:
            counts["copied_query"] += 1
        keep.append(not copied)
    return frame.filter(pl.Series(keep, dtype=pl.Boolean))


def teacher_logits(candidates: Sequence[dict], score: TeacherScore, query: str
                   ) -> list[float | None]:
    """The judge's logit for each candidate of one query (None where the judge gave none).

    The three signals live on different scales, so each is put on a log-probability-like one:
    - `rc`, log p("Yes" | query, passage), is used as it is: softmax over candidates at
      temperature 1 is p(Yes) renormalised over them, so a judge that hesitates gives a flat target.
    - `ql`, log p(query | passage), is a sum over the query's tokens: every candidate of a query
      sums the same tokens, so differences are log-likelihood ratios (softmax = p(passage | query)
      under a uniform prior, as in UPR), but they grow with the query's length (tens of nats on a
      20-word query: one-hot targets). It is divided by the query's word count: the row does not
      record the judge's token count, and words, unlike another tokenizer's pieces, do not depend
      on the student. Per query this is a constant, i.e. a temperature proportional to length.
    - `fused` is the fusion's R = sum_s w_s / rank_s (fusion.py): already rank-based and bounded
      by the weights (0..2 under RRF), so it is used as it is; equal scores get equal mass.
    """
    if score == "fused":  # an unjudged candidate (a negative from beyond the N) has no judge score
        return [c["fused_score"] if c["ql"] is not None or c["rc"] is not None else None
                for c in candidates]
    if score == "rc":
        return [c["rc"] for c in candidates]
    if score == "ql":
        words = max(1, len(query.split()))
        return [None if c["ql"] is None else c["ql"] / words for c in candidates]
    raise ValueError(f"unknown teacher score {score!r}; expected fused, ql or rc")


def _add_candidates(out: Triples, frame: pl.DataFrame, score: TeacherScore, fmt: TextFormat
                    ) -> None:
    """Append each row's usable candidates (text known, teacher score present) to `out`."""
    needed: dict[Path, set[str]] = {}
    rows = frame.select("shard", "query", "positive_id", "negative_id", "positive_title",
                        "positive_text", "negative_title", "negative_text",
                        "candidates").to_dicts()
    for row in rows:
        folder = Path(row["shard"]).parent.parent  # <run>/shards/part-*.parquet
        needed.setdefault(folder, set()).update(c["id"] for c in row["candidates"])
    texts = {folder: _corpus_texts(folder, ids, fmt) for folder, ids in needed.items()}
    counts = out.teacher_counts
    for row in rows:
        corpus = texts[Path(row["shard"]).parent.parent]
        own = {row[f"{side}_id"]: fmt.document(row[f"{side}_title"], row[f"{side}_text"])
               for side in ("positive", "negative")}  # what the row itself carries, as judged
        logits = teacher_logits(row["candidates"], score, row["query"])
        cands, scores = [], []
        for cand, logit in zip(row["candidates"], logits):
            counts["candidates"] += 1
            text = own.get(cand["id"]) or corpus.get(cand["id"])
            if text is None:
                counts["text_missing"] += 1
            elif logit is None:
                counts["score_missing"] += 1
            else:
                cands.append(text)
                scores.append(float(logit))
        if len(cands) < 2:  # one candidate: both softmaxes are 1, nothing to learn
            counts["queries_without_target"] += 1
            cands, scores = [], []
        counts["used"] += len(cands)
        out.candidates.append(cands)
        out.teacher.append(scores)


def _corpus_rows(folder: Path, ids: set[str]) -> list[tuple[str, str | None, str]]:
    """(id, title, text) of `ids` from the folder's corpus.parquet (none when it has none)."""
    path = folder / "corpus.parquet"
    if not ids or not path.exists():
        return []
    return list(pl.scan_parquet(str(path)).select("id", "title", "text")
                .filter(pl.col("id").is_in(sorted(ids))).collect().iter_rows())


def _corpus_texts(folder: Path, ids: set[str], fmt: TextFormat) -> dict[str, str]:
    """Model-ready texts of `ids` from the folder's corpus.parquet (empty when it has none)."""
    return {i: fmt.document(t, x) for i, t, x in _corpus_rows(folder, ids)}


def _documents(titles: pl.Series, texts: pl.Series, fmt: TextFormat) -> list[str]:
    return [fmt.document(t, x) for t, x in zip(titles, texts)]


def _seed_random_pairs(
    run_dir: Path, seed_ids: list[str], seed: int, run_index: int, fmt: TextFormat
) -> tuple[list[str], list[str]]:
    """Gecko's ablation: the seed paragraph as positive, a random other paragraph as negative."""
    corpus = pl.read_parquet(run_dir / "corpus.parquet", columns=["id", "title", "text"])
    ids = corpus["id"].to_list()
    docs = _documents(corpus["title"], corpus["text"], fmt)
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    if len(ids) < 2:
        raise ValueError(f"{run_dir}/corpus.parquet needs two paragraphs for random negatives")
    rng = np.random.default_rng([seed, run_index])  # one stream per run: runs don't interact
    positives, negatives = [], []
    for seed_id in seed_ids:
        if seed_id not in position:
            raise KeyError(f"seed_id {seed_id!r} is not in {run_dir}/corpus.parquet")
        i = position[seed_id]
        j = int(rng.integers(len(ids) - 1))
        j += j >= i  # uniform over the other paragraphs
        positives.append(docs[i])
        negatives.append(docs[j])
    return positives, negatives


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    # The last partial batch is dropped: a smaller batch means an easier softmax and a
    # different loss scale, which would show as noise in the curve.
    return n_examples // batch_size


def iter_batches(
    triples: Triples, batch_size: int, seed: int, epoch: int, start_batch: int = 0
) -> Iterator[Triples]:
    """Batches of one epoch; the order is a function of (seed, epoch) alone, so a resumed run
    skips `start_batch` batches and sees exactly what an unbroken run would have seen."""
    order = np.random.default_rng([seed, epoch]).permutation(len(triples))
    for b in range(start_batch, steps_per_epoch(len(triples), batch_size)):
        yield triples.take(order[b * batch_size:(b + 1) * batch_size].tolist())
