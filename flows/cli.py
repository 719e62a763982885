"""`gecko-factory`: run the FRet flow with a progress bar, and inspect what a run wrote."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class _Program(typer.Typer):
    """The app run as the `gecko-factory` program: the console script and `python -m flows.cli`
    call it; typer's CliRunner (tests) calls the click command directly and never gets here."""

    def __call__(self, *args, **kwargs):
        # First thing, before any process is started, and for every command (later ones too): a
        # reaper that ends whatever this process started (Prefect's server, Dask workers, the LLM
        # server) once it is gone, `kill -9` included. Not in a typer callback: that also runs
        # under CliRunner and would leave a reaper on the test process.
        from gecko_factory.orphan_reaper import start_reaper

        start_reaper()
        try:
            return super().__call__(*args, **kwargs)
        except RuntimeError as exc:  # a command without its own handler (train): say what to raise
            if hint := _server_start_hint(exc):
                console.print(f"[red]error:[/red] {escape(str(exc))}{hint}")
                raise SystemExit(1) from None
            raise


app = _Program(add_completion=False, no_args_is_help=True,
               help="Gecko/FRet training data from plain paragraphs, orchestrated by Prefect.")
console = Console(stderr=True)

# Prefect's ephemeral API server (started when PREFECT_API_URL is unset) must answer within this
# setting, 20 s by default; with both cores of a 2-core machine busy its start took longer.
SERVER_START_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
SERVER_START_DEFAULT_S = 180


def _quiet_prefect() -> None:
    # No telemetry calls from a machine that may have no network; set before prefect is imported.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    _default_server_start_timeout()


def _default_server_start_timeout() -> None:
    """SERVER_START_DEFAULT_S unless the user set the timeout anywhere Prefect reads settings from:
    the environment, .env, prefect.toml, pyproject.toml or the profile (`prefect config set`)."""
    if SERVER_START_SETTING in os.environ:
        return
    from prefect.context import refresh_global_settings_context
    from prefect.settings import Settings

    if "startup_timeout_seconds" in Settings().server.ephemeral.model_fields_set:
        return
    os.environ[SERVER_START_SETTING] = str(SERVER_START_DEFAULT_S)
    refresh_global_settings_context()  # prefect read its settings when it was imported


def _server_start_hint(exc: BaseException) -> str:
    """How to raise the ephemeral server's start timeout, when that is what `exc` is about."""
    if "ephemeral Prefect API server" not in str(exc):
        return ""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout

    return (f"\nPrefect's API server did not start within {SERVER_START_SETTING} = "
            f"{timeout.value()} s (a busy machine?). Raise it, e.g. `export {SERVER_START_SETTING}=600` "
            f"or `prefect config set {SERVER_START_SETTING}=600`, or run against a started server "
            "(PREFECT_API_URL).")


