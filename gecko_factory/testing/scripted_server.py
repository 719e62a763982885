"""A deterministic OpenAI-compatible server for tests and benchmarks (real HTTP, no model).

It answers like a tiny, predictable LLM, so a test can compute what the factory must output:
- chat, synthesis prompt ("Task type: …\\nPassage: …"): JSON {task, query} where the query is
  the passage's first content words (so retrieval finds the seed). A passage containing
  `[[invalid]]` always gets invalid JSON (to test the retry-then-skip path).
- chat, relevance prompt (system says "Yes or No"): "Yes"/"No" with top log-probs where
  log P(Yes) = log(share of query words found in the passage).
- completions with `echo` + `logprobs`: whitespace tokens (each with its leading space); a word
  already seen earlier in the prompt gets −0.5, an unseen one −3 − (hash % 100)/100; a final
  "Yes" gets the same log P(Yes) as above. `prompt_logprobs` (vLLM's shape) is also served.
Options: `latency_ms` per request. `GET /stats` counts requests by endpoint.
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
from starlette.responses import JSONResponse
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


def yes_logprob(query: str, passage: str) -> float:
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
    qp = re.search(r"Passage: (.*)\nQuery: (.*)\n", prompt, re.DOTALL)
    seen: set[str] = set()
    logprobs: list[float | None] = []
    for i, tok in enumerate(tokens):
        ws = words(tok)
        if i == 0:
            logprobs.append(None)
        elif i == len(tokens) - 1 and tok.strip() == "Yes" and qp:
            logprobs.append(yes_logprob(qp.group(2), qp.group(1)))
        elif not ws:
            logprobs.append(-1.0)
        else:
            logprobs.append(sum(-0.5 if w in seen else -3.0 - (_h(w) % 100) / 100 for w in ws))
        seen.update(ws)
    return tokens, logprobs, offsets


class ScriptedLLM:
    def __init__(self, latency_ms: float = 0.0, model: str = "scripted"):
        self.latency = latency_ms / 1000
        self.model = model
        self.counts: Counter = Counter()

    async def _pause(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.counts["chat"] += 1
        await self._pause()
        messages = body.get("messages") or []
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
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
        usage = {"prompt_tokens": len(_TOKEN.findall(system + user)),
                 "completion_tokens": len(_TOKEN.findall(content))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": self.model, "usage": usage,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", "content": content}}],
        })

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.counts["completions"] += 1
        await self._pause()
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return JSONResponse({"error": {"message": "prompt must be a string",
                                           "type": "invalid_request_error"}}, status_code=400)
        tokens, logprobs, offsets = prompt_scores(prompt)
        gen = " Yes" if (body.get("max_tokens") or 0) > 0 else ""
        choice: dict = {"index": 0, "finish_reason": "length", "text": gen, "logprobs": None}
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
                {str(_h(t) % 50000): {"logprob": lp, "rank": 1, "decoded_token": t}}
                for t, lp in zip(tokens[1:], logprobs[1:])]
        usage = {"prompt_tokens": len(tokens), "completion_tokens": 1 if gen else 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({"id": "cmpl-scripted", "object": "text_completion",
                             "created": int(time.time()), "model": self.model,
                             "choices": [choice], "usage": usage})

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model",
                                                         "owned_by": "gecko-factory"}]})

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def stats(self, request: Request) -> JSONResponse:
        return JSONResponse(dict(self.counts))

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
    args = parser.parse_args()
    uvicorn.run(ScriptedLLM(args.latency_ms).app(), host=args.host, port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
