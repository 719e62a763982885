"""The labelled set an audit runs on, and its corpus planned and indexed as a FRet run's is.

Entry points: `load_labelled(beir, split) -> RetrievalDataset` (a BEIR folder or zip, or the
SciFact zip; default SciFact *train*: the test split is what models are evaluated on, so the
audit that tunes the factory's choices must never look at it) and `prepare_corpus(...)`, which
writes the corpus as a FRet run folder (plan.json, corpus.parquet, corpus.arrow) and builds or
reuses the same cached HNSW index a `gecko-factory run --corpus` over it would.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gecko_factory.config import FretConfig
from gecko_factory.corpus import CorpusSpec
from gecko_factory.evaluate import DatasetUnavailable, RetrievalDataset, load_beir, load_scifact
from gecko_factory.index import IndexInfo, IndexRequest, build_index
from gecko_factory.paths import gecko_home
from gecko_factory.plan import RunPlan, plan_run
from gecko_factory.scifact import DEFAULT_SCIFACT_ZIP
from gecko_factory.files import atomic_write_bytes

DEFAULT_SPLIT = "train"
_SCIFACT_MEMBER = "claims_train.csv"  # how a SciFact CSV zip is told from a BEIR zip


def load_labelled(beir: str | Path | None = None, split: str = DEFAULT_SPLIT) -> RetrievalDataset:
    """Raises DatasetUnavailable with what is missing and where it was looked for."""
    if beir is None:
        if not DEFAULT_SCIFACT_ZIP.is_file():
            raise DatasetUnavailable(
                f"no labelled set given and the default, SciFact at {DEFAULT_SCIFACT_ZIP.resolve()}, "
                "is not there (the project keeps it in ../shared/data/): pass --beir PATH "
                "(a BEIR folder or zip: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)")
        return load_scifact(DEFAULT_SCIFACT_ZIP, split=split)
    path = Path(beir)
    if not path.exists():
        raise DatasetUnavailable(f"labelled set not found: {path.resolve()}")
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            is_scifact = _SCIFACT_MEMBER in z.namelist()
        if is_scifact:
            return load_scifact(path, split=split)
    return load_beir(path, split=split)


@dataclass(frozen=True)
class PreparedCorpus:
    run_dir: Path  # a FRet run folder holding only the plan and the corpus
    plan: RunPlan
    index: IndexInfo


def prepare_corpus(dataset: RetrievalDataset, out: Path, cfg: FretConfig) -> PreparedCorpus:
    """The labelled set's documents as a FRet corpus (ids kept: the qrels refer to them).

    The documents go through the factory's own reader (whitespace normalised, too short, too
    long and duplicate texts skipped and counted), so the audit sees the corpus a run would."""
    run_dir = out / "corpus"
    run_dir.mkdir(parents=True, exist_ok=True)
    jsonl = run_dir / "documents.jsonl"
    blob = "".join(json.dumps({"id": d, "title": t, "text": x}, ensure_ascii=False) + "\n"
                   for d, (t, x) in dataset.corpus.items()).encode()
    same_documents = jsonl.exists() and jsonl.read_bytes() == blob
    if not same_documents:
        atomic_write_bytes(jsonl, blob)
    # Only the corpus matters here; seeds are the labelled queries, so the plan's sample is moot.
    corpus_cfg = FretConfig(corpus=CorpusSpec(path=str(jsonl.resolve())), limit=1,
                            encoder=cfg.encoder, index=cfg.index,
                            embed_batch_size=cfg.embed_batch_size)
    # Planned once: re-planning rewrites corpus.parquet under an audit that is still judging.
    plan = RunPlan.load(run_dir) if (run_dir / "plan.json").exists() else None
    if plan is None or not same_documents or plan.config_hash != corpus_cfg.output_hash():
        plan = plan_run(corpus_cfg, run_dir, force=True)
    index = build_index(IndexRequest(
        corpus_path=run_dir / "corpus.parquet", corpus_hash=plan.corpus_hash, encoder=cfg.encoder,
        params=cfg.index, cache_dir=gecko_home() / "indexes", batch_size=cfg.embed_batch_size))
    return PreparedCorpus(run_dir, plan, index)
