"""Writing files so that a crash never leaves a half-written file under its final name.

Every file a run, a cache or a training job publishes goes through here: write a temp file in
the same folder (a rename is atomic only within one file system), fsync it, rename it over the
final name, then fsync the folder so the rename itself survives a power cut. A reader therefore
sees the old file or the new one, never a mix — which is what lets markers, plans and
checkpoints be trusted after a crash.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(src: Path, dst: Path) -> None:
    """Publish a finished file `src` (same file system) as `dst`: its data is synced before the
    rename, and the folder after it."""
    fsync_path(src)
    os.replace(src, dst)
    fsync_path(Path(dst).parent)


@contextmanager
def atomic_file(path: Path, tmp_suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """The caller writes the temp file `path` + `tmp_suffix`; on success it replaces `path`
    (see `replace_file`); on an exception it is removed and `path` stays as it was. A suffix
    with the pid lets processes that may write the same file race safely."""
    path = Path(path)
    tmp = path.with_name(path.name + tmp_suffix)
    try:
        with tmp.open("wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def publish_dir(tmp: Path, final: Path) -> bool:
    """Rename a finished folder `tmp` to `final` after syncing its files. False (and `tmp`
    removed) when `final` already exists: another process published the same content first,
    and for a content-addressed folder (an index named by its inputs' hash) theirs is as good."""
    for f in sorted(tmp.rglob("*")):
        if f.is_file():
            fsync_path(f)
    fsync_path(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    fsync_path(final.parent)
    return True
