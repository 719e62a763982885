"""A FRet run's options: what `gecko-factory run` and `refresh` take, the flows' one parameter,
and the one place their defaults are written.

The field descriptions are the CLI's help texts (flows/cli_options.py builds the commands'
options from these fields). FretConfig, the recipe a run folder records and hashes, takes the
options it keeps as they are from here (`config.run_option`), so a default is never written
twice; `FretConfig.from_options` / `FretConfig.run_options` convert between the two.
Adding a FRet option: a field here, the stage that reads it from FretConfig, a test.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gecko_factory.fusion import FusionConfig

JudgeForm = Literal["two_prompt", "one_pass", "shared_prefix"]
# Where shard tasks run without a Dask address; see `task_runner`.
LOCAL_RUNNERS = ("threads", "dask")


class RunOptions(BaseModel):
    """Everything a FRet run is asked for, short of where it writes (`run_dir`, `root`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # a typo is an error, not a default

    corpus: str = Field(default="sample", description="JSONL/Parquet/text file or folder, or 'sample' "
                        "(bundled Wikipedia leads)")
    limit: int | None = Field(default=None, ge=1, description="number of seed paragraphs (default: all)")
    seed_ids_file: str | None = Field(default=None, description="seeds only from the paragraph ids in "
                                      "this file (one per line)")
    candidates: int = Field(default=20, ge=2, description="N neighbours judged per query (Gecko: 20)")
    shard_size: int = Field(default=256, ge=1, description="seed paragraphs per shard (the unit of resume)")
    # Two-prompt (Gecko's form) by default: the one-pass form costs half the judge calls and
    # tokens, but with the embedded 0.5B judge it picks Gecko's positive in too few examples to
    # stand in for it (BENCHMARKS.md, judge_cost). With a strong judge, measure and pick one_pass.
    judge_mode: Literal["two_prompt", "one_pass", "shared_prefix", "auto"] = Field(
        default="two_prompt", description="two_prompt (Gecko: a QL and an RC prompt per candidate) | "
        "one_pass (both from one pass: half the calls) | shared_prefix (a QL and an RC prompt that "
        "share the passage, in one request: a prefix cache computes it once) | auto (audit each, "
        "take the cheapest within a point of the best)")
    negative: Literal["lowest", "random"] = Field(default="lowest", description="hard negative: lowest | random")
    fusion: str | None = Field(default=None, description="how the positive is chosen: rrf (Gecko) | "
                               "rrf+keep_seed | wrrf:retrieval=W,ql=W,rc=W[+keep_seed] (default: the "
                               "factory's, see README)")
    negative_guard: bool = Field(default=True, description="keep likely false negatives (near the "
                                 "positive, duplicates of it, the seed) out of the hard negatives")
    negative_pool: int = Field(default=20, ge=0, description="when the guard lets none of the N judged "
                               "candidates be the hard negative, take the nearest of the top "
                               "NEGATIVE_POOL retrieved neighbours beyond them that it lets through "
                               "(NV-Retriever's positive-aware mining); 0, or at most N: skip the seed")
    # fp32 by default: int8 is 1.4x faster on a 2-core AVX2 CPU but its top-20 agrees with fp32's
    # on only 83 % of the neighbours (README, "The encoder's precision"), so it is asked for.
    encoder: str = Field(default="all-MiniLM-L6-v2", description="the embedding model that indexes "
                         "the corpus and embeds the queries: 'all-MiniLM-L6-v2' or a local folder; "
                         "NAME:int8 for its int8 form (faster on CPU, different neighbours: README)")
    seed: int = Field(default=0, description="seed of the sample, task types and negatives")
    synth_temperature: float = Field(default=0.7, ge=0, le=2, description="sampling temperature of the "
                                     "LLM that writes each paragraph's task and query")
    cache: Literal["on", "off", "refresh"] = Field(
        default="on", description="the LLM request cache: on | off (neither read nor write it) | "
        "refresh (ask the LLM again and overwrite cached answers)")
    budget_usd: float | None = Field(default=None, description="stop cleanly once this much is spent (USD)")
    max_tokens: int | None = Field(default=None, description="stop cleanly once this many tokens are spent")
    task_runner: str = Field(default="threads", description="where shards run: threads | dask (a local "
                             "cluster of 2 worker processes) | tcp://HOST:PORT (an existing Dask scheduler)")
    # Metadata of the data set (its Hugging Face card), not of the recipe: FretConfig keeps it but
    # leaves it out of the output hash, so relicensing a run never redoes or re-plans its shards.
    license: str = Field(default="unknown", description="license of the data set, a Hugging Face "
                         "license id (e.g. cc-by-sa-4.0, apache-2.0): the corpus' and the LLM's terms "
                         "decide it, so 'unknown' until you say")
    audit_beir: str | None = Field(default=None, description="the labelled BEIR set (folder or zip) that "
                                   "--judge-mode auto audits on (default: SciFact train)")

    @field_validator("fusion")
    @classmethod
    def _fusion_parses(cls, spec: str | None) -> str | None:
        if spec is not None:
            FusionConfig.parse(spec)  # a bad spec fails here, before any work
        return spec

    @field_validator("encoder")
    @classmethod
    def _encoder_exists(cls, spec: str) -> str:
        from gecko_factory.embed import parse_encoder, resolve_encoder_path

        try:  # a typo fails here, not after the corpus is read and the index is being built
            resolve_encoder_path(parse_encoder(spec)[0])
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
        return spec

    @field_validator("task_runner")
    @classmethod
    def _known_runner(cls, spec: str) -> str:
        dask_address(spec)
        return spec

    def dask_address(self) -> str | None:
        return dask_address(self.task_runner)


def dask_address(spec: str) -> str | None:
    """None for "threads" and "dask" (a new local cluster), else the scheduler's tcp:// address."""
    if spec in LOCAL_RUNNERS:
        return None
    if spec.startswith("dask://"):
        return "tcp://" + spec.removeprefix("dask://")
    if spec.startswith("tcp://"):
        return spec
    raise ValueError(f"task_runner {spec!r}: expected threads, dask, tcp://HOST:PORT or dask://HOST:PORT")
