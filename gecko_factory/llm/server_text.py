"""Text-side helpers of the embedded server (server_app.py): sampling, stop strings, the
incremental token strings OpenAI's legacy log-probs need, response_format as a grammar, and the
GGUF's own chat template (where a message lands in the rendered prompt)."""

from __future__ import annotations

import codecs
import json
from typing import Any

import numpy as np


class BadRequest(ValueError):
    """Becomes a 400 with OpenAI's error shape."""


def sample_token(lp: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    z = lp / temperature
    p = np.exp(z - z.max())
    order = np.argsort(-p)  # nucleus: the smallest head of the distribution holding top_p
    keep = order[: int(np.searchsorted(np.cumsum(p[order]) / p.sum(), top_p)) + 1]
    return int(keep[rng.choice(len(keep), p=p[keep] / p[keep].sum())])


def apply_stop(text: str, stops: list[str], finish: str) -> tuple[str, str]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], "stop") if cut >= 0 else (text, finish)


def incremental_strings(pieces: list[bytes], base: int) -> tuple[list[str], list[int]]:
    """Decode token bytes incrementally so the strings concatenate to the exact text: a token
    holding part of a multi-byte character gets "", the one completing it the whole character."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    strs, offsets, pos = [], [], base
    for p in pieces:
        s = dec.decode(p)
        strs.append(s)
        offsets.append(pos)
        pos += len(s)
    if strs:
        strs[-1] += dec.decode(b"", final=True)
    return strs, offsets


def json_grammar(rf: dict[str, Any] | None):
    """OpenAI's response_format as a llama.cpp grammar (None: unconstrained).

    Built here rather than by llama-cpp: 0.3.36's json_schema_to_gbnf emits
    `char ::= [^"\\]`, which lets raw newlines/control characters into strings (seen: invalid
    JSON from a schema-constrained call); JSON_GBNF for plain json_object is already strict.
    """
    from llama_cpp import llama_grammar

    kind = None if rf is None else rf.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object" and not isinstance(rf.get("schema"), dict):
        return llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False)
    schema = rf.get("schema") if kind == "json_object" else (rf.get("json_schema") or {}).get("schema")
    if kind not in ("json_object", "json_schema") or not isinstance(schema, dict):
        raise BadRequest(f"unsupported response_format {rf!r}: need json_schema.schema (an object)")
    try:
        gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise BadRequest(f"cannot turn this JSON schema into a grammar: {exc}") from exc
    gbnf = gbnf.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')
    return llama_grammar.LlamaGrammar.from_string(gbnf, verbose=False)


def message_offset(prompt: str, messages: list[dict[str, Any]], index: int) -> int | None:
    """Where message `index`'s content starts in the rendered prompt (None: not found verbatim)."""
    pos = 0
    for message in messages[: index + 1]:
        content = message.get("content")
        if not isinstance(content, str):
            return None
        found = prompt.find(content, pos)
        if found < 0:
            return None
        pos = found + len(content)
    return pos - len(messages[index]["content"])


def chat_formatter(llm):
    """The formatter llama-cpp's chat handler uses for a GGUF's own template (None when llama
    chose another format: then chats keep llama's path)."""
    from llama_cpp import llama_chat_format

    template = llm.metadata.get("tokenizer.chat_template")
    if llm.chat_format != "chat_template.default" or not template:
        return None
    eos, bos = llm.token_eos(), llm.token_bos()
    return llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "", stop_token_ids=[eos])
