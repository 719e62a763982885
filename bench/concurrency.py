"""Adaptive concurrency vs the best fixed concurrency, against a server with a capacity knee.

The knee server (gecko_factory/testing/knee_server.py) serves C requests at once for a fixed
service time S, queues the rest (throughput flat beyond C, latency rising), and refuses beyond
2C in flight with 429. For C = 64 and C = 256 the same N chat calls go through `LLMClient` with
each fixed concurrency of a sweep (8 ... 512), then with the adaptive limit from 8, which is not
told C. Reported: calls/s, the ratio adaptive / best fixed, and 429 rates (refusals / requests,
counted by the server). Goal (issue 15): >= 0.9 of the best fixed throughput at both C, with a
429 rate at most 1 point above the best fixed setting's.

S is chosen so that C/S = 1,280 calls/s at both C: this client drives ~2,000-3,000 calls/s on the
2 busy cores (bench/client.py), and a knee above that would measure the CPU, not the limit
(`--cpu-bound` adds C = 256 at S = 50 ms to show it). A fixed setting far below C would take
minutes for N calls: the sweep runs from 512 down, and a run that is under 0.6 of the best rate
so far after `--max-seconds` stops there, its rate taken from the calls done by then (a fixed
limit runs at its steady rate from the first second): it cannot be the best. The adaptive run
and the fixed ones near C do all N, so the adaptive ramp from 8 is paid in full.

    python bench/concurrency.py [--calls-64 8000] [--calls-256 32000] [--cpu-bound] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import common  # noqa: F401 - puts the repo on sys.path
from common import BenchResult, machine, write_result

SWEEP = (8, 16, 32, 64, 128, 256, 512)
RATE = 1280.0  # C / S, calls/s


async def drive(base_url: str, calls: int, concurrency: int | None, max_seconds: float, best: float) -> dict:
    """`calls` chat calls at a fixed `concurrency`, or adaptive from 8 (None). A fixed run slower
    than 0.6 of the `best` rate so far after `max_seconds` stops there: it cannot be the best."""
    from gecko_factory.llm.client import LLMClient, LLMError
    from gecko_factory.llm.concurrency import MAX_LIMIT
    from gecko_factory.llm.settings import LLMSettings

    settings = LLMSettings(_env_file=None, model="knee", concurrency=concurrency or 8,
                           adaptive_concurrency=concurrency is None)
    client = LLMClient(settings, base_url)
    todo = iter(range(calls))
    ok = failed = 0

    async def worker() -> None:  # as a shard sends: more calls than the limit, the client holds them
        nonlocal ok, failed
        for i in todo:
            try:
                await client.chat([{"role": "user", "content": f"call {i}"}], max_tokens=1)
                ok += 1
            except LLMError:
                failed += 1

    workers = [asyncio.ensure_future(worker()) for _ in range(min(calls, 2 * MAX_LIMIT))]
    t0 = time.perf_counter()
    try:
        _, pending = await asyncio.wait(workers, timeout=max_seconds)
        if pending and (concurrency is None or ok / max_seconds >= 0.6 * best):
            _, pending = await asyncio.wait(pending, timeout=20 * max_seconds)
        seconds = time.perf_counter() - t0
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return {"seconds": round(seconds, 2), "calls_done": ok, "calls_failed": failed,
                "calls_per_s": round(ok / seconds, 1), "retries": client.usage.retries,
                "limit": next(iter(client.concurrency().values()))}
    finally:
        await client.aclose()


def measure(srv, calls: int, concurrency: int | None, max_seconds: float, best: float = 0.0) -> dict:
    before = srv.stats()
    row = asyncio.run(drive(srv.base_url, calls, concurrency, max_seconds, best))
    time.sleep(0.3)  # the server finishes what a stopped run left queued: its requests count too
    after = srv.stats()
    requests, refused = after["requests"] - before["requests"], after["429"] - before["429"]
    row["server_requests"], row["server_429"] = requests, refused
    row["rate_429"] = round(refused / requests, 4) if requests else 0.0
    lim = row["limit"]
    name = f"fixed {concurrency}" if concurrency else "adaptive from 8"
    extra = f"  limit final {lim['final']}, peak {lim['peak']}, {lim['decreases']} decreases" \
        if lim["mode"] == "adaptive" else ""
    print(f"  {name:16s} {row['calls_done']:6d} calls in {row['seconds']:6.2f}s = {row['calls_per_s']:7.1f} "
          f"calls/s  429 rate {100 * row['rate_429']:5.2f} %{extra}", flush=True)
    return row


def run_knee(capacity: int, service_ms: float, calls: int, max_seconds: float) -> dict:
    from gecko_factory.testing.knee_server import KneeServer

    print(f"C = {capacity}, S = {service_ms:g} ms (ideal {1000 * capacity / service_ms:,.0f} calls/s), "
          f"{calls} calls a run", flush=True)
    with KneeServer(capacity, service_ms) as srv:
        fixed: dict[int, dict] = {}
        for c in sorted(SWEEP, reverse=True):  # the large ones first: they set the bar the small ones are stopped by
            fixed[c] = measure(srv, calls, c, max_seconds, max((r["calls_per_s"] for r in fixed.values()), default=0))
        fixed = dict(sorted(fixed.items()))
        adaptive = measure(srv, calls, None, max_seconds)
    best = max(fixed, key=lambda c: fixed[c]["calls_per_s"])
    ratio = adaptive["calls_per_s"] / fixed[best]["calls_per_s"]
    excess_429 = adaptive["rate_429"] - fixed[best]["rate_429"]
    print(f"  adaptive / best fixed ({best}) = {ratio:.3f}; 429 rate {100 * adaptive['rate_429']:.2f} % vs "
          f"{100 * fixed[best]['rate_429']:.2f} %", flush=True)
    return {"capacity": capacity, "service_ms": service_ms, "calls": calls, "best_fixed": best,
            "ratio": round(ratio, 3), "excess_429_rate": round(excess_429, 4),
            "met": ratio >= 0.9 and excess_429 <= 0.01, "fixed": fixed, "adaptive": adaptive}


def table(r: dict) -> list[str]:
    lines = [f"C = {r['capacity']}, S = {r['service_ms']:g} ms, {r['calls']:,} calls a run:", "",
             "| concurrency | calls/s | 429 rate | calls done | seconds |", "|---|---:|---:|---:|---:|"]
    for c, row in r["fixed"].items():
        mark = " (best fixed)" if c == r["best_fixed"] else ""
        lines.append(f"| fixed {c}{mark} | {row['calls_per_s']:,.0f} | {100 * row['rate_429']:.2f} % | "
                     f"{row['calls_done']:,} | {row['seconds']:.1f} |")
    a = r["adaptive"]
    lines.append(f"| **adaptive from 8** (final {a['limit']['final']}, peak {a['limit']['peak']}) | "
                 f"{a['calls_per_s']:,.0f} | {100 * a['rate_429']:.2f} % | {a['calls_done']:,} | {a['seconds']:.1f} |")
    lines += ["", f"adaptive / best fixed = **{r['ratio']:.3f}**; 429 rate above the best fixed: "
              f"{100 * r['excess_429_rate']:+.2f} points.", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls-64", type=int, default=8000)
    # ~120 round trips of 200 ms: slow start from 8 to ~1.4 C takes ~15 of them at reduced rate
    ap.add_argument("--calls-256", type=int, default=32000)
    ap.add_argument("--max-seconds", type=float, default=2.5, help="a slow fixed run stops after this")
    ap.add_argument("--cpu-bound", action="store_true", help="also C = 256 at S = 50 ms (the CPU is the knee)")
    ap.add_argument("--log", action="store_true", help="show the adaptive limit's INFO lines")
    ap.add_argument("--json", help="write the BenchResult here")
    args = ap.parse_args()
    if args.log:
        logging.basicConfig(level=logging.INFO, format="    %(message)s")

    t0 = time.perf_counter()
    runs = [run_knee(64, 1000 * 64 / RATE, args.calls_64, args.max_seconds),
            run_knee(256, 1000 * 256 / RATE, args.calls_256, args.max_seconds)]
    if args.cpu_bound:
        runs.append(run_knee(256, 50.0, args.calls_256, args.max_seconds))
    knee = runs[:2]
    ratio, met = min(r["ratio"] for r in knee), all(r["met"] for r in knee)
    print(f"worst adaptive / best fixed = {ratio:.3f}; goal >= 0.9 and 429 rate <= best + 1 point: "
          f"{'met' if met else 'not met'} ({time.perf_counter() - t0:.0f} s)")
    md = [line for r in runs for line in table(r)]
    md.append(f"Goal (>= 0.9 of the best fixed throughput, 429 rate at most 1 point above it, at C = 64 "
              f"and C = 256): {'met' if met else '**not met**'}.")
    write_result(BenchResult(
        name="concurrency", title="Adaptive concurrency vs the best fixed one (knee server, C = 64 and 256)",
        command=f"python bench/concurrency.py --calls-64 {args.calls_64} --calls-256 {args.calls_256}",
        ratio=ratio, goal=">= 0.9 (and 429 rate <= best fixed + 1 point)", met=met,
        figures={"machine": machine(), "runs": runs},
        markdown="\n".join(md),
        notes="ratio = adaptive calls/s / the best fixed setting's calls/s, the worse of C = 64 and 256; "
              "fixed runs far below C stop after --max-seconds (their rate is steady from the start). "
              "The cores are shared with the knee server and whatever else runs: rerun before "
              "reading much into a few percent.",
    ), args.json)


if __name__ == "__main__":
    main()
