"""A run folder or a data-set version as a Hugging Face data-set folder: its README.md.

`datasets.load_dataset(folder)` and the Hub read a data set's layout from the YAML header of
README.md (`configs` -> `data_files`, `dataset_info` -> features). Without one, `load_dataset`
globs every Parquet file it finds, and a run folder also holds corpus.parquet (another schema),
so it fails. The header written here lists exactly the files that hold the folder's FRet rows,
with the features derived from FRET_SCHEMA; the body is the markdown card the Prefect artifact
shows (card.py).

What the rows are (`dataset_parts`) is decided once, here, and export.py reads the same parts:
- a run folder: its committed shards (the marker matches: what the manifest counts);
- a version (version.json): its own shards plus the earlier versions' shards it reuses. The
  reused ones are linked into `reused/` (hard links: no space, and the folder stays whole when
  uploaded), and one with rows left out is written there filtered, since `data_files` cannot
  exclude rows.
No Prefect here: tasks/artifacts.py calls `write_readme` when it publishes the run's card.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from gecko_factory.files import atomic_file, atomic_write_text, replace_file
from gecko_factory.manifest import shard_states
from gecko_factory.options import RunOptions
from gecko_factory.plan import RunPlan
from gecko_factory.schemas import FRET_SCHEMA
from gecko_factory.shards import shard_file
from gecko_factory.versions import VERSION_FILE, read_version, record_shards

README = "README.md"
REUSED_DIR = "reused"
TASK_CATEGORIES = ["sentence-similarity", "text-retrieval"]
TAGS = ["gecko", "fret", "synthetic", "embeddings", "hard-negatives"]
# The Hub's size buckets (huggingface_hub's DatasetCardData): n<1K, 1K<n<10K, ... n>1T.
_SIZE_NAMES = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T"]
_DTYPES = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64",
           pa.float64(): "float64", pa.bool_(): "bool"}


@dataclass
class Part:
    """One Parquet file of a data set's rows, and the example ids of it that are not rows."""

    path: Path
    exclude: set[str] = field(default_factory=set)


def feature_yaml(f: pa.Field) -> dict:
    """A field as the `dataset_info.features` entry `datasets` writes for it (a list of structs
    is `list:` of the struct's fields)."""
    if pa.types.is_list(f.type):
        return {"name": f.name, "list": [feature_yaml(c) for c in f.type.value_type]}
    return {"name": f.name, "dtype": _DTYPES[f.type]}


def features_yaml(schema: pa.Schema = FRET_SCHEMA) -> list[dict]:
    return [feature_yaml(f) for f in schema]


def size_category(n: int) -> str:
    if n < 1000:
        return "n<1K"
    for lower, upper in zip(_SIZE_NAMES, _SIZE_NAMES[1:]):
        if n < 1000 * 10 ** (_SIZE_NAMES.index(upper)):
            return f"{lower}<n<{upper}"
    return "n>1T"


@dataclass(frozen=True)
class Size:
    rows: int
    num_bytes: int  # uncompressed, from the Parquet metadata (datasets counts Arrow bytes: close)
    download_size: int  # the files' bytes

    @classmethod
    def of(cls, files: list[Path]) -> "Size":
        metas = [pq.ParquetFile(f).metadata for f in files]
        return cls(sum(m.num_rows for m in metas),
                   sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups)),
                   sum(f.stat().st_size for f in files))


def card_metadata(data_files: list[str], size: Size, license: str, pretty_name: str) -> dict:
    """The YAML header: the Hub's card fields, then the layout `load_dataset` follows."""
    return {
        "pretty_name": pretty_name,
        "license": license,
        "task_categories": TASK_CATEGORIES,
        "annotations_creators": ["machine-generated"],
        "size_categories": [size_category(size.rows)],
        "tags": TAGS,
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": data_files}]}],
        # num_examples makes `load_dataset` check the count it read against the files'.
        "dataset_info": {"features": features_yaml(),
                         "splits": [{"name": "train", "num_bytes": size.num_bytes,
                                     "num_examples": size.rows}],
                         "download_size": size.download_size, "dataset_size": size.num_bytes},
    }


def render(metadata: dict, body: str) -> str:
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{header}---\n\n{body.rstrip()}\n"


def dataset_parts(folder: Path, version: dict | None = None) -> list[Part]:
    """The files, and rows left out of them, that make up the data set at `folder`: a version's
    (`version`: its record, before version.json is written), else the run's."""
    if version is None and (folder / VERSION_FILE).exists():
        version = read_version(folder)
    if version is not None:
        return [Part(path, exclude) for path, exclude in record_shards(version, folder.parent.parent)]
    return [Part(shard_file(folder, s.shard)) for s in shard_states(folder) if s.marker is not None]


