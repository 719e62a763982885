"""The FRet flow: plan → index → (LLM endpoint) → one task per shard → manifest.

The flow only sequences tasks and passes paths and small dicts; the data stays on disk. Shards
run four at a time on Prefect's thread-pool task runner (or on a Dask cluster: `options.task_runner`),
each fanning its paragraphs out with asyncio on its process's one LLM event loop
(gecko_factory.llm.runtime); a failed shard does not stop the others, and the run ends Failed
with the list of failed shards (a rerun on the same folder redoes only those). The run's
progress, shard table and data-set card are Prefect artifacts (tasks/artifacts.py).
"""

from __future__ import annotations

import faulthandler
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from gecko_factory.config import FretConfig
from gecko_factory.llm.budget import BudgetExhausted
from gecko_factory.llm.runtime import LLMRuntime, get_runtime
from gecko_factory.llm.settings import client_settings
from gecko_factory.llm.settings import LLMSettings
from gecko_factory.lock import run_lock
from gecko_factory.options import RunOptions
from gecko_factory.templates import prompt_versions
from tasks.artifacts import ProgressArtifact, publish_task
from tasks.fret_tasks import index_task, manifest_task, plan_task, probe_task, shard_retries, shard_task
from tasks.llm_endpoint import llm_endpoint


# Shards in flight in one process. They share one LLM client and its concurrency limit, so more
# only overlaps one shard's embedding and mining with the others' LLM calls: 2 -> 6 took the flow
# from 0.754 to 0.851 of a bare loop at 200 ms latency (bench/e2e.py); 4 keeps the work a crash
# leaves half-done small.
SHARDS_IN_FLIGHT = 4


# Seconds a stopped run's shard threads get to end before the process exits without them.
STOP_GRACE_S = 60


class ShardsFailed(RuntimeError):
    pass


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _ignore(signum, frame) -> None:
    pass


