"""The configuration of a FRet run, and its hash (part of every shard marker).

Only what shapes the output goes into the hash: the LLM model name and the prompt versions do,
the base URL, the API key, concurrency and timeouts do not (they change how fast, not what).
A run's options (options.py: the CLI's and the flows') become a FretConfig in one place,
`FretConfig.from_options`, and a recorded config gives them back (`run_options`, for `resume`).
"""

from __future__ import annotations

import json
from copy import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from gecko_factory.corpus import SAMPLE, SCIFACT, CorpusSpec
from gecko_factory.hashing import sha256_hex
from gecko_factory.fusion import FusionConfig, NegativeGuard
from gecko_factory.options import JudgeForm, RunOptions

# Gecko samples the task type uniformly from a list; these follow its appendix.
TASK_TYPES = (
    "question answering",
    "fact checking",
    "search result",
    "sentence similarity",
    "topic retrieval",
    "keyword search",
    "summary retrieval",
)


class IndexConfig(BaseModel):
    space: Literal["cosine"] = "cosine"
    M: int = Field(default=32, ge=4, description="HNSW graph degree")
    ef_construction: int = Field(default=200, ge=10)
    ef_search: int = Field(default=128, ge=10, description="raised to N if smaller")


def run_option(name: str) -> Any:
    """The field as RunOptions declares it (default, bounds, help): an option FretConfig keeps as
    given has its default written once, in options.py."""
    return copy(RunOptions.model_fields[name])


class FretConfig(BaseModel):
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)
    limit: int | None = run_option("limit")
    seed_ids_file: str | None = run_option("seed_ids_file")  # an incremental refresh's new paragraphs
    seed: int = run_option("seed")
    shard_size: int = run_option("shard_size")
    candidates: int = run_option("candidates")
    task_types: tuple[str, ...] = TASK_TYPES
    synth_temperature: float = run_option("synth_temperature")
    synth_max_tokens: int = Field(default=160, ge=16)
    # Answers asked for per paragraph before it is skipped as invalid_llm_output (each attempt
    # samples anew). Part of the recipe: more attempts turn skips into rows. 2 lost 15 % of the
    # SciFact seeds to the 0.5B copying its passage; a retry costs one synthesis call, a fraction
    # of the seed's 2N judge calls.
    synth_attempts: int = Field(default=4, ge=1)
    judge_mode: JudgeForm = run_option("judge_mode")  # "auto" is resolved before the config
    judge_passage_chars: int = Field(
        default=1200, ge=100, description="passages are cut to this many chars for the judge"
    )
    # Which candidate is the positive (fusion.py). The default is chosen by the judge audit
    # (README, "Auditing the judge"): Gecko's RRF gave a 0.5B judge's noisy RC the same vote as
    # QL and relabelled to wrong positives; keep_seed relabels only when QL and RC agree on a
    # candidate and the judge answers Yes for it (no fitted threshold).
    fusion: FusionConfig = Field(default_factory=lambda: FusionConfig(keep_seed=True))
    negative: Literal["lowest", "random"] = run_option("negative")
    # Candidates that may not be the hard negative (likely false negatives); None: Gecko's rule.
    negative_guard: NegativeGuard | None = Field(default_factory=NegativeGuard)
    # Where the negative comes from when the guard lets no judged candidate through: the nearest
    # neighbour it lets through among retrieval ranks N+1..negative_pool (unjudged; 0: none).
    negative_pool: int = run_option("negative_pool")
    encoder: str = run_option("encoder")  # NAME or NAME:int8 (embed.parse_encoder)
    embed_batch_size: int = Field(default=64, ge=1)
    index: IndexConfig = Field(default_factory=IndexConfig)
    llm_model: str = ""  # filled from LLMSettings when the run starts: the model that writes
    judge_model: str = ""  # the model that judges (GECKO_LLM_JUDGE_MODEL); "" = llm_model
    prompt_versions: dict[str, str] = Field(default_factory=dict)  # filled from the templates
    license: str = run_option("license")  # the data set's card (hf_card.py), not the recipe

    def output_hash(self) -> str:
        """sha256 of everything that shapes the examples (see the module docstring).

        Which seeds (limit, seed_ids_file) and how they are sliced do not change any example, nor
        does the license the data set is published under."""
        payload = self.model_dump(mode="json", exclude={"limit", "shard_size", "seed_ids_file", "license"})
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return sha256_hex(blob)

    @classmethod
    def from_options(cls, options: RunOptions, llm_model: str, judge_model: str | None,
                     prompt_versions: dict[str, str]) -> FretConfig:
        """The recipe of a run asked for with `options` (judge_mode already resolved, not "auto"),
        written by `llm_model` and judged by `judge_model` (None or the same: one model)."""
        if options.judge_mode == "auto":
            raise ValueError("judge_mode auto is resolved by an audit before the config is made")
        choice = {"fusion": FusionConfig.parse(options.fusion)} if options.fusion else {}
        return cls(
            **options.model_dump(include=_KEPT_AS_GIVEN), **choice,
            corpus=CorpusSpec(path=absolute_corpus(options.corpus)),  # `resume` may run elsewhere
            seed_ids_file=str(Path(options.seed_ids_file).resolve()) if options.seed_ids_file else None,
            judge_mode=options.judge_mode,
            negative_guard=NegativeGuard() if options.negative_guard else None,
            llm_model=llm_model,
            judge_model=judge_model if judge_model and judge_model != llm_model else "",
            prompt_versions=prompt_versions,
        )

    def run_options(self, **overrides: Any) -> RunOptions:
        """The options this recipe was made from (what `resume` reruns with), and `overrides`
        (those that do not shape the output: cache, budget, task runner)."""
        return RunOptions(**self.model_dump(include=_KEPT_AS_GIVEN), corpus=self.corpus.path,
                          seed_ids_file=self.seed_ids_file, judge_mode=self.judge_mode,
                          fusion=self.fusion.spec(), negative_guard=self.negative_guard is not None,
                          **overrides)


# The options FretConfig keeps under the same name and in the same form; the others are
# converted by from_options / run_options.
_KEPT_AS_GIVEN = (set(RunOptions.model_fields) & set(FretConfig.model_fields)) - {
    "corpus", "seed_ids_file", "judge_mode", "fusion", "negative_guard"}


def absolute_corpus(corpus: str) -> str:
    """Paths become absolute; the named corpora (`sample`, `scifact[:ZIP]`) keep their name."""
    if corpus == SAMPLE or corpus == SCIFACT:
        return corpus
    if corpus.startswith(SCIFACT + ":"):
        return f"{SCIFACT}:{Path(corpus.partition(':')[2]).resolve()}"
    return str(Path(corpus).resolve())
