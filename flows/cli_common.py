"""What every `gecko-factory` command module shares: the error console, Prefect's start settings,
and the run-folder check. Command modules import this, never flows/cli.py: cli.py imports them
to register their commands, and `python -m flows.cli` runs cli.py as __main__, so a module that
imported flows.cli back would get a second copy of the app and register on that one.
"""

from __future__ import annotations

import os
import subprocess
import types
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)

# Prefect's ephemeral API server (started when PREFECT_API_URL is unset) must answer within this
# setting, 20 s by default; with both cores of a 2-core machine busy its start took longer.
SERVER_START_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
SERVER_START_DEFAULT_S = 180


def quiet_prefect() -> None:
    # No telemetry calls from a machine that may have no network; set before prefect is imported.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    default_server_start_timeout()
    ephemeral_server_in_own_session()


class _OwnSessionPopen(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("start_new_session", True)
        super().__init__(*args, **kwargs)


def ephemeral_server_in_own_session() -> None:
    """Prefect starts its ephemeral API server (when no PREFECT_API_URL is set) in our process
    group, so a Ctrl-C in the terminal, `timeout`, or a kill of the group ended it together with
    the program, and the program, stopping, then spent minutes retrying calls to a dead API before
    it could exit (222 s after one Ctrl-C of `gecko-factory run`, 2026-12-03). In a session of its
    own the server outlives the signal; Prefect stops it at exit, after its last reports, and
    gecko_factory/orphan_reaper.py ends it if the program is killed outright. Prefect offers no
    setting for this: its server module's Popen is replaced (tests/flows/test_stop.py checks it)."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return  # a configured server: nothing is started (and its module is not imported)
    from prefect.server.api import server

    if server.subprocess.Popen is not _OwnSessionPopen:
        server.subprocess = types.SimpleNamespace(**{**vars(subprocess), "Popen": _OwnSessionPopen})


def default_server_start_timeout() -> None:
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


def server_start_hint(exc: BaseException) -> str:
    """How to raise the ephemeral server's start timeout, when that is what `exc` is about."""
    if "ephemeral Prefect API server" not in str(exc):
        return ""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout

    return (f"\nPrefect's API server did not start within {SERVER_START_SETTING} = "
            f"{timeout.value()} s (a busy machine?). Raise it, e.g. `export {SERVER_START_SETTING}=600` "
            f"or `prefect config set {SERVER_START_SETTING}=600`, or run against a started server "
            "(PREFECT_API_URL).")


def require_run(run_dir: Path) -> None:
    if not (run_dir / "plan.json").exists():
        console.print(f"[red]error:[/red] {run_dir} is not a run folder (no plan.json)")
        raise typer.Exit(1)