def _watch(run_dir: Path, stop: threading.Event) -> None:
    """Progress from the files the flow commits: shard markers, counted against plan.json."""
    with Progress(TextColumn("[bold]FRet shards"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[examples]} examples"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        bar = progress.add_task("shards", total=None, examples=0)
        while not stop.wait(0.5):
            try:
                plan = json.loads((run_dir / "plan.json").read_text())
            except (OSError, ValueError):
                continue
            markers = list((run_dir / "shards").glob("part-*.done.json"))
            rows = 0
            for m in markers:
                try:
                    rows += json.loads(m.read_text())["rows"]
                except (OSError, ValueError, KeyError):
                    pass
            progress.update(bar, total=len(plan["shards"]), completed=len(markers), examples=rows)


@app.command()
def run(
    corpus: str = typer.Option("sample", help="JSONL/Parquet/text file or folder, or 'sample' (bundled Wikipedia leads)"),
    out: Path = typer.Option(Path("runs/latest"), help="run folder (shards, manifest)"),
    limit: Optional[int] = typer.Option(None, help="number of seed paragraphs (default: all)"),
    seed_ids_file: Optional[Path] = typer.Option(None, help="seeds only from the paragraph ids in this file (one per line)"),
    candidates: int = typer.Option(20, help="N neighbours judged per query (Gecko: 20)"),
    shard_size: int = typer.Option(256, help="seed paragraphs per shard (the unit of resume)"),
    judge_mode: str = typer.Option("two_prompt", help="two_prompt (Gecko: a QL and an RC prompt per candidate) | one_pass (both from one pass: half the calls) | auto (audit both, take the cheapest within a point of the best)"),
    negative: str = typer.Option("lowest", help="hard negative: lowest | random"),
    fusion: Optional[str] = typer.Option(None, help="how the positive is chosen: rrf (Gecko) | rrf+keep_seed | wrrf:retrieval=W,ql=W,rc=W[+keep_seed] (default: the factory's, see README)"),
    negative_guard: bool = typer.Option(True, "--negative-guard/--no-negative-guard", help="keep likely false negatives (near the positive, duplicates of it, the seed) out of the hard negatives"),
    seed: int = typer.Option(0, help="seed of the sample, task types and negatives"),
    force: bool = typer.Option(False, help="re-plan a run folder made with another config/corpus"),
    no_cache: bool = typer.Option(False, "--no-cache", help="neither read nor write the LLM request cache"),
    refresh_cache: bool = typer.Option(False, "--refresh-cache", help="ask the LLM again and overwrite cached answers"),
    budget_usd: Optional[float] = typer.Option(None, help="stop cleanly once this much is spent (USD)"),
    max_tokens: Optional[int] = typer.Option(None, help="stop cleanly once this many tokens are spent"),
    task_runner: str = typer.Option("threads", help="where shards run: threads | dask (a local cluster "
                                    "of 2 worker processes)"),
    dask_address: Optional[str] = typer.Option(None, help="an existing Dask scheduler (tcp://HOST:PORT) "
                                               "for --task-runner dask"),
) -> None:
    """Generate FRet examples: task/query → HNSW candidates → LLM judge → Parquet shards."""
    _quiet_prefect()
    runner = _task_runner(task_runner, dask_address)
    from flows.fret import fret_flow

    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(out, stop), daemon=True)
    watcher.start()
    try:
        manifest = fret_flow(run_dir=str(out), corpus=corpus, limit=limit, candidates=candidates,
                             seed_ids_file=str(seed_ids_file) if seed_ids_file else None,
                             shard_size=shard_size, judge_mode=judge_mode, negative=negative,
                             seed=seed, force=force, fusion=fusion, negative_guard=negative_guard,
                             cache="off" if no_cache else "refresh" if refresh_cache else "on",
                             budget_usd=budget_usd, max_tokens=max_tokens,
                             task_runner=runner)
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into a message + exit 1
        stop.set()
        watcher.join()
        console.print(f"[red]error:[/red] {exc}{_server_start_hint(exc)}")
        if (out / "plan.json").exists():
            console.print(f"shards that are done are kept; [bold]gecko-factory resume {escape(str(out))}[/bold] "
                          "redoes the rest (`gecko-factory status` lists them)")
        raise typer.Exit(1)
    stop.set()
    watcher.join()
    _print_summary(manifest, out)
    if manifest.get("stopped"):
        console.print(f"[yellow]stopped:[/yellow] {manifest['stopped']} (gecko-factory resume {out})")
        raise typer.Exit(3)  # incomplete but clean: distinct from a failure (1)


@app.command()
def status(run_dir: Path) -> None:
    """List a run's shards as done / failed / pending, with the error of each failed one."""
    from gecko_factory.manifest import shard_states

    _require_run(run_dir)
    states = shard_states(run_dir)
    table = Table(title=f"shards of {run_dir}")
    for col in ("shard", "state", "seeds", "rows", "error"):
        table.add_column(col)
    colour = {"done": "green", "failed": "red", "pending": "yellow"}
    for s in states:
        table.add_row(f"{s.shard:05d}", f"[{colour[s.state]}]{s.state}[/]", str(s.seeds),
                      "" if s.rows is None else str(s.rows), s.error or "")
    Console().print(table)
    counts = {k: sum(1 for s in states if s.state == k) for k in ("done", "failed", "pending")}
    Console().print(", ".join(f"{v} {k}" for k, v in counts.items()) +
                    ("" if counts["done"] == len(states) else f"  →  gecko-factory resume {run_dir}"))


