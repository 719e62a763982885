"""End every process a program started once the program is gone, however it went (`kill -9` too).

`gecko-factory run` starts processes it does not own: Prefect's ephemeral API server (uvicorn,
~220 MB), the nanny and worker processes of a Dask LocalCluster, the embedded LLM server. Each is
stopped by an atexit hook or a context manager, and a SIGKILL or the OOM killer skips both: the
processes are re-parented to init and live on. PR_SET_PDEATHSIG does not fix that from outside: it
must be set inside each child (Prefect and Dask start theirs), it fires when the forking *thread*
ends, not the process, and it reaches children only, never grandchildren (Dask workers are the
nannies' children).

So the program starts this file first thing, as a small stdlib-only process (`start_reaper`). While
the program lives, the reaper records its descendant tree from /proc every POLL_S as
{pid: start time}; once the program is gone it sends SIGTERM to every recorded process that is
still the same process, SIGKILLs what is left after GRACE_S and exits. A pid that the kernel gave to
an unrelated process in between has another start time and is never signalled.

Linux only (/proc); elsewhere `start_reaper` starts nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

# A scan reads one small /proc file per thread of the tree (tens): well under a millisecond.
POLL_S = 0.25
# uvicorn and Dask nannies stop within a second of SIGTERM; a process still there after this is hung.
GRACE_S = 5.0

_reaper: subprocess.Popen | None = None


def start_reaper() -> subprocess.Popen | None:
    """Start the reaper of this process's descendants (once per process; None without /proc).

    Call it before the program starts any process: one started before the first scan is still
    found, but one that has already lost its parent is not."""
    global _reaper
    if _reaper is None and os.path.isdir(f"/proc/{os.getpid()}/task"):
        # -I -S: stdlib only, no site-packages to import, so it costs ~20 ms and ~8 MB. Its own
        # session: a terminal's Ctrl-C, Ctrl-Z or hang-up, or a kill of the program's process group,
        # never reaches it, so it is there to clean up after exactly those. No inherited pipes: a
        # caller reading the program's output to EOF does not wait for the reaper.
        _reaper = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd="/", start_new_session=True)
    return _reaper


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None when it is gone or a zombie (a
    zombie holds no memory and is its parent's to reap)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # no such process (any more)
        return None
    # The command name (field 2) may hold spaces and ')': the other fields follow its last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # field 22, starttime


def _children(pid: int) -> list[int]:
    # Each thread has its own list (a child belongs to the thread that forked it). Kernels without
    # CONFIG_PROC_CHILDREN lack the file: _HAVE_CHILDREN_FILES picks a scan of all of /proc instead.
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # the process is gone
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:  # the thread ended between the listing and the read
            pass
    return kids


def _children_by_scan() -> dict[int, list[int]]:
    by_parent: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            by_parent.setdefault(ppid, []).append(int(name))
    return by_parent


_HAVE_CHILDREN_FILES = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def descendants(root: int, skip: int | None = None) -> dict[int, int]:
    """Every live descendant of `root` as {pid: start time}, leaving out `skip` and its subtree."""
    if _HAVE_CHILDREN_FILES:
        children = _children
    else:
        by_parent = _children_by_scan()
        children = lambda pid: by_parent.get(pid, [])  # noqa: E731
    found: dict[int, int] = {}
    todo = children(root)
    while todo:
        pid = todo.pop()
        if pid == skip or pid in found:
            continue
        st = start_time(pid)
        if st is not None:
            found[pid] = st
            todo.extend(children(pid))
    return found


def _signal(pid: int, start: int, sig: int) -> None:
    """Signal `pid` only if it is still the process that started at `start`. Through a pidfd the
    check and the signal address one process, so a pid reused in between is not hit either."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # a kernel before 5.3: check, then kill (a reuse within microseconds remains)
        fd = None
    try:
        if start_time(pid) == start:
            if fd is None:
                os.kill(pid, sig)
            else:
                signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:  # it ended after the check
        pass
    finally:
        if fd is not None:
            os.close(fd)


def end_processes(procs: dict[int, int], grace_s: float = GRACE_S) -> dict[int, int]:
    """SIGTERM each {pid: start time} that is still that process, SIGKILL what is left after
    `grace_s`; returns those that needed the SIGKILL."""
    for pid, st in procs.items():
        _signal(pid, st, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = procs
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {p: s for p, s in left.items() if start_time(p) == s}
    for pid, st in left.items():
        _signal(pid, st, signal.SIGKILL)
    return left


def watch(program: int, poll_s: float = POLL_S, grace_s: float = GRACE_S) -> dict[int, int]:
    """The reaper's life: record `program`'s tree until it is gone, then end what is left of it.
    Must run in a child of `program`. Returns the processes it ended."""
    me = os.getpid()
    seen: dict[int, int] = {}
    # Our parent is the program until it dies; then the kernel re-parents us (to init or a
    # subreaper). Unlike "is pid N alive", no pid reuse can fake this.
    while os.getppid() == program:
        current = descendants(program, skip=me)
        # Keep what left the tree but still runs (its parent died first: a Dask worker whose
        # nanny was killed); forget what ended.
        seen = {**{p: s for p, s in seen.items() if p not in current and start_time(p) == s}, **current}
        time.sleep(poll_s)
    # The program's own children moved to init when it died, but theirs are still theirs: a
    # process started since the last scan is found under its recorded parent.
    for pid in list(seen):
        seen.update(descendants(pid, skip=me))
    alive = {p: s for p, s in seen.items() if start_time(p) == s}
    end_processes(alive, grace_s)
    return alive


def main(argv: list[str]) -> int:
    # Ctrl-C in a terminal goes to the whole foreground process group: the program handles it,
    # and the reaper must outlive the program to clean up after it. (Its own session already keeps
    # terminal signals away; this also covers a SIGINT or SIGHUP sent to it by pid.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watch(int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
