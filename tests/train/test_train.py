"""The training loop on a tiny random BERT and a tiny FRet run folder."""

from __future__ import annotations

import json
import logging
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from gecko_factory.train.data import load_triples
from gecko_factory.train.model import DualEncoder
from gecko_factory.train.select import DevScore
from gecko_factory.train.train import TrainConfig, grad_cache_step, plain_step, train

pytestmark = pytest.mark.model  # trains a tiny BERT (and loads sentence-transformers)

@pytest.fixture(scope="module")
def run_dir(tiny_fret_run):
    return tiny_fret_run


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


@pytest.mark.parametrize("objective", [{}, {"distill_weight": 0.5, "teacher_score": "rc"}],
                         ids=["contrastive", "contrastive+distill"])
def test_grad_cache_equals_plain_gradients(tiny_model, run_dir, objective):
    cfg = _config(tiny_model, "unused", grad_cache_chunk=3, **objective)
    teacher = cfg.teacher_score if cfg.distill_weight else None
    batch = load_triples([run_dir], "train", val_fraction=0.2, teacher=teacher).take(range(8))
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


def _beir_dev(folder, run_dir) -> str:
    """Three labelled queries over the run's topics, as a BEIR folder with a train split."""
    import pyarrow.parquet as pq

    texts = pq.read_table(run_dir / "corpus.parquet", columns=["text"]).column("text").to_pylist()
    topics = [x.removeprefix("A paragraph about ").split(",")[0] for x in texts]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(
        {"_id": f"d{i}", "title": t.title(), "text": f"A paragraph about {t}."}) + "\n"
        for i, t in enumerate(topics)))
    (folder / "queries.jsonl").write_text("".join(json.dumps(
        {"_id": f"q{i}", "text": f"what about {topics[i]}?"}) + "\n" for i in range(3)))
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)))
    return str(folder)


