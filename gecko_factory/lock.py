"""One writer per run folder: a lock file holding the writer's pid and host.

A second run on the same folder refuses with a clear message; a lock left by a process that is
gone (same host, pid not alive) is taken over, so a kill -9 never blocks the folder for good.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
    """Another live process is writing this run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _try_create(path: Path, info: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    return True


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(3):  # a stale lock is removed, then we race for it like anyone else
        if _try_create(path, me):
            break
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            holder = {}
        if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
            path.unlink(missing_ok=True)  # the writer died without cleaning up
            continue
        if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
            raise RunLocked(f"{run_dir} is already being written by this process")
        raise RunLocked(f"{run_dir} is being written by pid {holder.get('pid')} on "
                        f"{holder.get('host')} since {holder.get('since')}; wait for it, or remove "
                        f"{path} if that process is gone")
    else:
        raise RunLocked(f"could not take the lock {path}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
