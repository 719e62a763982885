"""BEIR-style retrieval evaluation: exact search, nDCG@10 and Recall@100 at every Matryoshka dim.

Relevance is binary; nDCG uses the log2 discount and an ideal DCG over all of a query's relevant
documents (as pytrec_eval does for BEIR). Queries without relevant documents are not scored.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import re
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from gecko_factory.embed import packaged_model_id
from gecko_factory.embedding_cache import EmbeddingCache, encoding_key
from gecko_factory.scifact import DEFAULT_SCIFACT_ZIP, csv_rows, parse_abstract

if TYPE_CHECKING:  # importing transformers costs seconds; the audit imports this module for its data
    from gecko_factory.train.model import DualEncoder

log = logging.getLogger(__name__)


class DatasetUnavailable(FileNotFoundError):
    """The evaluation data is not on this machine; callers may skip."""


@dataclass
class RetrievalDataset:
    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, set[str]]  # query id -> relevant doc ids

    @property
    def n_qrels(self) -> int:
        return sum(len(v) for v in self.qrels.values())


# ---- loaders ---------------------------------------------------------------------------------

def load_beir(source: str | Path, split: str = "test") -> RetrievalDataset:
    """A BEIR data set: corpus.jsonl, queries.jsonl, qrels/{split}.tsv (score > 0 = relevant),
    in a folder or in a zip (at its top or under one folder, as BEIR's downloads are)."""
    source = Path(source)
    with _beir_files(source) as open_file:
        corpus = {}
        with open_file("corpus.jsonl") as f:
            for line in f:
                doc = json.loads(line)
                corpus[str(doc["_id"])] = (doc.get("title") or "", doc.get("text") or "")
        qrels: dict[str, set[str]] = {}
        try:
            qrels_file = open_file(f"qrels/{split}.tsv")
        except KeyError:
            raise DatasetUnavailable(f"{source} has no qrels/{split}.tsv") from None
        with qrels_file as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if int(row["score"]) > 0:
                    qrels.setdefault(str(row["query-id"]), set()).add(str(row["corpus-id"]))
        queries = {}
        with open_file("queries.jsonl") as f:
            for line in f:
                q = json.loads(line)
                if str(q["_id"]) in qrels:
                    queries[str(q["_id"])] = q["text"]
    return RetrievalDataset(source.stem if source.is_file() else source.name, corpus, queries, qrels)


@contextlib.contextmanager
def _beir_files(source: Path):
    """A function that opens a BEIR member by its relative name as text; KeyError if absent."""
    if source.is_dir():
        if not (source / "corpus.jsonl").exists():
            raise DatasetUnavailable(f"no BEIR data set at {source} (corpus.jsonl missing)")

        def open_dir(name: str):
            if not (source / name).is_file():
                raise KeyError(name)
            return open(source / name, encoding="utf-8")
        yield open_dir
        return
    if not zipfile.is_zipfile(source):
        raise DatasetUnavailable(f"no BEIR data set at {source} (neither a folder nor a zip)")
    with zipfile.ZipFile(source) as z:
        roots = [n[: -len("corpus.jsonl")] for n in z.namelist() if n.endswith("corpus.jsonl")]
        if len(roots) != 1:
            raise DatasetUnavailable(f"{source}: expected one corpus.jsonl, found {len(roots)}")

        def open_zip(name: str):
            return io.TextIOWrapper(z.open(roots[0] + name), encoding="utf-8")  # KeyError if absent
        yield open_zip


def load_scifact(zip_path: str | Path | None = None, split: str = "test") -> RetrievalDataset:
    """SciFact from the CSV zip: BEIR test = claims_validation.csv (300 queries, 339 qrels)."""
    zip_path = Path(zip_path) if zip_path else DEFAULT_SCIFACT_ZIP
    if not zip_path.is_file():
        raise DatasetUnavailable(
            f"SciFact zip not found at {zip_path.resolve()}; pass its path "
            "(the project keeps it at ../shared/data/scifact.zip)")
    claims_file = {"test": "claims_validation.csv", "train": "claims_train.csv"}[split]
    with zipfile.ZipFile(zip_path) as z:
        corpus = {row["doc_id"]: (row["title"], parse_abstract(row["abstract"]))
                  for row in csv_rows(z, "corpus_train.csv")}
        queries, qrels = {}, {}
        for row in csv_rows(z, claims_file):
            cited = set(re.findall(r"\d+", row["cited_doc_ids"]))
            if cited:
                queries[row["id"]] = row["claim"]
                qrels.setdefault(row["id"], set()).update(cited)
    return RetrievalDataset("scifact", corpus, queries, qrels)


# ---- metrics ---------------------------------------------------------------------------------

def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(rank + 2) for rank, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int = 100) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


