"""Scale: plan + index + synthesize + mine + judge at growing corpus sizes; peak RSS and wall time.

Each size runs in fresh subprocesses through the library calls the flow's tasks make, without
Prefect, against the scripted OpenAI-compatible server (real HTTP, its own process, no latency):
one plans and builds the index (`plan_run` → `build_index`), the next runs every shard
(`run_shard`), as a Dask worker or a resumed run does. Each phase's peak RSS is its own: VmHWM,
reset between phases (not getrusage's ru_maxrss, which Linux carries across exec from the parent).

Two things are scaled down so that 100k paragraphs fit in minutes on 2 cores, and both are said
in the report: (1) the encoder is a cheap deterministic stand-in, a 1-layer 64-wide BERT with
seeded random weights and MiniLM's tokenizer, saved as a real transformers folder and loaded by
`Encoder.load` like any local model (MiniLM would take ~30 min for 100k paragraphs here); (2) a
fixed number of seeds per size is synthesised and judged (the LLM side is per seed and does not
depend on the corpus size, the index and the paragraph lookups do).

What should hold: in every phase, peak RSS grows with the corpus by the index + embeddings it
holds and little else (EXTRA_KIB_GOAL a paragraph): planning streams the corpus to disk and
holds only ids and dedupe digests; shard processes look paragraphs up in corpus.arrow
(corpus_store.py), holding 16 bytes a paragraph of id hashes. Not yet the embed + index build:
`build_index` (index.py) still reads the whole corpus into memory, and that is the run's peak.

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

# Beyond the index + embeddings, per paragraph, in each phase's peak. A paragraph of the sample is
# ~0.7 KB of text, ~2 KiB as Python strings and Paragraph objects: 0.5 KiB leaves no room for a
# copy of the corpus in memory, and room for the plan's ids and dedupe digests (~0.2 KiB, and
# allocator slack: 0.36-0.40 measured) and the shards' id hashes (16 bytes).
EXTRA_KIB_GOAL = 0.5
PHASES = ("plan", "index", "llm")  # each phase's own peak RSS is measured (VmHWM reset between)


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


def rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc: not getrusage's ru_maxrss, which
    Linux carries across exec, so a worker would start at its parent's peak (~460 MiB here:
    the parent has torch loaded) and hide everything below it, the whole plan stage included."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Start VmHWM again from the current RSS, so each phase's peak is its own."""
    Path("/proc/self/clear_refs").write_text("5")


def worker(args) -> None:
    """One phase of one size, in this (fresh) process: prints one JSON line of figures.
    "prepare" plans and builds the index; "shards" runs every shard, in a process of its own as on
    a Dask worker or in a resumed run, so its peak is what a shard process holds and not what the
    index build left behind in the allocator."""
    from gecko_factory.config import FretConfig
    from gecko_factory.corpus import CorpusSpec
    from gecko_factory.embed import Encoder
    from gecko_factory.shard_pipeline import ShardJob, run_shard
    from gecko_factory.templates import prompt_versions
    from gecko_factory.index import IndexRequest, build_index
    from gecko_factory.llm.settings import LLMSettings
    from gecko_factory.plan import RunPlan, plan_run

    run_dir = Path(args.run_dir)
    figures: dict = {}
    if args.phase == "prepare":
        cfg = FretConfig(corpus=CorpusSpec(path=args.corpus), limit=args.seeds, shard_size=args.shard_size,
                         candidates=args.candidates, encoder=args.encoder, llm_model="scripted",
                         prompt_versions=prompt_versions("one_pass"))
        figures.update(paragraphs=args.size, rss_start_mib=rss_mib("VmRSS"))
        reset_peak()
        t0 = time.perf_counter()
        plan = plan_run(cfg, run_dir)
        t1 = time.perf_counter()
        figures.update(plan_s=t1 - t0, plan_peak_mib=rss_mib("VmHWM"), corpus_count=plan.corpus_count)
        reset_peak()
        info = build_index(IndexRequest(run_dir / "corpus.parquet", plan.corpus_hash, cfg.encoder,
                                        cfg.index, run_dir / "index-cache", cfg.embed_batch_size))
        figures.update(index_s=time.perf_counter() - t1, embed_s=info.embed_seconds,
                       index_peak_mib=rss_mib("VmHWM"), index_path=str(info.path),
                       index_mib=sum(f.stat().st_size for f in info.path.iterdir()) / 2**20)
    else:
        plan = RunPlan.load(run_dir)
        settings = LLMSettings(_env_file=None, model="scripted", concurrency=args.concurrency)
        figures["llm_start_mib"] = rss_mib("VmRSS")
        reset_peak()
        # Loaded before the clock, as the prepare phase's build_index had it loaded in one process
        # (it still counts in the peak); corpus and index are loaded by run_shard, as in the flow.
        Encoder.load(plan.config.encoder)
        t2, rows = time.perf_counter(), 0
        for shard in range(len(plan.shards)):
            report = run_shard(ShardJob(run_dir, shard, args.base_url, Path(args.index_path), "one_pass"),
                               settings)
            rows += report.rows
        figures.update(llm_s=time.perf_counter() - t2, rows=rows, seeds=plan.seed_count,
                       llm_peak_mib=rss_mib("VmHWM"))
    print("RESULT " + json.dumps(figures))


