"""Judge stage: score every (query, candidate) with the LLM, as Gecko does (QL and RC).

Entry point: `judge(client, query, candidates, mode, passage_chars) -> list[JudgedCandidate]`.
- QL = log p(query | passage): the summed log-probs of the query's tokens after the passage.
- RC = log p("Yes" | query, passage): the log-prob of the answer token of a yes/no question.
- `one_pass` gets both from ONE forward pass per candidate: the QL prompt (passage, then query)
  followed by the yes/no question ending in " Yes", through prompt log-probs (completions `echo`
  + `logprobs`). Its QL equals the two-prompt QL; only RC is read from another prompt.
- `two_prompt` is Gecko's form: a QL prompt and a separate RC prompt (chat, top log-probs).
- `shared_prefix`: the QL prompt and an RC prompt that begins with the same passage line, sent
  as one request of two prompts, so a server's prefix cache computes the passage once (the
  two-prompt form sends it twice: its RC chat puts the query first); the embedded server is told
  where the passage line ends (`prefix_break`, `shared_head`), so it reuses all of it, not only
  its whole 128-token chunks. Its RC is log P(" Yes")
  read as a prompt log-prob, as in one_pass, but without the QL line's claim that the passage
  answers the query. The audit with the 1.5B judge ranks it below two-prompt (precision@1 0.816
  against 0.842 on 100 SciFact claims, and 15 wrong relabels against 4, README): like every
  passage-first RC tried, it is opt-in, though it judges ~1.9x faster.
- `rc_only` is for servers without prompt log-probs (OpenAI's chat models): RC alone, recorded.
The judge only scores; which candidate becomes the positive and which the hard negative is
fusion.py's (a pure function of these scores, so an audit can replay every fusion on them).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from gecko_factory.corpus import Paragraph
from gecko_factory.fusion import Scored
from gecko_factory.hashing import sha256_hex
from gecko_factory.llm.client import LLMClient
from gecko_factory.llm.runtime import gather_all
from gecko_factory.mine import Candidate
from gecko_factory.templates import load_template

TEMPLATE = "judge_v1"
SHARED_TEMPLATE = "judge_shared_v1"  # templates.judge_templates: what shapes each form's scores
JudgeMode = Literal["one_pass", "two_prompt", "shared_prefix", "rc_only"]
RC_TOP_LOGPROBS = 10  # alternatives read at the RC answer token ("Yes", " yes", ... all count)
YES_FLOOR = -30.0  # RC when "Yes" is not even among the top log-probs of the answer
_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class JudgedCandidate(Scored):
    """A candidate with the judge's scores (fusion.Scored) and its passage vector."""

    vector: np.ndarray | None = field(default=None, repr=False, compare=False)


