"""A small OpenAI-compatible HTTP server over `llama_cpp.Llama` (Starlette + uvicorn).

Why our own: llama-cpp-python 0.3.36's `echo=True` log-probs are misaligned; here prompt-token
log-probs come from the logits (`scores[i-1]` predicts `tokens[i]`, see shared/MODELS.md).
Two `Llama` instances share the mmapped weights: `gen` (fast sampling) and `score`
(`logits_all=True`, for prompt and generation log-probs). llama.cpp contexts are not
thread-safe, so each has a lock; calls run in worker threads so /health stays responsive.
Contexts of different models (and the two of one model) may compute at once: one lock for all
of them measured slower on 2 cores (bench/embedded.py, 2026-12-03: 181.6 s against 177.7 s for the
same 4 seeds; 96.3 s against 90.1 s one-pass), likely because a call's Python work (log-softmax,
JSON) then overlaps no other call's computing.
`GET /stats` reports, per model and context, the calls, prompt tokens sent and actually computed
(the rest came from the prefix cache), tokens generated, and seconds computing and waiting.
Several models can be served at once (`--model A.gguf --model-name a --model B.gguf --model-name
b`): a request goes to the engine its `model` field names (the first when it names none), so a
small model can write queries while a stronger one judges, behind one port.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gecko_factory.llm.server_stats import ContextStats, timed
from gecko_factory.llm.server_text import (BadRequest, apply_stop, incremental_strings,
                                           json_grammar, sample_token)

log = logging.getLogger("gecko_factory.llm.server")


def _error(message: str, status: int = 400, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}},
                        status_code=status)


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


class ChatRequest(_Req):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionRequest(_Req):
    prompt: str
    max_tokens: int = Field(default=16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    prompt_logprobs: int | None = Field(default=None, ge=0, le=20)


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


def _topk(lp_row: np.ndarray, k: int) -> list[int]:
    if k <= 0:
        return []
    if k == 1:  # the judge's case: one pass instead of a partition of the whole vocabulary
        return [int(lp_row.argmax())]
    idx = np.argpartition(-lp_row, k)[:k]
    return idx[np.argsort(-lp_row[idx])].tolist()


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    return int(np.argmin(np.append(a[:n] == b[:n], False)))


class Engine:
    def __init__(self, model_path: Path, n_ctx: int, n_threads: int, model_name: str,
                 prefix_chunk: int = 128):
        import llama_cpp  # imported here so `--help` works without the extension
        from llama_cpp import Llama

        common = {"model_path": str(model_path), "n_ctx": n_ctx, "n_threads": n_threads,
                  "n_threads_batch": n_threads, "verbose": False}
        self.gen = Llama(**common)
        self.score = Llama(**common, logits_all=True)
        self.gen_lock, self.score_lock = threading.Lock(), threading.Lock()
        self.stats = {"gen": ContextStats(), "score": ContextStats()}
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.prefix_chunk = prefix_chunk
        self._canonical = 0  # leading positions of the scoring context evaluated chunk-aligned
        # llama_cpp exposes no public "is end of generation" test; the C API does.
        vocab = llama_cpp.llama_model_get_vocab(self.score.model)
        self._eog = {t for t in range(self.score.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str) -> list[int]:
        # special=True parses "<|im_start|>" etc. as control tokens, as HF/vLLM do for prompts.
        return self.score.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def piece(self, tok: int) -> bytes:
        if tok not in self._pieces:
            self._pieces[tok] = self.score.detokenize([tok], special=True)
        return self._pieces[tok]

    def token_str(self, tok: int) -> str:
        return self.piece(tok).decode("utf-8", errors="replace")

    def _eval_scores(self, tokens: list[int]) -> np.ndarray:
        """Evaluate `tokens` on the scoring context and return its logits rows [0, len).

        Prefix cache: rows [0, keep) of llm.scores and the KV cache still hold the previous
        call's shared prefix (eval() drops the KV past n_tokens). llama.cpp's numerics depend on
        batching (~3e-3 nats when a prefix came from another batch), so tokens are always
        evaluated in `prefix_chunk`-aligned chunks and only whole chunks are reused: scores stay
        bit-identical whatever came before (measured).
        """
        llm, c = self.score, self.prefix_chunk
        keep = 0
        if c > 0 and self._canonical > 0:
            common = _common_prefix(llm.input_ids[: self._canonical], np.asarray(tokens))
            # keep < len(tokens): the last row must come from this evaluation
            keep = min(common, len(tokens) - 1) // c * c
        if keep == 0:
            llm.reset()
        else:
            llm.n_tokens = keep
        pos = keep
        self.stats["score"].computed_tokens += len(tokens) - keep
        while pos < len(tokens):
            end = len(tokens) if c <= 0 else min(len(tokens), (pos // c + 1) * c)
            llm.eval(tokens[pos:end])
            pos = end
        self._canonical = len(tokens)
        return llm.scores[: len(tokens)]

    def complete(self, req: CompletionRequest) -> dict[str, Any]:
        tokens = self.tokenize(req.prompt)
        if not tokens:
            raise BadRequest("prompt is empty")
        if len(tokens) + req.max_tokens > self.n_ctx:
            raise BadRequest(
                f"This model's maximum context length is {self.n_ctx} tokens. However, you "
                f"requested {len(tokens) + req.max_tokens} tokens ({len(tokens)} in the prompt, "
                f"{req.max_tokens} in the completion). Please reduce the prompt or max_tokens."
            )
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        want_lp = req.logprobs is not None
        k = req.logprobs or 0
        with timed(self.score_lock, self.stats["score"]) as stats:
            stats.prompt_tokens += len(tokens)
            rows = self._eval_scores(tokens)
            # lse[i] normalises row i, which predicts tokens[i + 1]. The prompt rows are read in
            # place (no 180 MB copy for a 300-token prompt): generation below only writes rows
            # past the prompt, and everything that reads them runs before the lock is released.
            need_prompt = (req.echo and want_lp) or req.prompt_logprobs is not None
            prompt_rows, lse = (rows[:-1], _logsumexp_rows(rows[:-1])) if need_prompt else (None, None)
            last = rows[-1].copy()
            gen, gen_lp, gen_top, finish = self._sample_loop(last, req, k if want_lp else -1, stops)
            stats.generated_tokens += len(gen)
            n_prompt = len(tokens)
            gen_text = b"".join(self.piece(t) for t in gen).decode("utf-8", errors="replace")
            finish_text, finish = apply_stop(gen_text, stops, finish)
            choice: dict[str, Any] = {"index": 0, "text": (req.prompt if req.echo else "") + finish_text,
                                      "logprobs": None, "finish_reason": finish}
            if want_lp:
                choice["logprobs"] = self._legacy_logprobs(
                    tokens if req.echo else [], prompt_rows, lse, k, gen, gen_lp, gen_top,
                    base=0 if req.echo else len(req.prompt))
            if req.prompt_logprobs is not None:
                choice["prompt_logprobs"] = self._vllm_prompt_logprobs(tokens, prompt_rows, lse,
                                                                       req.prompt_logprobs)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": self.model_name, "choices": [choice],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(gen),
                      "total_tokens": n_prompt + len(gen)},
        }

    def _sample_loop(self, last: np.ndarray, req: CompletionRequest, k: int, stops: list[str]):
        """Generate from the scoring context; `last` predicts the first new token."""
        rng, gen, lps = np.random.default_rng(req.seed), [], []
        tops: list[list[tuple[int, float]]] = []
        finish = "length"
        for step in range(req.max_tokens):
            lp = _log_softmax(last)
            tok = int(np.argmax(lp)) if req.temperature == 0 else sample_token(lp, req.temperature, req.top_p, rng)
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
            if step + 1 < req.max_tokens:
                self.score.eval([tok])  # past self._canonical, so never reused by the cache
                last = self.score.scores[self.score.n_tokens - 1].copy()
        return gen, lps, tops, finish

    def _legacy_logprobs(self, prompt_toks, rows, lse, k, gen, gen_lp, gen_top, base: int):
        """OpenAI legacy `logprobs`: per-token strings whose concatenation is the text."""
        toks = list(prompt_toks) + list(gen)
        strs, offsets = incremental_strings([self.piece(t) for t in toks], base)
        # the first prompt token has no context, hence no log-prob (OpenAI and vLLM agree)
        token_logprobs: list[float | None] = [None] * min(1, len(prompt_toks))
        top: list[dict[str, float] | None] = [None] * min(1, len(prompt_toks))
        for i in range(1, len(prompt_toks)):
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

    def _vllm_prompt_logprobs(self, tokens, rows, lse, k: int) -> list[dict | None]:
        """vLLM's `prompt_logprobs`: the actual token (with its 1-based rank) plus the top-k."""
        ids = np.asarray(tokens[1:])
        actual = rows[np.arange(len(ids)), ids]
        ranks = (rows > actual[:, None]).sum(axis=1) + 1
        out: list[dict | None] = [None]
        for i, t in enumerate(tokens[1:]):
            row, z = rows[i], lse[i]
            d: dict[str, dict] = {}
            for r, j in enumerate(_topk(row, k), start=1):
                d[str(j)] = {"logprob": float(row[j] - z), "rank": r, "decoded_token": self.token_str(j)}
            d[str(t)] = {"logprob": float(row[t] - z), "rank": int(ranks[i]), "decoded_token": self.token_str(t)}
            out.append(d)
        return out

    def chat(self, req: ChatRequest) -> dict[str, Any]:
        grammar = json_grammar(req.response_format)
        max_tokens = req.max_completion_tokens or req.max_tokens
        # create_chat_completion's logprobs need logits_all, which only the scoring context has.
        context = "score" if req.logprobs else "gen"
        llm, lock = (self.score, self.score_lock) if req.logprobs else (self.gen, self.gen_lock)
        kwargs: dict[str, Any] = {
            "messages": req.messages, "temperature": req.temperature, "top_p": req.top_p,
            "max_tokens": max_tokens, "stop": req.stop, "grammar": grammar,
            # a fresh seed per unseeded call, else llama derives it from its last one
            "seed": req.seed if req.seed is not None else int.from_bytes(os.urandom(4), "little"),
        }
        if req.logprobs:
            kwargs.update(logprobs=True, top_logprobs=req.top_logprobs or 0)
        with timed(lock, self.stats[context]) as stats:
            if llm is self.score:
                self._canonical = 0  # llama's own prefix reuse batches differently
            try:
                out = llm.create_chat_completion(**kwargs)
            except ValueError as exc:  # llama raises ValueError for over-long prompts
                raise BadRequest(str(exc)) from exc
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


