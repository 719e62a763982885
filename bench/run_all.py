"""`make bench`: run every benchmark, one at a time, and write BENCHMARKS.md.

What the run does not measure stays as it was: other benchmarks' rows and sections (with
`--only`) and the sections that are no benchmark's output (the judge audit, figures taken by hand).

Each `bench/<name>.py` runs in its own subprocess with a size budget (its arguments below) and a
timeout, and writes a `BenchResult` (bench/common.py) as JSON. One that is missing, fails, times
out or writes nothing is listed as such: the others still run and the file is still written.
Never two at once: they would share the cores and measure each other.

    python bench/run_all.py [--out BENCHMARKS.md] [--only mining,encoder] [--keep-json DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine

# name -> (arguments, timeout in seconds). Sized so that the whole run stays under 30 minutes on
# the project's 2-core machine; each size is the smallest that still gives a stable figure.
PLAN: dict[str, tuple[list[str], int]] = {
    "e2e": (["--paragraphs", "5000", "--latency-ms", "50", "--concurrency", "64"], 600),
    "client": ([], 120),
    "concurrency": ([], 300),  # ~2.5 min: the adaptive limit needs ~100 round trips to pay off its ramp from 8
    "distilabel": ([], 150),
    "mining": (["--docs", "600", "--queries", "200"], 360),  # bf16 emulated on an AVX2 CPU is slow
    "encoder": (["--texts", "384", "--rounds", "2"], 300),
    "eval_cache": (["--docs", "600", "--rounds", "3"], 240),
    "judge_cost": (["--queries", "5", "--candidates", "4", "--prefix-calls", "6"], 360),
    "scale": (["--sizes", "10000,30000,100000", "--seeds", "200", "--candidates", "5"], 480),
    "train": ([], 300),
    # ~6 min: 4 seeds written by the real 0.5B and judged by the 1.5B, in each judge form
    "embedded": (["--seeds", "4", "--forms", "two_prompt,shared_prefix,one_pass"], 900),
}
TOTAL_BUDGET_S = 30 * 60


def takes_json(script: Path) -> bool:
    return "--json" in script.read_text(encoding="utf-8")


def run_one(name: str, args: list[str], timeout: int, out_dir: Path, log_dir: Path) -> dict:
    script = REPO / "bench" / f"{name}.py"
    row = {"name": name, "command": "python " + " ".join(
        shlex.quote(x) for x in [f"bench/{name}.py", *args]), "status": "", "seconds": 0.0}
    if not script.exists():
        row["status"] = "missing"
        return row
    if not takes_json(script):
        row["status"] = "does not take --json"
        return row
    out = out_dir / f"{name}.json"
    log_path = log_dir / f"{name}.log"
    t0 = time.monotonic()
    with log_path.open("w") as log:
        # Its own session, so a timeout ends the benchmark's servers and workers too.
        proc = subprocess.Popen([sys.executable, str(script), *args, "--json", str(out)], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "TQDM_DISABLE": "1"})
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            _end_group(proc)
    row["seconds"] = time.monotonic() - t0
    if code is None:
        row["status"] = f"timed out after {timeout} s (log {log_path})"
    elif code != 0:
        row["status"] = f"failed (exit {code}; log {log_path})"
    elif not out.exists():
        row["status"] = f"wrote no result (log {log_path})"
    else:
        row["status"] = "ok"
        row["result"] = json.loads(out.read_text())
    return row


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM the benchmark's process group (its context managers stop servers), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:
                time.sleep(1)  # let the children it was stopping finish
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue


def _fmt_ratio(r) -> str:
    return "—" if r is None else f"{r:.3g}"


def _met(m) -> str:
    return {True: "yes", False: "**no**", None: "—"}[m]


def render(rows: list[dict], argv: list[str], started: datetime, seconds: float,
           partial: bool = False) -> str:
    """`partial`: a run with --only, whose header must not claim the rows it kept from before."""
    m = machine()
    written = (f"`python bench/run_all.py {' '.join(argv)}` on {started:%Y-%m-%d %H:%M} UTC in "
               f"{seconds / 60:.1f} min, commit {m['commit']}")
    lines = [
        "# Benchmarks", "",
        (f"The rows of {', '.join(r['name'] for r in rows)} were rewritten by {written}; the other "
         "rows and sections are kept from earlier runs (`make bench` reruns them all)."
         if partial else f"Written by {written} (`make bench`)."),
        ("Machine of the rewritten rows" if partial else "Machine")
        + f": {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Python {m['python']}, no GPU"
        + (" (the kept rows were measured on their own run's machine, which can differ: the VM's CPU "
           "model is not fixed between sessions)." if partial else "."),
        "Each benchmark measures ours and the alternative in the same run; ratios are oriented so "
        "that > 1 means ours is better (see each section for what is compared).", "",
        "| benchmark | ours vs alternative | ratio | goal | met | status |",
        "|---|---|---:|---|---|---|",
    ]
    for r in rows:
        res = r.get("result") or {}
        title = res.get("title", r["name"]).replace("|", "/")
        lines.append(f"| {r['name']} | {title} | {_fmt_ratio(res.get('ratio'))} | "
                     f"{res.get('goal', '—')} | {_met(res.get('met'))} | {r['status']} "
                     f"({r['seconds']:.0f} s) |")
    for r in rows:
        res = r.get("result")
        lines += ["", f"## bench/{r['name']}.py" + (f" — {res['title']}" if res else ""), ""]
        if not res:
            lines.append(f"Not measured: {r['status']}. Command: `{r['command']}`.")
            continue
        lines += [f"`{res.get('command') or r['command']}`", "", res.get("markdown", "").strip()]
        if res.get("notes"):
            lines += ["", res["notes"].strip()]
    return "\n".join(lines) + "\n"


def _sections(text: str) -> list[tuple[str, str]]:
    """`## ` heading -> its section text (heading line included), in file order."""
    parts = re.split(r"(?m)^(?=## )", text)
    return [(part.splitlines()[0], part.rstrip("\n")) for part in parts[1:]]


def _head_rows(text: str) -> tuple[list[str], int, dict[str, str]]:
    """The lines before the first section without the summary table's rows, where those rows go
    (after the table's `|---` line), and the rows by benchmark name (a section's own table may
    start with a benchmark's name too, and does not count)."""
    head = re.split(r"(?m)^## ", text, maxsplit=1)[0].rstrip("\n").splitlines()
    sep = next(i for i, x in enumerate(head) if x.startswith("|---"))
    rows = {x.split(" | ")[0][2:]: x for x in head[sep + 1:] if x.startswith("| ")}
    return [x for i, x in enumerate(head) if i <= sep or not x.startswith("| ")], sep + 1, rows


def keep_unwritten(old: str, new: str, names_run: set[str]) -> str:
    """`new` plus what `old` holds that this run did not measure, so no record is lost.

    A run with `--only` rewrites only its own benchmarks, in place: the other benchmarks' summary
    rows and sections stay where they were (their own dates and commits are in their text).
    Sections that are not a `bench/<name>.py` result at all (the judge audit, measurements made by
    hand) are kept whole. A benchmark new to the file goes at the end of the table and of the
    benchmarks' sections.
    """
    if not old:
        return new
    bench_heading = re.compile(r"^## bench/(\w+)\.py")
    head, at, new_rows = _head_rows(new)
    _, _, old_rows = _head_rows(old)
    names = ([n for n in old_rows if n not in names_run or n in new_rows]
             + [n for n in new_rows if n not in old_rows])
    head[at:at] = [new_rows[n] if n in names_run else old_rows[n] for n in names]
    new_sections = {m.group(1): body for heading, body in _sections(new)
                    if (m := bench_heading.match(heading))}
    sections, placed, first_other = [], set(), None
    for heading, body in _sections(old):
        m = bench_heading.match(heading)
        if m is None and first_other is None:
            first_other = len(sections)  # new benchmarks go before the hand-written sections
        if m is None or m.group(1) not in names_run:
            sections.append(body)  # not measured now: kept as it was
        elif m.group(1) in new_sections:
            sections.append(new_sections[m.group(1)])
            placed.add(m.group(1))
    first_other = len(sections) if first_other is None else first_other
    sections[first_other:first_other] = [b for n, b in new_sections.items() if n not in placed]
    return "\n\n".join(["\n".join(head), *sections]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--only", default=None, help="comma-separated names (default: all)")
    ap.add_argument("--keep-json", type=Path, default=None, help="keep each result's JSON here")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(PLAN)
    unknown = [n for n in names if n not in PLAN]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {list(PLAN)}")
    started = datetime.now(UTC)
    t0 = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gecko-bench-") as tmp:
        out_dir = args.keep_json or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        # logs outlive the run: a failure's status line points at one
        log_dir = args.keep_json or Path(tempfile.gettempdir()) / "gecko-bench-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            bench_args, timeout = PLAN[name]
            left = TOTAL_BUDGET_S - (time.monotonic() - t0)
            if left < 30:
                rows.append({"name": name, "command": f"python bench/{name}.py", "seconds": 0.0,
                             "status": f"not run: the {TOTAL_BUDGET_S // 60}-minute budget is spent"})
                continue
            print(f"[{time.monotonic() - t0:6.0f} s] {name} ...", flush=True)
            row = run_one(name, bench_args, int(min(timeout, left)), out_dir, log_dir)
            print(f"[{time.monotonic() - t0:6.0f} s] {name}: {row['status']} in {row['seconds']:.0f} s",
                  flush=True)
            rows.append(row)
        text = render(rows, sys.argv[1:], started, time.monotonic() - t0, partial=bool(args.only))
    previous = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    text = keep_unwritten(previous, text, {r["name"] for r in rows})
    tmp_out = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp_out.write_text(text, encoding="utf-8")
    tmp_out.replace(args.out)
    print(f"wrote {args.out} in {(time.monotonic() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
