"""The FRet flow: plan → index → (LLM endpoint) → one task per shard → manifest.

The flow only sequences tasks and passes paths and small dicts; the data stays on disk. Shards
run four at a time on Prefect's thread-pool task runner (or on a Dask cluster: `task_runner`),
each fanning its paragraphs out with asyncio on its process's one LLM event loop
(gecko_factory.llm.runtime); a failed shard does not stop the others, and the run ends Failed
with the list of failed shards (a rerun on the same folder redoes only those). The run's
progress, shard table and data-set card are Prefect artifacts (tasks/artifacts.py).
"""

from __future__ import annotations

import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from gecko_factory.config import FretConfig
from gecko_factory.corpus import SAMPLE, SCIFACT, CorpusSpec
from gecko_factory.fret import prompt_versions
from gecko_factory.fusion import FusionConfig, NegativeGuard
from gecko_factory.llm.budget import BudgetExhausted
from gecko_factory.llm.embedded import client_settings
from gecko_factory.llm.settings import LLMSettings
from gecko_factory.lock import run_lock
from tasks.artifacts import ShardProgress, publish_task
from tasks.fret_tasks import index_task, manifest_task, plan_task, probe_task, shard_retries, shard_task
from tasks.llm_endpoint import llm_endpoint


# Shards in flight in one process. They share one LLM client and its concurrency limit, so more
# only overlaps one shard's embedding and mining with the others' LLM calls: 2 -> 6 took the flow
# from 0.754 to 0.851 of a bare loop at 200 ms latency (bench/e2e.py); 4 keeps the work a crash
# leaves half-done small.
SHARDS_IN_FLIGHT = 4


class ShardsFailed(RuntimeError):
    pass


@flow(name="fret", flow_run_name="fret-{run_dir}", task_runner=ThreadPoolTaskRunner(max_workers=SHARDS_IN_FLIGHT),
      log_prints=False)
def fret_flow(
    run_dir: str = "runs/latest",
    corpus: str = "sample",
    limit: int | None = None,
    seed_ids_file: str | None = None,
    candidates: int = 20,
    shard_size: int = 256,
    judge_mode: str = "two_prompt",
    negative: str = "lowest",
    seed: int = 0,
    force: bool = False,
    cache: str = "on",
    budget_usd: float | None = None,
    max_tokens: int | None = None,
    train_after: bool = False,
    train_params: dict | None = None,
    task_runner: str = "threads",
    fusion: str | None = None,
    negative_guard: bool = True,
    audit_beir: str | None = None,
) -> dict:
    """`fusion`: a FusionConfig spec (`rrf`, `rrf+keep_seed`, `wrrf:retrieval=W,ql=W,rc=W`;
    None: the factory's default); `negative_guard`: keep likely false negatives out of the hard
    negatives (fusion.NegativeGuard); `judge_mode` "auto": audit the judge forms first
    (flows/audit.py; on `audit_beir`, default SciFact train) and take the cheapest that ranks
    within a point of the best.
    `task_runner`: where shard tasks run — "threads" (this process, four at a time), "dask" (a
    local cluster of two worker processes) or a Dask scheduler address (tcp://host:port or
    dask://host:port). Remote workers need the project installed, the same LLM environment
    variables, and an LLM endpoint they can reach (the embedded server listens on loopback only)."""
    t0 = time.perf_counter()
    dask_address(task_runner)  # a bad value fails before any work
    settings = client_settings()  # the manifest shows the limits the shards use
    if judge_mode == "auto":
        from flows.audit import auto_judge_mode

        judge_mode = auto_judge_mode(candidates, fusion, beir=audit_beir)["mode"]
    config = fret_config(corpus, candidates, judge_mode, negative, seed, settings.model, limit=limit,
                         shard_size=shard_size, seed_ids_file=seed_ids_file, fusion=fusion,
                         negative_guard=negative_guard, judge_model=settings.judge_model)
    with run_lock(Path(run_dir)):  # one writer per run folder
        manifest = _run(run_dir, config, settings, force, cache, (budget_usd, max_tokens), t0,
                        task_runner)
    if train_after and not manifest.get("stopped"):
        manifest["training"] = trigger_training(run_dir, train_params or {})
    return manifest


