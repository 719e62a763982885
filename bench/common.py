"""What every benchmark shares: the machine line and the result record `make bench` collects.

Each `bench/<name>.py` measures ours against the obvious alternative in the same run, prints a
human-readable report, and, given `--json PATH`, writes one `BenchResult` there. `bench/run_all.py`
runs them one after another (never two at once: they share the cores) and writes BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class BenchResult:
    name: str  # short id, e.g. "client"
    title: str  # one line for the BENCHMARKS.md heading
    command: str  # how to rerun it alone
    ratio: float | None  # ours / alternative, oriented so that > 1 means ours is better
    goal: str  # e.g. ">= 0.95" or ">= 2x"
    met: bool | None  # None when the goal does not apply
    figures: dict = field(default_factory=dict)  # raw measurements, units in the key names
    markdown: str = ""  # a table or a few lines for BENCHMARKS.md
    notes: str = ""  # what to keep in mind when reading the figures


def machine() -> dict:
    """The machine the figures came from, as BENCHMARKS.md prints it."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = float("nan")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_gib, 1),
            "python": platform.python_version(), "commit": commit}


def write_result(result: BenchResult, path: str | Path | None) -> None:
    """Print the record and, when asked, write it (atomically) for run_all.py."""
    print(json.dumps(asdict(result), indent=2))
    if path:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(result), indent=2))
        tmp.replace(path)