def build_app(engines: list[Engine]) -> Starlette:
    by_name = {e.model_name: e for e in engines}

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse({e.model_name: {k: v.as_dict() for k, v in e.stats.items()}
                             for e in engines})

    async def models(_: Request) -> JSONResponse:
        data = [{"id": e.model_name, "object": "model", "created": 0, "owned_by": "gecko-factory"}
                for e in engines]
        return JSONResponse({"object": "list", "data": data})

    def endpoint(model_cls, method_name: str):
        async def handler(request: Request) -> JSONResponse:
            try:
                body = await request.json()
            except ValueError:
                return _error("request body is not valid JSON")
            try:
                req = model_cls.model_validate(body)
                # one model: it answers to any name, as llama.cpp's server does; several: by name
                engine = engines[0] if req.model is None or len(engines) == 1 else by_name.get(req.model)
                if engine is None:  # OpenAI's answer to an unknown model: 404, not a silent swap
                    return _error(f"The model `{req.model}` does not exist; served: {', '.join(by_name)}",
                                  404, "not_found_error")
                return JSONResponse(await run_in_threadpool(getattr(engine, method_name), req))
            except ValidationError as exc:
                return _error(f"invalid request: {exc.errors(include_url=False, include_context=False)}")
            except BadRequest as exc:
                return _error(str(exc))
        return handler

    return Starlette(routes=[
        Route("/health", health),
        Route("/v1/models", models),
        Route("/stats", stats),
        Route("/v1/chat/completions", endpoint(ChatRequest, "chat"), methods=["POST"]),
        Route("/v1/completions", endpoint(CompletionRequest, "complete"), methods=["POST"]),
    ])


def exit_with_parent(parent_pid: int, every_s: float = 1.0) -> None:
    """A run killed by SIGTERM/SIGKILL (a cancelled Prefect flow run, a `kill`) runs no atexit
    hook, so its server would live on holding ~2 GB; we leave when we are re-parented."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        log.warning("parent process %d is gone: exiting", parent_pid)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path, action="append",
                    help="a GGUF to serve (repeat for several, each with its --model-name)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--model-name", action="append", default=None,
                    help="the name each --model answers to (default: the file's stem)")
    ap.add_argument("--prefix-chunk", type=int, default=128,
                    help="scoring prefix-cache granularity in tokens (0: no cache, one batch)")
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="exit when this process is gone (the run that started us)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.parent_pid:
        exit_with_parent(args.parent_pid)
    names = args.model_name or [m.stem for m in args.model]
    if len(names) != len(args.model):
        ap.error("give one --model-name per --model, or none")
    engines = []
    for path, name in zip(args.model, names):
        t0 = time.monotonic()
        engines.append(Engine(path, args.ctx, args.threads, name, prefix_chunk=args.prefix_chunk))
        log.info("loaded %s as %s in %.1f s", path, name, time.monotonic() - t0)
    uvicorn.run(build_app(engines), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
