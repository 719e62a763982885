"""Stored hashes must not move: these values were computed with the code before the hash
helpers were gathered into gecko_factory/hashing.py (issue 13). A run folder's plan, markers,
index folder names and the request cache are only valid while they hold."""

from pathlib import Path

from gecko_factory.corpus import Paragraph, content_id
from gecko_factory.hashing import RecordsHash, sha256_file, sha256_hex, stable_fraction, stable_int
from gecko_factory.judge import text_key
from gecko_factory.llm.cache import request_key
from gecko_factory.plan import corpus_hash
from gecko_factory.shards import hash_ids, shard_config_hash
from gecko_factory.synthesize import pick_task_type
from gecko_factory.templates import load_template
from gecko_factory.train.data import is_validation
from gecko_factory.versions import content_hash

PARAGRAPHS = [Paragraph(id="a1", title="Heraldry", text="Heraldry is a discipline relating to coats of arms."),
              Paragraph(id="b2", title="", text="Axles carry wheels.")]


def test_paragraph_hashes_are_pinned():
    assert content_id("Heraldry is a discipline.") == "809bf19c4a010818"
    assert content_hash(PARAGRAPHS[0]) == "0d63651943c97a52dbc0688d5e923353"
    assert corpus_hash(PARAGRAPHS) == "39032ff3e4d3e8c11fe0ca37878993b41fbdec828cfe48dba074267c6c4f247d"
    assert text_key("Heraldry", "Heraldry is a discipline, relating to ARMS!") == "0a10a8781f8dd81e"


def test_run_folder_hashes_are_pinned():
    assert hash_ids(["a1", "b2"]) == "2e0846cb773d2f690816d956102a28245b721e1076d31ee6a7d43db5185507ad"
    assert shard_config_hash("abc", "two_prompt") == \
        "a53db3f4d525ab467ff05ddaff402364824e6fb7ec68d2eb286ab1ab6976a56f"
    assert request_key("chat", {"messages": [{"role": "user", "content": "hé"}], "seed": 3}) == \
        "7f3ca563fb5d24e532aeadc82caa86ab1b91c5ec17aa915b7ecd716549f7913c"
    # The prompt versions are in every config hash: the template files and their hash must stay.
    assert load_template("judge_v1").version == "judge_v1@8f729ba6"
    assert load_template("synthesize_v1").version == "synthesize_v1@c57b91f5"


def test_seeded_integers_are_pinned():
    assert stable_int("synth", 7, "a1", 0) == 17729458075612488448  # the synthesis sampling seed
    assert stable_int("task-type", 7, "a1") == 9705679523564449766
    assert stable_int("seed-1:neg") == 4465396609138701332  # fusion's random negative
    assert [is_validation(s, 0.5) for s in "abcdef"] == [False, True, True, True, True, True]
    assert stable_fraction("a") == stable_int("a") / 2**64
    tasks = ("t0", "t1", "t2")
    assert pick_task_type("a1", 7, tasks) == tasks[9705679523564449766 % 3]


def test_file_hash_is_pinned(tmp_path: Path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"gecko" * 1000)
    assert sha256_file(f) == "e6f05031e0b121a9c94b75b865e4527e7fbbae79403fe61a6a0336ffec0aad8f"


def test_parts_are_separated():
    assert sha256_hex("ab", "c") != sha256_hex("a", "bc")
    assert sha256_hex("x", length=8) == sha256_hex("x")[:8]
    h = RecordsHash()
    h.update("a1", "t", "x")
    assert h.hexdigest() == sha256_hex("a1\x1ft\x1fx\x1e")


def test_example_id_is_pinned():
    from gecko_factory.shard_pipeline import example_id

    # sha256("s1\x1ft\x1fq")[:20], as rows written before the hashing module carry it
    assert example_id("s1", "t", "q") == "61911337554f4705dc29"


def test_buffers_hash_is_pinned():
    """Names the cached corpus embeddings (embedding_cache.py): a change only misses, never mixes,
    but it would throw every cached corpus away."""
    import numpy as np

    from gecko_factory.hashing import sha256_buffers

    named = [("w|float32|(2,)", np.array([1.0, -2.0], dtype=np.float32)), ("b", b"xy")]
    assert sha256_buffers(named) == "64cd747c888583defa1e24b3dc93542e879e51793e8fef280a37d876ecb9ed1c"
    assert sha256_buffers(named[::-1]) != sha256_buffers(named)
