"""The judge's weights in another GGUF format: is the scoring context faster, and is it the same judge?

Issue 15 asks for 2x the embedded default's seeds per hour, and the judge's prefill is most of
the time. A format whose matmul kernel this CPU runs faster (BF16 on AVX512_BF16, Q4_0 with
llama.cpp's repacked kernels, Q8_0 with VNNI) would be a free speed-up only if the judge's scores
stay as the audit measured them: so this bench derives each format from the audited Q4_K_M file
(`llama_model_quantize`, requantizing), scores the same (query, passage) pairs with each through
the embedded server's own scoring path (server_engine.Engine: QL as prompt log-probs, RC as a chat
with top log-probs), and reports the scoring context's speed against the source file's, the
scores' deviation from the source file's, and how often a query's candidates keep their order.

    python bench/weight_formats.py [--formats bf16,q4_0,q8_0,q4_k_s,q4_k_pure] [--queries 10] [--json out.json]

Pairs: each of `--queries` sample paragraphs (the `make run` corpus) gets the question "What is
<its title>?" and is scored against itself and 3 other paragraphs. Not in `make bench` (about
two minutes per format on 2 cores): a format only matters where a CPU might run it faster.
"""

from __future__ import annotations

import argparse
import ctypes
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BenchResult, machine, write_result

# llama.h's llama_ftype values for the formats tried (LLAMA_FTYPE_MOSTLY_*). "q4_k_pure" is Q4_K
# for every tensor (llama-quantize --pure): Q4_K_M keeps ffn_down and attn_v of half the layers
# in Q6_K, which ggml's CPU backend cannot repack into its 8x8 GEMM layout ("cannot be used with
# preferred buffer type CPU_REPACK" at load), so those matmuls take the plain dot-product path.
FTYPES = {"q4_0": 2, "q8_0": 7, "f16": 1, "bf16": 32, "q4_k_s": 14, "q4_k_pure": 15}
PURE = {"q4_k_pure"}
OTHERS_PER_QUERY = 3


def derive(source: Path, fmt: str, folder: Path) -> Path:
    import llama_cpp

    dest = folder / f"{source.stem}.{fmt}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread, params.ftype, params.allow_requantize = 2, FTYPES[fmt], True
    params.pure = fmt in PURE
    if llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params)):
        raise RuntimeError(f"llama_model_quantize failed for {fmt}")
    return dest


def pairs(n_queries: int) -> list[tuple[int, str, str]]:
    """(query number, query, judge passage): the query's own paragraph first, then others."""
    from gecko_factory.corpus import CorpusSpec, load_corpus
    from gecko_factory.judge import judge_passage

    paras = [p for p in load_corpus(CorpusSpec(path="sample")).paragraphs if p.title]
    rng = random.Random(0)
    out = []
    for i, p in enumerate(rng.sample(paras, n_queries)):
        for other in [p, *rng.sample(paras, OTHERS_PER_QUERY)]:
            out.append((i, f"What is {p.title}?", judge_passage(other, 1200)))
    return out


