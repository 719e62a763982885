"""What the embedded server computes: one `Engine` per model over `llama_cpp.Llama` contexts.

Two contexts share the mmapped weights: `gen` (fast sampling) and `score` (log-probs). llama.cpp
contexts are not thread-safe, so each has a lock. The scoring context computes the logits of
only the rows a request reads (server_row_eval.RowEvaluator): the logits of a 151,936-token vocabulary at every
position cost the 1.5B judge a fifth of its prefill (48-50 against 59-60 tok/s over a
350-token prompt, 2 cores, measured 2026-12-03), and a judge reads few rows — the query's for
QL (`prompt_logprobs_from`, our extension), the last one for RC.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gecko_factory.llm.server_row_eval import RowEvaluator
from gecko_factory.llm.server_stats import ContextStats, timed
from gecko_factory.llm.server_text import (BadRequest, apply_stop, chat_formatter, incremental_strings,
                                           json_grammar, message_offset, sample_token)


class _Req(BaseModel):
    # Unknown OpenAI/vLLM fields (user, frequency_penalty, ...) are ignored, as servers do.
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: Literal[False] = False


class PrefixBreak(BaseModel):
    """Our extension (sent to this server only): the chat's shareable head ends at character
    `char` of message `message`'s content (server_row_eval: the head is computed once and kept)."""

    message: int = Field(ge=0)
    char: int = Field(ge=0)


class ChatRequest(_Req):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    prefix_break: PrefixBreak | None = None


Char = Annotated[int, Field(ge=0)]


