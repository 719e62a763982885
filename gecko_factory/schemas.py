"""The one place that defines gecko-factory's records and their Parquet schemas.

A FRet row is a typed record (`FretRow`, `FretCandidate`); its Arrow schema is derived from the
record's fields here, so the two cannot drift apart. Every writer builds its table with
`fret_table`, every reader may rely on `FRET_SCHEMA`; a change here is a format change and bumps
`FRET_SCHEMA_VERSION` (it is part of each shard's marker). `ShardStats` is what a committed shard
records about itself (its marker), read back by the manifest, the card and `status`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

FRET_SCHEMA_VERSION = "fret-v3"  # v2: candidate similarity, the fusion and the judge model of each row;
# v3: the hard negative may be an unjudged candidate beyond the N judged (FretCandidate.judged)

# A paragraph of the input corpus after normalisation (the run's `corpus.parquet`).
PARAGRAPH_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),  # "" when the source has none
        pa.field("text", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True, slots=True)
class FretCandidate:
    """One retrieved candidate of a FRet example, with the judge's scores."""

    id: str
    retrieval_rank: int  # 1 = nearest neighbour
    similarity: float | None  # cosine(query, passage), what the negative guard reads
    ql: float | None  # log p(query | passage) over the query's tokens; None under RC-only judging
    rc: float | None  # log p("Yes" | query, passage)
    fused_score: float  # sum of w_s / rank_s (fusion.py); 0.0 for an unjudged candidate
    fused_rank: int  # 1 = the fusion's top; the positive is the row's (keep_seed may keep the seed)

    @property
    def judged(self) -> bool:
        """False for the one candidate a row may hold that the judge never scored: the hard
        negative taken from beyond the N judged when the guard let none of those through
        (fusion.reserve_negative). It is listed last, with neither QL nor RC."""
        return self.ql is not None or self.rc is not None


@dataclass(frozen=True, slots=True)
class FretRow:
    """One FRet example: (task, query, positive, hard negative) plus how it was chosen."""

    example_id: str
    seed_id: str
    task_type: str
    task: str
    query: str
    positive_id: str
    positive_title: str
    positive_text: str
    negative_id: str
    negative_title: str
    negative_text: str
    relabelled: bool  # the positive is not the seed
    candidates: list[FretCandidate]
    judge_mode: str  # one_pass | two_prompt | shared_prefix | rc_only
    fusion: str  # FusionConfig.spec(), e.g. rrf+keep_seed
    llm_model: str  # wrote the task and query
    judge_model: str  # scored the candidates
    prompt_version: str

    def candidate(self, candidate_id: str) -> FretCandidate:
        return next(c for c in self.candidates if c.id == candidate_id)

    @classmethod
    def from_dict(cls, row: dict) -> "FretRow":
        """A row as Arrow's `to_pylist` gives it (every column read)."""
        return cls(**{**row, "candidates": [FretCandidate(**c) for c in row["candidates"]]})


# Python type -> Arrow type of a record field. Counts and ranks are int32: a shard has < 2**31 rows.
_ARROW = {str: pa.string(), int: pa.int32(), float: pa.float64(), bool: pa.bool_()}


def _arrow_field(name: str, hint) -> pa.Field:
    args = typing.get_args(hint)
    nullable = isinstance(hint, types.UnionType) and type(None) in args
    if nullable:
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return pa.field(name, pa.list_(arrow_struct(item)), nullable=nullable)
    return pa.field(name, _ARROW[hint], nullable=nullable)


def arrow_struct(record: type) -> pa.StructType:
    hints = typing.get_type_hints(record)
    return pa.struct([_arrow_field(f.name, hints[f.name]) for f in dataclasses.fields(record)])


CANDIDATE_TYPE = arrow_struct(FretCandidate)
FRET_SCHEMA = pa.schema(list(arrow_struct(FretRow)),
                        metadata={"gecko_factory.schema": FRET_SCHEMA_VERSION})


def fret_table(rows: Sequence[FretRow]) -> pa.Table:
    """The rows as an Arrow table of FRET_SCHEMA (column by column: no per-row dicts)."""
    columns = {name: [getattr(r, name) for r in rows] for name in FRET_SCHEMA.names}
    columns["candidates"] = [[dataclasses.asdict(c) for c in r.candidates] for r in rows]
    return pa.Table.from_pydict(columns, schema=FRET_SCHEMA)


@dataclass
class ShardStats:
    """What a committed shard says about itself in its marker: every seed is a row, a skip by
    reason, or (never, once committed) missing; the LLM usage it cost; how it was judged."""

    seeds: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    relabelled: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    judge_mode: str = "?"  # the mode used (the probe may fall back to rc_only)
    unjudged_negatives: int = 0  # rows whose hard negative came from beyond the judged candidates

    @classmethod
    def from_dict(cls, stats: dict) -> "ShardStats":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stats.items() if k in known})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
