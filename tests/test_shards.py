import pyarrow.parquet as pq

from gecko_factory.schemas import FRET_SCHEMA, FretRow, ShardStats
from gecko_factory.shards import commit_shard, done_marker, marker_file, shard_file


def _row(i: int) -> FretRow:
    return FretRow.from_dict({"example_id": f"e{i}", "seed_id": f"s{i}", "task_type": "fact checking", "task": "t",
            "query": "q", "positive_id": "p", "positive_title": "", "positive_text": "pt",
            "negative_id": "n", "negative_title": "", "negative_text": "nt", "relabelled": False,
            "candidates": [{"id": "p", "retrieval_rank": 1, "similarity": 0.5, "ql": -1.0, "rc": None,
                            "fused_score": 1.0, "fused_rank": 1}],
            "judge_mode": "one_pass", "fusion": "rrf", "llm_model": "m", "judge_model": "m", "prompt_version": "v"})


def test_commit_writes_file_then_marker_and_nothing_temporary(tmp_path):
    marker = commit_shard(tmp_path, 7, [_row(1), _row(2)], "in", "cfg", ShardStats())
    assert shard_file(tmp_path, 7).name == "part-00007.parquet"
    table = pq.read_table(shard_file(tmp_path, 7))
    assert table.schema.equals(FRET_SCHEMA, check_metadata=False) and table.num_rows == 2 == marker.rows
    assert not list(tmp_path.rglob("*.tmp"))
    assert done_marker(tmp_path, 7, "in", "cfg") == marker


def test_marker_must_match_inputs_config_and_file(tmp_path):
    commit_shard(tmp_path, 0, [_row(1)], "in", "cfg", ShardStats())
    assert done_marker(tmp_path, 0, "other-input", "cfg") is None
    assert done_marker(tmp_path, 0, "in", "other-config") is None
    path = shard_file(tmp_path, 0)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    assert done_marker(tmp_path, 0, "in", "cfg") is None


def test_missing_file_or_broken_marker_means_not_done(tmp_path):
    commit_shard(tmp_path, 1, [_row(1)], "in", "cfg", ShardStats())
    marker_file(tmp_path, 1).write_text("{not json")
    assert done_marker(tmp_path, 1, "in", "cfg") is None
    commit_shard(tmp_path, 2, [_row(1)], "in", "cfg", ShardStats())
    shard_file(tmp_path, 2).unlink()
    assert done_marker(tmp_path, 2, "in", "cfg") is None
