"""Seeds per hour on the embedded default, against the models' own token rates on this machine.

The limit: on our llama.cpp server (both embedded models: the 0.5B writes, the 1.5B judges), one
request at a time, each model's own prefill rate (three ~400-token prompts, no prefix reused, on
the generation context: logits for the last position only) and decode rate (greedy generation,
prefill subtracted), read from the server's own profile (`GET /stats`); also the prefill rate of
the scoring context, which keeps every position's logits for prompt log-probs (the judge's QL).
The factory: `gecko-factory run` on the bundled sample (K seeds, N candidates, two shards, no
request cache, greedy writing so that every form judges the same queries) pointed at a fresh
embedded server, with the embedded default's client settings (EMBEDDED_CONCURRENCY calls in
flight; --concurrency to compare). Its LLM phase
is the server's window from the first call in to the last answer out. The time the same tokens need at the limit rates,

    ideal = sum over models (prompt tokens / prefill rate + generated tokens / decode rate),

set against that window is the fraction of the machine the factory gets (> 1 is possible: the
prefix cache computes fewer tokens than are sent). Per judge form; the ratio is the default
(two-prompt) form's fraction of the limit.

    python bench/embedded.py [--seeds 4] [--candidates 5] [--forms two_prompt,shared_prefix,one_pass] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import REPO, BenchResult, write_result
from bench.cpu_share import CpuShare
from gecko_factory.llm.settings import EMBEDDED_CONCURRENCY

# Distinct prompts per model (no prefix is reused between them), after one unmeasured warm-up
# call per context: with 3 and no warm-up the 1.5B's prefill limit read 99 to 115 tok/s on one VM
# on one day; 10 one-at-a-time judge calls read 99-103.
LIMIT_PROMPTS = 8
DECODE_TOKENS = 64


def _http(url: str, body: dict | None = None, timeout: float = 900) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Server:
    """The embedded server as a default run starts it (the writer and the judge behind one port:
    `EmbeddedServer`, which also ends it with this process), read through its profile."""

    def __init__(self, threads: int):
        from gecko_factory.llm.embedded import EmbeddedServer
        from gecko_factory.llm.settings import EMBEDDED_JUDGE_MODEL, LLMSettings

        settings = LLMSettings(_env_file=None, judge_model=EMBEDDED_JUDGE_MODEL, embedded_threads=threads)
        self.writer, self.judge = settings.embedded_model, EMBEDDED_JUDGE_MODEL
        self._embedded = EmbeddedServer(settings)

    def __enter__(self) -> "Server":
        self._embedded.start()
        self.url = self._embedded.base_url.removesuffix("/v1")
        return self

    def __exit__(self, *exc) -> None:
        self._embedded.stop()

    def stats(self) -> dict:
        return _http(self.url + "/stats")

    @property
    def pid(self) -> int:
        return self._embedded.pid


def _delta(server: Server, model: str, context: str, before: dict) -> dict:
    after = server.stats()[model][context]
    return {k: after[k] - before[k] for k in ("computed_tokens", "prompt_tokens", "generated_tokens", "busy_s")}


def measure_limits(server: Server, passages: list[str]) -> dict[str, dict[str, float]]:
    """Each model's own prefill and decode tokens/s, one request at a time, and the prefill rate
    of the scoring context (which keeps every position's logits, as prompt log-probs need)."""
    limits = {}
    warm, passages = passages[-1][:200], passages[:-1]  # the warm-up prompt is not measured
    for model in (server.writer, server.judge):
        _http(server.url + "/v1/chat/completions", {"model": model, "temperature": 0, "max_tokens": 1,
                                                    "messages": [{"role": "user", "content": warm}]})
        _http(server.url + "/v1/completions", {"model": model, "prompt": warm, "max_tokens": 0})
        before = server.stats()[model]["gen"]
        for text in passages:  # distinct prompts: no prefix reused
            _http(server.url + "/v1/chat/completions", {"model": model, "temperature": 0, "max_tokens": 1,
                                                        "messages": [{"role": "user", "content": text}]})
        d = _delta(server, model, "gen", before)
        prefill = d["computed_tokens"] / d["busy_s"]
        before = server.stats()[model]["score"]
        for text in passages:
            _http(server.url + "/v1/completions", {"model": model, "prompt": text, "max_tokens": 0,
                                                   "temperature": 0})
        d = _delta(server, model, "score", before)
        scoring = d["computed_tokens"] / d["busy_s"]
        before = server.stats()[model]["gen"]
        _http(server.url + "/v1/chat/completions", {
            "model": model, "temperature": 0, "max_tokens": DECODE_TOKENS, "messages": [
                {"role": "user", "content": "List the English names of the numbers from one to two "
                                            "hundred, one per line, and nothing else."}]})
        d = _delta(server, model, "gen", before)
        decode_s = d["busy_s"] - d["prompt_tokens"] / prefill
        limits[model] = {"prefill_tok_s": prefill, "scoring_prefill_tok_s": scoring,
                         "decode_tok_s": d["generated_tokens"] / decode_s}
    return limits


def run_factory(server: Server, out: Path, seeds: int, candidates: int, form: str,
                log_path: Path, concurrency: int) -> dict:
    env = {**os.environ, "OPENAI_BASE_URL": server.url + "/v1", "OPENAI_API_KEY": "none",
           "GECKO_LLM_MODEL": server.writer, "GECKO_LLM_JUDGE_MODEL": server.judge,
           # the embedded default's client: its calls in flight, its long timeout (with more in
           # flight a call waits behind the others' whole prompts)
           "GECKO_LLM_CONCURRENCY": str(concurrency), "GECKO_LLM_TIMEOUT_S": "1800",
           # ... and its extensions, which a client sends unasked only where it starts the server
           # itself (until 2026-12-05 this bench left them out: its QL computed every row's
           # logits and its RC every head, as no embedded run does). Set to false to compare.
           "GECKO_LLM_PROMPT_LOGPROBS_FROM": os.environ.get("GECKO_LLM_PROMPT_LOGPROBS_FROM", "true"),
           "GECKO_LLM_PREFIX_BREAK": os.environ.get("GECKO_LLM_PREFIX_BREAK", "true")}
    cmd = [str(Path(sys.executable).with_name("gecko-factory")), "run", "--corpus", "sample",
           "--out", str(out), "--limit", str(seeds), "--candidates", str(candidates),
           "--shard-size", str(max(1, seeds // 2)), "--judge-mode", form, "--no-cache",
           # greedy writing, so every server variant judges the same queries (sampled ones differ
           # from run to run, and so do the skips and the calls they cost)
           "--synth-temperature", "0"]
    with log_path.open("w+") as log:
        run = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
        # the run's own process (client, Prefect's engine) apart from its children (Prefect's
        # API server, the orphan reaper)
        try:
            with CpuShare({"server": (server.pid, "tree"), "run": (run.pid, "self"),
                           "run_children": (run.pid, "children")}) as cpu:
                code = run.wait(timeout=3600)
        except BaseException:  # a timeout or Ctrl-C: the run ends with the benchmark
            run.terminate()
            run.wait(timeout=60)
            raise
        if code != 0:
            log.seek(0)
            raise RuntimeError(f"run failed ({code}):\n{log.read()[-6000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"stats": server.stats(), "examples": manifest["counts"]["examples"], "cpu": cpu}


def _ideal(s: dict, limit: dict) -> float:
    """Seconds a context's tokens need at its model's measured rates."""
    return s["prompt_tokens"] / limit["prefill_tok_s"] + s["generated_tokens"] / limit["decode_tok_s"]


def summarise(stats: dict, limits: dict, cpu: CpuShare) -> dict:
    contexts = [(m, c, s) for m, per in stats.items() for c, s in per.items() if s["calls"]]
    start, end = min(s["first_start"] for *_, s in contexts), max(s["last_end"] for *_, s in contexts)
    window = end - start
    per_context = {f"{m}/{c}": {"calls": s["calls"], "busy_s": round(s["busy_s"], 2),
                                "ideal_s": round(_ideal(s, limits[m]), 2),
                                "prompt_tokens": s["prompt_tokens"], "generated_tokens": s["generated_tokens"],
                                # grammar-last sampling's second draws (grammar_last.py)
                                "constrained_tokens": s.get("constrained_tokens", 0),
                                "grammar_resampled": s.get("grammar_resampled", 0)}
                   for m, c, s in contexts}  # where the time beyond the limit goes
    ideal = sum(_ideal(s, limits[m]) for m, _, s in contexts)
    return {"llm_s": window, "busy_s": sum(s["busy_s"] for *_, s in contexts), "ideal_s": ideal,
            "contexts": per_context,
            "calls": sum(s["calls"] for *_, s in contexts),
            "prompt_tokens": sum(s["prompt_tokens"] for *_, s in contexts),
            "computed_tokens": sum(s["computed_tokens"] for *_, s in contexts),
            "generated_tokens": sum(s["generated_tokens"] for *_, s in contexts),
            "fraction_of_limit": ideal / window,
            # core-seconds of the LLM phase per process tree: what takes the cores from llama.cpp
            "cpu_s": cpu.between(start, end),
            # stretches in which the server waited for work: (seconds into the phase, length)
            "server_quiet": [(round(t - start, 2), d) for t, d in cpu.quiet("server", start, end)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--forms", default="two_prompt,shared_prefix,one_pass")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--concurrency", type=int, default=EMBEDDED_CONCURRENCY,
                    help=f"calls in flight (the embedded default's client: {EMBEDDED_CONCURRENCY})")
    ap.add_argument("--json", default=None)
    ap.add_argument("--logs", default=None, help="keep each run's output here (run-FORM.log)")
    args = ap.parse_args()
    from gecko_factory.corpus import CorpusSpec, load_corpus
    from gecko_factory.orphan_reaper import start_reaper

    start_reaper()  # the servers and runs started here end with this process, kill -9 included

    paragraphs = [p.text for p in load_corpus(CorpusSpec(path="sample")).paragraphs if len(p.text) > 1500]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gecko-bench-embedded-") as tmp:
        with Server(args.threads) as server:  # its own server: its calls are not a run's
            limits = measure_limits(server, paragraphs[:LIMIT_PROMPTS + 1])
        print(json.dumps({"limits": limits}), flush=True)
        for form in args.forms.split(","):
            with Server(args.threads) as server:  # fresh: /stats counts this run alone
                got = run_factory(server, Path(tmp) / f"run-{form}", args.seeds, args.candidates, form,
                                  Path(args.logs or tmp) / f"run-{form}.log", args.concurrency)
            row = {"form": form, "seeds": args.seeds, "examples": got["examples"],
                   **summarise(got["stats"], limits, got["cpu"])}
            row["seeds_per_hour"] = args.seeds / row["llm_s"] * 3600
            rows.append(row)
            print(json.dumps(row), flush=True)
    default = next((r for r in rows if r["form"] == "two_prompt"), None)
    ratio = default["fraction_of_limit"] if default else None
    lines = ["| judge form | seeds | LLM phase s | ideal s | fraction of the limit | "
             "seeds/hour | calls | prompt tokens (computed) | generated |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['form']} | {r['seeds']} | {r['llm_s']:.1f} | {r['ideal_s']:.1f} | "
                     f"{r['fraction_of_limit']:.2f} | {r['seeds_per_hour']:.0f} | {r['calls']} | "
                     f"{r['prompt_tokens']:,} ({r['computed_tokens']:,}) | {r['generated_tokens']} |")
    lines.append("")
    lines += [f"{r['form']}, per context (calls: busy s against ideal s): " + "; ".join(
        f"{name} ({c['calls']}: {c['busy_s']:.1f} / {c['ideal_s']:.1f})" for name, c in r["contexts"].items())
        for r in rows]
    lines += [f"{r['form']}, CPU in the LLM phase ({os.cpu_count()} cores x {r['llm_s']:.1f} s, core-seconds): "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_s"].items()) for r in rows]
    lim = "; ".join(f"{m}: prefill {v['prefill_tok_s']:.0f} tok/s (scoring context "
                    f"{v['scoring_prefill_tok_s']:.0f}), decode {v['decode_tok_s']:.1f} tok/s"
                    for m, v in limits.items())
    write_result(BenchResult(
        name="embedded", title="Embedded default: seeds/hour against the models' own token rates",
        command=" ".join(["python bench/embedded.py", *sys.argv[1:]]),
        ratio=ratio, goal="fraction of the limit >= 0.85 (two_prompt, the default)",
        met=None if default is None else default["fraction_of_limit"] >= 0.85,
        figures={"limits": limits, "rows": rows},
        markdown="\n".join(lines) + f"\n\nLimits, measured in the same run on a server of the same "
                 f"build: {lim}. Ratio: the two-prompt form's fraction of the limit.",
    ), args.json)


if __name__ == "__main__":
    main()
