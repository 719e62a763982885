"""Where a window's CPU went: core-seconds per process tree and for the rest of the machine.

The factory gets less of the machine than the server's limit rates allow, and the server's own
profile cannot say why: its busy time grows when anything else takes a core from llama.cpp's
threads, which then wait on each other at OpenMP barriers (py-spy put 30 % of the forward pass
there). This samples /proc every SAMPLE_S from a thread: each named root's tree (the root and
its live descendants) and the machine's total busy time, so a benchmark can split its window's
core-seconds into the server, the run's own process, the run's children (Prefect's API server,
the orphan reaper) and everything else (another job on the machine shows up there, which also
checks that the benchmark ran alone).

A tree's CPU is the sum over its live processes of utime + stime + cutime + cstime: a child that
ended and was waited for has moved its time into its parent's cutime/cstime, so each second is
counted once. A sample reads a few small /proc files per process of the trees.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from gecko_factory.orphan_reaper import descendants

SAMPLE_S = 0.25
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int, reaped_children: bool = True) -> float:
    """CPU seconds of one process (0 when it is gone): utime + stime, plus cutime + cstime (its
    children that ended and were waited for) unless `reaped_children` is False."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(f) for f in fields[11:15 if reaped_children else 13]) / TICK


def tree_cpu_s(root: int, part: str = "tree") -> float:
    """CPU seconds of `root`'s live tree (`part` "tree"), of the root alone ("self") or of its
    descendants alone ("children"), found as the orphan reaper finds them. A child's time moves
    from "children" to "self" when its parent waits for it, so the split holds while the
    children live (Prefect's API server lives through a run's LLM phase); "tree" is right
    throughout."""
    pids = [] if part == "children" else [root]
    if part != "self":
        pids += list(descendants(root))
    return sum(proc_cpu_s(pid) for pid in pids)


def machine_busy_s() -> float:
    """Busy CPU seconds of all cores since boot (/proc/stat: all but idle and iowait)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICK


class CpuShare:
    """Samples {name: CPU seconds} of the trees in `roots` ({name: (pid, part)}, `part` as in
    `tree_cpu_s`) until stopped; `between(t0, t1)` is each one's core-seconds in a time.time() window."""

    def __init__(self, roots: dict[str, tuple[int, str]]):
        self.roots = roots
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-share", daemon=True)

    def __enter__(self) -> "CpuShare":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        got = {name: tree_cpu_s(pid, part) for name, (pid, part) in self.roots.items()}
        if self.samples:  # a tree that ended took its time with it: keep what was seen
            got = {name: max(v, self.samples[-1][1][name]) for name, v in got.items()}
        got["machine"] = machine_busy_s()
        self.samples.append((time.time(), got))

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(SAMPLE_S):
            self._sample()
        self._sample()

    def _at(self, t: float, name: str) -> float:
        """The counter `name` at time t, interpolated between the samples around it."""
        before = [s for s in self.samples if s[0] <= t] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= t] or self.samples[-1:]
        (t0, a), (t1, b) = before[-1], after[0]
        w = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
        return a[name] + w * (b[name] - a[name])

    def quiet(self, name: str, t0: float, t1: float, below: float = 0.25,
              min_s: float = 0.5) -> list[tuple[float, float]]:
        """(start, seconds) of the stretches of at least `min_s` inside [t0, t1] in which tree
        `name` used less than `below` of a core: when a server waits for work."""
        out: list[tuple[float, float]] = []
        start = None
        pairs = zip(self.samples, self.samples[1:])
        for (ta, a), (tb, b) in pairs:
            if tb <= t0 or ta >= t1:
                continue
            idle = (b[name] - a[name]) < below * (tb - ta)
            if idle and start is None:
                start = max(ta, t0)
            elif not idle and start is not None:
                out.append((start, ta - start))
                start = None
        if start is not None:
            out.append((start, t1 - start))
        return [(round(s, 2), round(d, 2)) for s, d in out if d >= min_s]

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """Core-seconds per tree in [t0, t1], `other` = the machine's rest, `idle` = what no one
        used of os.cpu_count() cores."""
        used = {name: self._at(t1, name) - self._at(t0, name) for name in [*self.roots, "machine"]}
        machine = used.pop("machine")
        used["other"] = max(machine - sum(used.values()), 0.0)
        used["idle"] = max((os.cpu_count() or 1) * (t1 - t0) - machine, 0.0)
        return {k: round(v, 1) for k, v in used.items()}
