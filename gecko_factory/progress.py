"""Live progress of a run, through small files in its folder: written by the stages, read by watchers.

The index build and every shard write a JSON snapshot under `<run>/progress/` (index.json,
part-00007.json): atomically (temp + rename) and at most once per `WRITE_EVERY_S`. Files, not
callbacks, because shards may run in other processes (Dask workers) and the readers — the CLI's
live display and the flow's `fret-progress` artifact — sit in the flow's process. A reader sums
the snapshots started since it began watching (an older file is a previous invocation's) and the
shards' done markers (a shard reused from an earlier run counts as done at once).
Nothing here is durable state: a lost or stale snapshot only makes a display lag.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gecko_factory.llm.budget import cost_usd

log = logging.getLogger(__name__)

PROGRESS_DIR = "progress"
INDEX_FILE = "index.json"
# One write a second per writer: fresh enough for a person, and at 4 shards in flight a handful
# of small renames a second, nothing next to the LLM calls.
WRITE_EVERY_S = 1.0


def progress_dir(run_dir: Path) -> Path:
    return Path(run_dir) / PROGRESS_DIR


def index_progress_file(run_dir: Path) -> Path:
    return progress_dir(run_dir) / INDEX_FILE


def shard_progress_file(run_dir: Path, shard: int) -> Path:
    return progress_dir(run_dir) / f"part-{shard:05d}.json"


class ProgressFile:
    """One writer's snapshot file. `update(**fields)` merges and writes when `every_s` has passed
    since the last write (or `force`); it never raises, since progress must not fail the work."""

    def __init__(self, path: Path, every_s: float = WRITE_EVERY_S, **fields):
        self.path, self.every_s = Path(path), every_s
        self.fields = {"started": time.time(), **fields}
        self._last = float("-inf")
        self._warned = False

    def update(self, force: bool = False, **fields) -> bool:
        self.fields.update(fields)
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return False
        self._last = now
        self.fields["updated"] = time.time()
        # No fsync (unlike gecko_factory.files): a snapshot need not survive a power cut, and a
        # rename alone already keeps readers from seeing half a file.
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.fields))
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._warned:  # once: a full disk would otherwise log every second
                log.warning("progress file %s not written: %s", self.path, exc)
                self._warned = True
            return False
        return True


class IndexProgress:
    """The index build's snapshot: loading the encoder (seconds, before anything is known to be
    reused), paragraphs embedded of all, then the graph build."""

    def __init__(self, path: Path | None, total: int):
        self.file = None if path is None else ProgressFile(path, stage="index", total=total, embedded=0,
                                                           seconds=0.0, embed_seconds=0.0)
        self.t0 = self.t_embed = time.perf_counter()
        self.embedded = 0
        self.state("loading")

    def embedded_batch(self, n: int) -> None:
        self.embedded += n
        if self.file:
            now = time.perf_counter()
            self.file.update(force=self.embedded == self.file.fields["total"], embedded=self.embedded,
                             seconds=round(now - self.t0, 2), embed_seconds=round(now - self.t_embed, 2))

    def state(self, state: str, **fields) -> None:
        """loading | embedding | building | done | reused: always written (a state change is rare
        and worth seeing)."""
        if state == "embedding":
            self.t_embed = time.perf_counter()  # the rate is of the embedding, not the load
        if self.file:
            self.file.update(force=True, state=state, seconds=round(time.perf_counter() - self.t0, 2),
                             **fields)


class SeedProgress:
    """One shard's snapshot: seeds finished of its total, and its LLM usage so far.

    `watch(coro)` runs the shard's coroutine with a ticker beside it that writes once a second
    while anything moved (usage changes between seeds: a seed is 1 + 2N calls), then a last
    snapshot, state done or failed (a failed shard's seeds are not done: nothing was committed)."""

    def __init__(self, run_dir: Path, shard: int, seeds: int, prices: tuple[float, float] = (0.0, 0.0)):
        self.file = ProgressFile(shard_progress_file(run_dir, shard), stage="shard", shard=shard,
                                 state="running", seeds=seeds, seeds_done=0)
        self.prices = prices
        self.seeds_done = 0
        self.usage: Callable[[], dict] = dict  # the shard's client usage, once it has a client

    def seed_done(self, n: int = 1) -> None:
        self.seeds_done += n

    def _fields(self) -> dict:
        u = self.usage()
        fields = {"seeds_done": self.seeds_done, **{k: u.get(k, 0) for k in
                  ("calls", "prompt_tokens", "completion_tokens", "cache_hits")}}
        if any(self.prices):  # "when priced": the embedded model and unknown models cost nothing
            fields["cost_usd"] = cost_usd(fields["prompt_tokens"], fields["completion_tokens"], self.prices)
        return fields

    async def _tick(self) -> None:
        last = None
        while True:
            fields = self._fields()
            if fields != last and self.file.update(**fields):
                last = fields
            await asyncio.sleep(self.file.every_s)

    async def watch(self, coro):
        ticker = asyncio.create_task(self._tick())
        state = "failed"
        try:
            result = await coro
            state = "done"
            return result
        finally:
            ticker.cancel()
            self.file.update(force=True, state=state, **self._fields())


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


@dataclass
class IndexView:
    state: str  # loading | embedding | building | done | reused
    embedded: int
    total: int
    seconds: float  # since the build started
    embed_seconds: float  # of which embedding (the graph build follows it)

    @property
    def rate(self) -> float | None:
        """Paragraphs embedded per second."""
        if self.embed_seconds <= 0 or self.state == "reused":
            return None
        return self.embedded / self.embed_seconds

    def line(self) -> str:
        if self.state == "reused":
            return f"index reused ({self.total:,} paragraphs)"
        rate = "" if self.rate is None else f", {self.rate:,.0f} paragraphs/s"
        if self.state == "loading":
            return f"loading the encoder to index {self.total:,} paragraphs"
        what = {"embedding": "embedding", "building": "building the HNSW graph after embedding",
                "done": "indexed"}.get(self.state, self.state)
        return f"{what} {self.embedded:,} of {self.total:,} paragraphs{rate}, {_duration(self.seconds)}"


@dataclass
class RunProgress:
    """The run as its files show it now. Rates and the ETA are this invocation's own: a shard
    reused from an earlier run is done but took no time here."""

    shards_total: int = 0
    shards_done: int = 0
    seeds_total: int = 0
    seeds_done: int = 0
    seeds_done_now: int = 0  # by the shards this invocation ran
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    llm_seconds: float = 0.0  # since the first shard of this invocation started
    index: IndexView | None = None

    @property
    def percent(self) -> float:
        return 100.0 if self.seeds_total == 0 else 100.0 * self.seeds_done / self.seeds_total

    @property
    def calls_per_s(self) -> float | None:
        return self.calls / self.llm_seconds if self.llm_seconds > 0 else None

    @property
    def eta_s(self) -> float | None:
        if self.seeds_done_now == 0 or self.llm_seconds <= 0:
            return None
        return (self.seeds_total - self.seeds_done) * self.llm_seconds / self.seeds_done_now

    def seeds_line(self) -> str:
        return f"{self.seeds_done:,} of {self.seeds_total:,} seeds ({self.percent:.0f}%)"

    @property
    def indexing(self) -> bool:
        """Before the LLM stage: no index snapshot yet (the flow is planning or starting the
        build), or one that is not done."""
        return self.index is None or self.index.state in ("loading", "embedding", "building")

    def llm_line(self) -> str:
        """calls/s, tokens, cost when priced, ETA: what the seed bar shows beside its count."""
        parts = []
        if self.calls_per_s is not None:
            parts.append(f"{self.calls:,} LLM calls, {self.calls_per_s:.1f} calls/s")
        if self.prompt_tokens or self.completion_tokens:
            parts.append(f"{self.prompt_tokens + self.completion_tokens:,} tokens")
        if self.cost_usd is not None:
            parts.append(f"${self.cost_usd:.4f}")
        if self.eta_s is not None and self.seeds_done < self.seeds_total:
            parts.append(f"ETA {_duration(self.eta_s)}")
        return " · ".join(parts)

    def index_line(self) -> str:
        return self.index.line() if self.index else "planned; the index build is starting"

    def describe(self) -> str:
        """One plain line, for a log: the index while it is built, then the seeds."""
        if self.indexing:
            return f"{self.index_line()}; then {self.seeds_total:,} seeds"
        shards = f"{self.shards_done} of {self.shards_total} shards done"
        return " · ".join(x for x in (self.seeds_line(), shards, self.llm_line()) if x)


@dataclass
class ProgressReader:
    """Reads a run folder's progress; `read()` is cheap enough to call every half second (one
    folder listing each for markers and snapshots; plan.json only when it changes)."""

    run_dir: Path
    since: float = field(default_factory=time.time)  # snapshots started before are not ours
    _plan_mtime: int | None = field(default=None, repr=False)
    _shard_seeds: list[int] = field(default_factory=list, repr=False)

    def _load_plan(self) -> bool:
        path = Path(self.run_dir) / "plan.json"
        try:
            mtime = path.stat().st_mtime_ns
            if mtime != self._plan_mtime:
                self._shard_seeds = [len(s) for s in json.loads(path.read_text())["shards"]]
                self._plan_mtime = mtime
        except (OSError, ValueError, KeyError):
            return False  # not planned yet (or being replaced): nothing to show
        return True

    def _snapshots(self) -> dict[str, dict]:
        out = {}
        try:
            entries = list(os.scandir(progress_dir(self.run_dir)))
        except OSError:
            return out
        for e in entries:
            if not e.name.endswith(".json"):
                continue
            try:
                snap = json.loads(Path(e.path).read_text())
            except (OSError, ValueError):
                continue  # replaced between listing and reading: the next read gets it
            if snap.get("started", 0) >= self.since:
                out[e.name] = snap
        return out

    def read(self) -> RunProgress | None:
        if not self._load_plan():
            return None
        try:
            done = {e.name for e in os.scandir(Path(self.run_dir) / "shards") if e.name.endswith(".done.json")}
        except OSError:
            done = set()
        snaps = self._snapshots()
        p = RunProgress(shards_total=len(self._shard_seeds), seeds_total=sum(self._shard_seeds))
        if (ix := snaps.pop(INDEX_FILE, None)) is not None:
            p.index = IndexView(ix.get("state", "?"), ix.get("embedded", 0), ix.get("total", 0),
                                ix.get("seconds", 0.0), ix.get("embed_seconds", 0.0))
        starts, ends, running = [], [], False
        for shard, seeds in enumerate(self._shard_seeds):
            snap = snaps.get(f"part-{shard:05d}.json")
            if snap is not None:
                starts.append(snap["started"])
                ends.append(snap.get("updated", snap["started"]))
                running |= snap.get("state") == "running"
                for k in ("calls", "prompt_tokens", "completion_tokens"):
                    setattr(p, k, getattr(p, k) + snap.get(k, 0))
                if "cost_usd" in snap:
                    p.cost_usd = (p.cost_usd or 0.0) + snap["cost_usd"]
            if f"part-{shard:05d}.done.json" in done:
                p.shards_done += 1
                p.seeds_done += seeds
                p.seeds_done_now += seeds if snap is not None else 0
            elif snap is not None and snap.get("state") != "failed":
                p.seeds_done += snap.get("seeds_done", 0)
                p.seeds_done_now += snap.get("seeds_done", 0)
        if starts:  # while shards run, up to now; after the last one, its last snapshot
            p.llm_seconds = max((time.time() if running else max(ends)) - min(starts), 0.0)
        return p
