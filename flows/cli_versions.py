"""`gecko-factory refresh` and `gecko-factory versions`: a data set that grows with its corpus.

Plain functions: flows/cli.py registers them; this module does not import it (see cli_common).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from flows.cli_common import console, quiet_prefect, server_start_hint
from flows.cli_options import options_command
from gecko_factory.options import RunOptions


# The refresh picks its own seeds (the new and changed paragraphs), so no --seed-ids-file.
@options_command(exclude={"seed_ids_file"}, help={
    "corpus": "the corpus as it is now (file, folder, 'sample')",
    "limit": "at most this many new seeds in this refresh",
})
def refresh(
    options: RunOptions,
    root: Path = typer.Argument(..., help="data-set root (holds versions/v0001, v0002, ...)"),
    train_after: bool = typer.Option(False, help="train on the new version when it is written"),
) -> None:
    """Process only the paragraphs that are new or changed since the last version."""
    quiet_prefect()
    from flows.refresh import refresh_flow

    try:
        result = refresh_flow(root=str(root), options=options, train_after=train_after)
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into a message + exit 1
        console.print(f"[red]refresh failed:[/red] {exc}{server_start_hint(exc)}")
        raise typer.Exit(1) from exc
    if result.get("stopped"):
        console.print(f"[yellow]stopped:[/yellow] {result['stopped']}")
        raise typer.Exit(3)
    if not result["new_version"]:
        console.print(f"no new or changed paragraphs: {result['version']} is current, no LLM call made")
        return
    console.print(f"{result['version']}: {result['examples']:,} examples "
                  f"({result['new_examples']:,} new from {result['new_seeds']:,} new or changed "
                  f"paragraphs, {result['reused_examples']:,} reused, {result['dropped_examples']:,} "
                  f"dropped), {result['llm_calls']:,} LLM calls")


def versions(root: Path = typer.Argument(..., help="data-set root")) -> None:
    """List a data set's versions with their counts and dates."""
    from gecko_factory.versions import list_versions

    rows = list_versions(root)
    if not rows:
        console.print(f"[red]error:[/red] no versions under {root / 'versions'}")
        raise typer.Exit(1)
    table = Table(title=f"FRet data set {root}")
    for col in ("version", "created", "paragraphs", "new seeds", "examples", "new", "reused",
                "dropped", "LLM calls"):
        table.add_column(col, justify="left" if col in ("version", "created") else "right")
    for r in rows:
        table.add_row(r["version"], r["created"], *(f"{r[k]:,}" for k in (
            "paragraphs", "new_seeds", "examples", "new_examples", "reused_examples",
            "dropped_examples", "llm_calls")))
    Console().print(table)
