"""Corpus embeddings kept on disk, keyed by everything that decides them.

Why: the SciFact experiment (issue 14) encodes the same 5,183 abstracts with the same weights
again and again: the base at step 0 of every recipe and training seed, and every export once more
for the test report, after its dev evaluation already encoded the corpus with those very weights
(dev and test share SciFact's corpus). One such pass is minutes on 2 CPU cores, about a quarter
of what each recipe costs.

The key is content, never a name or a path: a digest of the weights tensor by tensor, the
tokenizer's full serialisation, the encoding rule (model.ENCODING), the texts, the sequence length,
the batch size (padding changes the last digits), the device (the CPU's vector ISA, the GPU's
name) and the torch and transformers versions. The same key therefore means the same forward pass with the same inputs, and on one
machine the same numbers, bit for bit (tests/test_embedding_cache.py checks a hit against a fresh
encoding) — unlike sentence-transformers' embedding cache, whose key left out the prompt.

Files are `.npy`, written atomically; the folder is bounded (least recently used go first).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from gecko_factory.files import atomic_file
from gecko_factory.hashing import RecordsHash, sha256_buffers, sha256_hex
from gecko_factory.paths import gecko_home

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 << 30  # ~250 SciFact-sized corpora at 384 d


def encoder_digest(encoder) -> str:
    """sha256 of a DualEncoder's weights (every state_dict tensor: name, dtype, shape, bytes),
    its tokenizer's serialisation and the encoding rule. ~0.2 s for MiniLM's 90 MB."""
    import torch
    import transformers

    from gecko_factory.train.model import ENCODING

    def tensors():
        for name, t in sorted(encoder.state_dict().items()):
            t = t.detach().to("cpu").contiguous()
            yield f"{name}|{t.dtype}|{tuple(t.shape)}", t.reshape(-1).view(torch.uint8).numpy()

    return sha256_hex(sha256_buffers(tensors()), _tokenizer_digest(encoder.tokenizer), ENCODING,
                      torch.__version__, transformers.__version__)


def _tokenizer_digest(tok) -> str:
    """The fast tokenizer's serialisation (vocabulary, normaliser, pre-tokeniser, post-processor)
    without its padding and truncation state, which every call with padding=True, max_length=...
    rewrites; the length is in the key on its own."""
    if not hasattr(tok, "backend_tokenizer"):
        return sha256_hex(type(tok).__name__, sorted(tok.get_vocab().items()))
    state = json.loads(tok.backend_tokenizer.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    return sha256_hex(json.dumps(state, sort_keys=True))


def encoding_key(encoder, texts: list[str], max_seq_len: int, batch_size: int, device: str) -> str:
    digest = RecordsHash()
    for text in texts:
        digest.update(text)
    return sha256_hex(encoder_digest(encoder), digest.hexdigest(), len(texts), max_seq_len,
                      batch_size, _device_identity(str(device)))


def _device_identity(device: str) -> str:
    """The kernels that will run: the CPU's vector ISA as torch dispatches it (AVX2 and AVX-512
    round differently), or the GPU's name; a cache folder shared by two machines stays right."""
    import torch

    kind = device.split(":")[0]
    if kind == "cpu":
        return f"cpu/{torch.backends.cpu.get_cpu_capability()}"
    if kind == "cuda" and torch.cuda.is_available():
        return f"cuda/{torch.cuda.get_device_name(torch.device(device))}"
    return kind


class EmbeddingCache:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.root, self.max_bytes = Path(root), max_bytes

    @classmethod
    def default(cls) -> "EmbeddingCache":
        return cls(gecko_home() / "embeddings")

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str, rows: int) -> np.ndarray | None:
        path = self._path(key)
        try:
            array = np.load(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # not ours or damaged: recompute, and say so
            log.warning("embedding cache: unreadable %s (%s); encoding again", path.name, exc)
            return None
        if array.ndim != 2 or len(array) != rows:
            log.warning("embedding cache: %s has shape %s, not %d rows; encoding again",
                        path.name, array.shape, rows)
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except FileNotFoundError:  # another process evicted it after we read it: still valid
            pass
        return array

    def put(self, key: str, array: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_file(self._path(key), tmp_suffix=f".{os.getpid()}.tmp") as fh:
            np.save(fh, np.ascontiguousarray(array, dtype=np.float32))
        self._evict(keep=self._path(key))

    def _evict(self, keep: Path) -> None:
        files = []
        for path in self.root.glob("*.npy"):
            try:
                st = path.stat()
            except FileNotFoundError:  # another process evicted it meanwhile
                continue
            files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size
