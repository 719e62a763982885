"""`gecko-factory`: run the FRet flow with a progress bar, and inspect what a run wrote.

The program and the one place its commands are registered (at the end, in the order `--help`
lists them). The command modules it imports do not import it back (see cli_common).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.cli_audit import audit
from flows.cli_common import console, quiet_prefect, require_run, server_start_hint
from flows.cli_export import export
from flows.cli_options import options_command
from flows.cli_progress import watch_run
from flows.cli_train import experiment, train_command
from flows.cli_versions import refresh, versions
from gecko_factory.options import RunOptions

if TYPE_CHECKING:
    from gecko_factory.manifest import Manifest


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
            if hint := server_start_hint(exc):
                console.print(f"[red]error:[/red] {escape(str(exc))}{hint}")
                raise SystemExit(1) from None
            raise


app = _Program(add_completion=False, no_args_is_help=True,
               help="Gecko/FRet training data from plain paragraphs, orchestrated by Prefect.")


def _watch(run_dir: Path, stop: threading.Event) -> None:
    """Progress from the files the run writes: live bars in a terminal (flows/cli_progress.py)."""
    watch_run(run_dir, stop, console)


def run(
    options: RunOptions,
    out: Path = typer.Option(Path("runs/latest"), help="run folder (shards, manifest)"),
    force: bool = typer.Option(False, help="re-plan a run folder made with another config/corpus"),
) -> None:
    """Generate FRet examples: task/query → HNSW candidates → LLM judge → Parquet shards."""
    quiet_prefect()
    from flows.fret import fret_flow

    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(out, stop), daemon=True)
    watcher.start()
    try:
        manifest = fret_flow(run_dir=str(out), options=options, force=force)
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into a message + exit 1
        stop.set()
        watcher.join()
        console.print(f"[red]error:[/red] {exc}{server_start_hint(exc)}")
        if (out / "plan.json").exists():
            console.print(f"shards that are done are kept; [bold]gecko-factory resume {escape(str(out))}[/bold] "
                          "redoes the rest (`gecko-factory status` lists them)")
        raise typer.Exit(1)
    stop.set()
    watcher.join()
    from gecko_factory.manifest import Manifest

    summary = Manifest.model_validate(manifest)
    _print_summary(summary, out)
    if summary.stopped:
        console.print(f"[yellow]stopped:[/yellow] {summary.stopped} (gecko-factory resume {out})")
        raise typer.Exit(3)  # incomplete but clean: distinct from a failure (1)


def status(run_dir: Path) -> None:
    """List a run's shards as done / failed / pending, with the error of each failed one."""
    from gecko_factory.manifest import shard_states

    require_run(run_dir)
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


# What a resume may change: how the rest is done, never what it makes.
RESUME_OVERRIDES = ("cache", "budget_usd", "max_tokens", "task_runner")


def resume(options: RunOptions, run_dir: Path) -> None:
    """Rerun only what is not done, with the run's own recorded settings."""
    from gecko_factory.plan import RunPlan

    require_run(run_dir)
    # The recorded recipe gives back every option that shapes the output, the plan's own seed
    # list included (without it a resume would quietly re-plan the whole corpus).
    recorded = RunPlan.load(run_dir).config.run_options(**options.model_dump(include=set(RESUME_OVERRIDES)))
    run(recorded, out=run_dir, force=False)


def eval_cmd(
    model: str = typer.Argument(..., help="model folder, or all-MiniLM-L6-v2"),
    beir: Optional[Path] = typer.Option(None, help="a BEIR data set, folder or zip (corpus.jsonl, "
                                        "queries.jsonl, qrels/SPLIT.tsv); default: SciFact"),
    split: str = typer.Option("test", help="the qrels split to score"),
    scifact_zip: Optional[Path] = typer.Option(None, help="default: ../shared/data/scifact.zip"),
    dims: Optional[str] = typer.Option(None, help="Matryoshka dims, e.g. 384,256,128,64"),
) -> None:
    """Retrieval on a BEIR data set (SciFact by default): nDCG@10 and Recall@100 per dim (exact search)."""
    from gecko_factory.embed import resolve_encoder_path
    from gecko_factory.evaluate import DatasetUnavailable, evaluate, load_beir, load_scifact

    try:
        dataset = load_beir(beir, split) if beir else load_scifact(scifact_zip, split)
    except DatasetUnavailable as exc:
        if beir:  # asked for by name: its absence is an error, not a skip
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1)
        console.print(f"[yellow]skipped:[/yellow] {exc}")
        raise typer.Exit(0)
    path = resolve_encoder_path(model) if model == "all-MiniLM-L6-v2" else Path(model)
    report = evaluate(path, dataset, dims=[int(x) for x in dims.split(",")] if dims else None)
    Console().print(report.to_markdown(), markup=False)


def _print_summary(m: Manifest, out: Path) -> None:
    c, u = m.counts, m.llm_usage
    table = Table(title=f"FRet run {out}", show_header=False)
    table.add_row("examples written", f"{c.examples:,} of {c.seeds:,} seeds")
    table.add_row("relabel rate (positive ≠ seed)", "n/a" if c.relabel_rate is None else f"{c.relabel_rate:.1%}")
    table.add_row("skipped", ", ".join(f"{k}={v}" for k, v in c.skipped.items()) or "none")
    if c.unjudged_negatives:
        table.add_row("hard negatives from beyond the judged N", f"{c.unjudged_negatives:,}")
    if c.pending_seeds:
        table.add_row("pending (shards not done)", f"{c.pending_seeds:,} seeds")
    table.add_row("LLM calls", f"{u['calls']:,} ({u['prompt_tokens']:,} prompt + "
                               f"{u['completion_tokens']:,} completion tokens, {u['retries']} retries, "
                               f"{u.get('cache_hits', 0):,} answers from cache)")
    judge = ", ".join(m.judge_mode or [m.judge_mode_used or "?"])
    if m.llm and m.llm.get("model"):  # which model wrote and which judged: the data's provenance
        table.add_row("queries written by", m.llm["model"])
        judge += f" · {m.llm.get('judge_model') or m.llm['model']}"
    table.add_row("judge", judge)
    if m.wall_seconds is not None:
        table.add_row("wall time", f"{m.wall_seconds:.1f} s")
    if m.cost_usd is not None:
        table.add_row("cost", f"${m.cost_usd:.4f}")
    if m.stopped:
        table.add_row("stopped", m.stopped)
    table.add_row("accounting", "ok" if m.accounting_ok else "BROKEN")
    table.add_row("output", str(out / "shards"))
    Console().print(table)


def inspect(run_dir: Path, examples: int = typer.Option(3, help="examples to show")) -> None:
    """Print a run's summary again, from its files, and a few examples."""
    import polars as pl

    from gecko_factory.manifest import current_manifest

    require_run(run_dir)
    _print_summary(current_manifest(run_dir), run_dir)
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


# The one registration point: the console script (`flows.cli:app`) imports this module whole
# before it calls the app, and `python -m flows.cli` reaches the call below only after it too.
for _name, _command in (
    ("run", options_command()(run)),
    ("status", status),
    ("resume", options_command(include=RESUME_OVERRIDES)(resume)),
    ("train", train_command()),
    ("eval", eval_cmd),
    ("experiment", experiment),
    ("inspect", inspect),
    ("export", export),
    ("refresh", refresh),
    ("versions", versions),
    ("audit", audit),
):
    app.command(_name)(_command)


if __name__ == "__main__":
    sys.exit(app())