def judge_passage(p: Paragraph, max_chars: int) -> str:
    """The passage as the judge reads it, cut at a word boundary to bound the prompt."""
    text = f"{p.title}. {p.text}" if p.title else p.text
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars)
    return text[: cut if cut > max_chars // 2 else max_chars] + " …"


def yes_logprob(top: dict[str, float]) -> float:
    """log P(yes) from an answer token's top log-probs (" Yes", "yes", … all count)."""
    yes = [lp for tok, lp in top.items() if tok.strip().lower() == "yes"]
    if yes:
        return math.log(sum(math.exp(lp) for lp in yes))
    return min(top.values(), default=YES_FLOOR) if top else YES_FLOOR


def ql_prompt(passage: str, query: str) -> str:
    """The query-likelihood prompt: the passage, then the query, whose tokens QL sums.

    It ends with the newline after the query, and QL counts it (the query ends there): BPE
    merges a query's final punctuation with a following newline (".\n" is one Qwen token), so a
    QL prompt that stopped at the query would tokenise differently from the same text inside the
    one-pass prompt (QL differed by up to 1.2 nats)."""
    return load_template(TEMPLATE).render("query_likelihood", passage=passage, query=query) + "\n"


def one_pass_prompt(passage: str, query: str) -> tuple[str, str]:
    """(QL prompt, one-pass prompt). The one-pass prompt IS the QL prompt with the yes/no question
    appended: a causal LM's log-probs of the query tokens do not depend on what follows them, so
    its QL is the two-prompt form's QL exactly, and RC is read off the same forward pass."""
    ql = ql_prompt(passage, query)
    return ql, ql + load_template(TEMPLATE).sections["one_pass_question"]


def shared_prefix_prompts(passage: str, query: str) -> tuple[str, str]:
    """(QL prompt, RC prompt), both starting with the line "Passage: {passage}" (tests pin it)."""
    return ql_prompt(passage, query), load_template(SHARED_TEMPLATE).render(
        "relevance", passage=passage, query=query)


def query_span(ql_prompt: str, query: str) -> tuple[int, int]:
    """Character span QL sums over: the query and its end of line (see `ql_prompt`)."""
    return len(ql_prompt) - len(query) - 1, len(ql_prompt)


async def _one_pass(client: LLMClient, query: str, passage: str) -> tuple[float, float]:
    ql_part, prompt = one_pass_prompt(passage, query)
    span = query_span(ql_part, query)
    scores = await client.prompt_logprobs(prompt, from_char=span[0])
    ql = scores.span(*span)
    rc = scores.span(len(prompt) - len("Yes"), len(prompt))
    return ql, rc


def shared_head(ql_text: str, rc_text: str) -> int:
    """Where the shared-prefix form's two prompts stop sharing whole lines: after the passage line
    (the embedded server's `prefix_break`, so the RC prompt reuses all of the passage's KV)."""
    return os.path.commonprefix([ql_text, rc_text]).rfind("\n") + 1


async def _shared_prefix(client: LLMClient, query: str, passage: str) -> tuple[float, float]:
    ql_text, rc_text = shared_prefix_prompts(passage, query)
    span = query_span(ql_text, query)
    answer = len(rc_text) - len("Yes")
    head = shared_head(ql_text, rc_text)
    ql, rc = await client.prompt_logprobs_many([ql_text, rc_text], [span[0], answer], [head, head])
    return ql.span(*span), rc.span(answer, len(rc_text))


async def _query_likelihood(client: LLMClient, query: str, passage: str) -> float:
    prompt = ql_prompt(passage, query)
    span = query_span(prompt, query)
    scores = await client.prompt_logprobs(prompt, from_char=span[0])
    return scores.span(*span)


def relevance_messages(query: str, passage: str) -> list[dict]:
    """The RC chat of the two-prompt form: instruction, then query, passage and the question."""
    tpl = load_template(TEMPLATE)
    return [
        {"role": "system", "content": tpl.sections["relevance_system"]},
        {"role": "user", "content": tpl.render("relevance_user", passage=passage, query=query)},
    ]


def relevance_head(query: str) -> tuple[int, int]:
    """(message, char) where the RC chat's head ends: everything before the passage's line, which
    a seed's N candidates share (the embedded server computes it once: its `prefix_break`)."""
    user = load_template(TEMPLATE).render("relevance_user", passage="\x00", query=query)
    return 1, user.rfind("\n", 0, user.index("\x00")) + 1


async def _relevance(client: LLMClient, query: str, passage: str) -> float:
    answer = await client.chat(relevance_messages(query, passage), temperature=0.0, max_tokens=1,
                               top_logprobs=RC_TOP_LOGPROBS, prefix_break=relevance_head(query))
    return yes_logprob(answer.first_token_top)


async def _score(client: LLMClient, mode: JudgeMode, query: str, passage: str) -> tuple[float | None, float]:
    if mode == "one_pass":
        return await _one_pass(client, query, passage)
    if mode == "shared_prefix":
        return await _shared_prefix(client, query, passage)
    if mode == "two_prompt":
        ql, rc = await gather_all(_query_likelihood(client, query, passage),
                                  _relevance(client, query, passage))
        return ql, rc
    return None, await _relevance(client, query, passage)


async def judge(client: LLMClient, query: str, candidates: list[tuple[Candidate, Paragraph]],
                mode: JudgeMode, passage_chars: int) -> list[JudgedCandidate]:
    """Raises LLMError if any candidate cannot be scored: a partial ranking would be biased."""
    scored = await gather_all(  # one failed call cancels the others: the seed fails as a whole
        *(_score(client, mode, query, judge_passage(p, passage_chars)) for _, p in candidates)
    )
    return [as_scored(c, p, ql, rc) for (c, p), (ql, rc) in zip(candidates, scored)]


def as_scored(c: Candidate, p: Paragraph, ql: float | None = None,
              rc: float | None = None) -> JudgedCandidate:
    """`c` as fusion reads it: the judge's scores (None: not judged, e.g. the negative pool's
    candidates) and the text key of its passage `p`."""
    return JudgedCandidate(c.id, c.retrieval_rank, c.similarity, ql, rc, text_key(p.title, p.text),
                           c.vector)


def text_key(title: str, text: str) -> str:
    """Hash of a passage lowercased to letters and digits: equal keys = the same text."""
    return sha256_hex(_ALNUM.sub(" ", f"{title} {text}".lower()).strip(), length=16)
