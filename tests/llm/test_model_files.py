"""Joining an embedded model from its parts: hashed while written, published only if it matches."""

import hashlib
from pathlib import Path

import pytest

from gecko_factory.llm import model_files
from gecko_factory.llm.model_files import EmbeddedModel, ModelFileError


def _parts(tmp_path: Path) -> list[Path]:
    parts = []
    for n, data in enumerate([b"GGUF" * 1000, b"tail"]):
        part = tmp_path / f"part{n:02d}.bin"
        part.write_bytes(data)
        parts.append(part)
    return parts


def test_join_publishes_a_matching_file_and_marks_it(tmp_path: Path):
    parts = _parts(tmp_path)
    want = hashlib.sha256(b"GGUF" * 1000 + b"tail").hexdigest()
    model = EmbeddedModel("m", want, "pkg-part", "0.1", 2)
    dest = tmp_path / "m.gguf"
    model_files._join(model, parts, dest)
    model_files._write_marker(dest, want)
    assert dest.read_bytes() == b"GGUF" * 1000 + b"tail" and model_files._marker_ok(dest, want)


def test_join_refuses_a_mismatch_and_leaves_nothing(tmp_path: Path):
    model = EmbeddedModel("m", "0" * 64, "pkg-part", "0.1", 2)
    dest = tmp_path / "out" / "m.gguf"
    dest.parent.mkdir()
    with pytest.raises(ModelFileError, match="expected 0000"):
        model_files._join(model, _parts(tmp_path), dest)
    assert list(dest.parent.iterdir()) == []
