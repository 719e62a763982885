"""The one place that defines gecko-factory's Parquet schemas.

Every writer builds its table against these schemas and every reader may rely on them; a change
here is a format change and bumps `FRET_SCHEMA_VERSION` (it is part of each shard's marker).
"""

from __future__ import annotations

import pyarrow as pa

FRET_SCHEMA_VERSION = "fret-v2"  # v2: candidate similarity, the fusion and the judge model of each row

# A paragraph of the input corpus after normalisation (the run's `corpus.parquet`).
PARAGRAPH_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),  # "" when the source has none
        pa.field("text", pa.string(), nullable=False),
    ]
)

# One retrieved candidate of a FRet example, with the judge's scores. `ql` is null when the
# server gave no prompt log-probs (RC-only judging, recorded in the manifest).
CANDIDATE_TYPE = pa.struct(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("retrieval_rank", pa.int32(), nullable=False),  # 1 = nearest neighbour
        pa.field("similarity", pa.float64()),  # cosine(query, passage), what the negative guard reads
        pa.field("ql", pa.float64()),  # log p(query | passage), summed over query tokens
        pa.field("rc", pa.float64()),  # log p("Yes" | query, passage)
        pa.field("fused_score", pa.float64(), nullable=False),  # sum of w_s / rank_s (fusion.py)
        # 1 = the fusion's top; the positive is `positive_id` (keep_seed may keep the seed instead)
        pa.field("fused_rank", pa.int32(), nullable=False),
    ]
)

# One FRet example: (task, query, positive, hard negative) plus how it was chosen.
FRET_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("seed_id", pa.string(), nullable=False),
        pa.field("task_type", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("positive_id", pa.string(), nullable=False),
        pa.field("positive_title", pa.string(), nullable=False),
        pa.field("positive_text", pa.string(), nullable=False),
        pa.field("negative_id", pa.string(), nullable=False),
        pa.field("negative_title", pa.string(), nullable=False),
        pa.field("negative_text", pa.string(), nullable=False),
        pa.field("relabelled", pa.bool_(), nullable=False),  # positive is not the seed
        pa.field("candidates", pa.list_(CANDIDATE_TYPE), nullable=False),
        pa.field("judge_mode", pa.string(), nullable=False),  # one_pass | two_prompt | rc_only
        pa.field("fusion", pa.string(), nullable=False),  # FusionConfig.spec(), e.g. rrf+keep_seed
        pa.field("llm_model", pa.string(), nullable=False),  # wrote the task and query
        pa.field("judge_model", pa.string(), nullable=False),  # scored the candidates
        pa.field("prompt_version", pa.string(), nullable=False),
    ],
    metadata={"gecko_factory.schema": FRET_SCHEMA_VERSION},
)
