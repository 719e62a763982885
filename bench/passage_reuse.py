"""How much of the judge's work a passage-KV store could skip in a dense run: measured on a real run's candidates.

Issue 15's remaining cost is the passage, computed for every (query, candidate) pair. The QL
prompt starts with it ("Passage: {passage}\\n", then the query), so its KV is the same whenever the
same passage is judged again, for another seed's query. The head store (server_row_eval.HeadStore)
could keep it as it keeps the RC chat's query head; this bench measures whether that would pay,
without building it: it replays a finished run's judge calls (its shards' candidates, in the
order the run judged them) through a byte-bounded LRU of passage heads and counts the prompt
tokens a hit would not compute, against all the tokens the two-prompt judge sends.

Orders: as the run judged them (shard by shard), and a candidate chain (each next seed the unjudged
one sharing most candidates with the last: what a planner that groups seeds by neighbourhood
could reach). The store sizes are the head store's 64 MB and larger; a head's bytes are its tokens
times the judge's KV per token (27.5 KiB for the 1.5B: 28 layers x K and V x 256 x f16, which
matches the ~1.1 MB measured for a 40-token RC head).

    python bench/passage_reuse.py [--run experiments/scifact] [--json out.json]

Tokens are the judge GGUF's own (llama.cpp, vocabulary only). RC chat tokens are counted as the
rendered messages plus the chat template's 12 framing tokens (Qwen2.5: <|im_start|>, roles,
<|im_end|>, newlines). No LLM call: seconds.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, BenchResult, machine, write_result

KV_BYTES_PER_TOKEN = 28 * 2 * 256 * 2  # Qwen2.5-1.5B: layers x (K, V) x kv width x f16
CHAT_FRAMING_TOKENS = 12
STORE_MB = (64, 256, 1024)


def judge_calls(run: Path) -> list[tuple[str, list[str]]]:
    """(query, candidate ids) per seed, in the order the run judged them."""
    import pyarrow.parquet as pq

    out = []
    for shard in sorted((run / "shards").glob("part-*.parquet")):
        for row in pq.read_table(shard, columns=["query", "candidates"]).to_pylist():
            out.append((row["query"], [c["id"] for c in row["candidates"]]))
    return out


def candidate_chain(seeds: list[tuple[str, list[str]]]) -> list[int]:
    """Greedy: after each seed, the unjudged seed sharing most candidates with it."""
    holders: dict[str, list[int]] = {}
    for i, (_, cands) in enumerate(seeds):
        for c in cands:
            holders.setdefault(c, []).append(i)
    done, order, nxt_plain = [False] * len(seeds), [], 0
    cur = 0
    while True:
        done[cur] = True
        order.append(cur)
        shared: dict[int, int] = {}
        for c in seeds[cur][1]:
            for j in holders[c]:
                if not done[j]:
                    shared[j] = shared.get(j, 0) + 1
        if shared:
            cur = max(shared, key=lambda j: (shared[j], -j))
            continue
        while nxt_plain < len(seeds) and done[nxt_plain]:
            nxt_plain += 1
        if nxt_plain == len(seeds):
            return order
        cur = nxt_plain


def replay(order: list[int], seeds, head_tokens: dict[str, int], max_bytes: int) -> tuple[int, int]:
    """(hits, passage tokens not computed) of an LRU of passage heads bounded by bytes."""
    store: OrderedDict[str, int] = OrderedDict()
    used = hits = saved = 0
    for i in order:
        for c in seeds[i][1]:
            if c in store:
                store.move_to_end(c)
                hits, saved = hits + 1, saved + head_tokens[c]
                continue
            size = head_tokens[c] * KV_BYTES_PER_TOKEN
            store[c], used = size, used + size
            while used > max_bytes:
                used -= store.popitem(last=False)[1]
    return hits, saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(REPO / "experiments" / "scifact"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import llama_cpp

    from gecko_factory.corpus_store import open_corpus
    from gecko_factory.judge import judge_passage, ql_prompt, relevance_messages
    from gecko_factory.llm.model_files import ensure_model
    from gecko_factory.llm.settings import EMBEDDED_JUDGE_MODEL
    from gecko_factory.manifest import read_manifest

    run = Path(args.run)
    passage_chars = read_manifest(run).config["judge_passage_chars"]
    seeds = judge_calls(run)
    corpus = open_corpus(run)
    vocab = llama_cpp.Llama(str(ensure_model(EMBEDDED_JUDGE_MODEL)), vocab_only=True, verbose=False)

    def n_tokens(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=False, special=False))

    passages = {c: judge_passage(corpus[c], passage_chars) for _, cs in seeds for c in cs}
    head_tokens = {c: n_tokens(ql_prompt(p, "\x00").split("\x00")[0]) for c, p in passages.items()}
    sent = 0
    for query, cands in seeds:
        for c in cands:
            rc = sum(n_tokens(m["content"]) for m in relevance_messages(query, passages[c]))
            sent += n_tokens(ql_prompt(passages[c], query)) + rc + CHAT_FRAMING_TOKENS
    calls = sum(len(cs) for _, cs in seeds)
    orders = {"as run": list(range(len(seeds))), "candidate chain": candidate_chain(seeds)}
    rows = []
    for name, order in orders.items():
        for mb in STORE_MB:
            hits, saved = replay(order, seeds, head_tokens, mb * 2**20)
            rows.append({"order": name, "store_mb": mb, "hit_rate": hits / calls,
                         "saved_share": saved / sent, "judge_speedup_bound": sent / (sent - saved)})
    # a store that never forgets computes each passage's head once
    ideal_saved = sum(head_tokens[c] for _, cs in seeds for c in cs) - sum(head_tokens.values())
    lines = [f"{run.name}: {len(seeds)} seeds, {calls} QL calls over {len(passages)} distinct "
             f"passages; the two-prompt judge sends {sent:,} prompt tokens; a store that never "
             f"forgot would skip {ideal_saved / sent:.1%} of them.", "",
             "| order | store MB | QL calls hitting | judge prompt tokens skipped | judge speed-up bound |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['order']} | {r['store_mb']} | {r['hit_rate']:.1%} | {r['saved_share']:.1%} "
              f"| {r['judge_speedup_bound']:.2f}x |" for r in rows]
    best = max(rows, key=lambda r: r["judge_speedup_bound"])
    write_result(BenchResult(
        name="passage_reuse",
        title="Passage-KV reuse a dense run offers the QL prompt (replayed, not built)",
        command=f"python bench/passage_reuse.py --run {args.run}",
        ratio=best["judge_speedup_bound"],
        goal="informative: an upper bound on the judge's speed-up (prefill time proportional to tokens)",
        met=None, figures={"machine": machine(), "seeds": len(seeds), "calls": calls,
                           "distinct_passages": len(passages), "sent_tokens": sent,
                           "ideal_saved_share": ideal_saved / sent, "rows": rows},
        markdown="\n".join(lines),
        notes="The bound treats a skipped token as skipped time; restoring a head costs a copy."),
        args.json)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