@app.command()
def resume(
    run_dir: Path,
    no_cache: bool = typer.Option(False, "--no-cache", help="neither read nor write the LLM request cache"),
    budget_usd: Optional[float] = typer.Option(None, help="stop cleanly once this much is spent (USD)"),
    max_tokens: Optional[int] = typer.Option(None, help="stop cleanly once this many tokens are spent"),
    task_runner: str = typer.Option("threads", help="threads | dask"),
    dask_address: Optional[str] = typer.Option(None, help="an existing Dask scheduler (tcp://HOST:PORT)"),
) -> None:
    """Rerun only what is not done, with the run's own recorded settings."""
    from gecko_factory.plan import RunPlan

    _require_run(run_dir)
    cfg = RunPlan.load(run_dir).config
    # the plan's own seed list: without it a resume would quietly re-plan the whole corpus
    seeds = Path(cfg.seed_ids_file) if cfg.seed_ids_file else None
    run(corpus=cfg.corpus.path, out=run_dir, limit=cfg.limit, seed_ids_file=seeds, candidates=cfg.candidates,
        shard_size=cfg.shard_size, judge_mode=cfg.judge_mode, negative=cfg.negative, seed=cfg.seed,
        fusion=cfg.fusion.spec(), negative_guard=cfg.negative_guard is not None,
        force=False, no_cache=no_cache, refresh_cache=False, budget_usd=budget_usd,
        max_tokens=max_tokens, task_runner=task_runner, dask_address=dask_address)


def _task_runner(name: str, address: Optional[str]) -> str:
    """The flow's `task_runner` parameter from the two options."""
    if name not in ("threads", "dask"):
        raise typer.BadParameter(f"{name!r}: expected threads or dask", param_hint="--task-runner")
    if address and name != "dask":
        raise typer.BadParameter("needs --task-runner dask", param_hint="--dask-address")
    return address or name


@app.command("train")
def train_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="FRet run folders to train on"),
    out: Path = typer.Option(Path("models/latest"), help="output folder (sentence-transformers format)"),
    base_model: Optional[str] = typer.Option(None, help="local model folder (default all-MiniLM-L6-v2)"),
    epochs: int = typer.Option(1),
    batch_size: int = typer.Option(32, help="queries per contrastive batch"),
    lr: float = typer.Option(2e-5),
    dims: Optional[str] = typer.Option(None, help="Matryoshka dims, e.g. 384,256,128,64"),
    max_steps: Optional[int] = typer.Option(None),
    warmup_steps: Optional[int] = typer.Option(None, help="linear warm-up steps (default 100; keep it below the total steps)"),
    pairing: str = typer.Option("llm", help="llm (FRet p+/p-) | seed_random (the Gecko ablation)"),
    evaluate_scifact: bool = typer.Option(True, "--eval/--no-eval", help="SciFact base vs tuned"),
) -> None:
    """Fine-tune an embedding model on FRet data, then compare it with its base on SciFact."""
    _quiet_prefect()
    from flows.train import train_flow

    for d in run_dirs:
        _require_run(d)
    result = train_flow(run_dirs=[str(d) for d in run_dirs], out_dir=str(out), base_model=base_model,
                        epochs=epochs, batch_size=batch_size, lr=lr, max_steps=max_steps,
                        warmup_steps=warmup_steps,
                        dims=[int(x) for x in dims.split(",")] if dims else None, pairing=pairing,
                        evaluate_scifact=evaluate_scifact)
    t = result["train"]
    Console().print(f"trained {t['steps']} steps on {t['n_train']:,} examples in {t['seconds']:.0f}s "
                    f"({t['examples_per_second']:.1f} examples/s) → {t['out_dir']}")
    if "eval" in result:
        Console().print(result["eval"]["table"], markup=False)


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="model folder, or all-MiniLM-L6-v2"),
    scifact_zip: Optional[Path] = typer.Option(None, help="default: ../shared/data/scifact.zip"),
    dims: Optional[str] = typer.Option(None, help="Matryoshka dims, e.g. 384,256,128,64"),
) -> None:
    """BEIR SciFact test retrieval: nDCG@10 and Recall@100 per dim (exact search)."""
    from gecko_factory.embed import resolve_encoder_path
    from gecko_factory.evaluate import DatasetUnavailable, evaluate, load_scifact

    try:
        dataset = load_scifact(scifact_zip)
    except DatasetUnavailable as exc:
        console.print(f"[yellow]skipped:[/yellow] {exc}")
        raise typer.Exit(0)
    path = resolve_encoder_path(model) if model == "all-MiniLM-L6-v2" else Path(model)
    report = evaluate(path, dataset, dims=[int(x) for x in dims.split(",")] if dims else None)
    Console().print(report.to_markdown(), markup=False)


