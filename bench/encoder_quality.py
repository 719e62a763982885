"""Encoder precision gate: does the int8 encoder keep SciFact retrieval as the fp32 one has it?

Issue 15 asks of a faster encoder path, before it may index or encode queries: recall@20 >= 0.99
of its top-20 against the fp32 exact top-20, and SciFact test nDCG@10 within 0.005 of fp32's
(0.6451). Both paths embed all 5,183 abstracts and the 300 test claims with `Encoder.encode` (the
factory's code, in BEIR's "{title} {text}" form as gecko_factory/evaluate.py writes it) and are
searched with evaluate.search (exact) and with hnswlib at the factory's defaults. It reports
the figures only: nothing here is tuned on the test split. Too slow for `make bench` (about
1,000 CPU-seconds per path on the 2-core VM), so it runs on demand:

    python bench/encoder_quality.py [--precisions fp32,int8] [--docs N] [--json out.json]

(`--docs N`: the first N abstracts only, and the claims citing one of them: a smoke test, not
the gate.)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import BenchResult, write_result

TOP_K = 20
NDCG_TOLERANCE = 0.005
RECALL_GOAL = 0.99


def embed(precision: str, docs: list[str], queries: list[str], batch: int) -> dict:
    from gecko_factory.embed import Encoder

    enc = Encoder.load(precision=precision)
    enc.encode(["warm up"])
    t0, c0 = time.perf_counter(), time.process_time()
    d = enc.encode(docs, batch_size=batch)
    q = enc.encode(queries, batch_size=batch)
    return {"docs": d, "queries": q, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0}


def scores(run: dict, ref_top: "np.ndarray", ds, doc_ids: list[str], qids: list[str]) -> dict:
    import numpy as np

    from gecko_factory.config import IndexConfig
    from gecko_factory.evaluate import ndcg_at_k, search
    from gecko_factory.index import LoadedIndex, build_hnsw
    from gecko_factory.mine import knn

    top = search(run["queries"], run["docs"], k=100)
    params = IndexConfig()
    loaded = LoadedIndex(build_hnsw(run["docs"], params), doc_ids, threading.Lock())
    hnsw = knn(loaded, run["queries"], TOP_K, max(params.ef_search, TOP_K))

    def recall(got):
        return float(np.mean([len(set(a[:TOP_K]) & set(b)) / TOP_K for a, b in zip(got, ref_top)]))

    return {"ndcg_at_10": float(np.mean([ndcg_at_k([doc_ids[j] for j in row], ds.qrels[qid], 10)
                                         for row, qid in zip(top, qids)])),
            "recall_at_20_exact": recall(top), "recall_at_20_hnsw": recall(hnsw)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/scifact.zip")
    ap.add_argument("--precisions", default="fp32,int8", help="fp32 first: the reference")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--docs", type=int, default=None, help="first N abstracts only (smoke test)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    precisions = args.precisions.split(",")
    command = f"python bench/encoder_quality.py --precisions {args.precisions}"
    title = "Encoder precision: int8 vs fp32 on SciFact test (recall@20, nDCG@10)"
    if not args.zip.is_file() or precisions[0] != "fp32":
        why = f"{args.zip} is missing" if not args.zip.is_file() else "fp32 must come first"
        write_result(BenchResult("encoder_quality", title, command, None, "", None,
                                 notes=f"skipped: {why}"), args.json)
        return
    import torch

    from gecko_factory.evaluate import load_scifact, search

    ds = load_scifact(args.zip, split="test")
    if args.docs:
        ds.corpus = dict(list(ds.corpus.items())[: args.docs])
        ds.qrels = {q: r & set(ds.corpus) for q, r in ds.qrels.items() if r & set(ds.corpus)}
        command += f" --docs {args.docs}"
    doc_ids = list(ds.corpus)
    docs = [f"{t} {x}".strip() for t, x in ds.corpus.values()]  # evaluate.py's BEIR default
    qids = [q for q in ds.queries if ds.qrels.get(q)]
    queries = [ds.queries[q] for q in qids]
    print(f"{len(docs)} abstracts, {len(queries)} test claims, torch threads {torch.get_num_threads()}")
    runs, figures, ref_top = {}, {}, None
    for p in precisions:
        runs[p] = embed(p, docs, queries, args.batch)
        if ref_top is None:
            ref_top = search(runs[p]["queries"], runs[p]["docs"], k=TOP_K)
        n = len(docs) + len(queries)
        figures[p] = {"wall_s": runs[p]["wall_s"], "cpu_s": runs[p]["cpu_s"],
                      "texts_per_s": n / runs[p]["wall_s"], "texts_per_cpu_s": n / runs[p]["cpu_s"],
                      **scores(runs[p], ref_top, ds, doc_ids, qids)}
        f = figures[p]
        print(f"{p}: {f['texts_per_s']:.1f} texts/s ({f['texts_per_cpu_s']:.1f} per CPU-second), "
              f"nDCG@10 {f['ndcg_at_10']:.4f}, recall@20 vs fp32 exact {f['recall_at_20_exact']:.4f} "
              f"(hnswlib {f['recall_at_20_hnsw']:.4f})", flush=True)
        if p != "fp32":
            c = (runs[p]["docs"] * runs["fp32"]["docs"]).sum(1)
            f["cosine_to_fp32_min"], f["cosine_to_fp32_mean"] = float(c.min()), float(c.mean())
            del runs[p]  # keep fp32's vectors only
    base = figures["fp32"]
    rows, met = [], True
    for p, f in figures.items():
        ok = (f["recall_at_20_hnsw"] >= RECALL_GOAL
              and abs(f["ndcg_at_10"] - base["ndcg_at_10"]) <= NDCG_TOLERANCE)
        if p != "fp32":
            met = met and ok
        rows.append(f"| {p} | {f['texts_per_s']:.1f} | {f['texts_per_cpu_s']:.1f} | "
                    f"{base['cpu_s'] / f['cpu_s']:.2f} | {f['recall_at_20_exact']:.4f} | "
                    f"{f['recall_at_20_hnsw']:.4f} | {f['ndcg_at_10']:.4f} | "
                    f"{f['ndcg_at_10'] - base['ndcg_at_10']:+.4f} | "
                    f"{f.get('cosine_to_fp32_mean', 1.0):.4f} |")
    worst = min(f["recall_at_20_hnsw"] for p, f in figures.items() if p != "fp32") \
        if len(figures) > 1 else None
    md = (f"{len(docs):,} SciFact abstracts, {len(queries)} test claims, batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}; recall@20 is against fp32 exact search.\n\n"
          "| precision | texts/s | texts per CPU-s | speed vs fp32 (CPU time) | recall@20 exact | "
          "recall@20 hnswlib | nDCG@10 | Δ nDCG@10 | cosine to fp32 (mean) |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    write_result(BenchResult(
        "encoder_quality", title, command, None if worst is None else round(worst, 4),
        f"recall@20 >= {RECALL_GOAL} and |Δ nDCG@10| <= {NDCG_TOLERANCE}",
        met if len(figures) > 1 else None, figures, md,
        "The speed here is CPU time per text (threads summed), which a busy machine distorts less "
        "than wall time; bench/encoder.py times both paths side by side."), args.json)


if __name__ == "__main__":
    main()