def _local_files(folder: Path, parts: list[Part]) -> list[str]:
    """The parts as paths relative to `folder`, linking or filtering those that are elsewhere.
    Files without rows are left out: `datasets` fails on a Parquet file of no rows, and a shard
    whose every seed was skipped is one."""
    files = []
    for part in parts:
        if not part.exclude and pq.ParquetFile(part.path).metadata.num_rows == 0:
            continue
        if not part.exclude and part.path.parent.parent == folder:
            files.append(part.path.relative_to(folder).as_posix())
            continue
        # versions/v0001/shards/part-00000.parquet -> reused/v0001-part-00000.parquet
        target = folder / REUSED_DIR / f"{part.path.parent.parent.name}-{part.path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if part.exclude:
            if not write_filtered(part.path, part.exclude, target):
                target.unlink(missing_ok=True)
                continue
        else:
            link_or_copy(part.path, target)
        files.append(target.relative_to(folder).as_posix())
    return files


def write_filtered(src: Path, exclude: set[str], target: Path) -> int:
    """`src` without the rows in `exclude`, as `target`; nothing is written when no row is left.
    Returns the rows written."""
    table = pq.read_table(src)
    keep = pc.invert(pc.is_in(table["example_id"], value_set=pa.array(sorted(exclude), pa.string())))
    table = table.filter(keep)
    if table.num_rows:
        with atomic_file(target) as fh:
            pq.write_table(table, fh, compression="zstd")
    return table.num_rows


def link_or_copy(src: Path, target: Path) -> None:
    """A hard link (shards are never rewritten in place: a redone shard is a new file by
    rename, so the link keeps the content the version was made of); a copy across devices."""
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        with atomic_file(tmp, ".part") as fh, src.open("rb") as f:
            while chunk := f.read(1 << 20):
                fh.write(chunk)
    replace_file(tmp, target)


def _usage(folder: Path) -> str:
    return "\n".join([
        "<!-- Written by gecko-factory with the run's manifest: edits here are overwritten. -->",
        "", "```python", "from datasets import load_dataset", "",
        f'rows = load_dataset("path/to/{folder.name}", split="train")',
        "```", "",
        "For training formats: `gecko-factory export FOLDER --format sentence-transformers|beir|jsonl "
        "--out PATH`.", "", ""])


def _run_body(folder: Path) -> str:
    if not (folder / "manifest.json").exists():
        return ""
    from gecko_factory.card import run_card

    return run_card(folder)[1]


def _version_body(folder: Path, v: dict) -> str:
    lines = [f"# FRet data set {folder.parent.parent.name}, version {v['version']}", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {v[key]:,} |" for name, key in (
        ("examples", "examples"), ("new examples (this refresh)", "new_examples"),
        ("reused from earlier versions", "reused_examples"), ("dropped (paragraph gone or edited)",
                                                              "dropped_examples"),
        ("paragraphs in the corpus", "paragraphs"), ("LLM calls", "llm_calls"))]
    lines += [f"| previous version | {v['previous'] or 'none'} |", f"| created | {v['created']} |", ""]
    run = _run_body(folder)
    if run:
        lines += ["The run that made this refresh's new examples:", "", run]
    return "\n".join(lines)


def write_readme(folder: Path, body: str | None = None, version: dict | None = None) -> Path:
    """Write `folder`/README.md (atomically). `body`: the run's card when the caller has it
    (tasks/artifacts.py), else it is made here. `version`: the record commit_version is about to
    write (README first, version.json last, so a version that exists has its card); a folder
    whose version.json exists is described as that version whatever `body` says."""
    folder = Path(folder)
    if version is None and (folder / VERSION_FILE).exists():
        version = read_version(folder)
    parts = dataset_parts(folder, version)
    files = _local_files(folder, parts)
    if version is not None:
        body, license = _version_body(folder, version), version.get("license")
    else:
        body, license = body if body is not None else _run_body(folder), None
    meta = card_metadata(files, Size.of([folder / f for f in files]), license or recorded_license(folder),
                         f"FRet: {folder.name}")
    path = folder / README
    atomic_write_text(path, render(meta, _usage(folder) + body))
    return path


def recorded_license(folder: Path) -> str:
    """The license option the folder's run recorded in its plan, or RunOptions' default (a run
    planned before the option existed)."""
    try:
        return RunPlan.load(folder).config.license
    except (OSError, ValueError):
        return RunOptions.model_fields["license"].default