def _require_run(run_dir: Path) -> None:
    if not (run_dir / "plan.json").exists():
        console.print(f"[red]error:[/red] {run_dir} is not a run folder (no plan.json)")
        raise typer.Exit(1)


def _print_summary(m: dict, out: Path) -> None:
    c, u = m["counts"], m["llm_usage"]
    table = Table(title=f"FRet run {out}", show_header=False)
    table.add_row("examples written", f"{c['examples']:,} of {c['seeds']:,} seeds")
    rate = c.get("relabel_rate")
    table.add_row("relabel rate (positive ≠ seed)", "n/a" if rate is None else f"{rate:.1%}")
    table.add_row("skipped", ", ".join(f"{k}={v}" for k, v in c["skipped"].items()) or "none")
    if c.get("pending_seeds"):
        table.add_row("pending (shards not done)", f"{c['pending_seeds']:,} seeds")
    table.add_row("LLM calls", f"{u['calls']:,} ({u['prompt_tokens']:,} prompt + "
                               f"{u['completion_tokens']:,} completion tokens, {u['retries']} retries, "
                               f"{u.get('cache_hits', 0):,} answers from cache)")
    table.add_row("judge", ", ".join(m.get("judge_mode") or [m.get("judge_mode_used", "?")]))
    if "wall_seconds" in m:
        table.add_row("wall time", f"{m['wall_seconds']:.1f} s")
    if m.get("cost_usd") is not None:
        table.add_row("cost", f"${m['cost_usd']:.4f}")
    if m.get("stopped"):
        table.add_row("stopped", m["stopped"])
    table.add_row("accounting", "ok" if m["accounting_ok"] else "BROKEN")
    table.add_row("output", str(out / "shards"))
    Console().print(table)


@app.command()
def inspect(run_dir: Path, examples: int = typer.Option(3, help="examples to show")) -> None:
    """Print a run's summary again, from its files, and a few examples."""
    import polars as pl

    from gecko_factory.manifest import build_manifest

    _require_run(run_dir)
    manifest, _ = build_manifest(run_dir)
    saved = run_dir / "manifest.json"
    if saved.exists():
        manifest = {**json.loads(saved.read_text()), **manifest}
    _print_summary(manifest, run_dir)
    files = sorted((run_dir / "shards").glob("part-*.parquet"))
    if not files:
        return
    df = pl.read_parquet(files)
    by_type = df.group_by("task_type").len().sort("len", descending=True)
    Console().print("task types: " + ", ".join(f"{t}={n}" for t, n in by_type.iter_rows()))
    out = Console()
    for row in df.head(examples).iter_rows(named=True):
        # Texts and ids are data, not rich markup: "[8fa8…]" would be eaten as a style tag.
        out.print(f"\n[bold]{escape(row['task_type'])}[/bold] — {escape(row['task'])}")
        out.print(f"  query:    {row['query']}", markup=False)
        out.print(f"  positive: [{row['positive_id']}] {row['positive_text'][:160]}…", markup=False)
        out.print(f"  negative: [{row['negative_id']}] {row['negative_text'][:160]}…", markup=False)
        out.print(f"  relabelled: {row['relabelled']}", markup=False)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":
    sys.exit(app())


from flows import cli_versions  # noqa: E402,F401 - registers `refresh` and `versions`
from flows import cli_audit  # noqa: E402,F401 - registers `audit`
