"""Scale: plan + index + synthesize + mine + judge at growing corpus sizes; peak RSS and wall time.

Each size runs in a fresh subprocess (so each peak RSS is its own) through the library calls the
flow's tasks make, without Prefect: `plan_run` → `build_index` → `run_shard` per shard, against
the scripted OpenAI-compatible server (real HTTP, its own process, no latency).

Two things are scaled down so that 100k paragraphs fit in minutes on 2 cores, and both are said
in the report: (1) the encoder is a cheap deterministic stand-in, a 1-layer 64-wide BERT with
seeded random weights and MiniLM's tokenizer, saved as a real transformers folder and loaded by
`Encoder.load` like any local model (MiniLM would take ~30 min for 100k paragraphs here); (2) a
fixed number of seeds per size is synthesised and judged (the LLM side is per seed and does not
depend on the corpus size, the index and the paragraph lookups do).

What should hold: peak RSS grows with the corpus by about the index + embeddings (+ the corpus
text the run holds), not by anything per paragraph on top.

    python bench/scale.py [--sizes 10000,30000,100000] [--seeds 500] [--candidates 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import BenchResult, write_result

# A paragraph of the sample is ~0.7 KB of text; holding the corpus once as Python strings and
# Paragraph objects costs about 2 KiB each. More than that per paragraph means something else grows.
EXTRA_KIB_GOAL = 3.0


def make_tiny_encoder(folder: Path) -> Path:
    """A 1-layer BERT with seeded weights and MiniLM's tokenizer: cheap, deterministic, real."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from gecko_factory.embed import DEFAULT_ENCODER, resolve_encoder_path

    if (folder / "config.json").exists():
        return folder
    src = resolve_encoder_path(DEFAULT_ENCODER)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    return folder


def make_corpus(path: Path, n: int) -> None:
    """n distinct paragraphs: the bundled Wikipedia sample, cycled with a variant number."""
    from gecko_factory.corpus import sample_corpus_path

    data = list(json.loads(sample_corpus_path().read_text(encoding="utf-8")).values())
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            e = data[i % len(data)]
            text = e["extract"] if i < len(data) else f"{e['extract']} (variant {i // len(data)})"
            f.write(json.dumps({"title": e["title"], "text": text}) + "\n")


