"""Where audits are kept for runs to find: `$GECKO_HOME/audits/<identity>.json` and `.md`.

A FRet run's data-set card shows the audit of its own judge (the same LLM, judge form, judge
prompt and N), so whoever reads the data set sees how often that judge's relabels were right.
Plain JSON on purpose: the card is written by the flow's last task and should not load the
audit's machinery (the encoder, torch) to read a few figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from gecko_factory.paths import gecko_home
from gecko_factory.files import atomic_write_bytes
from gecko_factory.templates import judge_prompt_version


def registry_dir() -> Path:
    return gecko_home() / "audits"


def register(key: str, report_json: str, markdown: str) -> None:
    folder = registry_dir()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / f"{key}.json", report_json.encode())
    atomic_write_bytes(folder / f"{key}.md", markdown.encode())


def judge_of(identity: dict) -> tuple:
    return (identity.get("llm_model"), identity.get("judge_mode"), identity.get("judge_prompt"),
            identity.get("candidates"))


def find_audit(llm_model: str, judge_mode: str, judge_prompt: str, candidates: int) -> tuple[dict, str] | None:
    """(report as a dict, its markdown) of the largest audit of this judge, if any."""
    best: tuple[dict, str] | None = None
    folder = registry_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            report = json.loads(path.read_text())
            markdown = path.with_suffix(".md").read_text()
        except (OSError, ValueError):
            continue
        if judge_of(report.get("identity") or {}) != (llm_model, judge_mode, judge_prompt, candidates):
            continue
        if best is None or report.get("judged", 0) > best[0].get("judged", 0):
            best = (report, markdown)
    return best


def audit_for_run(manifest: dict) -> tuple[dict, str] | None:
    """The audit matching a run's manifest (its config and the judge mode its shards used)."""
    config = manifest.get("config") or {}
    modes = manifest.get("judge_mode") or []
    if len(modes) != 1:
        return None  # a run judged in several modes has no one audit
    model = config.get("judge_model") or config.get("llm_model")
    return find_audit(model, modes[0], judge_prompt_version(config.get("prompt_versions") or {}, modes[0]),
                      config.get("candidates"))
