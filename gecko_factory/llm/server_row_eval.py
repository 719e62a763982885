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

Break: a request may name a token position (`break_at`) where its shareable head ends, such as
the RC chat's instruction and query, which a seed's N candidates share. Chunks are then aligned
from 0 up to the break and from the break on, so the head's KV is a function of the head alone,
and it is kept (llama's per-sequence state, a few MB) in a small store that outlives the live
context: the N RC prompts of a seed compute their head once even when QL prompts and other seeds'
calls come in between. Measured on the 1.5B (2026-12-05, idle, 24 RC chats of the Wikipedia
sample): a prompt split at its break costs 4.6 % more than in whole chunks, one whose head is
restored computes 1.40x faster.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict

import numpy as np


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    return int(np.argmin(np.append(a[:n] == b[:n], False)))


def batch_ends(n: int, step: int, break_at: int | None = None) -> list[int]:
    """Where each batch of an n-token prompt ends: every `step` tokens from 0, and from the break
    on, from the break. Each end depends on the tokens before it only: the reuse rule."""
    starts = [0, break_at] if break_at and 0 < break_at < n else [0]
    ends = []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else n
        ends += list(range(start + step, stop, step)) + [stop]
    return ends


class HeadStore:
    """llama's per-sequence KV state after a prompt's head, by the head's tokens; least recently
    used dropped first beyond `max_bytes` (a 40-token head of the 1.5B is ~1.1 MB)."""

    def __init__(self, max_bytes: int = 64 * 2**20):
        self.max_bytes, self.bytes = max_bytes, 0
        self.states: OrderedDict[tuple[int, ...], ctypes.Array] = OrderedDict()
        self.hits = 0

    def __contains__(self, head: tuple[int, ...]) -> bool:
        return head in self.states

    def get(self, head: tuple[int, ...]) -> ctypes.Array | None:
        state = self.states.get(head)
        if state is not None:
            self.states.move_to_end(head)
            self.hits += 1
        return state

    def put(self, head: tuple[int, ...], state: ctypes.Array) -> None:
        if head in self.states or len(state) > self.max_bytes:
            return
        self.states[head] = state
        self.bytes += len(state)
        while self.bytes > self.max_bytes:
            self.bytes -= len(self.states.popitem(last=False)[1])


class RowEvaluator:
    def __init__(self, llm, chunk: int = 128):
        """`llm`: a `llama_cpp.Llama` made with logits_all=True (its `scores` has a row per
        position); `chunk` = 0: no prefix reuse, batches of llama's n_batch."""
        self.llm = llm
        self.chunk = min(chunk, llm.n_batch) if chunk > 0 else 0  # a batch holds n_batch tokens
        self.canonical = 0  # leading positions evaluated in the live prompt's batches, reusable
        self.live_ends: list[int] = []  # the live prompt's batch ends
        self.has_row = np.zeros(llm.n_ctx(), dtype=bool)
        self.last_computed = 0  # tokens the last `eval` computed (the rest came from a cache)
        self.last_restored = False  # whether the last `eval` began from a stored head
        self.heads = HeadStore()

    def forget(self) -> None:
        """Another evaluator (llama's own chat path) used the context: reuse nothing of it."""
        self.canonical = 0

    def eval(self, tokens: list[int], rows_from: int, break_at: int | None = None) -> np.ndarray:
        """Evaluate `tokens`; rows [rows_from, len(tokens)) of the returned array are theirs
        (row i predicts tokens[i + 1]); earlier rows are not computed and may be stale.
        `break_at`: where the prompt's shareable head ends (module docstring)."""
        llm = self.llm
        if self.chunk == 0 or not break_at or not 0 < break_at < len(tokens):
            break_at = None  # no prefix cache, or no head to keep
        ends = batch_ends(len(tokens), self.chunk or llm.n_batch, break_at)
        keep = self._live_reuse(tokens, ends, rows_from) if self.chunk > 0 else 0
        head = None
        if break_at is not None:
            head = tuple(tokens[:break_at])
            state = self.heads.get(head) if keep < break_at <= rows_from else None
            if state is not None:
                keep = self._restore(head, state)
        self.last_restored = head is not None and keep == len(head)
        llm.n_tokens = keep
        self.has_row[keep:] = False
        self.last_computed = len(tokens) - keep
        pos = keep
        for end in ends:
            if end <= pos:
                continue
            self._decode(tokens[pos:end], pos, rows_from)
            pos = end
            if head is not None and end == break_at and head not in self.heads:
                self.heads.put(head, self._state())
        self.canonical, self.live_ends = len(tokens), ends
        return llm.scores[: len(tokens)]

    def _live_reuse(self, tokens: list[int], ends: list[int], rows_from: int) -> int:
        """How much of the live context this prompt can keep: the last batch end that both
        prompts' batches share, inside their common prefix, never the last row, and no further
        than `rows_from` unless the rows asked for were computed."""
        if self.canonical == 0:
            return 0
        common = common_prefix(self.llm.input_ids[: self.canonical], np.asarray(tokens))
        limit = min(common, len(tokens) - 1)
        shared = [0]
        for a, b in zip(ends, self.live_ends):
            if a != b or a > limit:
                break
            shared.append(a)
        keep = shared[-1]
        if not self.has_row[rows_from:keep].all():
            keep = max(e for e in shared if e <= rows_from)
        return keep

    def _state(self) -> ctypes.Array:
        import llama_cpp  # here, as server_engine does: the server's --help works without it

        ctx = self.llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        return buf

    def _restore(self, head: tuple[int, ...], state: ctypes.Array) -> int:
        """Put a stored head's KV in place of the context's: the tokens kept, len(head), or 0
        when llama could not place it (the context is then empty and the head is computed)."""
        import llama_cpp

        llm = self.llm
        llm._ctx.kv_cache_seq_rm(0, 0, -1)
        self.has_row[:] = False  # a state holds the KV, not the logits rows
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, state, len(state), 0) == 0:
            llm._ctx.kv_cache_seq_rm(0, 0, -1)
            return 0
        llm.input_ids[: len(head)] = head
        return len(head)

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