class CompletionRequest(_Req):
    # A list is evaluated in order under one hold of the scoring context, so prompts that share
    # a prefix (the shared-prefix judge's QL and RC of one candidate) compute it once.
    prompt: str | list[str]
    max_tokens: int = Field(default=16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    prompt_logprobs: int | None = Field(default=None, ge=0, le=20)
    # Our extension (other servers ignore or refuse it, so clients send it here only): prompt
    # tokens that end at or before this character get null log-probs and cost no logits. One
    # per prompt when the prompt is a list.
    prompt_logprobs_from: Char | list[Char] | None = None
    # Our extension too: the character where a prompt's shareable head ends (the shared-prefix
    # judge's passage line), one per prompt in a list. The head's batches end there, so the next
    # prompt of the list reuses all of it, not only its whole 128-token chunks (server_row_eval).
    prefix_break: Char | list[Char] | None = None

    def prompts(self) -> list[tuple[str, int | None, int | None]]:
        """(prompt, its prompt_logprobs_from, its prefix_break) for each prompt, in order."""
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        per_prompt = []
        for name in ("prompt_logprobs_from", "prefix_break"):
            values = getattr(self, name)
            if not isinstance(values, list):
                values = [values] * len(prompts)
            if not prompts or len(values) != len(prompts):
                raise BadRequest(f"{len(prompts)} prompts but {len(values)} {name} values")
            per_prompt.append(values)
        return list(zip(prompts, *per_prompt))


def _log_softmax(row: np.ndarray) -> np.ndarray:
    """Log-softmax of one logits row, in float64 (float32 loses digits over 150k logits)."""
    row = row.astype(np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


def _logsumexp_rows(rows: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Per-row logsumexp, chunked so a 2k-token prompt never makes a multi-GB copy.

    The shift and exp run in float32 and only the sum in float64: 2.4x faster than all-float64
    over a 300 x 151,936 block, within 3e-8 nats of it (measured), as `_log_softmax` needs."""
    out = np.empty(len(rows), dtype=np.float64)
    for s in range(0, len(rows), chunk):
        r = rows[s : s + chunk]
        m = r.max(axis=1, keepdims=True)
        out[s : s + chunk] = m[:, 0].astype(np.float64) + np.log(
            np.exp(r - m).sum(axis=1, dtype=np.float64))
    return out


def _stop_list(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def _seed(seed: int | None) -> int:
    """A fresh seed per unseeded call (llama would derive it from its last one)."""
    return seed if seed is not None else int.from_bytes(os.urandom(4), "little")


def _topk(lp_row: np.ndarray, k: int) -> list[int]:
    if k <= 0:
        return []
    if k == 1:  # the judge's case: one pass instead of a partition of the whole vocabulary
        return [int(lp_row.argmax())]
    idx = np.argpartition(-lp_row, k)[:k]
    return idx[np.argsort(-lp_row[idx])].tolist()


class Engine:
    def __init__(self, model_path: Path, n_ctx: int, n_threads: int, model_name: str,
                 prefix_chunk: int = 128):
        import llama_cpp  # imported here so `--help` works without the extension
        from llama_cpp import Llama

        from gecko_factory.llm.grammar_last import GrammarLastLlama

        common = {"model_path": str(model_path), "n_ctx": n_ctx, "n_threads": n_threads,
                  "n_threads_batch": n_threads, "verbose": False}
        self.gen = GrammarLastLlama(**common)  # JSON answers: the grammar checks each token last
        self.score = Llama(**common, logits_all=True)  # logits_all: a row buffer for every position
        self.gen_lock, self.score_lock = threading.Lock(), threading.Lock()
        self.stats = {"gen": ContextStats(), "score": ContextStats()}
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.rows = RowEvaluator(self.score, prefix_chunk)
        self._chat_format = chat_formatter(self.score)
        # llama_cpp exposes no public "is end of generation" test; the C API does.
        vocab = llama_cpp.llama_model_get_vocab(self.score.model)
        self._eog = {t for t in range(self.score.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        # special=True parses "<|im_start|>" etc. as control tokens, as HF/vLLM do for prompts.
        return self.score.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def piece(self, tok: int) -> bytes:
        if tok not in self._pieces:
            self._pieces[tok] = self.score.detokenize([tok], special=True)
        return self._pieces[tok]

    def token_str(self, tok: int) -> str:
        return self.piece(tok).decode("utf-8", errors="replace")

    def _first_token_ending_after(self, tokens: list[int], char: int) -> int:
        """Index of the first token whose text ends after prompt character `char` (the tokens a
        client's character span [char, ...) overlaps start there)."""
        _, offsets = incremental_strings([self.piece(t) for t in tokens], 0)
        ends = offsets[1:] + [offsets[-1] + len(self.token_str(tokens[-1]))]
        return next((i for i, end in enumerate(ends) if end > char), len(tokens) - 1)

    def _head_tokens(self, req: ChatRequest, prompt: str, tokens: list[int]) -> int | None:
        """The token count of the chat's shareable head (`prefix_break`): the tokens that end at
        or before its character. A break the rendered prompt does not show is ignored: it is a
        hint for speed (without it the scores differ by llama.cpp's batch-shape noise only)."""
        brk = req.prefix_break
        if brk is None or brk.message >= len(req.messages):
            return None
        start = message_offset(prompt, req.messages, brk.message)
        if start is None or brk.char > len(req.messages[brk.message]["content"]):
            return None
        return self._first_token_ending_after(tokens, start + brk.char)  # the evaluator checks it

    def _eval_counted(self, tokens: list[int], rows_from: int, head: int | None,
                      stats: ContextStats) -> np.ndarray:
        """The scoring context's rows of `tokens` (RowEvaluator.eval), with what the evaluation
        sent, computed and restored counted in one place for every scoring path (`GET /stats`).
        The caller holds the scoring lock."""
        stats.prompt_tokens += len(tokens)
        rows = self.rows.eval(tokens, rows_from, break_at=head)
        stats.computed_tokens += self.rows.last_computed
        stats.heads_restored += self.rows.last_restored
        return rows

    def _check_room(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt + max_tokens > self.n_ctx:
            raise BadRequest(
                f"This model's maximum context length is {self.n_ctx} tokens. However, you "
                f"requested {n_prompt + max_tokens} tokens ({n_prompt} in the prompt, "
                f"{max_tokens} in the completion). Please reduce the prompt or max_tokens."
            )

    def complete(self, req: CompletionRequest) -> dict[str, Any]:
        prompts = [(prompt, self.tokenize(prompt), start, brk) for prompt, start, brk in req.prompts()]
        for _, tokens, _, _ in prompts:
            if not tokens:
                raise BadRequest("prompt is empty")
            self._check_room(len(tokens), req.max_tokens)
        choices, n_prompt, n_gen = [], 0, 0
        with timed(self.score_lock, self.stats["score"]) as stats:  # one hold for all: see the request
            for index, (prompt, tokens, start, brk) in enumerate(prompts):
                head = self._first_token_ending_after(tokens, brk) if brk and brk < len(prompt) else None
                choice, generated = self._complete_one(req, prompt, tokens, start, stats, head)
                choices.append({"index": index, **choice})
                n_prompt, n_gen = n_prompt + len(tokens), n_gen + generated
        return {
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": self.model_name, "choices": choices,
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_gen,
                      "total_tokens": n_prompt + n_gen},
        }

    def _complete_one(self, req: CompletionRequest, prompt: str, tokens: list[int],
                      logprobs_from: int | None, stats: ContextStats,
                      head: int | None = None) -> tuple[dict[str, Any], int]:
        """One prompt's choice (without its index) and its generated token count; the caller
        holds the scoring lock. `head`: the tokens of its shareable head (`prefix_break`)."""
        stops = _stop_list(req.stop)
        want_lp = req.logprobs is not None
        k = req.logprobs or 0
        need_prompt = (req.echo and want_lp) or req.prompt_logprobs is not None
        # row i predicts tokens[i + 1]: the first scored token's row is the one before it
        first = 1 if logprobs_from is None else self._first_token_ending_after(tokens, logprobs_from)
        rows_from = max(first - 1, 0) if need_prompt else len(tokens) - 1
        rows = self._eval_counted(tokens, rows_from, head, stats)
        # lse[i] normalises row i, which predicts tokens[i + 1]; NaN where no row was asked
        # for. The rows are read in place: generation below only writes rows past the prompt,
        # and everything that reads them runs before the lock is released.
        lse = None
        if need_prompt:
            lse = np.full(len(tokens) - 1, np.nan)
            lse[rows_from:] = _logsumexp_rows(rows[rows_from:-1])
        gen, gen_lp, gen_top, finish = self._sample_loop(
            rows[-1].copy(), req.max_tokens, req.temperature, req.top_p, req.seed,
            k if want_lp else -1, stops)
        stats.generated_tokens += len(gen)
        gen_text = b"".join(self.piece(t) for t in gen).decode("utf-8", errors="replace")
        finish_text, finish = apply_stop(gen_text, stops, finish)
        choice: dict[str, Any] = {"text": (prompt if req.echo else "") + finish_text,
                                  "logprobs": None, "finish_reason": finish}
        if want_lp:
            choice["logprobs"] = self._legacy_logprobs(
                tokens if req.echo else [], rows, lse, rows_from, k, gen, gen_lp, gen_top,
                base=0 if req.echo else len(prompt))
        if req.prompt_logprobs is not None:
            choice["prompt_logprobs"] = self._vllm_prompt_logprobs(tokens, rows, lse, rows_from,
                                                                   req.prompt_logprobs)
        return choice, len(gen)

    def _sample_loop(self, last: np.ndarray, max_tokens: int, temperature: float, top_p: float,
                     seed: int | None, k: int, stops: list[str]):
        """Generate from the scoring context; `last` predicts the first new token."""
        rng, gen, lps = np.random.default_rng(seed), [], []
        tops: list[list[tuple[int, float]]] = []
        finish = "length"
        for step in range(max_tokens):
            lp = _log_softmax(last)
            tok = int(np.argmax(lp)) if temperature == 0 else sample_token(lp, temperature, top_p, rng)
            if tok in self._eog:
                finish = "stop"
                break
            gen.append(tok)
            lps.append(float(lp[tok]))
            tops.append([(j, float(lp[j])) for j in _topk(lp, k)])
            if stops and apply_stop(b"".join(self.piece(t) for t in gen).decode("utf-8", "replace"),
                                     stops, "length")[1] == "stop":
                finish = "stop"
                break
            if step + 1 < max_tokens:
                last = self.rows.extend(tok)  # past the prompt, so never reused by the cache
        return gen, lps, tops, finish

    def _legacy_logprobs(self, prompt_toks, rows, lse, rows_from, k, gen, gen_lp, gen_top, base: int):
        """OpenAI legacy `logprobs`: per-token strings whose concatenation is the text."""
        toks = list(prompt_toks) + list(gen)
        strs, offsets = incremental_strings([self.piece(t) for t in toks], base)
        # the first prompt token has no context, hence no log-prob (OpenAI and vLLM agree); nor
        # has a token before `prompt_logprobs_from`
        token_logprobs: list[float | None] = [None] * min(rows_from + 1, len(prompt_toks))
        top: list[dict[str, float] | None] = [None] * min(rows_from + 1, len(prompt_toks))
        for i in range(rows_from + 1, len(prompt_toks)):
            row, z = rows[i - 1], lse[i - 1]
            d = {self.token_str(j): float(row[j] - z) for j in _topk(row, k)}
            d[strs[i]] = float(row[prompt_toks[i]] - z)
            token_logprobs.append(d[strs[i]])
            top.append(d)
        for j, t in enumerate(gen):
            i = len(prompt_toks) + j
            token_logprobs.append(gen_lp[j])
            d = {self.token_str(a): b for a, b in gen_top[j]}
            d[strs[i]] = gen_lp[j]
            top.append(d)
        return {"tokens": strs, "token_logprobs": token_logprobs, "top_logprobs": top,
                "text_offset": offsets}

    def _vllm_prompt_logprobs(self, tokens, rows, lse, rows_from: int, k: int) -> list[dict | None]:
        """vLLM's `prompt_logprobs`: the actual token (with its 1-based rank) plus the top-k."""
        out: list[dict | None] = [None] * min(rows_from + 1, len(tokens))
        for i in range(rows_from, len(tokens) - 1):
            row, z, t = rows[i], lse[i], tokens[i + 1]
            d: dict[str, dict] = {}
            for r, j in enumerate(_topk(row, k), start=1):
                d[str(j)] = {"logprob": float(row[j] - z), "rank": r, "decoded_token": self.token_str(j)}
            rank = int((row > row[t]).sum()) + 1
            d[str(t)] = {"logprob": float(row[t] - z), "rank": rank, "decoded_token": self.token_str(t)}
            out.append(d)
        return out

    def chat(self, req: ChatRequest) -> dict[str, Any]:
        grammar = json_grammar(req.response_format)
        if req.logprobs and grammar is None and self._chat_format is not None:
            return self._chat_scored(req)
        max_tokens = req.max_completion_tokens or req.max_tokens
        # create_chat_completion's logprobs need logits_all, which only the scoring context has.
        context = "score" if req.logprobs else "gen"
        llm, lock = (self.score, self.score_lock) if req.logprobs else (self.gen, self.gen_lock)
        kwargs: dict[str, Any] = {
            "messages": req.messages, "temperature": req.temperature, "top_p": req.top_p,
            "max_tokens": max_tokens, "stop": req.stop, "grammar": grammar,
            "seed": _seed(req.seed),
        }
        if req.logprobs:
            kwargs.update(logprobs=True, top_logprobs=req.top_logprobs or 0)
        with timed(lock, self.stats[context]) as stats:
            if llm is self.score:
                self.rows.forget()  # llama's own prefix reuse batches differently
            llm.last_sampler = None  # GrammarLastLlama's, for a grammar on the gen context
            try:
                out = llm.create_chat_completion(**kwargs)
            except ValueError as exc:  # llama raises ValueError for over-long prompts
                raise BadRequest(str(exc)) from exc
            if llm.last_sampler is not None:
                stats.constrained_tokens += llm.last_sampler.tokens
                stats.grammar_resampled += llm.last_sampler.resampled
            usage = out.get("usage") or {}
            stats.prompt_tokens += usage.get("prompt_tokens", 0)
            # an upper bound: llama reuses what its context still holds of the prompt, unseen here
            stats.computed_tokens += usage.get("prompt_tokens", 0)
            stats.generated_tokens += usage.get("completion_tokens", 0)
        out["model"] = self.model_name
        out["id"] = f"chatcmpl-{uuid.uuid4().hex}"
        for choice in out["choices"]:
            lp = choice.get("logprobs")
            if not req.logprobs or lp is None:
                choice["logprobs"] = None
                continue
            # llama leaves `bytes` null and logprobs as numpy float32 (not JSON-serialisable).
            for entry in lp.get("content") or []:
                for d in [entry, *(entry.get("top_logprobs") or [])]:
                    d["bytes"], d["logprob"] = list(d["token"].encode("utf-8")), float(d["logprob"])
                entry["top_logprobs"] = (entry.get("top_logprobs") or [])[: req.top_logprobs or 0]
        return out

    def _chat_scored(self, req: ChatRequest) -> dict[str, Any]:
        """A chat with log-probs (the RC judge) on the scoring context, computing only the last
        prompt row: the model's own chat template, rendered as llama-cpp's handler renders it."""
        rendered = self._chat_format(messages=req.messages)
        tokens = self.tokenize(rendered.prompt, add_bos=not rendered.added_special)
        max_tokens = req.max_completion_tokens or req.max_tokens or max(self.n_ctx - len(tokens), 1)
        self._check_room(len(tokens), max_tokens)  # a prompt that fills the context is a 400
        rstop = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop] if rendered.stop else []
        stops = _stop_list(req.stop) + rstop
        k = req.top_logprobs or 0
        head = self._head_tokens(req, rendered.prompt, tokens)
        with timed(self.score_lock, self.stats["score"]) as stats:
            rows = self._eval_counted(tokens, len(tokens) - 1, head, stats)
            gen, gen_lp, gen_top, finish = self._sample_loop(
                rows[-1].copy(), max_tokens, req.temperature, req.top_p, _seed(req.seed), k, stops)
            stats.generated_tokens += len(gen)
        strs, _ = incremental_strings([self.piece(t) for t in gen], 0)
        text, finish = apply_stop("".join(strs), stops, finish)

        def entry(s: str, lp: float) -> dict[str, Any]:
            return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}

        content = [{**entry(s, lp), "top_logprobs": [entry(self.token_str(j), v) for j, v in top][:k]}
                   for s, lp, top in zip(strs, gen_lp, gen_top)]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": {"content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": len(gen),
                      "total_tokens": len(tokens) + len(gen)},
        }