class Scorer:
    """One weight file on the embedded server's scoring path (server_engine.Engine)."""

    def __init__(self, model: Path):
        from gecko_factory.llm.server_engine import CompletionRequest, Engine

        self.model = model
        self.file_mb = model.stat().st_size / 2**20
        self.engine = Engine(model, n_ctx=1024, n_threads=2, model_name=model.stem)
        self.engine.complete(CompletionRequest(prompt="warm up", max_tokens=1))  # page weights in
        self.ql: list[float] = []
        self.rc: list[float] = []
        self.busy_s, self.tokens = 0.0, 0

    def score(self, query: str, passage: str) -> None:
        """QL as prompt log-probs and RC as a chat with top log-probs, as the judge asks them."""
        from gecko_factory.judge import (RC_TOP_LOGPROBS, query_span, ql_prompt,
                                         relevance_messages, yes_logprob)
        from gecko_factory.llm.client import PromptLogprobs
        from gecko_factory.llm.server_engine import ChatRequest, CompletionRequest

        stats = self.engine.stats["score"]
        busy, tokens = stats.busy_s, stats.computed_tokens
        prompt = ql_prompt(passage, query)
        start, end = query_span(prompt, query)
        lp = self.engine.complete(CompletionRequest(
            prompt=prompt, max_tokens=1, temperature=0, echo=True, logprobs=1,
            prompt_logprobs_from=start))["choices"][0]["logprobs"]
        self.ql.append(PromptLogprobs(lp["tokens"], lp["token_logprobs"], lp["text_offset"]).span(start, end))
        chat = self.engine.chat(ChatRequest(messages=relevance_messages(query, passage), temperature=0,
                                            max_tokens=1, logprobs=True, top_logprobs=RC_TOP_LOGPROBS))
        top = chat["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        self.rc.append(yes_logprob({t["token"]: t["logprob"] for t in top}))
        self.busy_s += stats.busy_s - busy
        self.tokens += stats.computed_tokens - tokens


def orders_kept(ref: list[float], got: list[float], query_of: list[int]) -> int:
    """Queries whose candidates the two score lists put in the same order."""
    kept = 0
    for q in sorted(set(query_of)):
        idx = [i for i, x in enumerate(query_of) if x == q]
        kept += sorted(idx, key=lambda i: -ref[i]) == sorted(idx, key=lambda i: -got[i])
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", default="bf16,q4_0,q8_0")
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--model", default=None, help="a GGUF file (default: the embedded judge's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from gecko_factory.llm.model_files import ensure_model
    from gecko_factory.llm.settings import EMBEDDED_JUDGE_MODEL

    source = Path(args.model) if args.model else ensure_model(EMBEDDED_JUDGE_MODEL)
    work = pairs(args.queries)
    query_of = [q for q, _, _ in work]
    rows, figures = [], {"machine": machine(), "pairs": len(work), "source": source.name}
    with tempfile.TemporaryDirectory(prefix="gecko-formats-") as tmp:
        formats = [f for f in args.formats.split(",") if f]
        scorers = [Scorer(source)] + [Scorer(derive(source, f, Path(tmp))) for f in formats]
        # Each pair is scored by every file in turn, so that a machine whose speed drifts (a VM,
        # another job) slows all of them alike.
        for _, query, passage in work:
            for scorer in scorers:
                scorer.score(query, passage)
    ref = scorers[0]
    figures["source_tok_s"] = ref.tokens / ref.busy_s
    for fmt, got in zip(formats, scorers[1:]):
        d_ql = [abs(a - b) for a, b in zip(ref.ql, got.ql)]
        d_rc = [abs(a - b) for a, b in zip(ref.rc, got.rc)]
        row = {"format": fmt, "file_mb": round(got.file_mb),
               "tok_s": got.tokens / got.busy_s, "speed": ref.busy_s / got.busy_s,
               "ql_dev_mean": statistics.mean(d_ql), "ql_dev_max": max(d_ql),
               "rc_dev_mean": statistics.mean(d_rc), "rc_dev_max": max(d_rc),
               "ql_order_kept": orders_kept(ref.ql, got.ql, query_of),
               "rc_order_kept": orders_kept(ref.rc, got.rc, query_of)}
        rows.append(row)
    n_q = len(set(query_of))
    lines = [f"Source {source.name}: {figures['source_tok_s']:.1f} tok/s on the scoring context, "
             f"{len(work)} pairs ({n_q} queries x {1 + OTHERS_PER_QUERY} passages).", "",
             "| format | file MB | scoring tok/s | speed vs source | QL deviation mean / max (nats) "
             "| RC deviation mean / max | queries keeping QL order | keeping RC order |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['format']} | {r['file_mb']} | {r['tok_s']:.1f} | {r['speed']:.2f}x "
                     f"| {r['ql_dev_mean']:.3f} / {r['ql_dev_max']:.3f} "
                     f"| {r['rc_dev_mean']:.3f} / {r['rc_dev_max']:.3f} "
                     f"| {r['ql_order_kept']} of {n_q} | {r['rc_order_kept']} of {n_q} |")
    best = max(rows, key=lambda r: r["speed"], default=None)
    figures["formats"] = rows
    write_result(BenchResult(
        name="weight_formats",
        title="The judge's weights in other GGUF formats: scoring speed and score deviation",
        command=f"python bench/weight_formats.py --formats {args.formats} --queries {args.queries}",
        ratio=best["speed"] if best else None,
        goal="informative: a format is worth offering only if faster AND keeping every query's order",
        met=None, figures=figures, markdown="\n".join(lines),
        notes="Speed is the scoring context's busy seconds, source / format, on the same pairs."),
        args.json)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