def test_saved_folder_loads_in_sentence_transformers(tiny_model, run_dir, tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    out = tmp_path / "model"
    result = train(_config(tiny_model, out, max_steps=2, eval_every=None, select="last",
                           dev=_beir_dev(tmp_path / "dev", run_dir)), [run_dir])
    assert [s for s, _ in result.dev_ndcg] == [0, 2]  # the base, then the last step
    assert "Dev nDCG@10" in (out / "README.md").read_text()
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


def test_distillation_trains_and_is_recorded(tiny_model, run_dir, tmp_path):
    result = train(_config(tiny_model, tmp_path / "m", max_steps=4, distill_weight=1.0,
                           contrastive_weight=0.5, teacher_score="rc", teacher_temperature=0.5,
                           same_tower_negatives=False), [run_dir])
    assert len(result.train_loss) == 4 and all(v == v for _, v in result.train_loss)  # no nan
    assert result.teacher_counts == {"candidates": 144, "used": 144}  # 48 queries x 3
    card = (tmp_path / "m" / "README.md").read_text()
    assert "KL(judge ‖ student)" in card and "144 of 144 used" in card
    with pytest.raises(ValueError, match="nothing to train"):
        _config(tiny_model, tmp_path, contrastive_weight=0.0)


def test_copied_queries_left_out_are_in_the_result_and_the_card(tiny_model, run_dir, tmp_path):
    # "what is known about deep sea fish (k)?": 4 of its 8 words are one run of its paragraph;
    # the other topics' queries copy 3 of 7 (0.43)
    result = train(_config(tiny_model, tmp_path / "m", max_steps=2, max_query_copy=0.45),
                   [run_dir])
    assert result.examples_left_out == {"copied_query": 4} and result.n_train + result.n_val == 44
    assert "Examples left out: 4 whose query copies at least 45% of its words" in (
        tmp_path / "m" / "README.md").read_text()


FAKE_DEV = SimpleNamespace(name="fake-dev", queries={"q": "?"})  # dev_ndcg is replaced too


def _weights(path) -> dict:
    return DualEncoder.from_pretrained(path).state_dict()


def test_nothing_beats_the_base_so_the_base_is_exported(tiny_model, run_dir, tmp_path,
                                                         monkeypatch, caplog):
    import gecko_factory.train.train as train_module

    scores = iter([0.5, 0.4, 0.45, 0.3, 0.2])  # the base (step 0), then steps 2, 4, 6, 8
    prompts_seen = []

    def fake_dev_ndcg(model, dev_set, prompts, device):
        prompts_seen.append(prompts)
        value = next(scores)
        return DevScore(value, [value])

    monkeypatch.setattr(train_module, "load_dev", lambda spec, split: FAKE_DEV)
    monkeypatch.setattr(train_module, "dev_ndcg", fake_dev_ndcg)
    out = tmp_path / "m"
    with caplog.at_level(logging.WARNING):
        result = train(_config(tiny_model, out, eval_every=2, dev="fake-dev"), [run_dir])
    sel = result.selection
    assert (sel.metric, sel.selected_step, sel.beat_base) == ("dev", 0, False)
    assert (sel.dev_base, sel.dev_selected) == (0.5, 0.5)
    assert [s for s, _ in result.dev_ndcg] == [0, 2, 4, 6, 8]
    assert "NOT BETTER THAN THE BASE" in caplog.text
    assert "NOT BETTER THAN THE BASE" in (out / "README.md").read_text()
    assert json.loads((out / "train_result.json").read_text())["selection"]["beat_base"] is False
    base, saved = _weights(tiny_model), _weights(out)
    assert all(torch.equal(base[k], saved[k]) for k in base)
    # The base competes, and is exported, as it is used: with its own prompts (none here), not
    # the task prompts the trained steps are scored and saved with.
    assert prompts_seen[0] == {} and all(p["query"].startswith("task: ") for p in prompts_seen[1:])
    assert json.loads((out / "config_sentence_transformers.json").read_text())["prompts"] == {}
    last = torch.load(out / "checkpoint.pt", weights_only=False)["model"]  # the last state lives on
    assert any(not torch.equal(last[k].cpu(), base[k]) for k in base)


def test_the_base_format_trains_and_saves_in_the_bases_own_prompts(tiny_model, run_dir, tmp_path,
                                                                   monkeypatch):
    import gecko_factory.train.train as train_module

    prompts_seen = []

    def fake_dev_ndcg(model, dev_set, prompts, device):
        prompts_seen.append(prompts)
        return DevScore(0.5 + 0.1 * len(prompts_seen), [0.5 + 0.1 * len(prompts_seen)])

    monkeypatch.setattr(train_module, "load_dev", lambda spec, split: FAKE_DEV)
    monkeypatch.setattr(train_module, "dev_ndcg", fake_dev_ndcg)
    out = tmp_path / "m"
    result = train(_config(tiny_model, out, max_steps=4, distill_weight=1.0, dev="fake-dev",
                           prompt_format="base"), [run_dir])
    assert result.selection.selected_step == 4 and prompts_seen == [{}, {}]
    assert json.loads((out / "config_sentence_transformers.json").read_text())["prompts"] == {}
    assert "the base model's own, none" in (out / "README.md").read_text()


def _noisy_dev(gains: list[float]):
    """Dev scores on 100 queries: the base 0.5 on each, then each evaluated step up by its gain
    on average, every query swinging 0.3 either way (a gain of 0.02 is 0.66 paired SE)."""
    scores = iter([0.0] + gains)

    def score(model, *args) -> DevScore:
        gain = next(scores)
        per_query = [0.5 + gain + (0.3 if i % 2 else -0.3) * (gain != 0) for i in range(100)]
        return DevScore(sum(per_query) / 100, per_query)
    return score


@pytest.mark.parametrize("margin, exported", [(1.0, 0), (0.0, 4)])
def test_a_noise_sized_dev_win_exports_the_base_unless_the_margin_is_zero(
        tiny_model, run_dir, tmp_path, monkeypatch, caplog, margin, exported):
    import gecko_factory.train.train as train_module

    monkeypatch.setattr(train_module, "load_dev", lambda spec, split: FAKE_DEV)
    monkeypatch.setattr(train_module, "dev_ndcg", _noisy_dev([0.01, 0.02, 0.015, 0.005]))
    out = tmp_path / "m"
    with caplog.at_level(logging.INFO, logger="gecko_factory.train"):
        result = train(_config(tiny_model, out, eval_every=2, dev="fake-dev",
                               select_margin=margin), [run_dir])
    sel = result.selection
    assert sel.selected_step == exported and sel.beat_base == (exported > 0)
    assert "paired SE 0.0302 over 100 queries" in caplog.text  # step 2 against the base
    card = (out / "README.md").read_text()
    if margin:
        assert "stays the best" in caplog.text and "NOT BETTER THAN THE BASE" in card
        assert "by more than 1 paired SE" in card
        assert "The best trained step on dev, 4, read 0.5200 (+0.0200, paired SE 0.0302)" in card
        assert "Prompts: the base model's own, none" in card and "saved with the base's" in card
        assert all(torch.equal(a, b) for a, b in zip(_weights(tiny_model).values(),
                                                     _weights(out).values()))
    else:
        assert f"(+0.0200, paired SE {sel.dev_gain_se:.4f} over 100 queries)" in card


def test_evals_per_epoch_sets_the_cadence_whatever_the_data_size(tiny_model, run_dir, tmp_path,
                                                                 monkeypatch):
    import gecko_factory.train.train as train_module

    monkeypatch.setattr(train_module, "load_dev", lambda spec, split: FAKE_DEV)
    monkeypatch.setattr(train_module, "dev_ndcg", lambda *args: DevScore(0.5, [0.5]))
    # 48 rows, a fifth of the seeds held out: 4 batches of 8 an epoch; 2 epochs
    result = train(_config(tiny_model, tmp_path / "m", max_steps=None, epochs=2, eval_every=3,
                           evals_per_epoch=2, dev="fake-dev"), [run_dir])
    assert result.steps == 8
    assert [s for s, _ in result.dev_ndcg] == [0, 2, 4, 6, 8]  # every 2 steps, not every 3


def _fake_dev(base: str):
    """A dev score that is a function of the weights (their distance from the base's), so a
    resumed run sees exactly what an unbroken one saw."""
    start = _weights(base)["backbone.embeddings.word_embeddings.weight"][:50]

    def score(model, *args) -> DevScore:
        w = model.backbone.embeddings.word_embeddings.weight[:50].detach().cpu()
        value = float((w - start).norm())
        return DevScore(value, [value])
    return score


def test_best_step_is_exported_and_survives_a_crash_between_its_two_files(
        tiny_model, run_dir, tmp_path, monkeypatch):
    import gecko_factory.train.select as select_module
    import gecko_factory.train.train as train_module

    monkeypatch.setattr(train_module, "load_dev", lambda spec, split: FAKE_DEV)
    monkeypatch.setattr(train_module, "dev_ndcg", _fake_dev(tiny_model))
    cfg = dict(eval_every=2, dev="fake-dev", checkpoint_every=None)
    full = train(_config(tiny_model, tmp_path / "full", **cfg), [run_dir])
    best = full.selection.selected_step
    assert full.selection.dev_selected == max(v for _, v in full.dev_ndcg)
    assert best > 0 and full.selection.beat_base
    assert torch.load(tmp_path / "full" / "best.pt")["step"] == best

    real = select_module.Selector.save_best

    def crash_once(self, model, step):  # the checkpoint naming this best is written; best.pt not
        if step > 0 and not (tmp_path / "crashed").exists():
            (tmp_path / "crashed").touch()
            raise _Crash
        real(self, model, step)

    monkeypatch.setattr(select_module.Selector, "save_best", crash_once)
    with pytest.raises(_Crash):
        train(_config(tiny_model, tmp_path / "broken", **cfg), [run_dir])
    resumed = train(_config(tiny_model, tmp_path / "broken", **cfg), [run_dir], resume=True)
    assert resumed.selection.selected_step == best
    assert [s for s, _ in resumed.dev_ndcg] == [s for s, _ in full.dev_ndcg]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "broken")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)
