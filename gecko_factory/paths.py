"""Where gecko-factory keeps things that outlive a run: joined model files, index caches."""

from __future__ import annotations

import os
from pathlib import Path


def gecko_home() -> Path:
    """`GECKO_HOME`, else `~/.cache/gecko-factory`; created on first use."""
    home = Path(os.environ.get("GECKO_HOME") or Path.home() / ".cache" / "gecko-factory")
    home.mkdir(parents=True, exist_ok=True)
    return home
