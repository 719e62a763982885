"""A deterministic OpenAI-compatible server for tests and benchmarks (real HTTP, no model).

It answers like a tiny, predictable LLM, so a test can compute what the factory must output:
- chat, synthesis prompt ("Task type: …\\nPassage: …"): JSON {task, query} where the query is
  the passage's first content words (so retrieval finds the seed). A passage containing
  `[[invalid]]` always gets invalid JSON (to test the retry-then-skip path).
- chat, relevance prompt (system says "Yes or No"): "Yes"/"No" with top log-probs where
  log P(Yes) = log(share of query words found in the passage).
- completions with `echo` + `logprobs`: whitespace tokens (each with its leading space); a word
  already seen earlier in the prompt gets −0.5, an unseen one −3 − (hash % 100)/100; a final
  "Yes" gets the same log P(Yes) as above. `prompt_logprobs` (vLLM's shape) is also served, and
  the embedded server's `prompt_logprobs_from` (tokens ending at or before it: null). A list
  `prompt` gets one choice per prompt, as vLLM answers (`prompt_lists=False`: a 400).
Oracle marks, for tests whose expected judge choices are known by construction: a passage
holding `[[ql+]]` scores −0.05 on every prompt token after the mark (its QL beats any unmarked
passage's, which costs at least −0.5 a token), and one holding `[[rc+]]` gets log P(Yes) =
log 0.995 (above the 0.99 cap of the word share).
Options: `latency_ms` per request; `fault_rate` (0–1): that share of requests fails on its first
attempt, as 429, 500, a hang past the client's timeout (`fault_sleep_s`), a malformed body or a
truncated body (all transient: the retry of the same request succeeds), and that share of
synthesis answers is invalid JSON for good (the factory must retry with another seed, then skip).
Faults are a pure function of the request body and `fault_seed`, so two runs see the same ones.
`GET /stats` counts requests by endpoint, faults by kind, `max_in_flight` (the most requests it
held at once: what a client's concurrency limit must bound), and `bad_synthesis`: for each passage
whose synthesis got invalid JSON, on how many different requests (each attempt samples anew, so
a seed is skipped when the count reaches the recipe's `synth_attempts`).
Run: `python -m gecko_factory.testing.scripted_server --port P [--latency-ms 100]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import time
from collections import Counter

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_TOKEN = re.compile(r"\s*\S+|\s+$")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"the", "and", "for", "with", "that", "this", "from", "was", "are", "were", "which", "its",
         "his", "her", "has", "have", "been", "also", "into", "than", "their", "there", "is", "of",
         "in", "a", "an", "to", "by", "on", "as", "at", "or", "it", "be"}


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in _STOP and len(w) > 2]


def _h(word: str) -> int:
    return int(hashlib.md5(word.encode()).hexdigest()[:8], 16)


QL_MARK, RC_MARK = "[[ql+]]", "[[rc+]]"


def yes_logprob(query: str, passage: str) -> float:
    if RC_MARK in passage:
        return math.log(0.995)
    q = set(content_words(query))
    if not q:
        return math.log(0.01)
    share = len(q & set(words(passage))) / len(q)
    return math.log(max(0.01, min(0.99, share)))


def synth_answer(task_type: str, passage: str) -> str:
    if "[[invalid]]" in passage:
        return '{"task": "unterminated'
    query = " ".join(content_words(passage)[:6]) or "unknown"
    return json.dumps({"task": f"Given a {task_type} request, retrieve passages that match it",
                       "query": query})


def prompt_scores(prompt: str) -> tuple[list[str], list[float | None], list[int]]:
    tokens = _TOKEN.findall(prompt)
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    qp = re.search(r"Passage: (.*)\nQuery: (.*?)\n", prompt, re.DOTALL)
    seen: set[str] = set()
    logprobs: list[float | None] = []
    marked = prompt.find(QL_MARK)
    for i, tok in enumerate(tokens):
        ws = words(tok)
        if i == 0:
            logprobs.append(None)
        elif 0 <= marked < offsets[i] and ws:
            logprobs.append(-0.05)
        elif i == len(tokens) - 1 and tok.strip() == "Yes" and qp:
            logprobs.append(yes_logprob(qp.group(2), qp.group(1)))
        elif not ws:
            logprobs.append(-1.0)
        else:
            logprobs.append(sum(-0.5 if w in seen else -3.0 - (_h(w) % 100) / 100 for w in ws))
        seen.update(ws)
    return tokens, logprobs, offsets


def _completion_choice(body: dict, prompt: str, start: int | None) -> tuple[dict, int, int]:
    """One prompt's completion choice (without its index), its prompt and generated tokens."""
    tokens, logprobs, offsets = prompt_scores(prompt)
    if start is not None:  # the embedded server's extension
        ends = offsets[1:] + [len(prompt)]
        logprobs = [lp if end > start else None for lp, end in zip(logprobs, ends)]
    gen = " Yes" if (body.get("max_tokens") or 0) > 0 else ""
    choice: dict = {"finish_reason": "length", "text": gen, "logprobs": None}
    if body.get("echo"):
        choice["text"] = prompt + gen
    if body.get("logprobs") is not None:
        toks, lps, offs = (tokens, logprobs, offsets) if body.get("echo") else ([], [], [])
        if gen:
            toks, lps, offs = toks + [gen], lps + [-0.7], offs + [len(prompt) if body.get("echo") else 0]
        choice["logprobs"] = {"tokens": toks, "token_logprobs": lps, "text_offset": offs,
                              "top_logprobs": [None if lp is None else {t: lp} for t, lp in zip(toks, lps)]}
    if body.get("prompt_logprobs") is not None:
        choice["prompt_logprobs"] = [None] + [
            None if lp is None else {str(_h(t) % 50000): {"logprob": lp, "rank": 1, "decoded_token": t}}
            for t, lp in zip(tokens[1:], logprobs[1:])]
    return choice, len(tokens), 1 if gen else 0


