"""Progress snapshots (gecko_factory/progress.py): what the stages write and what a watcher reads.

Real files in a real run folder (plan.json, done markers); the shard's coroutine is a stand-in
for the pipeline (the pty test in tests/flows/test_progress.py runs the real one)."""

from __future__ import annotations

import asyncio
import json
import time

from gecko_factory.progress import (
    IndexProgress,
    ProgressFile,
    ProgressReader,
    SeedProgress,
    index_progress_file,
    shard_progress_file,
)


def _run_folder(tmp_path, shards=(4, 4, 2)):
    run = tmp_path / "run"
    (run / "shards").mkdir(parents=True)
    (run / "plan.json").write_text(json.dumps({"shards": [[f"s{i}-{j}" for j in range(n)]
                                                          for i, n in enumerate(shards)]}))
    return run


def test_a_file_is_written_at_most_once_per_interval(tmp_path):
    f = ProgressFile(tmp_path / "p" / "x.json", every_s=60, n=0)
    assert f.update(n=1)
    assert not f.update(n=2)  # within the interval: kept, not written
    assert json.loads(f.path.read_text())["n"] == 1
    assert f.update(force=True)
    assert json.loads(f.path.read_text())["n"] == 2
    assert [p.name for p in f.path.parent.iterdir()] == ["x.json"]  # no temp file left


def test_seed_progress_counts_seeds_and_usage_and_ends_done_or_failed(tmp_path):
    run = _run_folder(tmp_path)
    usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}

    async def shard(progress: SeedProgress, fail: bool):
        progress.usage = lambda: usage
        for _ in range(3):
            usage["calls"] += 5
            usage["prompt_tokens"] += 100
            usage["completion_tokens"] += 10
            progress.seed_done()
            await asyncio.sleep(0.01)
        if fail:
            raise RuntimeError("endpoint down")
        progress.seed_done()
        return "report"

    done = SeedProgress(run, 0, 4, prices=(1.0, 2.0))
    assert asyncio.run(done.watch(shard(done, fail=False))) == "report"
    snap = json.loads(shard_progress_file(run, 0).read_text())
    assert snap["state"] == "done" and snap["seeds_done"] == 4 and snap["calls"] == 15
    assert snap["cost_usd"] == (300 * 1.0 + 30 * 2.0) / 1e6

    failed = SeedProgress(run, 1, 4)
    try:
        asyncio.run(failed.watch(shard(failed, fail=True)))
    except RuntimeError:
        pass
    snap = json.loads(shard_progress_file(run, 1).read_text())
    assert snap["state"] == "failed" and snap["seeds_done"] == 3 and "cost_usd" not in snap  # unpriced


def test_reader_sums_this_runs_snapshots_and_the_done_markers(tmp_path):
    run = _run_folder(tmp_path)
    stale = ProgressFile(shard_progress_file(run, 2), stage="shard", state="running", seeds_done=2, calls=999)
    stale.fields["started"] = time.time() - 3600  # an earlier invocation's
    stale.update(force=True)
    reader = ProgressReader(run, since=time.time() - 60)  # this run began a minute ago
    assert reader.read().seeds_done == 0  # the stale snapshot does not count

    assert reader.read().indexing  # planned, no index snapshot yet
    ix = IndexProgress(index_progress_file(run), total=100)
    assert "loading the encoder to index 100 paragraphs" in reader.read().describe()
    ix.state("embedding")
    ix.file.every_s = 0  # no wait between writes here
    ix.embedded_batch(64)
    p = reader.read()
    assert p.indexing and "embedding 64 of 100 paragraphs" in p.describe()
    ix.embedded_batch(36)
    ix.state("done")
    assert reader.read().index.state == "done"

    # shard 0 reused from an earlier run (a marker, no snapshot); shard 1 running here
    (run / "shards" / "part-00000.done.json").write_text("{}")
    running = ProgressFile(shard_progress_file(run, 1), stage="shard", state="running", seeds=4)
    running.fields["started"] -= 10  # it has run 10 s
    running.update(force=True, seeds_done=2, calls=30, prompt_tokens=1000, completion_tokens=50)
    p = reader.read()
    assert (p.seeds_total, p.seeds_done, p.seeds_done_now) == (10, 6, 2)
    assert (p.shards_done, p.shards_total, p.calls) == (1, 3, 30)
    assert 9 < p.llm_seconds < 30 and p.calls_per_s is not None
    # 4 seeds left at this run's 2 seeds per ~10 s
    assert 15 < p.eta_s < 60 and "ETA" in p.llm_line() and "1,050 tokens" in p.llm_line()
    assert p.cost_usd is None and "$" not in p.llm_line()
    assert p.describe().startswith("6 of 10 seeds (60%) · 1 of 3 shards done")


def test_a_failed_shards_seeds_are_not_done(tmp_path):
    run = _run_folder(tmp_path)
    reader = ProgressReader(run)
    f = ProgressFile(shard_progress_file(run, 0), stage="shard", state="failed", seeds=4)
    f.update(force=True, seeds_done=3, calls=12)
    p = reader.read()
    assert p.seeds_done == 0 and p.calls == 12  # its calls were made (and paid for) all the same


def test_no_plan_yet_reads_as_nothing(tmp_path):
    assert ProgressReader(tmp_path / "nowhere").read() is None
