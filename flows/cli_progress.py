"""`gecko-factory run`'s progress: a live display in a terminal, a plain line now and then elsewhere.

It reads what the run folder says (gecko_factory.progress: the index build's and each shard's
snapshots, and the shards' done markers), so it shows shards that run in other processes (Dask)
as well as in this one. Two bars: the index (paragraphs embedded, paragraphs/s) and the seeds
(done / total, LLM calls/s, tokens, cost when priced, ETA). Output that is not a terminal (a
pipe, a log file, CI) gets no bars — their redraws would fill it — only a line every
`PLAIN_EVERY_S` while something moves.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from gecko_factory.progress import ProgressReader, RunProgress

# Seconds between reads of the run folder for the live display (the files change once a second).
LIVE_EVERY_S = 0.5
# Seconds between plain progress lines when the output is not a terminal.
PLAIN_EVERY_S = 30.0


def is_live(console: Console) -> bool:
    """Bars only for a person at a terminal: stdout and the console's own stream are both TTYs."""
    return console.is_terminal and sys.stdout.isatty()


def watch_run(run_dir: Path, stop: threading.Event, console: Console, live: bool | None = None) -> None:
    """Show the run's progress until `stop` is set (then once more: the final figures)."""
    reader = ProgressReader(Path(run_dir))  # from now on: older snapshots are an earlier run's
    if live is None:
        live = is_live(console)
    if live:
        _live(reader, stop, console)
    else:
        _plain(reader, stop, console)


def _plain(reader: ProgressReader, stop: threading.Event, console: Console) -> None:
    last = None
    while not stop.wait(PLAIN_EVERY_S):
        p = reader.read()
        line = None if p is None else p.describe()
        if line and line != last:
            console.print(f"progress: {line}", markup=False, highlight=False)
            last = line


class _Bars:
    """The two rich tasks, added as their stage starts: the index first, then the seeds."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.index: TaskID | None = None
        self.seeds: TaskID | None = None

    def show(self, p: RunProgress) -> None:
        ix = p.index
        if ix is not None:
            what = {"loading": "loading the encoder", "embedding": "embedding paragraphs",
                    "building": "building the HNSW graph", "done": "index built",
                    "reused": "index reused"}.get(ix.state, ix.state)
            info = f"{ix.rate:,.0f} paragraphs/s" if ix.rate else ""
            if self.index is None:
                self.index = self.progress.add_task(what, total=ix.total or None, info=info)
            self.progress.update(self.index, description=what, completed=ix.embedded,
                                 total=ix.total or None, info=info)
            if ix.state in ("done", "reused"):
                self.progress.stop_task(self.index)  # its clock stops with it
        if p.indexing:
            return
        if self.seeds is None:
            self.seeds = self.progress.add_task("seeds", total=p.seeds_total, info="")
        self.progress.update(self.seeds, completed=p.seeds_done, total=p.seeds_total,
                             info=" · ".join(x for x in (f"{p.shards_done}/{p.shards_total} shards",
                                                         p.llm_line()) if x))


@contextmanager
def _prefect_logs_above() -> Iterator[None]:
    """Prefect's console handler prints to the stream it was given at start-up, past rich's
    redirection, so its lines landed inside the bars. While the bars are up, sys.stderr and
    sys.stdout are rich's proxies (which print above the bars): point the handler's console there."""
    from prefect.logging.handlers import PrefectConsoleHandler

    proxies = {f.rich_proxied_file: f for f in (sys.stderr, sys.stdout) if hasattr(f, "rich_proxied_file")}
    swapped = []
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for h in getattr(logger, "handlers", []):
            if isinstance(h, PrefectConsoleHandler) and proxies.get(h.console.file) is not None:
                swapped.append((h.console, h.console.file))
                h.console.file = proxies[h.console.file]
    try:
        yield
    finally:
        for con, original in swapped:
            con.file = original


def _live(reader: ProgressReader, stop: threading.Event, console: Console) -> None:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    # Not transient: the last state (how long the index took, the LLM rate) stays on screen.
    with Progress(*columns, console=console, refresh_per_second=4) as progress, _prefect_logs_above():
        bars = _Bars(progress)
        while True:
            stopping = stop.wait(LIVE_EVERY_S)
            p = reader.read()
            if p is not None:
                bars.show(p)
            if stopping:
                return
