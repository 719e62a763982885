"""The encoder: bucketed batches give the same vectors as one text at a time, in input order."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.model  # loads all-MiniLM-L6-v2 (and sentence-transformers)


@pytest.fixture(scope="module")
def encoder():
    from gecko_factory.embed import Encoder

    return Encoder.load()


def test_bucketed_batches_match_single_texts_in_input_order(encoder, wiki_sample):
    texts = [f"{p['title']}. {p['text']}" for p in wiki_sample[:40]] + ["", "x"]
    batched = encoder.encode(texts, batch_size=8)
    single = np.stack([encoder.encode([t])[0] for t in texts])
    assert batched.shape == (len(texts), encoder.dim)
    # padding must not change a vector (mask-weighted mean); float noise only
    assert np.abs(batched - single).max() < 1e-4
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_batches_pad_less_than_input_order(encoder, wiki_sample):
    texts = [p["text"] for p in wiki_sample]
    seen, padded, real = [], 0, 0
    for idx, feats in encoder.batches(texts, batch_size=8):
        seen.extend(idx.tolist())
        padded += feats["attention_mask"].numel()
        real += int(feats["attention_mask"].sum())
    assert sorted(seen) == list(range(len(texts)))  # every text once
    plain = sum(encoder.tokenizer(texts[s : s + 8], padding=True, truncation=True, max_length=256,
                                  return_tensors="pt")["attention_mask"].numel()
                for s in range(0, len(texts), 8))
    assert padded < plain
    assert 1 - real / padded < 0.15


def test_same_vectors_as_sentence_transformers(encoder, wiki_sample):
    st = pytest.importorskip("sentence_transformers")
    from gecko_factory.embed import DEFAULT_ENCODER, resolve_encoder_path

    texts = [p["text"] for p in wiki_sample[:16]]
    model = st.SentenceTransformer(str(resolve_encoder_path(DEFAULT_ENCODER)), device="cpu")
    theirs = model.encode(texts, normalize_embeddings=True)
    ours = encoder.encode(texts)
    assert np.min(np.sum(ours * theirs, axis=1)) > 0.9999


def test_empty_input(encoder):
    assert encoder.encode([]).shape == (0, encoder.dim)
