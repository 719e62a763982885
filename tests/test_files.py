"""Atomic writes: the final name holds the old file or the new one, never a half file."""

import json
from pathlib import Path

import pytest

from gecko_factory.files import (atomic_file, atomic_write_json, atomic_write_text, publish_dir,
                                 replace_file)


def test_atomic_file_replaces_on_success_and_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "plan.json"
    target.write_text("old")
    with atomic_file(target) as fh:
        fh.write(b"new")
        assert target.read_text() == "old"  # nothing visible until the block ends
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_atomic_file_keeps_the_old_file_when_the_writer_fails(tmp_path: Path):
    target = tmp_path / "corpus.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target, ".tmp-123") as fh:
        fh.write(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["corpus.parquet"]


def test_text_and_json_writers(tmp_path: Path):
    atomic_write_text(tmp_path / "README.md", "héllo\n")
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [2]})
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "m.json").read_text() == json.dumps({"a": [2], "b": 1}, indent=2) + "\n"


def test_replace_file_moves_a_finished_file(tmp_path: Path):
    (tmp_path / "src").write_text("w")
    replace_file(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_text() == "w" and not (tmp_path / "src").exists()


def test_publish_dir_first_writer_wins(tmp_path: Path):
    final = tmp_path / "index-abc"
    for content in ("first", "second"):
        tmp = tmp_path / f"index-abc.tmp-{content}"
        tmp.mkdir()
        (tmp / "meta.json").write_text(content)
        published = publish_dir(tmp, final)
        assert published == (content == "first") and not tmp.exists()
    assert (final / "meta.json").read_text() == "first"
