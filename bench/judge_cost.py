"""Judge cost on the embedded model: Gecko's two-prompt form vs our one-pass form.

Both forms judge the same (query, candidates) with the real Qwen2.5-Coder-0.5B on our llama.cpp
server, through `gecko_factory.judge.judge` (the code the flow runs):
- two_prompt: a QL prompt and a separate RC chat prompt per candidate (2N judge calls);
- one_pass: QL and RC from one forward pass per candidate (N judge calls).
Per example we report judge calls, prompt tokens and seconds, and how often both forms pick the
same positive and the same negative (fused RRF rank first / last). A FRet example costs one more
call in both forms (the synthesis), not timed here.

Queries: SciFact train claims (an evaluation set; nothing here is kept or trained on) with their
candidates mined by our encoder from a pool of abstracts (the cited one is always a candidate,
as the seed is in FRet). Synthesising queries would add ~5 s a query and change nothing measured.

Prefix cache: the server reuses whole 128-token chunks of the previous prompt. The same prompts
are scored with the server's prefix cache on and off (a second server, --prefix-chunk 0), once as
the one-pass template lays them out and once behind a shared few-shot block (two worked examples)
that comes first: the layout a few-shot judge should use so that vLLM / llama.cpp reuse it.

    python bench/judge_cost.py [--queries 5] [--candidates 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import BenchResult, write_result

POOL_EXTRA = 120  # abstracts besides the cited ones, to mine candidates from


def build_cases(zip_path: Path, n_queries: int, n_cand: int):
    import threading

    from gecko_factory.config import IndexConfig
    from gecko_factory.corpus import Paragraph
    from gecko_factory.embed import Encoder
    from gecko_factory.evaluate import load_scifact
    from gecko_factory.index import LoadedIndex, build_hnsw, passage_text
    from gecko_factory.mine import mine

    ds = load_scifact(zip_path, split="train")
    picked = [(qid, q) for qid, q in ds.queries.items() if ds.qrels[qid] & ds.corpus.keys()]
    # the first two claims make the few-shot block; the rest are judged
    shots, picked = picked[:2], picked[2 : 2 + n_queries]
    cited = {qid: sorted(ds.qrels[qid] & ds.corpus.keys())[0] for qid, _ in shots + picked}
    pool_ids = list(dict.fromkeys([cited[q] for q, _ in picked] +
                                  [d for d in ds.corpus if d not in cited.values()][:POOL_EXTRA]))
    paras = {d: Paragraph(d, *ds.corpus[d]) for d in pool_ids + [cited[q] for q, _ in shots]}
    enc = Encoder.load()
    vecs = enc.encode([passage_text(paras[d].title, paras[d].text) for d in pool_ids])
    index = LoadedIndex(build_hnsw(vecs, IndexConfig()), pool_ids, threading.Lock())
    mined = mine(index, enc.encode([q for _, q in picked]), [cited[q] for q, _ in picked], n_cand, 64)
    cases = [(q, [(c, paras[c.id]) for c in cands]) for (_, q), cands in zip(picked, mined)]
    few_shot = [(q, paras[cited[qid]]) for qid, q in shots]
    return cases, few_shot


async def judge_all(base_url: str, cases, mode: str, passage_chars: int):
    from gecko_factory.fusion import FusionConfig, decide
    from gecko_factory.judge import judge
    from gecko_factory.llm.client import LLMClient
    from gecko_factory.llm.settings import LLMSettings

    client = LLMClient(LLMSettings(_env_file=None), base_url)
    t0 = time.perf_counter()
    picks = []
    for query, cands in cases:
        judged = await judge(client, query, cands, mode, passage_chars)  # type: ignore[arg-type]
        pick = decide(judged, FusionConfig(), None, None)  # Gecko's RRF: how the forms agree
        picks.append((pick.positive.id, pick.negative.id))
    seconds = time.perf_counter() - t0
    await client.aclose()
    return picks, seconds, client.usage


async def prefix_timing(base_url: str, prompts: list[str]) -> float:
    """Mean seconds per prompt-log-prob call, prompts sent one after another."""
    from gecko_factory.llm.client import LLMClient
    from gecko_factory.llm.settings import LLMSettings

    client = LLMClient(LLMSettings(_env_file=None), base_url)
    await client.prompt_logprobs(prompts[0])  # the first call has nothing to reuse in either case
    t0 = time.perf_counter()
    for p in prompts[1:]:
        await client.prompt_logprobs(p)
    seconds = (time.perf_counter() - t0) / max(1, len(prompts) - 1)
    await client.aclose()
    return seconds


def prompts_for_prefix(cases, few_shot, passage_chars: int, n: int) -> tuple[list[str], list[str]]:
    from gecko_factory.judge import judge_passage, one_pass_prompt

    block = "".join(one_pass_prompt(judge_passage(p, passage_chars), q)[1] + "\n\n"
                    for q, p in few_shot)
    plain = [one_pass_prompt(judge_passage(p, passage_chars), q)[1]
             for q, cands in cases for _, p in cands][:n]
    return plain, [block + x for x in plain]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/scifact.zip")
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--prefix-calls", type=int, default=6, help="prompts per prefix-cache timing")
    ap.add_argument("--passage-chars", type=int, default=1200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    command = (f"python bench/judge_cost.py --queries {args.queries} --candidates {args.candidates} "
               f"--prefix-calls {args.prefix_calls}")
    title = "Judge cost: one-pass vs Gecko's two-prompt form (embedded Qwen2.5-0.5B)"
    goal = "same positive >= 0.95"
    skip = None
    if not args.zip.is_file():
        skip = f"SciFact zip not found at {args.zip}"
    else:
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            skip = "llama-cpp-python is not installed (make setup)"
    if skip:
        print(f"{skip}: skipping", file=sys.stderr)
        write_result(BenchResult("judge_cost", title, command, None, goal, None, notes=f"skipped: {skip}"),
                     args.json)
        return

    from gecko_factory.llm.embedded import EmbeddedServer
    from gecko_factory.llm.settings import LLMSettings

    cases, few_shot = build_cases(args.zip, args.queries, args.candidates)
    plain, shared = prompts_for_prefix(cases, few_shot, args.passage_chars, args.prefix_calls)
    settings = LLMSettings(_env_file=None)
    res = {}
    with EmbeddedServer(settings) as srv:
        for mode in ("one_pass", "two_prompt"):
            picks, secs, usage = asyncio.run(judge_all(srv.base_url, cases, mode, args.passage_chars))
            res[mode] = {"picks": picks, "seconds": secs, **usage.as_dict()}
            print(f"{mode}: {secs:.1f} s, {usage.calls} calls, {usage.prompt_tokens} prompt tokens")
        on = {"plain": asyncio.run(prefix_timing(srv.base_url, plain)),
              "few_shot_first": asyncio.run(prefix_timing(srv.base_url, shared))}
    with EmbeddedServer(settings, prefix_chunk=0) as srv:
        off = {"plain": asyncio.run(prefix_timing(srv.base_url, plain)),
               "few_shot_first": asyncio.run(prefix_timing(srv.base_url, shared))}
    print(f"prefix cache on {on}, off {off}")

    n = len(cases)
    a, b = res["one_pass"], res["two_prompt"]
    same_pos = sum(x[0] == y[0] for x, y in zip(a["picks"], b["picks"])) / n
    same_neg = sum(x[1] == y[1] for x, y in zip(a["picks"], b["picks"])) / n
    ratio = (b["seconds"] / n) / (a["seconds"] / n)
    rows = "".join(
        f"| {label} | {1 + r['calls'] / n:.0f} (1 + {r['calls'] / n:.0f}) | {r['prompt_tokens'] / n:,.0f} | "
        f"{r['seconds'] / n:.1f} s |\n" for label, r in (("two-prompt (Gecko)", b), ("one-pass (ours)", a)))
    md = (
        f"{n} SciFact train claims × {args.candidates} mined candidates (cited abstract included), "
        f"passages cut to {args.passage_chars} chars; one embedded server, requests one at a time.\n\n"
        "| form | LLM calls per example (synthesis + judge) | judge prompt tokens per example | "
        "judge seconds per example |\n|---|---:|---:|---:|\n" + rows +
        f"\nSame positive: **{same_pos:.0%}**, same negative: {same_neg:.0%} ({n} examples). "
        f"Cost ratio two-prompt / one-pass (seconds): **{ratio:.2f}**.\n\n"
        "| prompt layout (one-pass scoring call) | prefix cache on | off | on / off |\n|---|---:|---:|---:|\n"
        + "".join(f"| {lbl} | {on[k]:.2f} s | {off[k]:.2f} s | {on[k] / off[k]:.2f} |\n"
                  for lbl, k in (("passage, query, question (judge_v1)", "plain"),
                                 ("shared two-example few-shot block first", "few_shot_first")))
    )
    notes = (f"Small on purpose (a 0.5B model at 1.6-4.5 s a pass on 2 cores): {n} examples give a coarse "
             "agreement estimate; seconds are noisy on a shared machine, calls and tokens are exact. "
             "The one-pass prompt is the QL prompt plus the yes/no question, so both forms compute the "
             "same QL and differ only in RC. A candidate's prompt starts with its passage, so nothing "
             "is shared across candidates for the server's prefix cache (128-token chunks) to reuse; "
             "a shared block (few-shot examples) laid out first is what it can reuse.")
    write_result(BenchResult(
        "judge_cost", title, command, round(ratio, 3), goal, same_pos >= 0.95,
        {"examples": n, "candidates": args.candidates, "one_pass": a, "two_prompt": b,
         "same_positive": same_pos, "same_negative": same_neg,
         "prefix_cache_on_s": on, "prefix_cache_off_s": off}, md, notes), args.json)


if __name__ == "__main__":
    main()