FAULTS = ("429", "500", "timeout", "malformed", "truncated")


class ScriptedLLM:
    def __init__(self, latency_ms: float = 0.0, model: str = "scripted", fault_rate: float = 0.0,
                 fault_seed: int = 0, fault_sleep_s: float = 3.0, prompt_logprobs: bool = True,
                 prompt_lists: bool = True):
        self.latency = latency_ms / 1000
        self.prompt_logprobs = prompt_logprobs  # False: like OpenAI's chat models, no echo
        self.prompt_lists = prompt_lists  # False: a list `prompt` is a 400, as some servers answer
        self.model = model
        self.counts: Counter = Counter()
        self.fault_rate = fault_rate
        self.fault_seed = fault_seed
        self.fault_sleep_s = fault_sleep_s
        self.attempts: Counter = Counter()
        self.bad_synthesis: dict[str, set[str]] = {}
        self.in_flight = 0

    def _draw(self, salt: str, key: str) -> float:
        return _h(f"{self.fault_seed}:{salt}:{key}") / 0xFFFFFFFF

    async def _fault(self, raw: bytes) -> Response | None:
        """A transport-level fault for the first attempt of some requests, else None."""
        if not self.fault_rate:
            return None
        key = hashlib.md5(raw).hexdigest()
        attempt = self.attempts[key]
        self.attempts[key] += 1
        if attempt > 0 or self._draw("fault", key) >= self.fault_rate:
            return None
        kind = FAULTS[int(self._draw("kind", key) * len(FAULTS)) % len(FAULTS)]
        self.counts[f"fault_{kind}"] += 1
        if kind == "429":
            return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429)
        if kind == "500":
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, status_code=500)
        if kind == "timeout":
            await asyncio.sleep(self.fault_sleep_s)
            return JSONResponse({"error": {"message": "too late", "type": "server_error"}}, status_code=504)
        if kind == "malformed":
            return Response("{this is not json", media_type="application/json")
        return Response('{"id": "cmpl-x", "object": "chat.completion", "choices": [{"ind',
                        media_type="application/json")

    def _bad_synthesis(self, raw: bytes, passage: str) -> bool:
        key = hashlib.md5(raw).hexdigest()
        if not self.fault_rate or self._draw("content", key) >= self.fault_rate:
            return False
        self.bad_synthesis.setdefault(hashlib.md5(passage.encode()).hexdigest(), set()).add(key)
        return True

    async def _pause(self) -> None:
        if self.latency:
            self.in_flight += 1
            self.counts["max_in_flight"] = max(self.counts["max_in_flight"], self.in_flight)
            try:
                await asyncio.sleep(self.latency)
            finally:
                self.in_flight -= 1

    async def chat(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw)
        self.counts["chat"] += 1
        await self._pause()
        if (fault := await self._fault(raw)) is not None:
            return fault
        messages = body.get("messages") or []
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        kind = "relevance" if "Yes or No" in system else "synthesis"
        self.counts[f"chat_{kind}:{body.get('model')}"] += 1  # which model each role asked
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        logprobs = None
        if "Yes or No" in system:
            m = re.search(r"Query: (.*)\nPassage: (.*)\n", user, re.DOTALL)
            lp_yes = yes_logprob(m.group(1), m.group(2)) if m else math.log(0.01)
            lp_no = math.log1p(-math.exp(lp_yes))
            content = "Yes" if lp_yes >= lp_no else "No"
            top = [{"token": "Yes", "logprob": lp_yes, "bytes": None},
                   {"token": "No", "logprob": lp_no, "bytes": None}]
            logprobs = {"content": [{"token": content, "logprob": max(lp_yes, lp_no), "bytes": None,
                                     "top_logprobs": top if body.get("logprobs") else []}]}
        else:
            m = re.search(r"Task type: (.*)\nPassage: (.*)", user, re.DOTALL)
            content = synth_answer(m.group(1), m.group(2)) if m else "{}"
            if m and self._bad_synthesis(raw, m.group(2)):
                content = content[: len(content) // 2]  # truncated JSON inside a valid answer
        usage = {"prompt_tokens": len(_TOKEN.findall(system + user)),
                 "completion_tokens": len(_TOKEN.findall(content))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": self.model, "usage": usage,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", "content": content}}],
        })

    async def completions(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw)
        self.counts["completions"] += 1
        await self._pause()
        if (fault := await self._fault(raw)) is not None:
            return fault
        prompt = body.get("prompt")
        self.counts[f"completions:{body.get('model')}"] += 1
        prompts = prompt if isinstance(prompt, list) and self.prompt_lists else [prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            return JSONResponse({"error": {"message": "prompt must be a string",
                                           "type": "invalid_request_error"}}, status_code=400)
        if body.get("echo") and not self.prompt_logprobs:
            return JSONResponse({"error": {"message": "echo is not supported for this model",
                                           "type": "invalid_request_error"}}, status_code=400)
        starts = body.get("prompt_logprobs_from")
        starts = starts if isinstance(starts, list) else [starts] * len(prompts)
        choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
        for index, (text, start) in enumerate(zip(prompts, starts)):
            choice, n_prompt, n_gen = _completion_choice(body, text, start)
            choices.append({"index": index, **choice})
            usage["prompt_tokens"] += n_prompt
            usage["completion_tokens"] += n_gen
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({"id": "cmpl-scripted", "object": "text_completion",
                             "created": int(time.time()), "model": self.model,
                             "choices": choices, "usage": usage})

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model",
                                                         "owned_by": "gecko-factory"}]})

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def stats(self, request: Request) -> JSONResponse:
        return JSONResponse({**self.counts,
                             "bad_synthesis": sorted(len(keys) for keys in self.bad_synthesis.values())})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models),
            Route("/health", self.health),
            Route("/stats", self.stats),
        ])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument("--fault-sleep-s", type=float, default=3.0)
    parser.add_argument("--no-prompt-logprobs", action="store_true", help="refuse echo, as OpenAI does")
    parser.add_argument("--no-prompt-lists", action="store_true",
                        help="refuse a list of prompts in one completions request")
    parser.add_argument("--keep-alive-s", type=float, default=5.0, help="idle connections close after this")
    args = parser.parse_args()
    llm = ScriptedLLM(args.latency_ms, fault_rate=args.fault_rate, fault_seed=args.fault_seed,
                      fault_sleep_s=args.fault_sleep_s, prompt_logprobs=not args.no_prompt_logprobs,
                      prompt_lists=not args.no_prompt_lists)
    uvicorn.run(llm.app(), host=args.host, port=args.port,
                log_level="warning", access_log=False, timeout_keep_alive=args.keep_alive_s)


if __name__ == "__main__":
    main()
