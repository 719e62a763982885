"""bench/cpu_share.py splits a window's CPU between process trees: a child that spins for a known
CPU time is found in its tree and not in its parent's own share."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.cpu_share import CpuShare  # noqa: E402

SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads /proc (Linux)")
def test_a_spinning_grandchild_is_counted_in_its_tree_once():
    # a shell (the root) whose child spins 1.5 s of CPU and is waited for by the shell: its time
    # moves into the shell's cutime once it ends, and must not be lost or counted twice
    spin = f"{sys.executable} -c '{SPIN.format(s=1.5)}'"
    shell = subprocess.Popen(["bash", "-c", f"{spin}; sleep 0.6"])
    with CpuShare({"tree": (shell.pid, "tree"), "root": (shell.pid, "self"),
                   "children": (shell.pid, "children")}) as cpu:
        t0 = time.time()
        shell.wait(timeout=60)
        time.sleep(0.6)  # the tree is gone: its share must stay what was last seen
        t1 = time.time()
    got = cpu.between(t0, t1)
    assert 1.4 <= got["tree"] <= 1.9, got
    assert got["idle"] >= 0 and got["other"] >= 0
    # while the spinner lives, its time is the shell's children's, not the shell's own (a third
    # of a core at least, on shared cores)
    early = cpu.between(t0, t0 + 1.0)
    assert early["children"] >= 0.3 and early["root"] <= 0.1, early


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads /proc (Linux)")
def test_a_window_takes_only_the_time_inside_it():
    proc = subprocess.Popen([sys.executable, "-c", SPIN.format(s=1.5)])
    with CpuShare({"spinner": (proc.pid, "tree")}) as cpu:
        proc.wait(timeout=60)
    (first, _), (last, _) = cpu.samples[0], cpu.samples[-1]
    whole = cpu.between(first, last)["spinner"]
    half = cpu.between(first, first + (last - first) / 2)["spinner"]
    assert 1.2 <= whole <= 1.9, whole
    assert half < whole
