"""A small OpenAI-compatible HTTP server over `llama_cpp.Llama` (Starlette + uvicorn).

Why our own: llama-cpp-python 0.3.36's `echo=True` log-probs are misaligned; here prompt-token
log-probs come from the logits (`scores[i-1]` predicts `tokens[i]`, see shared/MODELS.md), and
only the rows a request reads are computed (server_engine.py). Calls run in worker threads so
/health stays responsive.
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
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gecko_factory.llm.server_engine import ChatRequest, CompletionRequest, Engine
from gecko_factory.llm.server_text import BadRequest

log = logging.getLogger("gecko_factory.llm.server")


def _error(message: str, status: int = 400, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}},
                        status_code=status)


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
