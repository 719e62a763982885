"""BEIR SciFact from its CSV zip (`../shared/data/scifact.zip`), without torch.

Only `documents()` may feed the factory: the abstracts are an unlabelled corpus. The claims and
their cited documents are evaluation data (see `gecko_factory.evaluate.load_scifact`) and never
reach generation, mining or training.
"""

from __future__ import annotations

import ast
import csv
import io
import tokenize
import zipfile
from pathlib import Path
from typing import Iterator

DEFAULT_SCIFACT_ZIP = Path("../shared/data/scifact.zip")  # relative to the working directory


def parse_abstract(field: str) -> str:
    """The zip prints the sentence list without commas; `literal_eval` would glue sentences."""
    tokens = tokenize.generate_tokens(io.StringIO(field).readline)
    return " ".join(ast.literal_eval(t.string) for t in tokens if t.type == tokenize.STRING)


def csv_rows(z: zipfile.ZipFile, name: str) -> Iterator[dict]:
    with z.open(name) as raw:
        yield from csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))


def documents(zip_path: Path) -> Iterator[tuple[str, str, str]]:
    """(doc_id, title, abstract) for the 5,183 abstracts."""
    with zipfile.ZipFile(zip_path) as z:
        for row in csv_rows(z, "corpus_train.csv"):
            yield row["doc_id"], row["title"], parse_abstract(row["abstract"])
