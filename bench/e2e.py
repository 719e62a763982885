"""End-to-end throughput: the FRet flow vs a bare asyncio loop making exactly the same LLM calls.

Both talk to the scripted OpenAI-compatible server (a separate process) with injected latency,
at the same concurrency. The flow's time covers planning, all shard tasks (synthesize, embed
queries, mine, judge, commit) and the manifest; the index is built once beforehand and timed
apart (it is cached by corpus hash, so a production rerun pays it once too). The bare loop
replays the calls the flow made (same prompts, same per-paragraph dependency: synthesis, then the
N judge passes) with one AsyncOpenAI client and one semaphore.

    python bench/e2e.py [--paragraphs 2000] [--latency-ms 100] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def make_corpus(path: Path, n: int) -> None:
    from gecko_factory.corpus import sample_corpus_path

    data = list(json.loads(sample_corpus_path().read_text()).values())
    step = max(1, len(data) // n)
    rows = [{"title": e["title"], "text": e["extract"]} for e in data[::step][:n]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


async def bare_loop(base_url: str, concurrency: int, run_dir: Path) -> tuple[float, int]:
    import polars as pl
    from openai import AsyncOpenAI

    from gecko_factory.corpus import Paragraph
    from gecko_factory.judge import judge_passage
    from gecko_factory.plan import RunPlan
    from gecko_factory.synthesize import OUTPUT_SCHEMA, build_messages
    from gecko_factory.templates import load_template

    plan = RunPlan.load(run_dir)
    cfg = plan.config
    corpus = {r["id"]: r for r in pl.read_parquet(run_dir / "corpus.parquet").iter_rows(named=True)}
    df = pl.read_parquet(sorted((run_dir / "shards").glob("part-*.parquet")))
    tpl = load_template("judge_v1")
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    sem = asyncio.Semaphore(concurrency)
    calls = 0

    async def one(row: dict) -> None:
        nonlocal calls
        async with sem:
            await client.chat.completions.create(
                model="scripted", messages=build_messages(row["task_type"], corpus[row["seed_id"]]["text"]),
                temperature=cfg.synth_temperature, max_tokens=cfg.synth_max_tokens, seed=1,
                response_format={"type": "json_schema", "json_schema": {"name": "output", "schema": OUTPUT_SCHEMA, "strict": True}})
        calls += 1

        async def judge_one(cid: str) -> None:
            nonlocal calls
            prompt = tpl.render("one_pass", passage=judge_passage(Paragraph(**corpus[cid]), cfg.judge_passage_chars),
                                query=row["query"])
            async with sem:
                await client.completions.create(model="scripted", prompt=prompt, max_tokens=1,
                                                temperature=0.0, echo=True, logprobs=1)
            calls += 1

        await asyncio.gather(*(judge_one(c["id"]) for c in row["candidates"]))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in df.iter_rows(named=True)))
    seconds = time.perf_counter() - t0
    await client.close()
    return seconds, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paragraphs", type=int, default=2000)
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--shard-size", type=int, default=250)
    args = ap.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from gecko_factory.testing.launch import ScriptedServer

    work = Path(tempfile.mkdtemp(prefix="gecko-bench-"))
    os.environ["GECKO_HOME"] = str(work / "home")
    corpus = work / "corpus.jsonl"
    make_corpus(corpus, args.paragraphs)
    run_dir = work / "run"
    with ScriptedServer(latency_ms=args.latency_ms) as srv, prefect_test_harness(server_startup_timeout=120):
        os.environ.update(OPENAI_BASE_URL=srv.base_url, GECKO_LLM_MODEL="scripted",
                          GECKO_LLM_CONCURRENCY=str(args.concurrency))
        from flows.fret import fret_flow

        params = dict(corpus=str(corpus), candidates=args.candidates, shard_size=args.shard_size)
        t0 = time.perf_counter()
        # Warm-up outside the timing: plan + index (cached by corpus hash for the timed run).
        from gecko_factory.config import FretConfig
        from gecko_factory.corpus import CorpusSpec
        from gecko_factory.fret import prompt_versions
        from gecko_factory.index import IndexRequest, build_index
        from gecko_factory.plan import plan_run

        cfg = FretConfig(corpus=CorpusSpec(path=str(corpus)), candidates=args.candidates,
                         shard_size=args.shard_size, llm_model="scripted", prompt_versions=prompt_versions())
        plan = plan_run(cfg, run_dir)
        index = build_index(IndexRequest(run_dir / "corpus.parquet", plan.corpus_hash, cfg.encoder,
                                         cfg.index, Path(os.environ["GECKO_HOME"]) / "indexes"))
        index_s = time.perf_counter() - t0

        before = srv.calls()
        t0 = time.perf_counter()
        manifest = fret_flow(run_dir=str(run_dir), **params)
        flow_s = time.perf_counter() - t0
        flow_calls = srv.calls() - before

        bare_s, bare_calls = asyncio.run(bare_loop(srv.base_url, args.concurrency, run_dir))

    flow_rate, bare_rate = flow_calls / flow_s, bare_calls / bare_s
    result = {
        "paragraphs": args.paragraphs, "examples": manifest["counts"]["examples"],
        "latency_ms": args.latency_ms, "concurrency": args.concurrency, "candidates": args.candidates,
        "index_seconds_untimed": round(index_s, 1), "index_vectors": index.count,
        "flow": {"seconds": round(flow_s, 2), "llm_calls": flow_calls, "calls_per_s": round(flow_rate, 1)},
        "bare_asyncio": {"seconds": round(bare_s, 2), "llm_calls": bare_calls, "calls_per_s": round(bare_rate, 1)},
        "ratio_flow_over_bare": round(flow_rate / bare_rate, 3),
    }
    print(f"FRet flow  : {flow_calls:,} calls in {flow_s:.1f}s = {flow_rate:,.0f} calls/s")
    print(f"bare loop  : {bare_calls:,} calls in {bare_s:.1f}s = {bare_rate:,.0f} calls/s")
    print(f"ratio flow/bare = {flow_rate / bare_rate:.3f}  (goal >= 0.9)")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "e2e.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
