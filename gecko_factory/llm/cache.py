"""A content-addressed cache of LLM answers, so that a rerun never pays for an answer twice.

The key is sha256 of a normalised JSON of everything that shapes the answer: the endpoint kind,
the model, the messages or prompt (which embed the template text), and every sampling parameter.
The API key and the base URL are not in it: the same model behind another URL gives the same
answer. SQLite in WAL mode: readers never block the writer, several processes can share a file.
Only successful, validated answers are stored; failures are never cached.

Writes are batched: one transaction per up to FLUSH_ROWS answers, at least every FLUSH_S seconds
(a flusher thread), at `flush()` (the LLM runtime calls it when a shard's coroutine returns) and
at `close()`/exit. One autocommit per answer cost ~0.2 ms of the LLM loop's CPU per call, more
than the HTTP exchange itself; batching cuts that to a fraction. The price: a kill -9 can lose
the answers of the last FLUSH_S seconds (they are asked again on resume, nothing else changes).
"""

from __future__ import annotations

import atexit
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

from gecko_factory.hashing import sha256_hex

log = logging.getLogger(__name__)

FLUSH_ROWS = 256
FLUSH_S = 0.2

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def request_key(kind: str, payload: dict) -> str:
    blob = json.dumps({"kind": kind, **payload}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_hex(blob)


class RequestCache:
    """`read=False` is `--refresh-cache`: answers are fetched anew and overwrite the old ones."""

    def __init__(self, path: Path, read: bool = True):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.read = read
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self._db.execute(SCHEMA)
        self._pending: dict[str, tuple] = {}  # answers not yet committed, readable by get()
        self._closed = threading.Event()
        threading.Thread(target=self._flush_loop, name="gecko-cache-flush", daemon=True).start()
        atexit.register(self.close)

    def get(self, key: str) -> dict | None:
        if not self.read:
            return None
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None:
                return json.loads(pending[2])
            row = self._db.execute("SELECT body FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, kind: str, body: dict) -> None:
        row = (key, kind, json.dumps(body, ensure_ascii=False), time.time())
        with self._lock:
            self._pending[key] = row
            if len(self._pending) >= FLUSH_ROWS:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending or self._db is None:
            return
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", self._pending.values())
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._pending.clear()  # only once committed: a failed write is tried again

    def _flush_loop(self) -> None:
        while not self._closed.wait(FLUSH_S):
            try:
                self.flush()
            except sqlite3.Error as exc:  # disk full, locked too long: keep them, try again
                log.error("LLM cache %s: could not write %d answers: %s", self.path, len(self._pending), exc)

    def close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            self._closed.set()
            try:
                self._flush_locked()
            finally:
                self._db.close()
                self._db = None
        atexit.unregister(self.close)
