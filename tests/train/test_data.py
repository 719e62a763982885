"""Training data with the judge's candidates: teacher logits worked out by hand, candidate texts
from the corpus the judge read, and every candidate left out counted."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gecko_factory.schemas import FRET_SCHEMA, PARAGRAPH_SCHEMA
from gecko_factory.testing.fake_run import make_version, write_corpus
from gecko_factory.train.data import (Triples, copied_share, load_triples, scan_run,
                                      teacher_logits)
from gecko_factory.train.model import format_document, text_format


def _cand(cid, ql, rc, fused, rank=1):
    return {"id": cid, "retrieval_rank": rank, "similarity": 0.5, "ql": ql, "rc": rc,
            "fused_score": fused, "fused_rank": rank}


def test_teacher_logits_by_hand():
    cands = [_cand("a", -12.0, -0.2, 2.0), _cand("b", -30.0, -1.5, 0.5), _cand("c", None, -0.9, 1.0)]
    query = "four words long query"
    assert teacher_logits(cands, "ql", query) == [-3.0, -7.5, None]  # nats per query word
    assert teacher_logits(cands, "rc", query) == [-0.2, -1.5, -0.9]
    assert teacher_logits(cands, "fused", query) == [2.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        teacher_logits(cands, "bm25", query)
    # a negative from beyond the judged N has no judge score under any of them
    unjudged = [_cand("a", -12.0, -0.2, 2.0), _cand("z", None, None, 0.0)]
    assert [teacher_logits(unjudged, s, query)[1] for s in ("fused", "ql", "rc")] == [None] * 3
    # rc as it is: the target is p(Yes) renormalised over the candidates
    p = [math.exp(x) for x in (-0.2, -1.5, -0.9)]
    assert math.isclose(p[0] / sum(p), math.exp(-0.2) / (math.exp(-0.2) + math.exp(-1.5)
                                                          + math.exp(-0.9)))


def test_passages_embed_each_text_once():
    t = Triples(["q0", "q1"], ["P0", "P1"], ["N0", "P0"],
                candidates=[["P0", "X", "N0"], ["X", "P1", "Y"]], teacher=[[0, 0, 0], [0, 0, 0]])
    texts, index = t.passages()
    assert texts == ["P0", "P1", "N0", "P0", "X", "Y"]  # rows 0..3 stay the contrastive loss's
    assert index == [[0, 4, 2], [4, 1, 5]]
    assert t.take([1]).candidates == [["X", "P1", "Y"]]
    assert Triples(["q"], ["P"], ["N"]).passages() == (["P", "N"], [])


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "shards").mkdir(parents=True)
    paragraphs = [{"id": f"p{i}", "title": "" if i % 2 else f"T{i}", "text": f"text {i}"}
                  for i in range(5)]
    pq.write_table(pa.Table.from_pylist(paragraphs, schema=PARAGRAPH_SCHEMA), run / "corpus.parquet")
    base = {"task_type": "retrieval", "task": "find", "relabelled": False, "judge_mode": "two_prompt",
            "fusion": "rrf", "llm_model": "w", "judge_model": "j", "prompt_version": "v"}
    rows = [
        # all three candidates known (p2 from the corpus, p0 and p1 from the row)
        {"example_id": "e0", "seed_id": "p0", "query": "one two", "positive_id": "p0",
         "positive_title": "T0", "positive_text": "text 0", "negative_id": "p1",
         "negative_title": "", "negative_text": "text 1",
         "candidates": [_cand("p0", -2.0, -0.1, 2.0, 1), _cand("p2", -4.0, -0.5, 1.0, 2),
                        _cand("p1", -6.0, -2.0, 0.5, 3)]},
        # a candidate the corpus lacks, and one the judge gave no QL
        {"example_id": "e1", "seed_id": "p3", "query": "three", "positive_id": "p3",
         "positive_title": "T3", "positive_text": "text 3 as judged", "negative_id": "p4",
         "negative_title": "T4", "negative_text": "text 4",
         "candidates": [_cand("p3", -1.0, -0.1, 2.0, 1), _cand("gone", -2.0, -0.3, 1.0, 2),
                        _cand("p4", None, -0.9, 0.5, 3)]},
    ]
    pq.write_table(pa.Table.from_pylist([base | r for r in rows], schema=FRET_SCHEMA),
                   run / "shards" / "part-00000.parquet")
    return run


def test_candidates_come_with_texts_and_counted_losses(run_dir):
    plain = load_triples([run_dir], "train", val_fraction=0.0)
    assert plain.candidates is None and not plain.teacher_counts
    got = load_triples([run_dir], "train", val_fraction=0.0, teacher="ql")
    assert got.queries == plain.queries and got.positives == plain.positives
    assert got.candidates[0] == [format_document("T0", "text 0"), format_document("T2", "text 2"),
                                 format_document("", "text 1")]
    assert got.teacher[0] == [-1.0, -2.0, -3.0]  # QL per word of "one two"
    # e1 keeps one candidate (its positive, the row's own text): no target, counted
    assert got.candidates[1] == [] and got.teacher[1] == []
    assert got.teacher_counts == {"candidates": 6, "used": 3, "text_missing": 1,
                                  "score_missing": 1, "queries_without_target": 1}
    rc = load_triples([run_dir], "train", val_fraction=0.0, teacher="rc")
    assert rc.teacher[1] == [-0.1, -0.9] and rc.teacher_counts["queries_without_target"] == 0
    assert rc.candidates[1][0] == format_document("T3", "text 3 as judged")


def test_the_base_format_writes_every_text_as_the_evaluation_reads_it(run_dir):
    """prompt_format=base: no task, and documents in the saved prompts' format, the same strings
    evaluate.py builds for the base (its BEIR default without prompts)."""
    got = load_triples([run_dir], "train", val_fraction=0.0, teacher="ql",
                       fmt=text_format("base", {}))
    assert got.queries == ["one two", "three"]
    assert (got.positives, got.negatives) == (["T0 text 0", "T3 text 3 as judged"],
                                              ["text 1", "T4 text 4"])
    assert got.candidates[0] == ["T0 text 0", "T2 text 2", "text 1"]
    e5 = text_format("base", {"query": "query: ", "document": "passage: "})
    assert e5.query("find", "q") == "query: q" and e5.document("T", "x") == "passage: T x"
    assert e5.prompts == {"query": "query: ", "document": "passage: "}


def test_a_version_reads_candidate_texts_from_the_run_that_judged_them(tmp_path, wiki_sample):
    paragraphs = [{"id": f"p{i:02d}", **p} for i, p in enumerate(wiki_sample[:10])]
    root, path = tmp_path / "ds", tmp_path / "c.jsonl"
    make_version(root, write_corpus(path, paragraphs), shard_size=4)
    make_version(root, write_corpus(path, [p for p in paragraphs if p["id"] != "p05"]),
                 shard_size=4)  # p05 deleted: rows naming it as a mere candidate stay
    version = sorted((root / "versions").iterdir())[-1]
    kept = scan_run(version, ["example_id", "candidates"]).collect()
    assert any(c["id"] == "p05" for cands in kept["candidates"] for c in cands)
    got = load_triples([version], "train", val_fraction=0.0, teacher="fused")
    assert got.teacher_counts["text_missing"] == 0
    assert got.teacher_counts["used"] == got.teacher_counts["candidates"] > 0


def test_train_fraction_takes_nested_shares_and_leaves_validation_alone():
    from gecko_factory.train.data import in_split

    seeds = [f"seed-{i}" for i in range(4000)]

    def take(split: str, fraction: float) -> set[str]:
        return {s for s in seeds if in_split(s, split, 0.1, fraction)}

    val, quarter, half, full = take("validation", 1.0), take("train", 0.25), take("train", 0.5), take("train", 1.0)
    assert val == take("validation", 0.25) and not val & full and len(val) + len(full) == len(seeds)
    assert quarter < half < full  # a smaller share is inside a larger one
    assert abs(len(quarter) / len(full) - 0.25) < 0.03 and abs(len(half) / len(full) - 0.5) < 0.03


def test_load_triples_takes_the_train_fraction(run_dir):
    everything = load_triples([run_dir], "train", val_fraction=0.0)
    assert len(everything) == 2
    assert len(load_triples([run_dir], "train", val_fraction=0.0, train_fraction=1e-9)) == 0


def test_copied_share_by_hand():
    passage = "Mitochondria divide by fission. Their DNA is inherited from the mother alone."
    assert copied_share("their DNA is inherited from the mother", passage) == 1.0  # case, punct.
    # 4 of 6 words in one run ("is inherited from the"); "maternally" and "genes" are not there
    assert copied_share("genes is inherited from the maternally", passage) == pytest.approx(4 / 6)
    assert copied_share("how do mitochondria split", passage) == pytest.approx(1 / 4)
    assert copied_share("", passage) == 0.0


def test_queries_copied_from_their_seed_are_left_out_and_counted(tmp_path):
    run = tmp_path / "run"
    (run / "shards").mkdir(parents=True)
    texts = {"s0": "Coral reefs bleach when the water warms by one degree for a month.",
             "s1": "Honey bees navigate by the sun and by polarised light on cloudy days.",
             "s2": "Glaciers in the Alps lost a tenth of their volume in two summers."}
    corpus = [{"id": i, "title": "", "text": t} for i, t in texts.items()]
    pq.write_table(pa.Table.from_pylist(corpus, schema=PARAGRAPH_SCHEMA), run / "corpus.parquet")
    base = {"task_type": "retrieval", "task": "find", "relabelled": False,
            "judge_mode": "two_prompt", "fusion": "rrf", "llm_model": "w", "judge_model": "j", "prompt_version": "v",
            "candidates": [], "negative_title": "", "positive_title": ""}

    def row(eid, seed, query, positive, negative):
        return base | {"example_id": eid, "seed_id": seed, "query": query, "positive_id": positive,
                       "positive_text": texts[positive], "negative_id": negative,
                       "negative_text": texts[negative]}

    rows = [row("e0", "s0", "coral reefs bleach when the water warms", "s0", "s1"),  # copied
            row("e1", "s0", "what makes corals lose their colour", "s0", "s2"),  # its own words
            row("e2", "s1", "Honey bees navigate by the sun and by polarised light", "s2", "s0"),
            row("e3", "s2", "glaciers alps", "s2", "s1")]  # keywords: 2 words, never a copy
    # e2 was relabelled: its seed s1 is neither its positive nor its negative (the corpus has it)
    pq.write_table(pa.Table.from_pylist(rows, schema=FRET_SCHEMA),
                   run / "shards" / "part-00000.parquet")
    got = load_triples([run], "train", val_fraction=0.0, max_query_copy=0.8)
    assert [q.split("query: ")[1] for q in got.queries] == [rows[1]["query"], rows[3]["query"]]
    assert got.left_out == {"copied_query": 2}
    assert len(load_triples([run], "train", val_fraction=0.0)) == 4  # None: all kept
