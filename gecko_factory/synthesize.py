"""Synthesis stage: for each seed paragraph the LLM writes a task description and a query.

Entry point: `synthesize_one(client, paragraph, config, result)`, which a FRet shard calls per seed
(`synthesize` runs it over a list, for bench/e2e.py and bench/distilabel.py). The task type is drawn
uniformly from `config.task_types` (Gecko found uniform sampling best), by a hash of the seed so
that a rerun draws the same. Output is validated; an invalid answer is retried once with another
sampling seed, then counted as a skip — never a crash of the shard. A request the server
refuses for its content (400/413/422) is a skip too; a failure of the service (unreachable,
timeouts, 429/5xx beyond the client's retries) is not: it propagates and fails the shard.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, ValidationError, field_validator

from gecko_factory.config import FretConfig
from gecko_factory.corpus import Paragraph, normalise
from gecko_factory.hashing import stable_int
from gecko_factory.llm.client import LLMClient, LLMRequestRejected
from gecko_factory.templates import load_template

TEMPLATE = "synthesize_v1"
REJECTED = "llm_rejected_request"  # skip reason: the server refused this request (400/413/422)

OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "task": {"type": "string", "minLength": 8, "maxLength": 300},
        "query": {"type": "string", "minLength": 3, "maxLength": 300},
    },
    "required": ["task", "query"],
    "additionalProperties": False,
}


class TaskQuery(BaseModel):
    task: str = Field(min_length=8, max_length=400)
    query: str = Field(min_length=3, max_length=400)

    @field_validator("task", "query", mode="before")
    @classmethod
    def _clean(cls, value: object) -> object:
        return normalise(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Synthesized:
    paragraph: Paragraph
    task_type: str
    task: str
    query: str


@dataclass
class SynthesisResult:
    examples: list[Synthesized] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    errors: list[str] = field(default_factory=list)  # "paragraph id: why", for the manifest

    def skip(self, reason: str, paragraph_id: str, detail: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.errors) < 50:
            self.errors.append(f"{paragraph_id}: {reason}: {detail[:300]}")


def pick_task_type(paragraph_id: str, seed: int, task_types: tuple[str, ...]) -> str:
    return task_types[stable_int("task-type", seed, paragraph_id) % len(task_types)]


def build_messages(task_type: str, passage: str) -> list[dict]:
    # The system block (instructions + few-shot) is the same for every call, and comes first so
    # that servers with prefix caching (vLLM, llama.cpp) reuse it.
    tpl = load_template(TEMPLATE)
    return [
        {"role": "system", "content": tpl.sections["system"]},
        {"role": "user", "content": tpl.render("user", task_type=task_type, passage=passage)},
    ]


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_answer(text: str, passage: str) -> TaskQuery:
    """JSON object → validated TaskQuery; raises ValueError with the reason otherwise."""
    match = _OBJECT.search(text)  # tolerate code fences or chatter around the object
    if not match:
        raise ValueError(f"no JSON object in the answer: {text[:120]!r}")
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg}): {text[:120]!r}") from exc
    if not isinstance(obj, dict):
        raise ValueError("the answer is not a JSON object")
    try:
        out = TaskQuery.model_validate({"task": obj.get("task"), "query": obj.get("query")})
    except ValidationError as exc:
        raise ValueError(f"invalid task/query: {exc.errors()[0]['msg']}") from exc
    if is_copy(out.query, passage):
        raise ValueError("the query copies the passage")
    return out


def is_copy(query: str, passage: str) -> bool:
    """A query that is a long verbatim span of its passage teaches the model nothing."""
    q, p = query.lower().strip(" .?!"), passage.lower()
    return len(q) >= 0.8 * len(p) or (len(q.split()) >= 10 and q in p)


async def synthesize_one(client: LLMClient, paragraph: Paragraph, config: FretConfig,
                         result: SynthesisResult) -> Synthesized | None:
    """The paragraph's task and query, also appended to `result`; None when it is skipped
    (counted in `result.skipped` with the reason)."""
    task_type = pick_task_type(paragraph.id, config.seed, config.task_types)
    messages = build_messages(task_type, paragraph.text)
    last_error = ""
    for attempt in range(config.synth_attempts):
        try:
            answer = await client.chat(
                messages,
                temperature=config.synth_temperature,
                max_tokens=config.synth_max_tokens,
                seed=stable_int("synth", config.seed, paragraph.id, attempt) % 2**31,
                json_schema=OUTPUT_SCHEMA,
            )
        except LLMRequestRejected as exc:
            # this paragraph's request, not the service: other seeds go on. A service failure
            # (LLMServiceError) propagates and fails the shard, which resumes; never a skip.
            result.skip(REJECTED, paragraph.id, str(exc))
            return None
        try:
            out = parse_answer(answer.text, paragraph.text)
        except ValueError as exc:
            last_error = str(exc)
            continue
        done = Synthesized(paragraph, task_type, out.task, out.query)
        result.examples.append(done)
        return done
    result.skip("invalid_llm_output", paragraph.id, last_error)
    return None


async def synthesize(client: LLMClient, paragraphs: list[Paragraph], config: FretConfig) -> SynthesisResult:
    result = SynthesisResult()
    await asyncio.gather(*(synthesize_one(client, p, config, result) for p in paragraphs))
    # gather finishes in completion order; keep the input order so shards are reproducible.
    order = {p.id: i for i, p in enumerate(paragraphs)}
    result.examples.sort(key=lambda s: order[s.paragraph.id])
    return result