TRAIN_DEPLOYMENT = "train/train"
# The "dask" cluster: as many shards at once as the thread pool, each in its own process.
# The dashboard's HTTP server on any free port: two clusters on one machine do not fight for 8787.
LOCAL_CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}


def dask_address(spec: str) -> str | None:
    """None for "threads" and "dask" (a new local cluster), else the scheduler's tcp:// address."""
    if spec in ("threads", "dask"):
        return None
    if spec.startswith("dask://"):
        return "tcp://" + spec.removeprefix("dask://")
    if spec.startswith("tcp://"):
        return spec
    raise ValueError(f"task_runner {spec!r}: expected threads, dask, tcp://HOST:PORT or dask://HOST:PORT")


def shard_runner(spec: str) -> AbstractContextManager[TaskRunner]:
    """The task runner for the shard tasks. Prefect fixes a flow's own runner in its decorator, so
    Dask is a runner entered here for the shards only; plan, index and probe stay in the flow."""
    if spec == "threads":
        return nullcontext(FlowRunContext.get().task_runner)
    from prefect_dask import DaskTaskRunner

    address = dask_address(spec)
    return DaskTaskRunner(address=address) if address else DaskTaskRunner(cluster_kwargs=LOCAL_CLUSTER)


def fret_config(corpus: str, candidates: int, judge_mode: str, negative: str, seed: int,
                llm_model: str, limit: int | None = None, shard_size: int = 256,
                seed_ids_file: str | None = None, fusion: str | None = None,
                negative_guard: bool = True, judge_model: str | None = None) -> FretConfig:
    """The run's config from flow parameters; the refresh builds its reuse hash with it too, so
    both always agree on what the recipe is. `fusion` None: FretConfig's default."""
    choice = {"fusion": FusionConfig.parse(fusion)} if fusion else {}
    return FretConfig(
        **choice, negative_guard=NegativeGuard() if negative_guard else None,
        corpus=CorpusSpec(path=absolute_corpus(corpus)),  # `resume` may run from another folder
        limit=limit, candidates=candidates, shard_size=shard_size, judge_mode=judge_mode,
        negative=negative, seed=seed, llm_model=llm_model,
        judge_model=judge_model if judge_model and judge_model != llm_model else "",
        seed_ids_file=str(Path(seed_ids_file).resolve()) if seed_ids_file else None,
        prompt_versions=prompt_versions(),
    )


def absolute_corpus(corpus: str) -> str:
    """Paths become absolute; the named corpora (`sample`, `scifact[:ZIP]`) keep their name."""
    if corpus == SAMPLE or corpus == SCIFACT:
        return corpus
    if corpus.startswith(SCIFACT + ":"):
        return f"{SCIFACT}:{Path(corpus.partition(':')[2]).resolve()}"
    return str(Path(corpus).resolve())


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


def _run(run_dir: str, config: FretConfig, settings: LLMSettings, force: bool, cache: str,
         limits: tuple[float | None, int | None], t0: float, task_runner: str) -> dict:
    logger = get_run_logger()
    judge_mode = config.judge_mode
    invocation = uuid.uuid4().hex
    plan = plan_task(config.model_dump(mode="json"), run_dir, force)
    index = index_task(run_dir)
    with llm_endpoint(settings) as base_url:
        # An endpoint down at the start fails fast (a wrong URL should not cost minutes); one that
        # goes down mid-run is waited for (`shard_retries`), since shards are then half done.
        mode = probe_task(base_url, judge_mode)
        progress = ShardProgress(run_dir, plan["shards"])
        with shard_runner(task_runner) as runner:
            futures = {
                runner.submit(shard_task.with_options(task_run_name=f"shard-{shard:05d}",
                                                      **shard_retries(settings)), parameters=dict(
                    run_dir=run_dir, shard=shard, base_url=base_url, index_path=index["path"],
                    judge_mode=mode, cache=cache, invocation=invocation, budget_usd=limits[0],
                    max_tokens=limits[1])): shard
                for shard in range(plan["shards"])
            }
            for future in as_completed(list(futures)):
                future.wait()
                progress.finished(future.state.is_completed())
                logger.info("shard %05d %s (%d of %d shards done)", futures[future],
                            future.state.name.lower(), progress.done, progress.total)
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
        "llm": settings.public_dict(), "index": index, "judge_mode_used": mode,
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
