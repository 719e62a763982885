"""The embedded server leaves when the run that started it is killed (no atexit runs then)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

# A stand-in for the server: the same watcher, then a long sleep instead of uvicorn. It touches
# the file named by its argument once the watcher runs: killing the parent before that (imports
# take seconds on a busy machine) would orphan a child that never started watching.
CHILD = ("import os, sys, time; from gecko_factory.llm.server_app import exit_with_parent; "
         "exit_with_parent(os.getppid(), every_s=0.1); open(sys.argv[1], 'w').close(); time.sleep(120)")
PARENT = ("import subprocess, sys, time; "
          f"p = subprocess.Popen([sys.executable, '-c', {CHILD!r}, sys.argv[1]]); "
          "print(p.pid, flush=True); time.sleep(120)")


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def test_server_exits_when_its_parent_is_killed(tmp_path):
    ready = tmp_path / "watching"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(ready)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists() and running(child), "the child must live while its parent does"
        parent.kill()  # SIGKILL: no handler, no atexit
        parent.wait()
        deadline = time.monotonic() + 10
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(child), "the server outlived the run that started it"
    finally:
        parent.kill()
