"""The FRet run's Prefect artifacts: what the UI shows on the flow run's Artifacts tab.

- `fret-progress`: the index build (paragraphs embedded), then seeds done / total with LLM calls/s,
  tokens, cost when priced and an ETA, and shards done; made after planning and refreshed every
  few seconds from the run folder's progress files (gecko_factory.progress);
- `fret-shards`: a table with one row per planned shard (rows, skips by reason, LLM calls,
  tokens, cache hits, seconds), from stats.json;
- `fret-card`: the markdown data-set card (gecko_factory.card), also the body of the run folder's
  README.md, the Hugging Face card that makes the folder a data set (gecko_factory.hf_card).
Keys are lowercase with dashes, as Prefect requires for an artifact to be listed on the
Artifacts page; each key keeps its history there, one version per run.
"""

from __future__ import annotations

import contextvars
import threading
from pathlib import Path
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from gecko_factory.card import run_card
from gecko_factory.plots import inline_images
from gecko_factory.progress import ProgressReader
from gecko_factory.hf_card import write_readme

PROGRESS_KEY = "fret-progress"
SHARDS_KEY = "fret-shards"
CARD_KEY = "fret-card"
# Seconds between updates of fret-progress: live enough for a person on the run page, and a
# handful of API calls a minute however many seeds or shards finish.
ARTIFACT_EVERY_S = 5.0


class ProgressArtifact:
    """`fret-progress` of one flow run, from the run folder's progress files (gecko_factory.progress).

    Made after planning, so it shows the index build too; a thread refreshes it every
    `every_s` while the run goes on (only when a figure changed), and once more on exit. The flow
    reports each shard's future with `finished(ok)`; that only counts, the thread publishes, so a
    resume that finds thousands of shards done does not make thousands of API calls."""

    def __init__(self, run_dir: str, total: int, every_s: float = ARTIFACT_EVERY_S):
        self.run_dir, self.total, self.done, self.failed = Path(run_dir).name, total, 0, 0
        self.reader = ProgressReader(Path(run_dir))
        self.every_s = every_s
        self._lock = threading.Lock()
        self._published: tuple | None = None
        self._stop = threading.Event()
        progress, description = self._figures()
        self.id: UUID = create_progress_artifact(progress=progress, key=PROGRESS_KEY, description=description)
        # The copied context carries Prefect's settings and this flow run into the thread.
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._loop,),
                                        name="fret-progress", daemon=True)

    def __enter__(self) -> ProgressArtifact:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._try_publish()  # the final figures, whatever the thread last saw

    def _figures(self) -> tuple[float, str]:
        failed = f", {self.failed} failed or stopped" if self.failed else ""
        head = f"{self.run_dir}: {self.done} of {self.total} shards done{failed}"
        p = self.reader.read()
        if p is None:
            return (100.0 if self.total == 0 else 0.0), head
        if p.indexing:
            return 0.0, f"{head} · {p.index_line()}"
        return p.percent, " · ".join(x for x in (head, p.seeds_line(), p.llm_line()) if x)

    def finished(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.done += 1
            else:
                self.failed += 1

    def publish(self) -> None:
        with self._lock:
            figures = self._figures()
            if figures == self._published:
                return
            update_progress_artifact(self.id, progress=figures[0], description=figures[1])
            self._published = figures

    def _try_publish(self) -> None:
        try:
            self.publish()
        except Exception as exc:  # noqa: BLE001 - an API hiccup must not end (or mask) the run; say it
            get_run_logger().warning("%s not updated: %s", PROGRESS_KEY, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._try_publish()


@task(name="publish-artifacts", cache_policy=NO_CACHE, tags=["fret"])
def publish_task(run_dir: str) -> dict:
    """The shard table and the data-set card, from the files the manifest task just wrote."""
    table, card = run_card(Path(run_dir))
    write_readme(Path(run_dir), body=card)  # first: the folder is a data set even if the API is down
    name = Path(run_dir).name
    table_id = create_table_artifact(table=table, key=SHARDS_KEY,
                                     description=f"{name}: one row per shard, as committed")
    # the UI has no files beside the card: its plots go inline, as data: URIs
    card_id = create_markdown_artifact(markdown=inline_images(card, Path(run_dir)), key=CARD_KEY,
                                       description=f"{name}: FRet data-set card")
    get_run_logger().info("published artifacts %s and %s", SHARDS_KEY, CARD_KEY)
    return {SHARDS_KEY: str(table_id), CARD_KEY: str(card_id)}
