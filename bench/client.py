"""Client cost per LLM call: the factory's LLM layer vs raw keep-alive httpx vs `openai`.

All three send the same requests (FRet's mix: one synthesis-like chat call with a JSON schema
and a seed, then N judge-like completions calls with echo + logprobs, rendered from the real
templates over sample paragraphs) at the same concurrency to the scripted server, run at zero
latency in its own process on the same cores. The rate is then bounded by CPU: the client's
per-call cost plus the server's. Ours is `LLMClient.chat` / `LLMClient.prompt_logprobs`, the
call path shards use: retries, usage counting, and the budget check on; the request cache off
by default (`--cache` adds a run with a fresh SQLite cache, every call a miss and a write).
The server's own CPU per call is read from /proc, to show whether the server is the ceiling, and
a bare asyncio-streams keep-alive loop (no retries, no checks) shows the floor for any client.

    python bench/client.py [--calls 3000] [--concurrency 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - puts the repo on sys.path
from common import BenchResult, machine, write_result
from cpu_share import proc_cpu_s

GOAL_CALLS_S = 500.0


def build_requests(n_calls: int, candidates: int) -> list[tuple[str, dict]]:
    """(endpoint, body) pairs in FRet's order: per paragraph, 1 chat then `candidates` judges."""
    from gecko_factory.corpus import sample_corpus_path
    from gecko_factory.synthesize import OUTPUT_SCHEMA, build_messages
    from gecko_factory.judge import one_pass_prompt

    data = list(json.loads(sample_corpus_path().read_text()).values())
    out: list[tuple[str, dict]] = []
    i = 0
    while len(out) < n_calls:
        text = data[(i * 7) % len(data)]["extract"][:1500]
        out.append(("chat", {
            "model": "scripted", "messages": build_messages("question answering", text),
            "temperature": 0.7, "max_tokens": 256, "seed": i,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "output", "schema": OUTPUT_SCHEMA, "strict": True}}}))
        for c in range(candidates):
            other = data[(i * 7 + c * 13 + 1) % len(data)]["extract"][:800]
            prompt = one_pass_prompt(other, f"query {i} about {text[:40]}")[1]
            out.append(("completions", {"model": "scripted", "prompt": prompt, "max_tokens": 1,
                                        "temperature": 0.0, "echo": True, "logprobs": 1}))
        i += 1
    return out[:n_calls]


async def drive(requests, concurrency: int, send) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(kind, body):
        async with sem:
            await send(kind, body)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(k, b) for k, b in requests))
    return time.perf_counter() - t0


async def run_ours(base_url, requests, concurrency, cache_path=None) -> float:
    from gecko_factory.llm.cache import RequestCache
    from gecko_factory.llm.client import LLMClient
    from gecko_factory.llm.settings import LLMSettings

    settings = LLMSettings(_env_file=None, model="scripted", concurrency=concurrency, base_url=base_url)
    cache = RequestCache(cache_path) if cache_path else None
    client = LLMClient(settings, base_url, cache=cache)

    async def send(kind, body):
        if kind == "chat":
            rf = body["response_format"]["json_schema"]["schema"]
            await client.chat(body["messages"], temperature=body["temperature"],
                              max_tokens=body["max_tokens"], seed=body["seed"], json_schema=rf)
        else:
            await client.prompt_logprobs(body["prompt"])

    try:
        # Our client holds its own per-endpoint limit; the outer one only mirrors the others.
        return await drive(requests, concurrency, send)
    finally:
        await client.aclose()
        if cache is not None:
            cache.close()


async def run_httpx(base_url, requests, concurrency) -> float:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        async def send(kind, body):
            r = await client.post(f"/{'chat/completions' if kind == 'chat' else 'completions'}", json=body)
            r.raise_for_status()
            r.json()

        return await drive(requests, concurrency, send)


async def run_streams(base_url, requests, concurrency) -> float:
    """The floor: HTTP/1.1 keep-alive over bare asyncio streams, json.loads, nothing else."""
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    idle: list = []

    async def send(kind, body):
        data = json.dumps(body).encode()
        path = url.path + ("/chat/completions" if kind == "chat" else "/completions")
        head = (f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        reader, writer = idle.pop() if idle else await asyncio.open_connection(url.hostname, url.port)
        writer.write(head + data)
        lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        length = next(int(v) for n, _, v in (x.partition(b":") for x in lines) if n.lower() == b"content-length")
        json.loads(await reader.readexactly(length))
        idle.append((reader, writer))

    seconds = await drive(requests, concurrency, send)
    for _, writer in idle:
        writer.close()
    return seconds


async def run_openai(base_url, requests, concurrency) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)

    async def send(kind, body):
        if kind == "chat":
            await client.chat.completions.create(**body)
        else:
            await client.completions.create(**body)

    try:
        return await drive(requests, concurrency, send)
    finally:
        await client.close()