def run_worker(*argv: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", *argv], capture_output=True, text=True,
                         check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"worker {argv[:2]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,30000,100000")
    ap.add_argument("--seeds", type=int, default=500)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("phase", "size", "corpus", "encoder", "run-dir", "base-url", "index-path"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.size = int(args.size or 0)
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
            run_dir = str(tmp / f"run-{n}")
            fig = run_worker("--phase", "prepare", "--size", str(n), "--corpus", str(corpus),
                             "--encoder", str(encoder), "--run-dir", run_dir, "--seeds", str(args.seeds),
                             "--candidates", str(args.candidates), "--shard-size", str(args.shard_size))
            fig.update(run_worker("--phase", "shards", "--run-dir", run_dir, "--base-url", srv.base_url,
                                  "--index-path", fig["index_path"], "--concurrency", str(args.concurrency)))
            fig["total_s"] = fig["plan_s"] + fig["index_s"] + fig["llm_s"]
            fig["peak_rss_mib"] = max(fig[f"{ph}_peak_mib"] for ph in PHASES)
            results.append(fig)
            print(f"{n:>7,} paragraphs: plan {fig['plan_s']:.1f} s, index {fig['index_s']:.1f} s "
                  f"(embed {fig['embed_s']:.1f} s), LLM stages {fig['llm_s']:.1f} s, "
                  f"peak RSS {fig['peak_rss_mib']:.0f} MiB (plan {fig['plan_peak_mib']:.0f}, index "
                  f"{fig['index_peak_mib']:.0f}, LLM stages {fig['llm_peak_mib']:.0f}), "
                  f"index+embeddings {fig['index_mib']:.0f} MiB")

    small, big = results[0], results[-1]
    d_rss = big["peak_rss_mib"] - small["peak_rss_mib"]
    d_index = big["index_mib"] - small["index_mib"]
    d_n = max(1, big["paragraphs"] - small["paragraphs"])
    per_para_kib = d_rss * 1024 / d_n
    # beyond index + embeddings, per paragraph: what the goal says must stay small
    extra_kib = (d_rss - d_index) * 1024 / d_n
    # the same for each phase's own peak (the plan holds no index: all of its growth counts)
    phase_extra_kib = {ph: (big[f"{ph}_peak_mib"] - small[f"{ph}_peak_mib"]
                            - (0 if ph == "plan" else d_index)) * 1024 / d_n for ph in PHASES}
    ratio = d_index / d_rss if d_rss > 0 else None
    rows = "".join(
        f"| {r['paragraphs']:,} | {r['seeds']} | {r['plan_s']:.1f} s | {r['index_s']:.1f} s | "
        f"{r['llm_s']:.1f} s | {r['total_s']:.1f} s | {r['peak_rss_mib']:.0f} MiB | "
        + " / ".join(f"{r[f'{ph}_peak_mib']:.0f}" for ph in PHASES) + f" MiB | {r['index_mib']:.0f} MiB |\n"
        for r in results)
    md = (
        f"Scripted server (no latency), {args.candidates} candidates, one-pass judge, cheap stand-in "
        "encoder (1-layer 64-wide BERT, seeded), fresh processes per size (plan + index, then the "
        "shards).\n\n"
        "| paragraphs | seeds judged | plan (read + write corpus) | embed + index | synthesize + mine "
        "+ judge | total | peak RSS | peak RSS by phase (plan / index / LLM stages) | index + "
        "embeddings on disk |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        + rows +
        f"\nFrom {small['paragraphs']:,} to {big['paragraphs']:,} paragraphs peak RSS grows "
        f"{d_rss:.0f} MiB ({per_para_kib:.2f} KiB per paragraph), of which index + embeddings "
        f"{d_index:.0f} MiB; the rest is {extra_kib:.2f} KiB per paragraph. By phase, beyond the "
        "index + embeddings it holds: " + ", ".join(
            f"{name} {phase_extra_kib[ph]:.2f}" for ph, name in
            zip(PHASES, ("plan", "embed + index build", "synthesize + mine + judge")))
        + " KiB per paragraph."
    )
    met = max(phase_extra_kib.values()) <= EXTRA_KIB_GOAL
    notes = ("Ratio = growth of index + embeddings / growth of peak RSS (1 would mean nothing else "
             "grows). The run's peak is the embed + index build: build_index reads corpus.parquet "
             "8,192 rows at a time into a memory-mapped embeddings file (it held every text at once, "
             "~2.4 KiB a paragraph, until 2026-11-30), so what grows there is the index and embeddings. "
             "Planning streams the corpus to corpus.parquet and holds the ids and dedupe digests; "
             "a shard process holds 16 bytes a paragraph of id hashes and reads each paragraph it "
             "needs from corpus.arrow, one 128-row batch at a time (corpus_store.py): its growth "
             "is the index it loads.")
    write_result(BenchResult(
        "scale", "Scale: plan + index + synthesize + mine + judge, 10k-100k paragraphs",
        f"python bench/scale.py --sizes {args.sizes} --seeds {args.seeds} --candidates {args.candidates}",
        None if ratio is None else round(ratio, 3),
        f"each phase beyond index + embeddings <= {EXTRA_KIB_GOAL} KiB per paragraph", met,
        {"sizes": results, "rss_growth_mib": d_rss, "index_growth_mib": d_index,
               "extra_kib_per_paragraph": extra_kib, "phase_extra_kib_per_paragraph": phase_extra_kib},
        md, notes), args.json)


if __name__ == "__main__":
    main()
