"""Checkpoints as nanoGPT keeps them (one dict: model, optimizer, config, step, history), plus
what it leaves out: every RNG state, so a resumed run draws the dropout masks an unbroken one
would, and an atomic write (temp + rename), so a crash mid-write keeps the previous checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from gecko_factory.files import atomic_file


def _rng_states(device: torch.device) -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}


def save_checkpoint(path: Path, model, optimizer, cfg: BaseModel, step: int, history: dict,
                    device: torch.device) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "config": cfg.model_dump(), "step": step, "history": history,
             "rng": _rng_states(device)}
    with atomic_file(path) as fh:  # a crash mid-write leaves the previous checkpoint intact
        torch.save(state, fh)


def load_checkpoint(path: Path, model, optimizer, device: torch.device) -> tuple[int, dict, dict]:
    # Our own file; weights_only=False because the RNG states hold numpy arrays and tuples.
    state = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"], state["history"], state["config"]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
