"""Prompt evaluation on the scoring context that computes only the logits rows asked for, and
reuses a previous prompt's shared prefix bit-identically.

Rows: llama.cpp computes the output (norm + the vocabulary projection) only for the batch
positions flagged for logits; llama-cpp-python's `eval` flags all of them on a `logits_all`
context. Flagging only the rows a request reads gave the same logits to 1e-6 and 20 % more
prefill for the 1.5B judge (its vocabulary projection is 233M multiply-adds per position,
~15 % of the model's), so `eval` here drives the batch itself.

Prefix cache: llama.cpp's numerics depend on batching (~3e-3 nats when a prefix came from another
batch), so tokens are always evaluated in `chunk`-aligned batches and only whole chunks are
reused: scores stay bit-identical whatever came before (measured). A reused row must have been
computed by the earlier call; otherwise evaluation restarts at the chunk that holds it.
"""

from __future__ import annotations

import numpy as np


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    return int(np.argmin(np.append(a[:n] == b[:n], False)))


class RowEvaluator:
    def __init__(self, llm, chunk: int = 128):
        """`llm`: a `llama_cpp.Llama` made with logits_all=True (its `scores` has a row per
        position); `chunk` = 0: no prefix reuse, batches of llama's n_batch."""
        self.llm = llm
        self.chunk = min(chunk, llm.n_batch) if chunk > 0 else 0  # a batch holds n_batch tokens
        self.canonical = 0  # leading positions evaluated chunk-aligned, reusable
        self.has_row = np.zeros(llm.n_ctx(), dtype=bool)
        self.last_computed = 0  # tokens the last `eval` computed (the rest came from the cache)

    def forget(self) -> None:
        """Another evaluator (llama's own chat path) used the context: reuse nothing."""
        self.canonical = 0

    def eval(self, tokens: list[int], rows_from: int) -> np.ndarray:
        """Evaluate `tokens`; rows [rows_from, len(tokens)) of the returned array are theirs
        (row i predicts tokens[i + 1]); earlier rows are not computed and may be stale."""
        llm, c = self.llm, self.chunk
        keep = 0
        if c > 0 and self.canonical > 0:
            common = common_prefix(llm.input_ids[: self.canonical], np.asarray(tokens))
            keep = min(common, len(tokens) - 1)  # the last row must come from this evaluation
            if not self.has_row[rows_from:keep].all():
                keep = min(keep, rows_from)
            keep = keep // c * c
        llm.n_tokens = keep
        self.has_row[keep:] = False
        self.last_computed = len(tokens) - keep
        step = c if c > 0 else llm.n_batch
        pos = keep
        while pos < len(tokens):
            end = min(len(tokens), (pos // step + 1) * step)
            self._decode(tokens[pos:end], pos, rows_from)
            pos = end
        self.canonical = len(tokens)
        return llm.scores[: len(tokens)]

    def extend(self, token: int) -> np.ndarray:
        """Evaluate one more token (generation) and return the row that predicts the next."""
        llm = self.llm
        self._decode([token], llm.n_tokens, llm.n_tokens)
        return llm.scores[llm.n_tokens - 1].copy()

    def _decode(self, chunk: list[int], n_past: int, rows_from: int) -> None:
        llm = self.llm
        end = n_past + len(chunk)
        first = min(max(rows_from, n_past), end - 1)  # flagged rows: [first, end), always the last
        llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
        llm._batch.set_batch(batch=chunk, n_past=n_past, logits_all=False)
        for i in range(first - n_past, len(chunk)):
            llm._batch.batch.logits[i] = True
        llm._ctx.decode(llm._batch)
        n_vocab = llm.n_vocab()
        out = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=((end - first) * n_vocab,))
        llm.scores[first:end] = out.reshape(end - first, n_vocab)
        llm.input_ids[n_past:end] = chunk
        llm.n_tokens = end
        self.has_row[first:end] = True
