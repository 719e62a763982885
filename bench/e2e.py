"""End-to-end throughput: the FRet flow vs a bare asyncio loop making exactly the same LLM calls.

Both talk to the scripted OpenAI-compatible server (a separate process) with injected latency,
at the same concurrency. The flow's time covers planning, all shard tasks (synthesize, embed
queries, mine, judge, commit) and the manifest; the index is built once beforehand and timed
apart (it is cached by corpus hash, so a production rerun pays it once too). The bare loop
replays the calls the flow made (same prompts, same per-paragraph dependency: synthesis, then the
N judge passes) twice: over the factory's own `LLMClient` (so the ratio isolates what Prefect,
shards, the cache, embedding, mining and Parquet cost), and over one `openai.AsyncOpenAI` client
and one semaphore (the issue's bare loop; its per-call CPU makes it the slowest of the three).

    python bench/e2e.py [--paragraphs 5000] [--latency-ms 50] [--concurrency 64] [--candidates 5]
                        [--no-openai] [--json out.json]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


# N: FRet uses 20; 3 keeps the timed part (the flow and both bare loops, the openai one at ~250
# calls/s) near 3 minutes on 2 cores. The 5,000-paragraph index comes on top, once per --home:
# 5 min on the loaded shared machine (load average ~9), far less on a quiet one.
DEFAULT_CANDIDATES = 3


def make_corpus(path: Path, n: int) -> None:
    from gecko_factory.corpus import sample_corpus_path

    data = list(json.loads(sample_corpus_path().read_text()).values())
    step = max(1, len(data) // n)
    rows = [{"title": e["title"], "text": e["extract"]} for e in data[::step][:n]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def replayed_calls(run_dir: Path) -> list[tuple[list[dict], list[str]]]:
    """The flow's calls, per paragraph: the synthesis messages, then the judge prompts."""
    import polars as pl

    from gecko_factory.corpus import Paragraph
    from gecko_factory.judge import judge_passage
    from gecko_factory.plan import RunPlan
    from gecko_factory.synthesize import build_messages
    from gecko_factory.templates import load_template

    cfg = RunPlan.load(run_dir).config
    corpus = {r["id"]: r for r in pl.read_parquet(run_dir / "corpus.parquet").iter_rows(named=True)}
    tpl = load_template("judge_v1")
    out = []
    for row in pl.read_parquet(sorted((run_dir / "shards").glob("part-*.parquet"))).iter_rows(named=True):
        prompts = [tpl.render("one_pass", passage=judge_passage(Paragraph(**corpus[c["id"]]), cfg.judge_passage_chars),
                              query=row["query"]) for c in row["candidates"]]
        out.append((build_messages(row["task_type"], corpus[row["seed_id"]]["text"]), prompts))
    return out


