"""The typed records and the Arrow schema derived from them: a row survives Parquet unchanged, and
the derived schema is the format the version string names (a change must bump it)."""

import pyarrow as pa
import pyarrow.parquet as pq

from gecko_factory.schemas import (FRET_SCHEMA, FRET_SCHEMA_VERSION, FretCandidate, FretRow, ShardStats,
                                   fret_table)


def _row() -> FretRow:
    cands = [FretCandidate("s", 1, 0.9, -3.5, -0.2, 1.5, 1), FretCandidate("n", 2, 0.4, None, None, 0.5, 2)]
    return FretRow("e", "s", "qa", "t", "q", "s", "", "pos", "n", "T", "neg", False, cands,
                   "rc_only", "rrf", "m", "j", "v")


def test_a_row_survives_parquet_as_the_same_record(tmp_path):
    pq.write_table(fret_table([_row(), _row()]), tmp_path / "x.parquet")
    back = [FretRow.from_dict(r) for r in pq.read_table(tmp_path / "x.parquet").to_pylist()]
    assert back == [_row(), _row()]
    assert back[0].candidate("n").ql is None and back[0].candidate("s").similarity == 0.9


def test_the_derived_schema_is_fret_v3():
    # Written out once by hand: if the records change, this fails until the version is bumped.
    # v3 kept v2's types; what changed is that a candidate may be unjudged (see the next test).
    cand = pa.struct([
        pa.field("id", pa.string(), nullable=False), pa.field("retrieval_rank", pa.int32(), nullable=False),
        pa.field("similarity", pa.float64()), pa.field("ql", pa.float64()), pa.field("rc", pa.float64()),
        pa.field("fused_score", pa.float64(), nullable=False), pa.field("fused_rank", pa.int32(), nullable=False)])
    strings = ["example_id", "seed_id", "task_type", "task", "query", "positive_id", "positive_title",
               "positive_text", "negative_id", "negative_title", "negative_text"]
    fields = [pa.field(n, pa.string(), nullable=False) for n in strings]
    fields += [pa.field("relabelled", pa.bool_(), nullable=False),
               pa.field("candidates", pa.list_(cand), nullable=False)]
    fields += [pa.field(n, pa.string(), nullable=False)
               for n in ("judge_mode", "fusion", "llm_model", "judge_model", "prompt_version")]
    assert FRET_SCHEMA_VERSION == "fret-v3"
    assert FRET_SCHEMA.equals(pa.schema(fields))


def test_a_candidate_without_ql_or_rc_is_unjudged():
    assert not FretCandidate("n", 9, 0.3, None, None, 0.0, 6).judged
    assert FretCandidate("n", 2, 0.3, None, -0.5, 1.0, 2).judged  # RC-only judging: no QL
    assert FretCandidate("n", 2, 0.3, -9.0, -0.5, 1.0, 2).judged


def test_shard_stats_read_back_ignore_unknown_keys():
    stats = ShardStats(seeds=3, skipped={"x": 1}, relabelled=1, usage={"calls": 7}, seconds=1.5)
    assert ShardStats.from_dict({**stats.as_dict(), "from_a_newer_version": 1}) == stats
    assert ShardStats.from_dict({}).judge_mode == "?"  # a marker from before stats were typed
