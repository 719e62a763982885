import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gecko_factory.corpus import CorpusError, CorpusSpec, content_id, load_corpus

LONG = "Paragraph text that is long enough to pass the minimum length filter, number {}."


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_jsonl_ids_titles_and_counted_skips(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [
        {"id": "x1", "title": "T", "text": LONG.format(1)},
        {"text": "  " + LONG.format(2).replace(" ", "   \n ") + "  "},
        {"text": LONG.format(1)},  # same text as x1
        {"text": "short"},
        {"text": ""},
        '{"text": "broken json',
        {"text": 42},
        {"id": "x1", "text": LONG.format(3)},  # id reused
    ])
    result = load_corpus(CorpusSpec(path=path))
    assert [p.id for p in result.paragraphs] == ["x1", content_id(LONG.format(2))]
    assert result.paragraphs[1].text == LONG.format(2)  # whitespace normalised
    assert result.paragraphs[0].title == "T"
    assert dict(result.skipped) == {"duplicate_text": 1, "too_short": 1, "empty": 1,
                                    "malformed_record": 2, "duplicate_id": 1}
    assert any(e.startswith(f"{path}:6:") for e in result.errors)  # the broken line, by number
    assert any(f"{path}:7:" in e and "'text' must be a string" in e for e in result.errors)


def test_plain_text_and_parquet(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text(f"{LONG.format(1)}\n\n\n{LONG.format(2)}\nsame paragraph\n\n")
    assert len(load_corpus(CorpusSpec(path=str(txt))).paragraphs) == 2
    pq.write_table(pa.table({"id": ["a", "b"], "text": [LONG.format(1), None]}), tmp_path / "b.parquet")
    result = load_corpus(CorpusSpec(path=str(tmp_path / "b.parquet")))
    assert [p.id for p in result.paragraphs] == ["a"] and result.skipped["empty"] == 1


def test_bundled_sample_has_all_paragraphs():
    result = load_corpus(CorpusSpec())
    assert len(result.paragraphs) == 10_033 and not result.skipped


def test_unusable_corpora_raise_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(CorpusSpec(path=str(tmp_path / "missing.jsonl")))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(CorpusError, match="no usable paragraph"):
        load_corpus(CorpusSpec(path=str(tmp_path / "empty.jsonl")))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 20)
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_corpus(CorpusSpec(path=str(tmp_path / "latin1.txt")))


def test_ids_are_stable_across_reads(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"text": LONG.format(i)} for i in range(5)])
    first = [p.id for p in load_corpus(CorpusSpec(path=path)).paragraphs]
    assert first == [p.id for p in load_corpus(CorpusSpec(path=path)).paragraphs]


def test_hostile_inputs_are_counted_with_file_and_line(tmp_path):
    path = tmp_path / "hostile.jsonl"
    with path.open("wb") as fh:
        fh.write((json.dumps({"text": LONG.format(1)}) + "\n").encode())
        fh.write(b'{"text": "caf\xe9 is not utf-8 here, and this line is long enough"}\n')
        fh.write((json.dumps({"text": "x" * 10_000_000}) + "\n").encode())  # a 10 MB paragraph
        fh.write((json.dumps({"text": ["a", "list"]}) + "\n").encode())
        fh.write((json.dumps({"text": LONG.format(2)}) + "\n").encode())
    result = load_corpus(CorpusSpec(path=str(path)))
    assert len(result.paragraphs) == 2
    assert dict(result.skipped) == {"malformed_record": 2, "too_long": 1}
    assert any(e.startswith(f"{path}:2:") and "utf-8" in e for e in result.errors)
    assert any(e.startswith(f"{path}:3:") and "10,000,000 chars" in e for e in result.errors)
    assert any(e.startswith(f"{path}:4:") and "'text' must be a string" in e for e in result.errors)


def test_scifact_abstracts_only(tmp_path):
    from pathlib import Path

    zip_path = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact.zip"
    if not zip_path.exists():
        pytest.skip(f"{zip_path} is not here")
    result = load_corpus(CorpusSpec(path=f"scifact:{zip_path}", max_chars=100_000))
    assert len(result.paragraphs) + sum(result.skipped.values()) == 5_183
    assert len(result.paragraphs) >= 5_100  # a few abstracts are empty or duplicated
    first = result.paragraphs[0]
    assert first.id.isdigit() and first.title and ". " in first.text  # sentences not glued
    with pytest.raises(CorpusError, match="SciFact zip not found"):
        load_corpus(CorpusSpec(path=f"scifact:{tmp_path / 'none.zip'}"))
