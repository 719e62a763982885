"""The model module: Gecko's loss and the judge's distillation against numbers worked out by hand,
and the one embedding (mean pool + normalise) that embed, evaluate and training share."""

import math

import pytest
import torch

from gecko_factory.train.model import (distill_loss, gecko_loss, matryoshka_distill_loss,
                                       matryoshka_gecko_loss, truncate)


def _unit(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_two_by_two_by_hand():
    # Queries and passages on the unit circle, so every score is a cosine we can write down.
    q = torch.stack([_unit(1.0, 0.0), _unit(0.0, 1.0)])
    p = torch.stack([_unit(0.6, 0.8), _unit(0.8, 0.6)])
    n = torch.stack([_unit(-1.0, 0.0), _unit(0.6, -0.8)])
    t = 0.5
    # query 0: positives 0.6 (target), 0.8; other query 0.0; own negative -1.0
    l0 = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.8 / t)
                                       + math.exp(0.0 / t) + math.exp(-1.0 / t)))
    # query 1: positives 0.8, 0.6 (target); other query 0.0; own negative -0.8
    l1 = -math.log(math.exp(0.6 / t) / (math.exp(0.8 / t) + math.exp(0.6 / t)
                                       + math.exp(0.0 / t) + math.exp(-0.8 / t)))
    got = gecko_loss(q, p, n, temperature=t).item()
    assert math.isclose(got, (l0 + l1) / 2, rel_tol=1e-9)


def test_all_negatives_adds_the_other_hard_negative():
    q = torch.stack([_unit(1.0, 0.0), _unit(0.0, 1.0)])
    p = torch.stack([_unit(0.6, 0.8), _unit(0.8, 0.6)])
    n = torch.stack([_unit(-1.0, 0.0), _unit(0.6, -0.8)])
    t = 0.5
    # query 0 now also sees n_1 (score 0.6); query 1 also sees n_0 (score 0.0)
    l0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6) + 1 + math.exp(-2) + math.exp(1.2)))
    l1 = -math.log(math.exp(1.2) / (math.exp(1.6) + math.exp(1.2) + 1 + math.exp(-1.6) + 1))
    got = gecko_loss(q, p, n, temperature=t, all_negatives=True).item()
    assert math.isclose(got, (l0 + l1) / 2, rel_tol=1e-9)


def test_same_tower_negatives_can_be_left_out():
    q = torch.stack([_unit(1.0, 0.0), _unit(0.0, 1.0)])
    p = torch.stack([_unit(0.6, 0.8), _unit(0.8, 0.6)])
    n = torch.stack([_unit(-1.0, 0.0), _unit(0.6, -0.8)])
    t = 0.5
    # the hand case above without the other query's exp(0.0 / t) = 1 in each denominator
    l0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6) + math.exp(-2.0)))
    l1 = -math.log(math.exp(1.2) / (math.exp(1.6) + math.exp(1.2) + math.exp(-1.6)))
    got = gecko_loss(q, p, n, temperature=t, same_tower=False).item()
    assert math.isclose(got, (l0 + l1) / 2, rel_tol=1e-9)
    assert gecko_loss(q, p, n, temperature=t, same_tower=True).item() > got  # more negatives


def _kl(p: list[float], s: list[float]) -> float:
    """KL(P || S) of two lists of logits, with the softmaxes written out."""
    zp, zs = sum(math.exp(x) for x in p), sum(math.exp(x) for x in s)
    return sum(math.exp(a) / zp * ((a - math.log(zp)) - (b - math.log(zs))) for a, b in zip(p, s))


def test_distillation_by_hand():
    # One query, three candidates at cosines 1, 0.6 and 0 (rows 2, 0, 1 of `docs`).
    q = torch.stack([_unit(1.0, 0.0)])
    docs = torch.stack([_unit(0.6, 0.8), _unit(0.0, 1.0), _unit(1.0, 0.0)])
    index = torch.tensor([[2, 0, 1]])
    teacher = torch.tensor([[-0.5, -1.0, -3.0]], dtype=torch.float64)
    # student logits cos / 0.5 = 2, 1.2, 0; teacher logits / 2 = -0.25, -0.5, -1.5
    want = _kl([-0.25, -0.5, -1.5], [2.0, 1.2, 0.0])
    got = distill_loss(q, docs, index, teacher, student_temperature=0.5, teacher_temperature=2.0)
    assert math.isclose(got.item(), want, rel_tol=1e-9)
    # a student that ranks as the teacher does, at the teacher's sharpness, has nothing to learn
    same = distill_loss(q, docs, index, torch.tensor([[2.0, 1.2, 0.0]], dtype=torch.float64),
                        student_temperature=0.5, teacher_temperature=1.0)
    assert abs(same.item()) < 1e-12