def measure(name, runner, srv, requests, concurrency, **kw) -> dict:
    asyncio.run(runner(srv.base_url, requests[:200], concurrency))  # warm-up: imports, connections
    s0, c0, n0 = proc_cpu_s(srv._proc.pid, reaped_children=False), time.process_time(), srv.calls()
    seconds = asyncio.run(runner(srv.base_url, requests, concurrency, **kw))
    server_cpu, client_cpu, calls = proc_cpu_s(srv._proc.pid, reaped_children=False) - s0, time.process_time() - c0, srv.calls() - n0
    row = {"calls": calls, "seconds": round(seconds, 2), "calls_per_s": round(calls / seconds, 1),
           "client_cpu_ms_per_call": round(1000 * client_cpu / calls, 3),
           "server_cpu_ms_per_call": round(1000 * server_cpu / calls, 3)}
    print(f"{name:28s} {calls:6d} calls in {seconds:6.2f}s = {row['calls_per_s']:7.1f} calls/s  "
          f"(client {row['client_cpu_ms_per_call']:.3f} ms CPU/call, server "
          f"{row['server_cpu_ms_per_call']:.3f})", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000)  # ~1 min: httpx and openai take ~25 s each
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=20, help="judge calls per synthesis call")
    ap.add_argument("--cache", action="store_true", help="also time ours with a fresh request cache")
    ap.add_argument("--json", help="write the BenchResult here")
    args = ap.parse_args()

    from gecko_factory.testing.launch import ScriptedServer

    requests = build_requests(args.calls, args.candidates)
    rows: dict[str, dict] = {}
    with ScriptedServer(latency_ms=0) as srv:
        rows["ours"] = measure("ours (LLMClient, cache off)", run_ours, srv, requests, args.concurrency)
        rows["httpx"] = measure("raw httpx.AsyncClient", run_httpx, srv, requests, args.concurrency)
        rows["openai"] = measure("openai.AsyncOpenAI", run_openai, srv, requests, args.concurrency)
        rows["streams"] = measure("bare asyncio streams (floor)", run_streams, srv, requests, args.concurrency)
        if args.cache:
            with tempfile.TemporaryDirectory() as tmp:
                rows["ours_cache"] = measure("ours (LLMClient, cache on)", run_ours, srv, requests,
                                             args.concurrency, cache_path=Path(tmp) / "c.sqlite")

    ours, raw, oa, floor = (rows[k]["calls_per_s"] for k in ("ours", "httpx", "openai", "streams"))
    print(f"ours/httpx = {ours / raw:.2f}   ours/openai = {ours / oa:.2f}   ours/floor = {ours / floor:.2f}   "
          f"goal: ours >= {GOAL_CALLS_S:.0f} calls/s")
    labels = {"ours": "ours: `LLMClient` (cache off)", "ours_cache": "ours: `LLMClient` (cache on, all misses)",
              "httpx": "raw keep-alive `httpx.AsyncClient`", "openai": "`openai.AsyncOpenAI`",
              "streams": "bare asyncio streams, keep-alive (the floor: no retries, no checks)"}
    table = ["| client | calls/s | client CPU ms/call | server CPU ms/call |", "|---|---:|---:|---:|"]
    table += [f"| {labels[k]} | {r['calls_per_s']:,.0f} | {r['client_cpu_ms_per_call']:.3f} | "
              f"{r['server_cpu_ms_per_call']:.3f} |" for k, r in rows.items()]
    table.append(f"\nours / openai = **{ours / oa:.2f}**, ours / raw httpx = {ours / raw:.2f}, "
                 f"ours / bare streams = {ours / floor:.2f}; "
                 f"goal ours ≥ {GOAL_CALLS_S:.0f} calls/s: {'met' if ours >= GOAL_CALLS_S else 'not met'}.")
    write_result(BenchResult(
        name="client", title="Client cost per LLM call (zero-latency scripted server, same 2 cores)",
        command=f"python bench/client.py --calls {args.calls} --concurrency {args.concurrency}",
        ratio=round(ours / oa, 3), goal=f">= {GOAL_CALLS_S:.0f} calls/s (ours)", met=ours >= GOAL_CALLS_S,
        figures={"machine": machine(), "concurrency": args.concurrency, "candidates": args.candidates,
                 **rows, "ours_over_httpx": round(ours / raw, 3), "ours_over_openai": round(ours / oa, 3),
                 "ours_over_streams": round(ours / floor, 3)},
        markdown="\n".join(table),
        notes="ratio = ours / openai.AsyncOpenAI calls/s; the server shares the cores, so its CPU "
              "per call bounds every client",
    ), args.json)


if __name__ == "__main__":
    main()
