"""The FRet run's Prefect artifacts: what the UI shows on the flow run's Artifacts tab.

- `fret-progress`: shards done / total, created when the shards are submitted and updated from
  the flow's thread as each one finishes (a reused shard counts as done at once);
- `fret-shards`: a table with one row per planned shard (rows, skips by reason, LLM calls,
  tokens, cache hits, seconds), from stats.json;
- `fret-card`: the markdown data-set card (gecko_factory.card), also the body of the run folder's
  README.md, the Hugging Face card that makes the folder a data set (gecko_factory.hf_card).
Keys are lowercase with dashes, as Prefect requires for an artifact to be listed on the
Artifacts page; each key keeps its history there, one version per run.
"""

from __future__ import annotations

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
from gecko_factory.hf_card import write_readme

PROGRESS_KEY = "fret-progress"
SHARDS_KEY = "fret-shards"
CARD_KEY = "fret-card"


class ShardProgress:
    """The progress artifact of one flow run; `finished(ok)` after each shard's future resolves."""

    def __init__(self, run_dir: str, total: int):
        self.run_dir, self.total, self.done, self.failed = Path(run_dir).name, total, 0, 0
        self.id: UUID = create_progress_artifact(
            progress=100.0 if total == 0 else 0.0, key=PROGRESS_KEY, description=self._describe())

    def _describe(self) -> str:
        failed = f", {self.failed} failed or stopped" if self.failed else ""
        return f"{self.run_dir}: {self.done} of {self.total} shards done{failed}"

    def finished(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        update_progress_artifact(self.id, progress=100.0 * self.done / max(self.total, 1),
                                 description=self._describe())


@task(name="publish-artifacts", cache_policy=NO_CACHE, tags=["fret"])
def publish_task(run_dir: str) -> dict:
    """The shard table and the data-set card, from the files the manifest task just wrote."""
    table, card = run_card(Path(run_dir))
    write_readme(Path(run_dir), body=card)  # first: the folder is a data set even if the API is down
    name = Path(run_dir).name
    table_id = create_table_artifact(table=table, key=SHARDS_KEY,
                                     description=f"{name}: one row per shard, as committed")
    card_id = create_markdown_artifact(markdown=card, key=CARD_KEY,
                                       description=f"{name}: FRet data-set card")
    get_run_logger().info("published artifacts %s and %s", SHARDS_KEY, CARD_KEY)
    return {SHARDS_KEY: str(table_id), CARD_KEY: str(card_id)}
