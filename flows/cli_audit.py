"""`gecko-factory audit`: does the judge pick better positives than the retriever it starts from?

Registered by flows/cli.py, which this module does not import (see cli_common). The work is the
`audit` flow (flows/audit.py); this only parses options and prints the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from flows.cli_common import console, quiet_prefect


def audit(
    beir: Optional[Path] = typer.Option(None, help="labelled set in BEIR layout, folder or zip (corpus.jsonl, "
                                        "queries.jsonl, qrels/SPLIT.tsv); default: SciFact train from "
                                        "../shared/data/scifact.zip"),
    split: str = typer.Option("train", help="qrels split (keep test splits for evaluating models)"),
    limit: Optional[int] = typer.Option(100, help="the first N queries of the split (0: all)"),
    out: Path = typer.Option(Path("runs/audit"), help="audit folder: judged records, audit.json, audit.md"),
    candidates: int = typer.Option(5, help="N candidates judged per query (make run: 5; Gecko: 20)"),
    judge_mode: str = typer.Option("two_prompt", help="two_prompt | one_pass | shared_prefix | auto "
                                   "(audit each, pick the cheapest within a point of the best)"),
    fusion: Optional[str] = typer.Option(None, help="the run's fusion (default: the factory's), e.g. rrf, "
                                         "rrf+keep_seed, wrrf:retrieval=1,ql=1,rc=0"),
    also: list[str] = typer.Option([], "--also", help="another fusion to score (repeatable)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="neither read nor write the LLM request cache"),
) -> None:
    """Audit the judge against human labels: precision@1 / MRR of retrieval, QL, RC and each fusion,
    wrong relabels and false negatives as FRet uses it, and the cost per query."""
    quiet_prefect()
    from flows.audit import audit_flow, auto_judge_mode
    from gecko_factory.evaluate import DatasetUnavailable

    try:
        if judge_mode == "auto":
            choice = auto_judge_mode(candidates, fusion, limit=limit or 40, out=str(out),
                                     beir=str(beir) if beir else None)
            typer.echo(f"judge mode: {choice['mode']} — {choice['reason']}")
            judge_mode = choice["mode"]
        report = audit_flow(beir=str(beir) if beir else None, split=split, limit=limit or None,
                            out=str(out), candidates=candidates, judge_mode=judge_mode,
                            fusion=fusion, fusions=list(also), cache=not no_cache)
    except DatasetUnavailable as exc:
        console.print(f"[red]no labelled set:[/red] {escape(str(exc))}")
        raise typer.Exit(2)
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into a message + exit 1
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        console.print(f"queries already judged are kept in {escape(str(out))}/judged: rerun to go on")
        raise typer.Exit(1)
    typer.echo((out / "audit.md").read_text())  # markdown as is: tables must not be wrapped
    typer.echo(f"{report['judged']} queries → {out / 'audit.json'}")
