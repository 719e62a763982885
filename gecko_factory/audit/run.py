"""One audit from start to end, as the library's three steps: prepare, judge, report.

Entry points (each what a Prefect task calls): `prepare(AuditSpec)`, `judge_step(AuditSpec,
settings, base_url)`, `report_step(AuditSpec)`. The spec carries the FRet config the factory
would run with (built by flows.fret.fret_config), so the audit judges with the candidates N,
judge form, prompts, encoder and index of that run, and scores its fusion as the default.
Outputs in `out`: judged/<identity>.jsonl (the records), audit.json and audit.md (the report,
per judge identity, the latest also as audit.json/audit.md), and a copy of audit.json under
`$GECKO_HOME/audits/` (registry.py), where a run's data-set card finds the audit of its judge.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from gecko_factory.audit.data import DEFAULT_SPLIT, PreparedCorpus, load_labelled, prepare_corpus
from gecko_factory.audit.judging import (JudgeJob, JudgeSummary, judge_identity, judge_queries,
                                         read_records, records_path, split_queries)
from gecko_factory.audit.registry import register
from gecko_factory.audit.report import AuditReport, build_report
from gecko_factory.config import FretConfig
from gecko_factory.corpus_store import open_corpus
from gecko_factory.evaluate import RetrievalDataset
from gecko_factory.fusion import FusionConfig, NegativeGuard
from gecko_factory.llm.settings import LLMSettings
from gecko_factory.files import atomic_write_bytes, atomic_write_json

# Fusions every audit scores besides the run's own: Gecko's RRF and the seed-keeping rule on it.
BASELINE_FUSIONS = ("rrf", "rrf+keep_seed")


class AuditSpec(BaseModel):
    beir: str | None = Field(default=None, description="BEIR folder or zip; None: SciFact train")
    split: str = DEFAULT_SPLIT
    limit: int | None = Field(default=100, ge=1, description="the first queries of the split")
    out: str = "runs/audit"
    fret: FretConfig = Field(default_factory=FretConfig)
    fusions: list[str] = Field(default_factory=list, description="more fusion specs to score")
    cache: bool = True

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def cache_path(self) -> Path | None:
        """`GECKO_LLM_CACHE` (shared with FRet runs), else the audit folder's own."""
        if not self.cache:
            return None
        return Path(os.environ.get("GECKO_LLM_CACHE") or self.out_dir / "cache" / "llm.sqlite")


@lru_cache(maxsize=4)
def _dataset(beir: str | None, split: str) -> RetrievalDataset:
    return load_labelled(beir, split)


def dataset_of(spec: AuditSpec) -> RetrievalDataset:
    return _dataset(spec.beir, spec.split)


def query_ids(spec: AuditSpec) -> list[str]:
    ids = list(dataset_of(spec).queries)  # file order: "the first N claims" is reproducible
    return ids[: spec.limit] if spec.limit else ids


def prepare(spec: AuditSpec) -> PreparedCorpus:
    return prepare_corpus(dataset_of(spec), spec.out_dir, spec.fret)


def judge_step(spec: AuditSpec, settings: LLMSettings, base_url: str) -> JudgeSummary:
    summary = judge_queries(JudgeJob(dataset_of(spec), prepare(spec), spec.fret, settings, base_url,
                                     spec.out_dir, query_ids(spec), spec.cache_path()))
    atomic_write_json(spec.out_dir / "last_identity.json", summary.identity)
    return summary


def planned_identity(spec: AuditSpec) -> dict:
    """The judge identity for the form asked (the server may still force rc_only)."""
    return judge_identity(spec.fret, spec.fret.judge_mode, dataset_of(spec),
                          prepare(spec).plan.corpus_hash)


def pending_queries(spec: AuditSpec, identity: dict) -> int:
    """Selected queries with no record yet: none means the LLM need not even be started."""
    store = open_corpus(prepare(spec).run_dir)
    done = read_records(records_path(spec.out_dir, identity))
    return len(split_queries(dataset_of(spec), store, query_ids(spec), done)[0])


def report_step(spec: AuditSpec, identity: dict | None = None) -> AuditReport:
    """The report of the judged records of `identity` (default: the last judge step's)."""
    identity = identity or json.loads((spec.out_dir / "last_identity.json").read_text())
    dataset = dataset_of(spec)
    records = read_records(records_path(spec.out_dir, identity))
    store = open_corpus(prepare(spec).run_dir)
    selected = query_ids(spec)
    _, skipped_ids, _ = split_queries(dataset, store, selected, records)
    skipped = dict(Counter(skipped_ids.values()))
    judged = [records[q] for q in selected if q in records]
    fusions = [FusionConfig.parse(s) for s in (*BASELINE_FUSIONS, *spec.fusions)]
    report = build_report(judged, dataset, spec.split, identity, fusions, spec.fret.fusion,
                          len(selected), skipped, spec.fret.negative_guard or NegativeGuard())
    save_report(spec.out_dir, report)
    return report


def save_report(out: Path, report: AuditReport) -> None:
    """audit.json/.md (the latest) and audit-<identity>.json/.md in `out`, and in the registry."""
    from gecko_factory.audit.judging import identity_key

    key = identity_key(report.identity)
    blob, md = report.model_dump_json(indent=2), report.to_markdown()
    for name in (f"audit-{key}", "audit"):
        atomic_write_bytes(out / f"{name}.json", blob.encode())
        atomic_write_bytes(out / f"{name}.md", md.encode())
    register(key, blob, md)