def worker(args) -> None:
    """One size, in this (fresh) process: prints one JSON line of figures."""
    import resource

    from gecko_factory.config import FretConfig
    from gecko_factory.corpus import CorpusSpec
    from gecko_factory.fret import ShardJob, prompt_versions, run_shard
    from gecko_factory.index import IndexRequest, build_index
    from gecko_factory.llm.settings import LLMSettings
    from gecko_factory.plan import plan_run

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    run_dir = Path(args.run_dir)
    cfg = FretConfig(corpus=CorpusSpec(path=args.corpus), limit=args.seeds, shard_size=args.shard_size,
                     candidates=args.candidates, encoder=args.encoder, llm_model="scripted",
                     prompt_versions=prompt_versions())
    figures: dict = {"paragraphs": args.size, "rss_start_mib": peak_mib()}
    t0 = time.perf_counter()
    plan = plan_run(cfg, run_dir)
    t1 = time.perf_counter()
    figures.update(plan_s=t1 - t0, rss_after_plan_mib=peak_mib(), corpus_count=plan.corpus_count)
    info = build_index(IndexRequest(run_dir / "corpus.parquet", plan.corpus_hash, cfg.encoder,
                                    cfg.index, run_dir / "index-cache", cfg.embed_batch_size))
    t2 = time.perf_counter()
    figures.update(index_s=t2 - t1, embed_s=info.embed_seconds, rss_after_index_mib=peak_mib(),
                   index_mib=sum(f.stat().st_size for f in info.path.iterdir()) / 2**20)
    settings = LLMSettings(_env_file=None, model="scripted", concurrency=args.concurrency)
    rows = 0
    for shard in range(len(plan.shards)):
        report = run_shard(ShardJob(run_dir, shard, args.base_url, info.path, "one_pass"), settings)
        rows += report.rows
    t3 = time.perf_counter()
    figures.update(llm_s=t3 - t2, rows=rows, seeds=plan.seed_count, total_s=t3 - t0,
                   peak_rss_mib=peak_mib())
    print("RESULT " + json.dumps(figures))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,30000,100000")
    ap.add_argument("--seeds", type=int, default=500)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("size", "corpus", "encoder", "run-dir", "base-url"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.size = int(args.size)
        worker(args)
        return

    from gecko_factory.testing.launch import ScriptedServer

    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="gecko-scale-") as tmp, ScriptedServer() as srv:
        tmp = Path(tmp)
        encoder = make_tiny_encoder(tmp / "tiny-encoder")
        for n in sizes:
            corpus = tmp / f"corpus-{n}.jsonl"
            make_corpus(corpus, n)
            cmd = [sys.executable, __file__, "--worker", "--size", str(n), "--corpus", str(corpus),
                   "--encoder", str(encoder), "--run-dir", str(tmp / f"run-{n}"),
                   "--base-url", srv.base_url, "--seeds", str(args.seeds),
                   "--candidates", str(args.candidates), "--shard-size", str(args.shard_size),
                   "--concurrency", str(args.concurrency)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"size {n} failed ({out.returncode}):\n{out.stderr[-3000:]}")
            fig = json.loads(line[len("RESULT "):])
            results.append(fig)
            print(f"{n:>7,} paragraphs: plan {fig['plan_s']:.1f} s, index {fig['index_s']:.1f} s "
                  f"(embed {fig['embed_s']:.1f} s), LLM stages {fig['llm_s']:.1f} s, "
                  f"peak RSS {fig['peak_rss_mib']:.0f} MiB, index+embeddings {fig['index_mib']:.0f} MiB")

    small, big = results[0], results[-1]
    d_rss = big["peak_rss_mib"] - small["peak_rss_mib"]
    d_index = big["index_mib"] - small["index_mib"]
    per_para_kib = d_rss * 1024 / max(1, big["paragraphs"] - small["paragraphs"])
    # beyond index + embeddings, per paragraph: what the goal says must stay small
    extra_kib = (d_rss - d_index) * 1024 / max(1, big["paragraphs"] - small["paragraphs"])
    ratio = d_index / d_rss if d_rss > 0 else None
    rows = "".join(
        f"| {r['paragraphs']:,} | {r['seeds']} | {r['plan_s']:.1f} s | {r['index_s']:.1f} s | "
        f"{r['llm_s']:.1f} s | {r['total_s']:.1f} s | {r['peak_rss_mib']:.0f} MiB | {r['index_mib']:.0f} MiB |\n"
        for r in results)
    md = (
        f"Scripted server (no latency), {args.candidates} candidates, one-pass judge, cheap stand-in "
        "encoder (1-layer 64-wide BERT, seeded), a fresh process per size.\n\n"
        "| paragraphs | seeds judged | plan (read + write corpus) | embed + index | synthesize + mine "
        "+ judge | total | peak RSS | index + embeddings on disk |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        + rows +
        f"\nFrom {small['paragraphs']:,} to {big['paragraphs']:,} paragraphs peak RSS grows "
        f"{d_rss:.0f} MiB ({per_para_kib:.2f} KiB per paragraph), of which index + embeddings "
        f"{d_index:.0f} MiB; the rest is {extra_kib:.2f} KiB per paragraph."
    )
    notes = ("Ratio = growth of index + embeddings / growth of peak RSS (1 would mean nothing else "
             "grows). What else grows is the corpus the run holds in memory (plan_run loads every "
             "paragraph, and each shard's lookup reads the whole corpus.parquet into a dict) and "
             "the HNSW build's temporary buffers.")
    write_result(BenchResult(
        "scale", "Scale: plan + index + synthesize + mine + judge, 10k-100k paragraphs",
        f"python bench/scale.py --sizes {args.sizes} --seeds {args.seeds} --candidates {args.candidates}",
        None if ratio is None else round(ratio, 3),
        f"beyond index + embeddings <= {EXTRA_KIB_GOAL} KiB per paragraph", extra_kib <= EXTRA_KIB_GOAL, {"sizes": results, "rss_growth_mib": d_rss, "index_growth_mib": d_index,
               "extra_kib_per_paragraph": extra_kib}, md, notes), args.json)


if __name__ == "__main__":
    main()