async def bare_loop(kind: str, base_url: str, concurrency: int, calls_in: list, cfg) -> tuple[float, int]:
    """One asyncio.gather over every paragraph (synthesis, then its N judge calls in parallel),
    one client, one limit: no Prefect, no shards, no cache, no Parquet, no embedding."""
    from gecko_factory.synthesize import OUTPUT_SCHEMA

    if kind == "openai":
        from openai import AsyncOpenAI

        oa = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
        sem = asyncio.Semaphore(concurrency)
        rf = {"type": "json_schema", "json_schema": {"name": "output", "schema": OUTPUT_SCHEMA, "strict": True}}

        async def chat(messages):
            async with sem:
                await oa.chat.completions.create(model="scripted", messages=messages, seed=1,
                                                 temperature=cfg.synth_temperature,
                                                 max_tokens=cfg.synth_max_tokens, response_format=rf)

        async def judge(prompt):
            async with sem:
                await oa.completions.create(model="scripted", prompt=prompt, max_tokens=1,
                                            temperature=0.0, echo=True, logprobs=1)
        close = oa.close
    else:  # the factory's own client, without the factory around it
        from gecko_factory.llm.client import LLMClient
        from gecko_factory.llm.settings import LLMSettings

        ours = LLMClient(LLMSettings(_env_file=None, model="scripted", concurrency=concurrency), base_url)

        async def chat(messages):
            await ours.chat(messages, temperature=cfg.synth_temperature, max_tokens=cfg.synth_max_tokens,
                            seed=1, json_schema=OUTPUT_SCHEMA)

        async def judge(prompt):
            await ours.prompt_logprobs(prompt)
        close = ours.aclose

    async def one(messages, prompts) -> int:
        await chat(messages)
        await asyncio.gather(*(judge(p) for p in prompts))
        return 1 + len(prompts)

    t0 = time.perf_counter()
    calls = sum(await asyncio.gather(*(one(m, p) for m, p in calls_in)))
    seconds = time.perf_counter() - t0
    await close()
    return seconds, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paragraphs", type=int, default=5000)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--no-openai", action="store_true", help="skip the (slow) bare openai loop")
    ap.add_argument("--shards-in-flight", type=int,
                    help="run the flow with this many shard tasks at once (default: the flow's own)")
    ap.add_argument("--home", help="GECKO_HOME to keep between runs (the index is reused by corpus hash)")
    ap.add_argument("--json", help="write the BenchResult here")
    args = ap.parse_args()

    from common import BenchResult, machine, write_result
    from prefect.testing.utilities import prefect_test_harness

    from gecko_factory.testing.launch import ScriptedServer

    work = Path(tempfile.mkdtemp(prefix="gecko-bench-"))
    os.environ["GECKO_HOME"] = str(Path(args.home).resolve() if args.home else work / "home")
    corpus = work / "corpus.jsonl"
    make_corpus(corpus, args.paragraphs)
    run_dir = work / "run"
    bare: dict[str, dict] = {}
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
        print(f"index: {index.count:,} vectors in {index_s:.1f}s (not timed)", flush=True)

        before = srv.calls()
        t0 = time.perf_counter()
        flow = fret_flow
        if args.shards_in_flight:  # an experiment on the flow's task runner, not a change to it
            from prefect.task_runners import ThreadPoolTaskRunner

            flow = fret_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=args.shards_in_flight))
        manifest = flow(run_dir=str(run_dir), **params)
        flow_s = time.perf_counter() - t0
        flow_calls = srv.calls() - before
        print(f"FRet flow  : {flow_calls:,} calls in {flow_s:.1f}s = {flow_calls / flow_s:,.0f} calls/s", flush=True)

        calls_in = replayed_calls(run_dir)
        for kind in ("ours", "openai")[: 1 if args.no_openai else 2]:
            seconds, calls = asyncio.run(bare_loop(kind, srv.base_url, args.concurrency, calls_in, cfg))
            bare[kind] = {"seconds": round(seconds, 2), "llm_calls": calls, "calls_per_s": round(calls / seconds, 1)}
            print(f"bare {kind:6s}: {calls:,} calls in {seconds:.1f}s = {calls / seconds:,.0f} calls/s", flush=True)

    flow_rate = flow_calls / flow_s
    ratio = flow_rate / bare["ours"]["calls_per_s"]
    ideal = flow_calls * args.latency_ms / 1000 / args.concurrency
    figures = {
        "machine": machine(), "paragraphs": args.paragraphs, "examples": manifest["counts"]["examples"],
        "latency_ms": args.latency_ms, "concurrency": args.concurrency, "candidates": args.candidates,
        "shard_size": args.shard_size, "shards_in_flight": args.shards_in_flight or "flow default",
        "latency_bound_ideal_seconds": round(ideal, 1),
        "index_seconds_untimed": round(index_s, 1), "index_vectors": index.count,
        "flow": {"seconds": round(flow_s, 2), "llm_calls": flow_calls, "calls_per_s": round(flow_rate, 1)},
        **{f"bare_{k}": v for k, v in bare.items()},
        "ratio_flow_over_bare_same_client": round(ratio, 3),
    }
    rows = [("FRet flow (Prefect, shards, cache on, embed, mine, Parquet)", flow_calls, flow_s)]
    rows += [(f"bare asyncio loop, {'our `LLMClient`' if k == 'ours' else '`openai.AsyncOpenAI`'}",
              v["llm_calls"], v["seconds"]) for k, v in bare.items()]
    table = ["| | LLM calls | seconds | calls/s |", "|---|---:|---:|---:|"]
    table += [f"| {name} | {n:,} | {sec:.1f} | {n / sec:,.0f} |" for name, n, sec in rows]
    table.append(f"\nflow / bare loop with the same client = **{ratio:.3f}** (goal ≥ 0.95)")
    if "openai" in bare:
        figures["ratio_flow_over_bare_openai"] = round(flow_rate / bare["openai"]["calls_per_s"], 3)
        table[-1] += f"; flow / bare `openai` loop = {figures['ratio_flow_over_bare_openai']:.2f}"
    table[-1] += (f". {args.paragraphs:,} paragraphs, N = {args.candidates}, {args.latency_ms:g} ms latency, "
                  f"concurrency {args.concurrency}; latency-bound ideal {ideal:.0f} s; index built "
                  f"before the timing in {index_s:.0f} s.")
    print(table[-1])
    write_result(BenchResult(
        name="e2e", title="Orchestration vs the limit: the FRet flow vs a bare asyncio loop, same calls",
        command=f"python bench/e2e.py --paragraphs {args.paragraphs} --latency-ms {args.latency_ms:g} "
                f"--concurrency {args.concurrency} --candidates {args.candidates}",
        ratio=round(ratio, 3), goal=">= 0.95", met=ratio >= 0.95, figures=figures,
        markdown="\n".join(table),
        notes="ratio = flow / bare loop over the same LLMClient (what orchestration costs); the bare "
              "openai loop is slower than both because of openai's per-call CPU (see bench/client.py)",
    ), args.json)


if __name__ == "__main__":
    main()
