"""A content-addressed cache of LLM answers, so that a rerun never pays for an answer twice.

The key is sha256 of a normalised JSON of everything that shapes the answer: the endpoint kind,
the model, the messages or prompt (which embed the template text), and every sampling parameter.
The API key and the base URL are not in it: the same model behind another URL gives the same
answer. SQLite in WAL mode: readers never block the writer, several processes can share a file.
Only successful, validated answers are stored; failures are never cached.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

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
    return hashlib.sha256(blob.encode()).hexdigest()


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

    def get(self, key: str) -> dict | None:
        if not self.read:
            return None
        with self._lock:
            row = self._db.execute("SELECT body FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, kind: str, body: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                             (key, kind, json.dumps(body, ensure_ascii=False), time.time()))

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