# ---- encoding and search ---------------------------------------------------------------------

def encode_texts(encoder: DualEncoder, texts: Sequence[str], batch_size: int = 64,
                 max_seq_len: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """The model's own embeddings (`DualEncoder.encode`: mean-pooled, L2-normalised).

    Texts go through in order of length, so each batch pads to similar lengths (on SciFact
    this roughly halves the work); the rows come back in input order.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out = np.zeros((len(texts), encoder.hidden_size), dtype=np.float32)
    encoder.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = encoder.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                      max_length=max_seq_len, return_tensors="pt").to(device)
            out[idx] = encoder.encode(batch).float().cpu().numpy()
    return out


def search(queries: np.ndarray, docs: np.ndarray, k: int = 100,
           chunk: int = 50_000) -> np.ndarray:
    """Exact inner-product top-k, docs in chunks, merged; returns [n_queries, k] doc indices."""
    q = torch.from_numpy(queries)
    best_scores = torch.full((len(q), 0), float("-inf"))
    best_index = torch.zeros((len(q), 0), dtype=torch.long)
    for start in range(0, len(docs), chunk):
        scores = q @ torch.from_numpy(docs[start:start + chunk]).T
        top = scores.topk(min(k, scores.size(1)), dim=1)
        best_scores = torch.cat([best_scores, top.values], dim=1)
        best_index = torch.cat([best_index, top.indices + start], dim=1)
        keep = best_scores.topk(min(k, best_scores.size(1)), dim=1).indices
        best_scores, best_index = best_scores.gather(1, keep), best_index.gather(1, keep)
    return best_index.numpy()


# ---- report ----------------------------------------------------------------------------------

class DimScore(BaseModel):
    dim: int
    ndcg_at_10: float
    recall_at_100: float
    # Each query's nDCG@10 (EvalReport.query_ids' order), for paired comparisons of two models on
    # the same queries (paired_gain: model selection, the base-vs-tuned tables).
    ndcg_per_query: list[float] = Field(default_factory=list, repr=False)


class EvalReport(BaseModel):
    model: str
    dataset: str
    n_queries: int
    n_docs: int
    query_prefix: str
    document_format: str
    scores: list[DimScore]
    seconds: float
    corpus_cached: bool = False  # the corpus embeddings came from the embedding cache
    query_ids: list[str] = Field(default_factory=list, repr=False)  # in the scored order

    def to_markdown(self) -> str:
        lines = [f"**{self.model}** on {self.dataset} ({self.n_queries} queries, "
                 f"{self.n_docs} docs, {self.seconds:.0f} s)", "",
                 "| dim | nDCG@10 | Recall@100 |", "|---:|---:|---:|"]
        lines += [f"| {s.dim} | {s.ndcg_at_10:.4f} | {s.recall_at_100:.4f} |"
                  for s in self.scores]
        return "\n".join(lines)


def paired_gain(new: Sequence[float], old: Sequence[float]) -> tuple[float, float]:
    """The mean per-query gain of `new` over `old` on the same queries, and its standard error.
    Paired, because two checkpoints of one model agree on most queries: the SE of the difference
    is far below what two unpaired means' SEs would say."""
    d = np.asarray(new, dtype=np.float64) - np.asarray(old, dtype=np.float64)
    if d.size < 2:
        return float(d.sum()), 0.0
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def gain_se(base: EvalReport, tuned: EvalReport, dim: int) -> float | None:
    """The paired SE of tuned - base nDCG@10 at `dim`; None unless both scored the same queries."""
    b = next((s for s in base.scores if s.dim == dim), None)
    t = next((s for s in tuned.scores if s.dim == dim), None)
    if (b is None or t is None or not base.query_ids or base.query_ids != tuned.query_ids
            or not b.ndcg_per_query or len(b.ndcg_per_query) != len(t.ndcg_per_query)):
        return None
    return paired_gain(t.ndcg_per_query, b.ndcg_per_query)[1]


def compare_markdown(base: EvalReport, tuned: EvalReport) -> str:
    """Side-by-side nDCG@10 / Recall@100 per dim, with the change and its paired SE."""
    lines = [f"{base.dataset}: `{base.model}` (base) vs `{tuned.model}` (fine-tuned)", "",
             "| dim | nDCG@10 base | nDCG@10 tuned | Δ | paired SE | R@100 base | R@100 tuned "
             "| Δ |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base_by_dim = {s.dim: s for s in base.scores}
    for t in tuned.scores:
        b = base_by_dim.get(t.dim)
        if b is None:
            continue
        se = gain_se(base, tuned, t.dim)
        se_cell = "–" if se is None else f"{se:.4f}"
        lines.append(f"| {t.dim} | {b.ndcg_at_10:.4f} | {t.ndcg_at_10:.4f} | "
                     f"{t.ndcg_at_10 - b.ndcg_at_10:+.4f} | {se_cell} | "
                     f"{b.recall_at_100:.4f} | {t.recall_at_100:.4f} | "
                     f"{t.recall_at_100 - b.recall_at_100:+.4f} |")
    return "\n".join(lines)


def saved_prompts(path: Path) -> dict:
    """The prompts a sentence-transformers folder records, if any."""
    if (path / "config_sentence_transformers.json").exists():
        return json.loads((path / "config_sentence_transformers.json").read_text()).get(
            "prompts") or {}
    return {}


def evaluate(
    encoder: str | Path | DualEncoder,
    dataset: RetrievalDataset,
    dims: Sequence[int] | None = None,
    query_prefix: str | None = None,
    document_format: str | None = None,
    batch_size: int = 64,
    max_seq_len: int | None = None,
    device: str = "cpu",
    cache: EmbeddingCache | Literal["default"] | None = "default",
) -> EvalReport:
    """Embed corpus and queries, search exactly, score at each dim (None = full size only).

    `encoder` is a model folder or a DualEncoder. When `query_prefix` / `document_format` are
    None they come from the folder's saved `prompts` (query prefix; document prefix + text),
    else the BEIR default: the raw query and "{title} {text}". The corpus embeddings come from
    `cache` (embedding_cache.py; `$GECKO_HOME/embeddings` by default, None: always encode) when
    the same weights encoded the same texts before.
    """
    if cache == "default":
        cache = EmbeddingCache.default()
    start = time.perf_counter()
    if isinstance(encoder, (str, Path)):
        path = Path(encoder)
        prompts = saved_prompts(path)
        from gecko_factory.train.model import DualEncoder  # transformers: only when evaluating

        encoder = DualEncoder.from_pretrained(path).to(device)
        name = packaged_model_id(path) or (path.name if path.name != "model" else path.parent.name)
    else:
        prompts, name = {}, type(encoder).__name__
    # the folder's own length (model.saved_max_seq_len), the one training defaults to as well
    max_seq_len = max_seq_len or encoder.max_seq_len
    saved_query, saved_document = prompt_formats(prompts)
    query_prefix = saved_query if query_prefix is None else query_prefix
    document_format = saved_document if document_format is None else document_format

    doc_ids = list(dataset.corpus)
    doc_texts = [document_text(document_format, t, x) for t, x in dataset.corpus.values()]
    query_ids = [q for q in dataset.queries if dataset.qrels.get(q)]
    query_texts = [query_prefix + dataset.queries[q] for q in query_ids]
    doc_emb, cached = _corpus_embeddings(encoder, doc_texts, batch_size, max_seq_len, device,
                                         cache)
    query_emb = encode_texts(encoder, query_texts, batch_size, max_seq_len, device)

    scores = []
    for dim in dims or [doc_emb.shape[1]]:
        d = _truncate(doc_emb, dim)
        q = _truncate(query_emb, dim)
        top = search(q, d, k=100)
        ranked = [[doc_ids[j] for j in row] for row in top]
        rel = [dataset.qrels[qid] for qid in query_ids]
        per_query = [ndcg_at_k(r, s, 10) for r, s in zip(ranked, rel)]
        scores.append(DimScore(
            dim=dim, ndcg_per_query=per_query,
            ndcg_at_10=float(np.mean(per_query)),
            recall_at_100=float(np.mean([recall_at_k(r, s, 100) for r, s in zip(ranked, rel)]))))
    return EvalReport(model=name, dataset=dataset.name, n_queries=len(query_ids),
                      n_docs=len(doc_ids), query_prefix=query_prefix,
                      document_format=document_format, scores=scores,
                      seconds=time.perf_counter() - start, corpus_cached=cached,
                      query_ids=query_ids)


def _corpus_embeddings(encoder, texts: list[str], batch_size: int, max_seq_len: int, device: str,
                       cache: EmbeddingCache | None) -> tuple[np.ndarray, bool]:
    """The corpus side, from the cache when these weights already encoded these texts (queries
    are a few hundred short lines: encoding them is cheaper than hashing the weights)."""
    if cache is None:
        return encode_texts(encoder, texts, batch_size, max_seq_len, device), False
    key = encoding_key(encoder, texts, max_seq_len, batch_size, device)
    emb = cache.get(key, len(texts))
    if emb is not None:
        log.info("corpus embeddings of %d documents from the cache", len(texts))
        return emb, True
    log.info("encoding %d documents (max %d tokens) on %s", len(texts), max_seq_len, device)
    emb = encode_texts(encoder, texts, batch_size, max_seq_len, device)
    cache.put(key, emb)
    return emb, False


def prompt_formats(prompts: dict[str, str]) -> tuple[str, str]:
    """(query prefix, document format) a model folder's saved `prompts` give; BEIR's plain
    query and "{title} {text}" without them. Training's dev evaluation (train/select.py) scores
    the model in training with the prompts it will be saved with, through this same function."""
    query_prefix = prompts.get("query", "")
    document = prompts.get("document", "")
    if "title: none" in document:  # Gecko's, whose prompt carries the title slot
        return query_prefix, document.replace("title: none", "title: {title}") + "{text}"
    # any other prompt (e5's "passage: ") goes before what a BEIR user encodes: title and text
    return query_prefix, document + "{title} {text}"


def document_text(document_format: str, title: str | None, text: str) -> str:
    """A document as a model with `document_format` reads it (training in the base's own
    format writes its passages with this too: train/model.py's TextFormat)."""
    if "title:" in document_format:  # Gecko's format says "none"
        return document_format.format(title=title or "none", text=text).strip()
    if not title:  # no title: no space before the text either ("passage: x", not "passage:  x")
        document_format = document_format.replace("{title} {text}", "{text}")
    return document_format.format(title=title or "", text=text).strip()


def _truncate(x: np.ndarray, dim: int) -> np.ndarray:
    x = x[:, :dim]
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12))

