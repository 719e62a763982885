"""`gecko-factory export`: a run's FRet rows as sentence-transformers columns, BEIR, or JSONL.

A plain function: flows/cli.py registers it; this module does not import it (see cli_common).
The work is gecko_factory/export.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from flows.cli_common import console


def export(
    run_dir: Path = typer.Argument(..., help="run folder or data-set version (versions/vNNNN)"),
    format: str = typer.Option(..., "--format", "-f", help="sentence-transformers (anchor/positive/"
                               "negative columns with Gecko's prompts) | beir (corpus, queries, "
                               "qrels/train.tsv) | jsonl (the rows)"),
    out: Path = typer.Option(..., help="output folder"),
    val_fraction: Optional[float] = typer.Option(
        None, min=0.0, max=1.0, help="sentence-transformers: share of seeds in validation.parquet "
        "(default: the trainer's)"),
) -> None:
    """Write a run's examples in a format other trainers and evaluators read."""
    from gecko_factory.export import FORMATS, export as export_rows

    if format not in FORMATS:
        console.print(f"[red]error:[/red] --format {format!r}: expected one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    if not (run_dir / "plan.json").exists() and not (run_dir / "version.json").exists():
        console.print(f"[red]error:[/red] {run_dir} is neither a run folder (plan.json) nor a "
                      "data-set version (version.json)")
        raise typer.Exit(1)
    try:
        report = export_rows(run_dir, format, out, val_fraction)  # type: ignore[arg-type]
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    Console().print(f"{report.rows:,} examples of {run_dir} as {format} → {out}", markup=False)
    table = Table()
    table.add_column("file")
    table.add_column("records", justify="right")
    for name, n in report.files.items():
        table.add_row(name, f"{n:,}")
    Console().print(table)
