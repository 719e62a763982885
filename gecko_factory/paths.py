"""Where gecko-factory keeps things that outlive a run (joined model files, index caches), and how
a folder is named in the records it writes."""

from __future__ import annotations

import os
from pathlib import Path


def gecko_home() -> Path:
    """`GECKO_HOME`, else `~/.cache/gecko-factory`; created on first use."""
    home = Path(os.environ.get("GECKO_HOME") or Path.home() / ".cache" / "gecko-factory")
    home.mkdir(parents=True, exist_ok=True)
    return home


def shown_path(path: str | Path) -> str:
    """A folder as a committed record (a model card, an experiment's results) shows it: relative to
    the working directory when inside it, so the record names no one's home, else absolute."""
    full = Path(path).resolve()
    try:
        return str(full.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(full)
