"""The commands' run options, built from RunOptions' fields instead of listed again.

`@options_command(...)` wraps a command `f(options: RunOptions, <its own parameters>)`: typer
reads the wrapper's signature (`inspect.signature` + annotations), which is the command's own
parameters followed by one option per RunOptions field, with the field's default and its
description as the help text; the command then gets the RunOptions those values make. Two fields
keep the spelling the CLI always had: `cache` as --no-cache / --refresh-cache, and `task_runner`
as --task-runner threads|dask plus --dask-address.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, Optional

import typer
from pydantic import ValidationError

from gecko_factory.options import LOCAL_RUNNERS, RunOptions

KW = inspect.Parameter.KEYWORD_ONLY


@dataclass(frozen=True)
class Spelling:
    """A field the CLI takes as other options than its own: `value` makes it from them."""

    params: tuple[inspect.Parameter, ...]
    value: Callable[..., Any]


def _cache(no_cache: bool, refresh_cache: bool) -> str:
    return "off" if no_cache else "refresh" if refresh_cache else "on"


def _task_runner(task_runner: str, dask_address: Optional[str]) -> str:
    """The `task_runner` option from the two flags."""
    if task_runner not in LOCAL_RUNNERS:
        raise typer.BadParameter(f"{task_runner!r}: expected threads or dask", param_hint="--task-runner")
    if dask_address and task_runner != "dask":
        raise typer.BadParameter("needs --task-runner dask", param_hint="--dask-address")
    return dask_address or task_runner


SPELLINGS = {
    "cache": Spelling((
        inspect.Parameter("no_cache", KW, annotation=bool, default=typer.Option(
            False, "--no-cache", help="neither read nor write the LLM request cache")),
        inspect.Parameter("refresh_cache", KW, annotation=bool, default=typer.Option(
            False, "--refresh-cache", help="ask the LLM again and overwrite cached answers")),
    ), _cache),
    "task_runner": Spelling((
        inspect.Parameter("task_runner", KW, annotation=str, default=typer.Option(
            RunOptions.model_fields["task_runner"].default,
            help="where shards run: threads | dask (a local cluster of 2 worker processes)")),
        inspect.Parameter("dask_address", KW, annotation=Optional[str], default=typer.Option(
            None, help="an existing Dask scheduler (tcp://HOST:PORT) for --task-runner dask")),
    ), _task_runner),
}


def _cli_type(annotation: Any) -> Any:
    """Choices stay plain strings on the command line (the help lists them; the model checks)."""
    if typing.get_origin(annotation) is Literal:
        return str
    args = typing.get_args(annotation)
    if type(None) in args:  # X | None: typer wants Optional[X]
        (inner,) = [a for a in args if a is not type(None)]
        return Optional[_cli_type(inner)]
    return annotation


def option_params(fields: Collection[str], help: dict[str, str]) -> list[inspect.Parameter]:
    params = []
    for name in fields:
        if name in SPELLINGS:
            params += SPELLINGS[name].params
            continue
        field = RunOptions.model_fields[name]
        params.append(inspect.Parameter(name, KW, annotation=_cli_type(field.annotation),
                                        default=typer.Option(field.default,
                                                             help=help.get(name, field.description))))
    return params


def options_command(include: Collection[str] | None = None, exclude: Collection[str] = (),
                    help: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
    """The command with these RunOptions fields (all but `exclude` when `include` is None) as
    options; `help` replaces a field's help text where the command gives the option another sense."""
    fields = [n for n in RunOptions.model_fields
              if (include is None or n in include) and n not in exclude]
    params = option_params(fields, help or {})

    def wrap(func: Callable) -> Callable:
        # eval_str: the command's module has `from __future__ import annotations`, and typer
        # resolves annotations in this module's namespace, where they would not be found
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "options"]

        @functools.wraps(func)
        def command(**values: Any) -> Any:
            for name, spelling in SPELLINGS.items():
                if name in fields:
                    values[name] = spelling.value(**{p.name: values.pop(p.name) for p in spelling.params})
            given = {name: values.pop(name) for name in fields}
            try:
                options = RunOptions(**given)
            except ValidationError as exc:
                error = exc.errors()[0]  # a validator's own ValueError reads better bare
                why = str(error.get("ctx", {}).get("error", error["msg"]))
                raise typer.BadParameter(why, param_hint=_flag(str(error["loc"][0]))) from None
            return func(options=options, **values)

        del command.__wrapped__  # typer must see the signature below, not the function's own
        command.__signature__ = inspect.Signature([*own, *params])
        command.__annotations__ = {p.name: p.annotation for p in [*own, *params]}
        return command

    return wrap


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")
