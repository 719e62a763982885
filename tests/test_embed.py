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


@pytest.fixture(scope="module")
def int8_encoder():
    from gecko_factory.embed import Encoder

    return Encoder.load(precision="int8")


@pytest.fixture(scope="module")
def both_precisions(encoder, int8_encoder, wiki_sample):
    """fp32 and int8 vectors of 80 sample paragraphs and of the first 40 titles (as queries)."""
    texts = [f"{p['title']}. {p['text']}" for p in wiki_sample[:80]]
    titles = [p["title"] for p in wiki_sample[:40]]
    return {enc.precision: (enc.encode(texts), enc.encode(titles)) for enc in (encoder, int8_encoder)}


def test_int8_encoder_is_close_to_fp32_and_has_its_own_fingerprint(encoder, int8_encoder,
                                                                   both_precisions):
    fp32, int8 = both_precisions["fp32"][0], both_precisions["int8"][0]
    assert int8.shape == fp32.shape == (80, encoder.dim) and int8.dtype == np.float32
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    # int8 moves every vector a little (all 168 sample texts: cosine 0.973 min, 0.985 mean)
    assert np.min(np.sum(int8 * fp32, axis=1)) > 0.95
    assert int8_encoder.fingerprint != encoder.fingerprint and int8_encoder.precision == "int8"


def test_int8_encoder_keeps_the_nearest_neighbours(both_precisions):
    """Titles as queries over the paragraphs: the top hit is the same, and most of the top 10
    (168 paragraphs, 168 titles: top-1 168 of 168, overlap@10 0.84)."""
    def top(docs, queries, k=10):
        return np.argsort(-(queries @ docs.T), axis=1)[:, :k]

    a, b = top(*both_precisions["fp32"]), top(*both_precisions["int8"])
    assert (a[:, 0] == b[:, 0]).mean() >= 0.95
    assert np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)]) >= 0.7


def test_bf16_encoder_is_fp32_weights_under_autocast_close_to_fp32_with_its_own_fingerprint(
        encoder, wiki_sample):
    """bf16 matmuls (autocast) on the same weights: fp32 vectors out, a little moved (80 sample
    paragraphs: cosine to fp32 0.998 min), the same top hit for every title, and a fingerprint of
    its own so that an fp32 index is never reused for its queries."""
    from gecko_factory.embed import Encoder

    bf16 = Encoder.load("all-MiniLM-L6-v2:bf16")
    assert bf16.precision == "bf16" and bf16.fingerprint not in (encoder.fingerprint,
                                                                 Encoder.load(precision="int8").fingerprint)
    assert bf16.model is not encoder.model  # its own copy: the fp32 encoder is left as it is
    texts = [f"{p['title']}. {p['text']}" for p in wiki_sample[:80]]
    titles = [p["title"] for p in wiki_sample[:80]]
    a, b = encoder.encode(texts), bf16.encode(texts)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(a * b, axis=1)) > 0.99 and not np.array_equal(a, b)
    qa, qb = encoder.encode(titles), bf16.encode(titles)
    assert ((qa @ a.T).argmax(1) == (qb @ b.T).argmax(1)).mean() >= 0.95
    assert np.array_equal(encoder.encode(texts), a)  # fp32 is untouched by bf16's autocast


def test_the_run_setting_and_the_argument_load_the_same_int8_encoder(encoder, int8_encoder):
    from gecko_factory.embed import Encoder

    assert Encoder.load("all-MiniLM-L6-v2:int8") is int8_encoder  # the form a run's config takes
    assert Encoder.load("all-MiniLM-L6-v2:fp32") is encoder
    with pytest.raises(ValueError, match="precision"):
        Encoder.load(precision="fp8")
    with pytest.raises(ValueError, match="precision"):
        Encoder.load("all-MiniLM-L6-v2:int8", precision="fp32")
