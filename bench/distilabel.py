"""Synthesis throughput: our synthesis step vs a distilabel pipeline making the same chat calls.

Both send FRet's synthesis request for each paragraph (the same system + user messages from
`synthesize_v1`, temperature, max tokens and JSON-schema response format) to the same scripted
OpenAI-compatible server (its own process, injected latency) at the same concurrency.
- ours: `gecko_factory.synthesize.synthesize` with an `LLMClient` (cache off), which also
  parses and validates every answer;
- distilabel: `LoadDataFromDicts >> TextGeneration(llm=OpenAILLM(base_url=…))` with
  `input_batch_size` = the concurrency (distilabel sends one batch's calls at once), timed over
  `pipeline.run()` — its step processes and batch bookkeeping are what a user of it pays.
distilabel's pins (datasets, pydantic, …) are kept out of the project's environment: it is
installed into bench/out/venv-distilabel (git-ignored) by this script on first use and run
there in a subprocess. The distilabel side cannot vary the seed per row (its generation
kwargs are per step), so its requests carry no seed; nothing else differs.

    python bench/distilabel.py [--paragraphs 2000] [--latency-ms 50] [--concurrency 64] [--json out.json]
    python bench/distilabel.py --install-only   # the venv alone (minutes, once): before timed runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / "out" / "venv-distilabel"
PIN = "distilabel[openai]==1.5.3"
EXTRA = ["requests"]  # distilabel 1.5.3 imports it (models/image_generation) without declaring it

# Runs in distilabel's venv: argv[1] = the job (JSON), argv[2] = where to write the result.
WORKER = r'''
import json, sys, time
job = json.load(open(sys.argv[1]))
from distilabel.models.llms import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import TextGeneration

with Pipeline(name="gecko-synthesis-bench", cache_dir=job["cache_dir"]) as pipeline:
    load = LoadDataFromDicts(data=job["rows"], batch_size=job["concurrency"])
    generate = TextGeneration(
        llm=OpenAILLM(model="scripted", base_url=job["base_url"], api_key="unused", max_retries=0,
                      generation_kwargs=job["generation_kwargs"]),
        input_batch_size=job["concurrency"], template="{{ instruction }}")
    load >> generate
t0 = time.perf_counter()
distiset = pipeline.run(use_cache=False)
seconds = time.perf_counter() - t0
rows = distiset["default"]["train"]
json.dump({"seconds": seconds, "rows": len(rows),
           "generated": sum(1 for r in rows if r["generation"]),
           "first": rows[0]["generation"]}, open(sys.argv[2], "w"))
'''


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        print(f"installing {PIN} into {VENV} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)  # from the base Python
        subprocess.run([str(python), "-m", "pip", "install", "-q", PIN, *EXTRA], check=True)
        (VENV / ".installed").write_text(PIN)
    return python


def paragraphs(n: int):
    sys.path.insert(0, str(HERE))
    import common  # noqa: F401 - the repo on sys.path
    from gecko_factory.corpus import Paragraph, sample_corpus_path

    data = list(json.loads(sample_corpus_path().read_text()).values())
    step = max(1, len(data) // n)
    return [Paragraph(f"p{i}", e["title"], e["extract"]) for i, e in enumerate(data[::step][:n])]


async def run_ours(base_url: str, paras, cfg, concurrency: int) -> tuple[float, int]:
    from gecko_factory.llm.client import LLMClient
    from gecko_factory.llm.settings import LLMSettings
    from gecko_factory.synthesize import synthesize

    client = LLMClient(LLMSettings(_env_file=None, model="scripted", concurrency=concurrency), base_url)
    t0 = time.perf_counter()
    result = await synthesize(client, paras, cfg)
    seconds = time.perf_counter() - t0
    await client.aclose()
    return seconds, len(result.examples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paragraphs", type=int, default=2000)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--json", help="write the BenchResult here")
    ap.add_argument("--install-only", action="store_true", help="set up distilabel's venv and stop")
    args = ap.parse_args()

    python = ensure_venv()
    if args.install_only:
        return
    paras = paragraphs(args.paragraphs)
    from common import BenchResult, machine, write_result

    from gecko_factory.config import FretConfig
    from gecko_factory.synthesize import OUTPUT_SCHEMA, build_messages, pick_task_type
    from gecko_factory.testing.launch import ScriptedServer

    cfg = FretConfig(llm_model="scripted")
    rows = []
    for p in paras:
        system, user = build_messages(pick_task_type(p.id, cfg.seed, cfg.task_types), p.text)
        rows.append({"system_prompt": system["content"], "instruction": user["content"]})
    # Its `response_format` argument takes a flat dict only: the json_schema one goes via
    # extra_body, which the openai client merges into the same request body.
    gen_kwargs = {"temperature": cfg.synth_temperature, "max_new_tokens": cfg.synth_max_tokens,
                  "extra_body": {"response_format": {"type": "json_schema", "json_schema": {
                      "name": "output", "schema": OUTPUT_SCHEMA, "strict": True}}}}

    with ScriptedServer(latency_ms=args.latency_ms) as srv, tempfile.TemporaryDirectory() as tmp:
        n0 = srv.calls()
        ours_s, ours_ok = asyncio.run(run_ours(srv.base_url, paras, cfg, args.concurrency))
        ours_calls = srv.calls() - n0
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"rows": rows, "base_url": srv.base_url, "concurrency": args.concurrency,
                                   "generation_kwargs": gen_kwargs, "cache_dir": str(Path(tmp) / "cache")}))
        n0 = srv.calls()
        t0 = time.perf_counter()
        subprocess.run([str(python), "-c", WORKER, str(job), str(Path(tmp) / "out.json")], check=True,
                       cwd=tmp)  # not bench/: this file's name would shadow the package
        dl_total = time.perf_counter() - t0
        dl_calls = srv.calls() - n0
        dl = json.loads((Path(tmp) / "out.json").read_text())
    if dl["generated"] != len(paras) or dl_calls < len(paras):
        raise SystemExit(f"distilabel generated {dl['generated']} of {len(paras)} answers with "
                         f"{dl_calls} calls: its failed batches are in the log above")
    ours_rate, dl_rate = ours_calls / ours_s, dl_calls / dl["seconds"]
    ratio = ours_rate / dl_rate
    print(f"ours       : {ours_calls:,} calls in {ours_s:.1f}s = {ours_rate:,.0f} calls/s ({ours_ok} examples)")
    print(f"distilabel : {dl_calls:,} calls in {dl['seconds']:.1f}s = {dl_rate:,.0f} calls/s "
          f"({dl['generated']} generations; {dl_total:.1f}s with its start-up)")
    print(f"ratio ours/distilabel = {ratio:.2f}  (goal >= 2)")
    ideal = args.paragraphs * args.latency_ms / 1000 / args.concurrency
    table = "\n".join([
        "| | calls | seconds | calls/s |", "|---|---:|---:|---:|",
        f"| ours: `synthesize` + `LLMClient` | {ours_calls:,} | {ours_s:.1f} | {ours_rate:,.0f} |",
        f"| distilabel {PIN.split('==')[1]}: `TextGeneration` + `OpenAILLM` | {dl_calls:,} | {dl['seconds']:.1f} | {dl_rate:,.0f} |",
        f"\nratio ours/distilabel = **{ratio:.2f}** (goal ≥ 2); latency-bound ideal {ideal:.1f} s; "
        f"distilabel's process with its start-up took {dl_total:.1f} s.",
    ])
    write_result(BenchResult(
        name="distilabel", title="Synthesis: ours vs a distilabel pipeline, same calls, same server",
        command=f"python bench/distilabel.py --paragraphs {args.paragraphs} --latency-ms {args.latency_ms:g} "
                f"--concurrency {args.concurrency}",
        ratio=round(ratio, 3), goal=">= 2x", met=ratio >= 2,
        figures={"machine": machine(), "paragraphs": args.paragraphs, "latency_ms": args.latency_ms,
                 "concurrency": args.concurrency, "ideal_seconds": round(ideal, 2),
                 "ours": {"calls": ours_calls, "seconds": round(ours_s, 2), "calls_per_s": round(ours_rate, 1),
                          "examples": ours_ok},
                 "distilabel": {"version": PIN, "calls": dl_calls, "seconds": round(dl["seconds"], 2),
                                "calls_per_s": round(dl_rate, 1), "generations": dl["generated"],
                                "seconds_with_startup": round(dl_total, 2)}},
        markdown=table,
        notes="distilabel runs in its own venv (bench/out/venv-distilabel); its time is pipeline.run()",
    ), args.json)


if __name__ == "__main__":
    main()