@contextmanager
def _stop_signals_to(make_handler: Callable[[dict], Callable]) -> Iterator[None]:
    """SIGTERM and SIGINT go to `make_handler(the handlers they had)` in the block, and back to
    those after it. Python runs signal handlers in the main thread only; elsewhere this does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, make_handler(before))
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def stop_signals_held() -> AbstractContextManager[None]:
    """While a stopping run cancels its shards, a further SIGTERM or SIGINT is ignored
    (the run is stopping already), not raised in the middle of the cancelling.

    `make` forwards a SIGTERM sent to its process group to its child, which so gets two (seen
    2026-12-03): the second, raised half-way through LLMRuntime.cancel_all, left the shards after
    the first one uncancelled, and the runner waited on them for good. So does a Ctrl-C pressed
    twice."""
    return _stop_signals_to(lambda before: _ignore)


def _first_then_ignore(before: dict) -> Callable:
    def first(signum, frame) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, _ignore)
        handler = before[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
    return first


def later_stop_signals_ignored() -> AbstractContextManager[None]:
    """From the first SIGTERM or SIGINT in the block on, the others are ignored until it exits:
    the first is handled as before (Prefect's handler raises TerminationSignal, Ctrl-C raises
    KeyboardInterrupt), but our handler swaps itself out before it hands the signal on. Holding
    them only once the stop reached its `except` (stop_signals_held) left a window, from the
    first signal's raise to the hold, where make's forwarded second one landed on 2 busy cores
    (CI, 2026-12-04): it was raised before any shard was cancelled, and the runner's exit
    waited on the shard threads for good."""
    return _stop_signals_to(_first_then_ignore)


def stop_shards(tag: str, runtime: LLMRuntime | None = None) -> int:
    """Cancel the run's shard coroutines (LLMRuntime.cancel_all: `tag` is its invocation id) with
    further stop signals held; how many were cancelled."""
    with stop_signals_held():
        return (runtime or get_runtime()).cancel_all(tag=tag)


@contextmanager
def disarmed_on_exit() -> Iterator[None]:
    """A stop's deadline (faulthandler's timer, one per process) ends with the shard runner's
    exit, once every shard thread is gone: a flow stopped inside a long-lived process (a test, a
    worker) must not take the process with it later."""
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@flow(name="fret", flow_run_name="fret-{run_dir}", task_runner=ThreadPoolTaskRunner(max_workers=SHARDS_IN_FLIGHT),
      log_prints=False)
def fret_flow(
    run_dir: str = "runs/latest",
    options: RunOptions = RunOptions(),
    force: bool = False,
    train_after: bool = False,
    train_params: dict | None = None,
) -> dict:
    """`options`: what to make and how (gecko_factory/options.py, the CLI's help texts);
    `force`: re-plan a run folder made with another config or corpus; `train_after`: train on
    the run once it is done (the `train` deployment when there is one, with `train_params`).
    `options.judge_mode` "auto" audits the judge forms first (flows/audit.py; on
    `options.audit_beir`, default SciFact train) and takes the cheapest that ranks within a point
    of the best. `options.task_runner` "dask" or a scheduler address runs the shard tasks there:
    remote workers need the project installed, the same LLM environment variables, and an LLM
    endpoint they can reach (the embedded server listens on loopback only)."""
    t0 = time.perf_counter()
    settings = client_settings()  # the manifest shows the limits the shards use
    if options.judge_mode == "auto":
        from flows.audit import auto_judge_mode

        chosen = auto_judge_mode(options.candidates, options.fusion, beir=options.audit_beir)["mode"]
        options = options.model_copy(update={"judge_mode": chosen})
    config = fret_config(options, settings)
    with run_lock(Path(run_dir)):  # one writer per run folder
        manifest = _run(run_dir, config, settings, force, options, t0)
    if train_after and not manifest.get("stopped"):
        manifest["training"] = trigger_training(run_dir, train_params or {})
    return manifest


TRAIN_DEPLOYMENT = "train/train"
# The "dask" cluster: as many shards at once as the thread pool, each in its own process.
# The dashboard's HTTP server on any free port: two clusters on one machine do not fight for 8787.
LOCAL_CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}


def shard_runner(options: RunOptions) -> AbstractContextManager[TaskRunner]:
    """The task runner for the shard tasks, entered inside the run lock: its exit waits for every
    shard thread, so the lock is never released while a shard of this run still works (the flow's
    own runner exits after the flow function, lock released: a stopped run's shard sleeping in an
    outage retry outlived it next to a resumed run, 2026-12-03). Prefect fixes a flow's own runner
    in its decorator; plan, index and probe stay there."""
    if options.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=SHARDS_IN_FLIGHT)
    from prefect_dask import DaskTaskRunner

    address = options.dask_address()
    return DaskTaskRunner(address=address) if address else DaskTaskRunner(cluster_kwargs=LOCAL_CLUSTER)


def fret_config(options: RunOptions, settings: LLMSettings) -> FretConfig:
    """The run's recipe: its options, the models the LLM settings name, the prompts' versions.
    The refresh builds its reuse hash and the audit its judge with it too, so all three always
    agree on what the recipe is."""
    return FretConfig.from_options(options, settings.model, settings.judge_model,
                                   prompt_versions(options.judge_mode))


def trigger_training(run_dir: str, train_params: dict) -> dict:
    """The `train` deployment when one exists (it runs on the GPU pool), else a subflow here.

    The idempotency key is this flow run's id: a retried FRet run does not train twice."""
    from prefect.client.orchestration import get_client
    from prefect.context import get_run_context
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    params = {**train_params, "run_dirs": [str(Path(run_dir).resolve())]}
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(TRAIN_DEPLOYMENT)
        except ObjectNotFound:
            from flows.train import train_flow

            get_run_logger().info("no %s deployment: training as a subflow", TRAIN_DEPLOYMENT)
            return {"mode": "subflow", "result": train_flow(**params)}
    run_id = get_run_context().flow_run.id
    flow_run = run_deployment(TRAIN_DEPLOYMENT, parameters=params, timeout=0,
                              idempotency_key=f"train-after-{run_id}")
    return {"mode": "deployment", "flow_run_id": str(flow_run.id)}


def _run(run_dir: str, config: FretConfig, settings: LLMSettings, force: bool, options: RunOptions,
         t0: float) -> dict:
    logger = get_run_logger()
    judge_mode = config.judge_mode
    invocation = uuid.uuid4().hex
    plan = plan_task(config.model_dump(mode="json"), run_dir, force)
    # made before the index is built: it shows the embedding, then the seeds (every few seconds)
    with ProgressArtifact(run_dir, plan["shards"]) as progress:
        index = index_task(run_dir)
        with llm_endpoint(settings) as base_url:
            # An endpoint down at the start fails fast (a wrong URL should not cost minutes); one that
            # goes down mid-run is waited for (`shard_retries`), since shards are then half done.
            mode = probe_task(base_url, judge_mode)
            with later_stop_signals_ignored(), disarmed_on_exit(), shard_runner(options) as runner:
                try:
                    futures = {
                        runner.submit(shard_task.with_options(task_run_name=f"shard-{shard:05d}",
                                                              **shard_retries(settings)), parameters=dict(
                            run_dir=run_dir, shard=shard, base_url=base_url, index_path=index["path"],
                            judge_mode=mode, cache=options.cache, invocation=invocation,
                            budget_usd=options.budget_usd, max_tokens=options.max_tokens)): shard
                        for shard in range(plan["shards"])
                    }
                    for future in as_completed(list(futures)):
                        future.wait()
                        progress.finished(future.state.is_completed())
                        logger.info("shard %05d %s (%d of %d shards done)", futures[future],
                                    future.state.name.lower(), progress.done, progress.total)
                except BaseException:
                    # Stopped (SIGTERM arrives as Prefect's TerminationSignal, or Ctrl-C): the
                    # runner waits for the shard threads, which would run their seeds or outage
                    # back-offs to the end; cancelled, they fail now with nothing committed, and
                    # a queued shard that a freed thread picks up fails as it starts (was: the
                    # next four ran, against an LLM server already shut down, into outage retries).
                    cancelled = stop_shards(invocation)
                    logger.warning("stopping: %d shard coroutines cancelled", cancelled)
                    # The runner's exit now waits for the shard threads. Should one still not end,
                    # the process dumps every thread's stack and exits: a stop must end it.
                    faulthandler.dump_traceback_later(STOP_GRACE_S, exit=True)
                    raise
                states = [f.state for f in futures]  # in shard order
    stopped = [i for i, s in enumerate(states)
               if not s.is_completed() and isinstance(s.result(raise_on_failure=False), BudgetExhausted)]
    failed = {shard: s.message or s.name for shard, s in enumerate(states)
              if not s.is_completed() and shard not in stopped}
    stop_reason = None
    if stopped:
        stop_reason = (f"{states[stopped[0]].result(raise_on_failure=False)}; {len(stopped)} shards "
                       f"left pending: resume with a larger budget")
    manifest = manifest_task(run_dir, {
        "llm": {**settings.public_dict(), "concurrency_limits": get_runtime().concurrency(base_url)},
        "index": index, "judge_mode_used": mode,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "failed_shards": {str(k): v for k, v in failed.items()},
        "stopped": stop_reason,
    })
    publish_task(run_dir)  # also for a failed or stopped run: that is when one looks at it
    if failed:
        for shard, why in failed.items():
            logger.error("shard %05d failed: %s", shard, why)
        raise ShardsFailed(f"{len(failed)} of {plan['shards']} shards failed: {sorted(failed)}; "
                           f"`gecko-factory resume {run_dir}` redoes them (done shards are kept)")
    logger.info("FRet run done: %d examples in %s", manifest["counts"]["examples"], Path(run_dir))
    return manifest