def test_distillation_ignores_padding_and_queries_without_a_target():
    q = torch.stack([_unit(1.0, 0.0), _unit(0.0, 1.0), _unit(0.6, 0.8)])
    docs = torch.stack([_unit(0.6, 0.8), _unit(0.0, 1.0), _unit(1.0, 0.0)])
    # query 0: two candidates and a padding slot; query 1: the same two and a third;
    # query 2: one candidate only (both softmaxes are 1: left out of the mean)
    index = torch.tensor([[2, 0, -1], [2, 0, 1], [1, -1, -1]])
    teacher = torch.tensor([[0.0, -1.0, 99.0], [0.0, -1.0, -2.0], [5.0, 0.0, 0.0]],
                           dtype=torch.float64)
    l0 = _kl([0.0, -1.0], [1.0, 0.6])  # q0 . (c2, c0) = 1, 0.6 at T = 1
    l1 = _kl([0.0, -1.0, -2.0], [0.0, 0.8, 1.0])  # q1 . (c2, c0, c1) = 0, 0.8, 1
    got = distill_loss(q, docs, index, teacher, student_temperature=1.0, teacher_temperature=1.0)
    assert math.isclose(got.item(), (l0 + l1) / 2, rel_tol=1e-9)
    empty = distill_loss(q, docs, torch.tensor([[0, -1]] * 3), teacher[:, :2])
    assert empty.item() == 0.0
    q.requires_grad_()
    distill_loss(q, docs, index, teacher).backward()
    assert torch.isfinite(q.grad).all() and q.grad[2].abs().sum() == 0  # padding gives no nan


def test_matryoshka_distillation_averages_the_dims():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 8, dtype=torch.float64), dim=-1)
    docs = torch.nn.functional.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1)
    index = torch.tensor([[0, 1, 2], [3, 4, -1], [4, 0, 1]])
    teacher = torch.randn(3, 3, dtype=torch.float64)
    want = (distill_loss(q, docs, index, teacher)
            + distill_loss(truncate(q, 4), truncate(docs, 4), index, teacher)) / 2
    assert torch.allclose(matryoshka_distill_loss(q, docs, index, teacher, [8, 4]), want)


def test_matryoshka_averages_truncated_renormalised_losses():
    torch.manual_seed(0)
    q, p, n = (torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
               for _ in range(3))
    want = (gecko_loss(q, p, n) + gecko_loss(truncate(q, 2), truncate(p, 2), truncate(n, 2))) / 2
    assert torch.allclose(matryoshka_gecko_loss(q, p, n, [8, 2]), want)
    assert torch.allclose(truncate(q, 2).norm(dim=-1), torch.ones(4, dtype=torch.float64))


def test_lr_schedule_reaches_its_peak_on_a_short_run():
    from gecko_factory.train.train import TrainConfig, get_lr

    cfg = TrainConfig(out_dir="unused", lr=1e-4, warmup_steps=100)
    lrs = [get_lr(s, cfg, total_steps=20) for s in range(20)]
    assert max(lrs) == 1e-4 and lrs.index(max(lrs)) == 4  # warm-up capped at 20 // 4 steps
    assert lrs[0] == 1e-4 / 5 and lrs[-1] > 0 and lrs == sorted(lrs[:5]) + lrs[5:]
    long = [get_lr(s, cfg, total_steps=1000) for s in (0, 99, 101, 999)]
    assert long[:2] == [1e-6, 1e-4] and long[2] < 1e-4 and long[3] > 0  # 100 steps of 1000 kept


TEXTS = ["what is known about glacier melt?",
         "A paragraph about bee colonies and their queens, which is longer.", "x", ""]


def _reference(backbone, batch) -> torch.Tensor:
    """The pooling embed.py and evaluate.py each wrote out before issue 13."""
    hidden = backbone(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


@pytest.mark.model
def test_embed_evaluate_and_training_share_one_embedding():
    import numpy as np

    from gecko_factory.embed import Encoder
    from gecko_factory.evaluate import encode_texts

    enc = Encoder.load()
    factory = enc.encode(TEXTS, batch_size=2)
    evaluation = encode_texts(enc.dual, TEXTS, batch_size=2)
    with torch.inference_mode():
        batch = enc.tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
        trained = enc.dual.encode_query(batch).numpy()
        reference = _reference(enc.model, batch).numpy()
    # Padding differs between the three batchings, so agreement is to float noise; each path was
    # bit-identical to its own pre-issue-13 code when this test was written.
    for got in (factory, evaluation, trained):
        np.testing.assert_allclose(got, reference, atol=1e-6)
    # all-MiniLM-L6-v2's first coordinates of the first text, computed with the old embed.py
    np.testing.assert_allclose(factory[0, :3], [-0.12074787, 0.02010982, 0.08271138], atol=1e-6)


def test_the_token_limit_defaults_to_the_base_folders_own(tiny_model, tmp_path):
    """A fine-tune is compared with its base at the base's length (the first SciFact run trained
    and evaluated its exports at 128 tokens against the base at 256: 0.6239 vs 0.6451 for the base
    itself, the whole of the 'loss' it reported)."""
    import json
    import shutil

    from gecko_factory.train.model import DualEncoder, saved_max_seq_len

    assert saved_max_seq_len(tiny_model) == 128  # its sentence_bert_config.json
    assert DualEncoder.from_pretrained(tiny_model).max_seq_len == 128
    assert DualEncoder.from_pretrained(tiny_model, 32).max_seq_len == 32
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "sentence_bert_config.json").unlink()
    config = json.loads((bare / "config.json").read_text())
    assert saved_max_seq_len(bare) == config["max_position_embeddings"] == 128
    (bare / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    assert saved_max_seq_len(bare) == 512
