"""`gecko-factory train`: its options are TrainConfig's fields, built from the model (its defaults
and descriptions), not listed again; a new training option is a new field there and nothing here.

Three keep the spelling the command always had: `out_dir` is --out, `dims` is --dims 384,256
(comma-separated), and --eval/--no-eval (the SciFact test comparison after training) is the
flow's, not the trainer's. Everything else is --field-name, booleans as --x/--no-x.
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from flows.cli_common import console, quiet_prefect, require_run
from gecko_factory.train.config import TrainConfig  # pydantic only: no torch at start-up

KW = inspect.Parameter.KEYWORD_ONLY
SPELLED = {"out_dir", "dims"}  # given their own options below


def _cli_type(annotation: Any) -> Any:
    """Choices stay plain strings on the command line (the help lists them; the model checks)."""
    if typing.get_origin(annotation) is Literal:
        return str
    args = typing.get_args(annotation)
    if type(None) in args:  # X | None: typer wants Optional[X]
        (inner,) = [a for a in args if a is not type(None)]
        return Optional[_cli_type(inner)]
    return annotation


def _options(model) -> list[inspect.Parameter]:
    return [inspect.Parameter(name, KW, annotation=_cli_type(field.annotation),
                              default=typer.Option(field.default, help=field.description))
            for name, field in model.model_fields.items() if name not in SPELLED]


def _train(run_dirs: list[Path], out: Path, dims: Optional[str], evaluate_scifact: bool,
           **fields: Any) -> None:
    """Fine-tune an embedding model on FRet data, then compare it with its base on SciFact."""
    from gecko_factory.evaluate import DatasetUnavailable
    from gecko_factory.train.select import load_dev

    try:
        cfg = TrainConfig(out_dir=str(out), dims=[int(x) for x in dims.split(",")] if dims else None,
                          **fields)
    except (ValidationError, ValueError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else []
        where = "--" + str(errors[0]["loc"][0]).replace("_", "-") if errors and errors[0]["loc"] else None
        why = str(errors[0].get("ctx", {}).get("error", errors[0]["msg"])) if errors else str(exc)
        raise typer.BadParameter(why, param_hint=where) from None
    for d in run_dirs:
        require_run(d)
    if cfg.dev:  # asked for by name: its absence is an error now, not after the model loads
        try:
            load_dev(cfg.dev, cfg.dev_split)
        except (DatasetUnavailable, ValueError) as exc:
            console.print(f"[red]error:[/red] dev set: {exc}")
            raise typer.Exit(1)
    quiet_prefect()
    from flows.train import train_flow
    from gecko_factory.train.card import NOT_BETTER
    from gecko_factory.train.select import Selection

    result = train_flow(run_dirs=[str(d) for d in run_dirs], out_dir=str(out),
                        evaluate_scifact=evaluate_scifact,
                        options=cfg.model_dump(exclude={"out_dir"}, exclude_defaults=True))
    t = result["train"]
    Console().print(f"trained {t['steps']} steps on {t['n_train']:,} examples in {t['seconds']:.0f}s "
                    f"({t['examples_per_second']:.1f} examples/s) → {t['out_dir']}")
    sel = Selection.model_validate(t["selection"]) if t.get("selection") else None
    if sel and sel.dev_base is not None:
        Console().print(f"dev nDCG@10 ({sel.dev}): base {sel.dev_base:.4f}, exported (step "
                        f"{sel.selected_step}) {sel.dev_selected:.4f}", markup=False)
    if sel and not sel.beat_base:
        console.print(f"[yellow]warning:[/yellow] {NOT_BETTER}: no step beat the base "
                      f"model{sel.margin_text()}; the export is step {sel.selected_step}'s weights"
                      + (" (the base's)" if sel.selected_step == 0 else ""))
    if "eval" in result:
        Console().print(result["eval"]["table"], markup=False)


def train_command():
    """The command as typer sees it: its own parameters, then one option per TrainConfig field."""
    own = [
        inspect.Parameter("run_dirs", KW, annotation=list[Path],
                          default=typer.Argument(..., help="FRet run folders to train on")),
        inspect.Parameter("out", KW, annotation=Path, default=typer.Option(
            Path("models/latest"), help="output folder (sentence-transformers format)")),
        inspect.Parameter("dims", KW, annotation=Optional[str], default=typer.Option(
            None, help="Matryoshka dims, e.g. 384,256,128,64 (default: from the hidden size)")),
        inspect.Parameter("evaluate_scifact", KW, annotation=bool, default=typer.Option(
            True, "--eval/--no-eval", help="SciFact test: base vs the exported model")),
    ]
    params = own + _options(TrainConfig)

    @functools.wraps(_train)
    def command(**values: Any) -> None:
        _train(**values)

    del command.__wrapped__  # typer must see the signature below, not _train's
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def experiment(
    run_dir: Path = typer.Argument(..., help="the FRet run folder every recipe trains on"),
    out: Path = typer.Option(Path("models/experiment"), help="one model folder per recipe, seed "
                             "and data share; report.md and results.json"),
    seeds: str = typer.Option("0,1", help="training seeds, comma-separated"),
    arms: Optional[str] = typer.Option(None, help="recipes, comma-separated (default: all of "
                                       "gecko_factory.experiment.ARMS)"),
    fractions: str = typer.Option("0.25,0.5", help="the data curve: shares of the training seeds "
                                  "for the recipe the dev set chooses ('' = no curve)"),
    dims: str = typer.Option("384,256,128", help="dims the test split is scored at"),
    train: str = typer.Option("{}", help="TrainConfig fields over the default budget, as JSON, "
                              'e.g. \'{"epochs": 2, "eval_every": 50}\''),
    scifact_zip: Optional[Path] = typer.Option(None, help="default: ../shared/data/scifact.zip"),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="train on a run whose "
                                       "shards are not all done (the table says so)"),
) -> None:
    """Issue 14's experiment: every recipe at the same budget per training seed, SciFact test
    nDCG@10 and Recall@100 per dim, the recipe with the best dev nDCG@10 at smaller data shares.
    Resumable: a recipe already trained with the same options on the same data is not trained
    again."""
    import json

    from gecko_factory.experiment import check_arms

    require_run(run_dir)
    try:
        overrides = json.loads(train)
        chosen = check_arms(arms.split(",") if arms else None)
        TrainConfig(out_dir=str(out), **overrides)  # a bad field stops here, not after an hour
        numbers = ([int(x) for x in seeds.split(",")], [float(x) for x in fractions.split(",") if x],
                   [int(x) for x in dims.split(",")])
    except (ValueError, ValidationError) as exc:
        raise typer.BadParameter(str(exc)) from None
    quiet_prefect()
    from flows.experiment import experiment_flow

    try:
        summary = experiment_flow(run_dir=str(run_dir), out_root=str(out), seeds=numbers[0],
                                  arms=chosen, fractions=numbers[1], dims=numbers[2],
                                  train=overrides, allow_partial=allow_partial,
                                  scifact_zip=str(scifact_zip) if scifact_zip else None)
    except ValueError as exc:  # the run is not finished, or no recipe could be chosen
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    Console().print(summary["table"], markup=False)
    if summary["chosen_by_dev"]:
        Console().print(f"chosen on dev for the curve: {summary['chosen_by_dev']}", markup=False)
