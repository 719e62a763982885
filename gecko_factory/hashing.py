"""Every hash the factory computes, one function per kind.

Most of these values are stored — paragraph ids, the corpus hash in plan.json, shard markers,
request-cache keys, index folder names, template versions, the train/validation split — so a
change in how one is computed would silently invalidate (or, worse, mix) existing run folders
and caches. tests/test_hashing.py pins a few values of each; a failing pin means "do not ship".

Parts are joined with the ASCII unit separator (0x1f) and records ended with the record
separator (0x1e): neither occurs in normalised text, so ("ab", "c") and ("a", "bc") differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"
_BLOCK = 1 << 20  # 1 MiB reads: a 400 MB GGUF is hashed without holding it in memory


def _joined(parts: tuple[object, ...]) -> bytes:
    return FIELD_SEP.join(str(p) for p in parts).encode("utf-8")


def sha256_hex(*parts: object, length: int | None = None) -> str:
    """sha256 of the parts joined by FIELD_SEP, as hex; the first `length` digits if given.
    One part is hashed as is (`sha256_hex(blob)` is sha256 of `blob`)."""
    digest = hashlib.sha256(_joined(parts)).hexdigest()
    return digest[:length] if length else digest


def stable_int(*parts: object) -> int:
    """A 64-bit integer from the parts, the same in every process and on every machine (Python's
    `hash` of a str is salted per process, so it cannot pick a task type or split a data set)."""
    return int.from_bytes(hashlib.sha256(_joined(parts)).digest()[:8], "big")


def stable_fraction(*parts: object) -> float:
    """`stable_int` scaled to [0, 1): a seeded coin for "is this one in the x % sample"."""
    return stable_int(*parts) / 2**64


def sha256_buffers(named: Iterable[tuple[str, object]]) -> str:
    """sha256 over (label, buffer) pairs in the order given: each label (ended by RECORD_SEP)
    and then the buffer's raw bytes. A model's weights are hashed this way, tensor by tensor,
    without copying 90 MB into one string; the label carries name, dtype and shape, so the same
    bytes under another shape differ."""
    h = hashlib.sha256()
    for label, buffer in named:
        h.update(str(label).encode("utf-8") + RECORD_SEP.encode())
        h.update(memoryview(buffer).cast("B"))
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


class RecordsHash:
    """sha256 over a stream of records, each its fields joined by FIELD_SEP and ended by
    RECORD_SEP: the corpus hash is computed while the corpus streams to disk, never held whole."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, *fields: object) -> None:
        self._h.update(_joined(fields) + RECORD_SEP.encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()
