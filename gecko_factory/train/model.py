"""The dual encoder: one transformer shared by queries and passages, mean pooled and L2-normalised,
and Gecko's contrastive loss beside it (tevatron's shape: the model owns encoding and loss).

`DualEncoder.encode` is the one definition of an embedding in this project: the factory's
retriever (embed.Encoder), the evaluation (evaluate.py) and training all call it, so the vectors
a model is trained on, mined with and scored by cannot drift apart. It lives with the trained
model rather than in embed.py because the saved folder declares the same pooling to
sentence-transformers (1_Pooling, 2_Normalize below): one place states both.

Gecko's input format lives here too, because the text a model was trained on is part of the model:
queries read `task: {task} | query: {query}`, documents `title: {title} | text: {text}`. The other
format training offers, the base model's own (TextFormat), is built from the same saved prompts
the evaluation reads (evaluate.prompt_formats), so training and use cannot disagree.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

from gecko_factory.evaluate import document_text, prompt_formats
from gecko_factory.files import replace_file
from gecko_factory.train.config import DEFAULT_TASK, PromptFormat

QUERY_FORMAT = "task: {task} | query: {query}"
DOCUMENT_FORMAT = "title: {title} | text: {text}"
# A document without a title gets the word "none", as in Gecko/EmbeddingGemma's prompts, so the
# training text and the `document` prompt saved with the model agree.
NO_TITLE = "none"


def format_query(task: str, query: str) -> str:
    return QUERY_FORMAT.format(task=task, query=query)


def format_document(title: str | None, text: str) -> str:
    return DOCUMENT_FORMAT.format(title=title or NO_TITLE, text=text)


def default_prompts(task: str = DEFAULT_TASK) -> dict[str, str]:
    """The prefixes sentence-transformers prepends with `encode(..., prompt_name=...)`."""
    return {"query": format_query(task, ""), "document": format_document(None, "")}


@dataclass(frozen=True)
class TextFormat:
    """How training writes a query and a document, and the prompts the model is saved with."""

    prompts: dict[str, str]
    gecko: bool  # Gecko's format: each example's own task in its query

    @cached_property
    def _formats(self) -> tuple[str, str]:  # read once, not for each of thousands of texts
        return prompt_formats(self.prompts)

    def query(self, task: str, query: str) -> str:
        return format_query(task, query) if self.gecko else self._formats[0] + query

    def document(self, title: str | None, text: str) -> str:
        if self.gecko:
            return format_document(title, text)
        return document_text(self._formats[1], title, text)


GECKO_FORMAT = TextFormat(default_prompts(), gecko=True)


def text_format(kind: PromptFormat, base_prompts: dict[str, str], task: str = DEFAULT_TASK
                ) -> TextFormat:
    """`gecko`: Gecko's format, `task` in the saved query prompt; `base`: the base's own."""
    if kind == "gecko":
        return TextFormat(default_prompts(task), gecko=True)
    if kind == "base":
        return TextFormat(dict(base_prompts), gecko=False)
    raise ValueError(f"unknown prompt format {kind!r}; expected gecko or base")


def default_dims(hidden_size: int) -> list[int]:
    """Matryoshka dims: 384/256/128/64 for MiniLM, 768/256 for 768-d models, else halvings."""
    if hidden_size == 384:
        return [384, 256, 128, 64]
    if hidden_size == 768:
        return [768, 256]
    dims = [hidden_size]
    while dims[-1] // 2 >= 8 and len(dims) < 4:
        dims.append(dims[-1] // 2)
    return dims


# What `DualEncoder.encode` computes from the backbone's output. It is part of every cached
# embedding's key (embedding_cache.py): change encode or mean_pool, change this.
ENCODING = "masked-mean-pool+l2-normalise-v1"


def saved_max_seq_len(path: str | Path, config=None) -> int:
    """The token limit a model folder was made for: sentence-transformers' `max_seq_length`
    (256 for all-MiniLM-L6-v2), else what its position embeddings allow, at most 512. Training and
    evaluation default to it, so a fine-tune is compared with its base at the same length (at 128
    tokens the base itself scores 0.6239 nDCG@10 on SciFact test against 0.6451 at its own 256)."""
    st_config = Path(path) / "sentence_bert_config.json"
    if st_config.exists():
        saved = json.loads(st_config.read_text()).get("max_seq_length")
        if saved:
            return int(saved)
    if config is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(path))
    return min(512, getattr(config, "max_position_embeddings", 512))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class DualEncoder(nn.Module):
    """Shared-weight encoder; `batch` is a tokenizer output (input_ids, attention_mask, ...)."""

    def __init__(self, backbone: nn.Module, tokenizer=None, max_seq_len: int = 256):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer  # not a module: kept so `save` writes a complete folder
        self.max_seq_len = max_seq_len

    @classmethod
    def from_pretrained(cls, path: str | Path, max_seq_len: int | None = None) -> "DualEncoder":
        """`max_seq_len` None: the folder's own (`saved_max_seq_len`)."""
        backbone = AutoModel.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        return cls(backbone, tokenizer, max_seq_len or saved_max_seq_len(path, backbone.config))

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, hidden] float32 unit vectors: the attention-masked mean of the last hidden states."""
        out = self.backbone(**batch)
        pooled = mean_pool(out.last_hidden_state, batch["attention_mask"])
        if pooled.dtype in (torch.float16, torch.bfloat16):
            pooled = pooled.float()  # under bf16 autocast the norm of 384 numbers loses digits
        return F.normalize(pooled, dim=-1)

    # Queries and passages share one tower (Gecko); the two names keep call sites honest and
    # leave room for an asymmetric subclass, as tevatron's do.
    def encode_query(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(batch)

    def encode_passage(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(batch)

    def save(self, path: str | Path, prompts: dict[str, str] | None = None) -> None:
        """Write a folder that `transformers.AutoModel` and `SentenceTransformer` both load, with
        `prompts` (None: Gecko's, default_prompts(); {}: none, as all-MiniLM-L6-v2 ships).

        Files are written to a temporary folder beside `path` and moved in one by one with
        a synced rename, so a crash never leaves a half-written weight file under its final name.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=path))
        try:
            self.backbone.save_pretrained(tmp)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            _write_sentence_transformers_files(
                tmp, self.hidden_size, self.max_seq_len,
                default_prompts() if prompts is None else prompts
            )
            for src in sorted(tmp.rglob("*")):
                if src.is_file():
                    dst = path / src.relative_to(tmp)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    replace_file(src, dst)
            (path / "2_Normalize").mkdir(exist_ok=True)  # an empty module folder
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ---- Gecko's contrastive loss, and its Matryoshka average over nested dimensions --------------
# For query i the softmax runs over
#   * every in-batch positive p_j (p_i is the target),
#   * every other query q_j, j != i (same-tower negatives: they stop queries from collapsing;
#     `same_tower=False` leaves them out, as most retrieval losses do),
#   * its own hard negative n_i (or, with `all_negatives`, every in-batch hard negative n_j),
# all scored by cosine similarity divided by the temperature. The losses take embeddings, not
# batches, so GradCache (train.py) can compute them on cached chunk embeddings.

