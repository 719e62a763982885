"""The process-wide LLM loop: shards wait on it from their threads, and a stopping run can
cancel them all at once (flows/fret.py on SIGTERM or Ctrl-C)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from gecko_factory.llm.runtime import LLMRuntime


def test_cancel_all_ends_every_waiting_run_at_once():
    runtime = LLMRuntime()
    outcomes: list[BaseException | str] = []

    def shard() -> None:
        try:
            runtime.run(asyncio.sleep(30))
            outcomes.append("finished")
        except BaseException as exc:  # noqa: BLE001 - what the caller sees is the point
            outcomes.append(exc)

    threads = [threading.Thread(target=shard) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(runtime._running) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    assert runtime.cancel_all() == 3
    for t in threads:
        t.join(timeout=5)
    assert time.monotonic() - t0 < 2
    assert len(outcomes) == 3 and all(isinstance(o, concurrent.futures.CancelledError) for o in outcomes)
    assert runtime.cancel_all() == 0  # nothing left waiting
    assert runtime.run(asyncio.sleep(0, result="still serving")) == "still serving"


def test_a_finished_run_is_not_cancelled_later():
    runtime = LLMRuntime()
    assert runtime.run(asyncio.sleep(0, result=1)) == 1
    assert runtime.cancel_all() == 0
    with pytest.raises(ValueError):
        runtime.run(_fails())


async def _fails() -> None:
    raise ValueError("a shard's own error reaches its caller unchanged")


def test_cancel_all_with_a_tag_stops_that_run_only():
    runtime = LLMRuntime()
    outcomes: dict[str, object] = {}

    def shard(tag: str, seconds: float) -> None:
        try:
            outcomes[tag] = runtime.run(asyncio.sleep(seconds, result="finished"), tag=tag)
        except concurrent.futures.CancelledError:
            outcomes[tag] = "cancelled"

    threads = [threading.Thread(target=shard, args=("run-a", 30)),
               threading.Thread(target=shard, args=("run-b", 0.5))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(runtime._running) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.cancel_all(tag="run-a") == 1
    for t in threads:
        t.join(timeout=5)
    assert outcomes == {"run-a": "cancelled", "run-b": "finished"}


def test_a_stopped_tag_starts_nothing_new():
    """A task runner hands a freed thread the next queued shard at once: that shard must not
    start its LLM work once its run was stopped (it did, into a server already shut down)."""
    runtime = LLMRuntime()
    assert runtime.cancel_all(tag="run-a") == 0  # nothing running yet; the tag is stopped anyway
    started = []

    async def work() -> str:
        started.append(1)
        return "ran"

    with pytest.raises(concurrent.futures.CancelledError):
        runtime.run(work(), tag="run-a")
    assert started == [] and runtime.run(work(), tag="run-b") == "ran"
    assert runtime.run(work()) == "ran"  # untagged callers are not stopped either