def gecko_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor | None = None,
    temperature: float = 0.05,
    all_negatives: bool = False,
    same_tower: bool = True,
) -> torch.Tensor:
    """Mean over queries of -log softmax(target). q, p, n: [B, d], already L2-normalised."""
    batch = q.size(0)
    scores = [q @ p.T]
    if same_tower:
        # A query is not its own negative; -inf gives it zero weight in the softmax.
        eye = torch.eye(batch, dtype=torch.bool, device=q.device)
        scores.append((q @ q.T).masked_fill(eye, float("-inf")))
    if n is not None:
        scores.append(q @ n.T if all_negatives else (q * n).sum(-1, keepdim=True))
    logits = torch.cat(scores, dim=1) / temperature
    labels = torch.arange(batch, device=q.device)  # p_i sits in column i of the first block
    return F.cross_entropy(logits, labels)


def truncate(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The first `dim` coordinates, re-normalised (a Matryoshka sub-embedding)."""
    return F.normalize(x[..., :dim], dim=-1)


def matryoshka_gecko_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor | None,
    dims: Sequence[int],
    temperature: float = 0.05,
    all_negatives: bool = False,
    same_tower: bool = True,
) -> torch.Tensor:
    """Gecko's loss at each nested dim, averaged with equal weights."""
    losses = [
        gecko_loss(
            truncate(q, d), truncate(p, d), None if n is None else truncate(n, d),
            temperature, all_negatives, same_tower,
        )
        for d in dims
    ]
    return torch.stack(losses).mean()


# ---- Distillation from the judge: every judged candidate, not only p+ and p- -----------------
# For query i with candidates c_i1..c_iN (their texts embedded in the batch's passage forward):
#   student  s_ij = cos(q_i, c_ij) / T_student       (the same scores retrieval ranks by)
#   teacher  t_ij = judge logit_ij / T_teacher        (data.teacher_logits: its normalisation)
#   loss_i   = KL(softmax(t_i) || softmax(s_i)) = sum_j P_ij (log P_ij - log S_ij)
# averaged over the queries that have at least two candidates with a score and a text (with one,
# both softmaxes are 1 and there is nothing to learn). No Hinton T^2 factor: the student's
# temperature is retrieval's own 0.05, so T^2 would shrink the term 400-fold; the loss weight
# in train.py is the one knob for its share.

def distill_loss(
    q: torch.Tensor,
    docs: torch.Tensor,
    index: torch.Tensor,
    teacher: torch.Tensor,
    student_temperature: float = 0.05,
    teacher_temperature: float = 1.0,
) -> torch.Tensor:
    """q: [B, d]; docs: [M, d] passage embeddings; index: [B, N] rows of `docs` (-1 = padding);
    teacher: [B, N] judge logits (ignored where index is -1). Returns the mean KL over queries."""
    valid = index >= 0
    rows = valid.sum(1) >= 2
    if not bool(rows.any()):
        return (q * 0).sum()  # a batch with nothing to distil: zero, and still a graph
    q, index, teacher, valid = q[rows], index[rows], teacher[rows], valid[rows]
    cands = docs[index.clamp(min=0)]  # [B', N, d]
    student = torch.einsum("bd,bnd->bn", q, cands) / student_temperature
    # Padding gets -inf before the softmax (zero probability) and 0 after (no 0 * -inf = nan).
    log_s = F.log_softmax(student.masked_fill(~valid, float("-inf")), -1).masked_fill(~valid, 0)
    log_t = F.log_softmax((teacher.to(student.dtype) / teacher_temperature)
                          .masked_fill(~valid, float("-inf")), -1).masked_fill(~valid, 0)
    return (log_t.exp() * (log_t - log_s)).masked_fill(~valid, 0).sum(-1).mean()


def matryoshka_distill_loss(
    q: torch.Tensor,
    docs: torch.Tensor,
    index: torch.Tensor,
    teacher: torch.Tensor,
    dims: Sequence[int],
    student_temperature: float = 0.05,
    teacher_temperature: float = 1.0,
) -> torch.Tensor:
    """The distillation loss at each nested dim, averaged with equal weights."""
    losses = [distill_loss(truncate(q, d), truncate(docs, d), index, teacher,
                           student_temperature, teacher_temperature) for d in dims]
    return torch.stack(losses).mean()


def _write_sentence_transformers_files(
    folder: Path, hidden_size: int, max_seq_len: int, prompts: dict[str, str]
) -> None:
    """Transformer (at the root) -> mean Pooling -> Normalize, as all-MiniLM-L6-v2 ships."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    st_config = {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": max_seq_len, "do_lower_case": False},
        "1_Pooling/config.json": pooling,
        "config_sentence_transformers.json": st_config,
    }
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(content, indent=2) + "\n")
